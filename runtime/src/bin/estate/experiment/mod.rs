//! `estate experiment fig4|fig5`: the paper's two experiments, re-run on this machine
//! with real processes — `estate node` instances running the `ids` guest, real
//! `redis-server`s for the Redis systems, the switch emulator for moved flows — and
//! written out as CSV and PNG (`docs/paper.md` describes the setup and the results).

mod fig4;
mod fig5;
mod plot;
mod proc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::progress::Progress;

use anyhow::{Context, bail};

pub(crate) use fig4::Fig4Args;
pub(crate) use fig5::Fig5Args;

/// `estate experiment …`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum ExperimentAction {
    /// Fig. 4: an IDS scaled out (half the flows of NF.1 moved to NF.2) and scaled in
    /// (all flows moved to NF.1), with no state sharing (baseline) and with estate.
    Fig4(Fig4Args),
    /// Fig. 5: 2–16 replicated IDS instances on baseline, centralmem (one Redis
    /// server), clustermem (a Redis Cluster) and estate: packets/s and global request
    /// delay.
    Fig5(Fig5Args),
}

pub(crate) fn run(action: ExperimentAction) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let run = Run { stop, progress: Progress::new() };
    match action {
        ExperimentAction::Fig4(args) => fig4::run(&run, args)?,
        ExperimentAction::Fig5(args) => fig5::run(&run, args)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// What every experiment shares: the stop flag (Ctrl-C, SIGTERM) and the clock.
pub(crate) struct Run {
    stop: Arc<AtomicBool>,
    progress: Progress,
}

impl Run {
    /// Sleeps `d`, or fails as soon as the run is stopped (everything started is then
    /// stopped by its drop).
    pub(crate) fn sleep(&self, d: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.check()?;
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        Ok(())
    }

    /// Fails if the run was stopped.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("stopped by a signal; every process and server of the run was stopped");
        }
        Ok(())
    }

    /// One progress line on stderr, with the time since the start (on a terminal only).
    pub(crate) fn progress(&self, line: &str) {
        self.progress.line(line);
    }
}

/// Creates `dir` and writes the `ids` module there; returns its path.
pub(crate) fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ids = dir.join("ids.wasm");
    let bytes = estate::guests::require("nf_ids")?;
    std::fs::write(&ids, bytes).with_context(|| format!("writing {}", ids.display()))?;
    Ok(ids)
}

/// Writes `rows` as CSV (a header from the row type's fields) to `path`.
pub(crate) fn write_csv<T: serde::Serialize>(path: &Path, rows: &[T]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_path(path).with_context(|| format!("writing {}", path.display()))?;
    for row in rows {
        writer.serialize(row)?;
    }
    writer.flush()?;
    Ok(())
}

/// The median of `values` (the mean of the middle two for an even count); NaN if empty.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![f64::NAN, 5.0]), 5.0);
        assert!(median(vec![]).is_nan());
    }
}
