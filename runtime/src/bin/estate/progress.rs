//! Progress of long-running commands: shown when stderr is a terminal, silent when it
//! is piped or redirected (scripts and logs get the results on stdout only).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where progress goes: stderr, if a person watches it.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    on: bool,
    started: Instant,
}

impl Progress {
    /// Progress that shows only on a terminal.
    pub(crate) fn new() -> Progress {
        Progress { on: std::io::stderr().is_terminal(), started: Instant::now() }
    }

    /// A line that stays, with the time since the start.
    pub(crate) fn line(&self, text: &str) {
        if self.on {
            eprintln!("\r\x1b[2K[{:>6.1} s] {text}", self.started.elapsed().as_secs_f64());
        }
    }

    /// A status that the next status or line replaces.
    pub(crate) fn status(&self, text: &str) {
        if self.on {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K[{:>6.1} s] {text}", self.started.elapsed().as_secs_f64());
            let _ = err.flush();
        }
    }

    /// Clears the status line.
    pub(crate) fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[2K");
        }
    }

    /// Calls `status` every `every` on a thread of its own, until the ticker is dropped
    /// (nothing runs when progress is off).
    pub(crate) fn tick(&self, every: Duration, status: impl Fn() -> String + Send + 'static) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = self.on.then(|| {
            let (progress, stop) = (self.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    progress.status(&status());
                    std::thread::sleep(every);
                }
                progress.clear();
            })
        });
        Ticker { stop, thread }
    }
}

/// A periodic status (see [`Progress::tick`]); stops and clears its line on drop.
#[derive(Debug)]
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
