//! Fig. 4: two `ids` instances behind the switch emulator. Scale-out: every flow
//! starts on NF.1 and half of them move to NF.2 halfway through the stream; scale-in:
//! the flows start spread over both and all of NF.2's move to NF.1. Each case runs with
//! no state sharing (`baseline`) and with `estate`, over the same stream. Sampled
//! while it runs: each instance's match counter (the per-flow counters it holds) and
//! the overall packets/s; checked at the end: whether every moved flow's counter
//! continued, and which flows over the alert threshold raised an alert.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::fig5::ids_config;
use super::plot::{self, Fig4Sample, Fig4Series};
use super::proc::{Instance, Switch};
use super::{Run, prepare, write_csv};

#[derive(clap::Args, Debug)]
pub(crate) struct Fig4Args {
    /// Directory for the CSV files, the plot and the processes' logs.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Packets in each run's stream.
    #[arg(long, default_value_t = 2_000_000)]
    pub(crate) packets: u64,
    /// Flows in the stream.
    #[arg(long, default_value_t = 200)]
    pub(crate) flows: usize,
    /// Share of packets whose payload carries an attack pattern.
    #[arg(long, default_value_t = 0.05)]
    pub(crate) share: f64,
    /// Send at most this many packets per second (default: as fast as the instances
    /// take them, so the right-hand plot shows what they can handle).
    #[arg(long)]
    pub(crate) rate: Option<u32>,
    /// The cases to run.
    #[arg(long, value_delimiter = ',', default_value = "scale-out,scale-in")]
    pub(crate) cases: Vec<String>,
    /// Interval between samples, in milliseconds.
    #[arg(long, default_value_t = 250)]
    pub(crate) sample_ms: u64,
}

/// The outcome of one run (one case, one system).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Outcome {
    pub(crate) case: String,
    pub(crate) system: String,
    pub(crate) packets: u64,
    pub(crate) flows: usize,
    pub(crate) threshold: u64,
    pub(crate) move_at_s: f64,
    pub(crate) seconds: f64,
    pub(crate) pps_before: f64,
    pub(crate) pps_after: f64,
    /// Flows the switch moved.
    pub(crate) moved_flows: usize,
    /// Moved flows whose counter on their new instance holds all their matches.
    pub(crate) moved_continued: usize,
    /// Moved flows whose counter there restarted (holds less).
    pub(crate) moved_restarted: usize,
    /// Matches the instances counted (`ids:matches`, both instances).
    pub(crate) matches: i64,
    /// The same, as the per-flow counters add up (every copy).
    pub(crate) flow_matches: i64,
    /// Flows whose matches over the whole stream reach the threshold.
    pub(crate) over_threshold: usize,
    /// Of those, flows an instance raised an alert for.
    pub(crate) alerted: usize,
    /// Flows over the threshold that no instance alerted for.
    pub(crate) missed: usize,
}

/// One row of the time series.
#[derive(Clone, Debug, Serialize)]
struct SampleRow<'a> {
    case: &'a str,
    system: &'a str,
    t_s: f64,
    nf1_matches: i64,
    nf2_matches: i64,
    pps: f64,
}

pub(crate) fn run(run: &Run, args: Fig4Args) -> anyhow::Result<()> {
    for case in &args.cases {
        if case != "scale-out" && case != "scale-in" {
            bail!("unknown case {case:?}: expected scale-out or scale-in");
        }
    }
    if args.packets < 2 || args.flows == 0 {
        bail!("--packets needs at least 2 and --flows at least 1");
    }
    let ids = prepare(&args.out)?;
    // A flow's matches split over both sides of the move stay under the threshold on
    // each side, and reach it together.
    let per_flow = args.packets as f64 * args.share / args.flows as f64;
    let threshold = (per_flow * 0.75).ceil().max(2.0) as u64;
    let (mut outcomes, mut series) = (Vec::new(), Vec::new());
    let total = args.cases.len() * 2;
    for case in &args.cases {
        for system in ["baseline", "estate"] {
            let label = format!("{case} {system}");
            run.progress(&format!("[{}/{total}] fig4 {label}: starting", outcomes.len() + 1));
            let (outcome, samples) = one(run, &args, &ids, case, system, threshold).with_context(|| label.clone())?;
            run.progress(&format!(
                "[{}/{total}] fig4 {label}: {} moved flows, {} continued, {} restarted; alerts for {} of {} flows over {threshold}",
                outcomes.len() + 1,
                outcome.moved_flows,
                outcome.moved_continued,
                outcome.moved_restarted,
                outcome.alerted,
                outcome.over_threshold,
            ));
            series.push(Fig4Series {
                case: case.clone(),
                system: system.into(),
                move_at_s: outcome.move_at_s,
                samples,
            });
            outcomes.push(outcome);
        }
    }
    report(&args.out, &outcomes, &series)
}

/// The instances of a run, and the switch.
fn one(
    run: &Run,
    args: &Fig4Args,
    ids: &Path,
    case: &str,
    system: &str,
    threshold: u64,
) -> anyhow::Result<(Outcome, Vec<Fig4Sample>)> {
    let logs = args.out.join("logs").join(format!("fig4-{case}-{system}"));
    std::fs::create_dir_all(&logs)?;
    let config = logs.join("ids.conf");
    std::fs::write(&config, ids_config(threshold))?;
    let (flow_state, backend) = if system == "estate" { ("take", "estate") } else { ("off", "none") };
    let node_args: Vec<String> =
        ["--input", "steer:tcp://127.0.0.1:*", "--flow-state", flow_state, "--state-backend", backend, "--nf"]
            .iter()
            .map(|s| s.to_string())
            .chain([ids.display().to_string(), "--nf-config".into(), config.display().to_string()])
            .collect();
    let nf1 = Instance::start(&logs, "nf1", None, &node_args)?;
    let nf2 = Instance::start(&logs, "nf2", Some(&nf1.listen), &node_args)?;
    nf1.wait_members(2)?;
    nf2.wait_members(2)?;
    let nodes = [&nf1, &nf2];
    let mut switch_args = vec![
        "--synth".to_string(),
        format!("seed=4,flows={},packets={},share={},patterns=attack|evil", args.flows, args.packets, args.share),
        "--start".into(),
        if case == "scale-out" { "nf1".into() } else { "nf1,nf2".into() },
    ];
    for node in nodes {
        let steer = node.steer.as_deref().context("no steered input")?;
        switch_args.extend(["--node".into(), format!("{}={steer}", node.name)]);
        switch_args.extend(["--node-control".into(), format!("{}={}", node.name, node.control)]);
    }
    if let Some(rate) = args.rate {
        switch_args.extend(["--rate".into(), rate.to_string()]);
    }
    let step = if case == "scale-out" { "move 0.5 nf1 nf2" } else { "move 1 nf2 nf1" };

    let mut switch = Switch::start(&logs, "switch", &switch_args)?;
    let start = Instant::now();
    let (mut samples, mut move_at, mut last) = (Vec::new(), None, (0.0, 0u64));
    let mut handled_at_move = 0;
    let deadline = Duration::from_secs(600);
    loop {
        run.sleep(Duration::from_millis(args.sample_ms))?;
        let handled: u64 = nodes.iter().map(|n| Ok(n.stats()?["nf_packets"])).sum::<anyhow::Result<u64>>()?;
        let t = start.elapsed().as_secs_f64();
        let held = matches_by_instance(&nf1)?;
        samples.push(Fig4Sample { t_s: t, matches: held, pps: (handled - last.1) as f64 / (t - last.0) });
        last = (t, handled);
        if move_at.is_none() && handled >= args.packets / 2 {
            switch.command(step)?;
            move_at = Some(start.elapsed().as_secs_f64());
            handled_at_move = handled;
        }
        if handled >= args.packets && switch.finished()? {
            break;
        }
        if start.elapsed() > deadline {
            bail!("the stream was not handled within {deadline:?} ({handled} of {} packets)", args.packets);
        }
    }
    let (seconds, move_at) = (last.0, move_at.context("the move never happened")?);
    let flows = read_flows(&switch.flows_out)?;
    let counters = flow_counters(&nf1)?;
    let alerted: BTreeSet<String> = nodes.iter().flat_map(|n| alerts_in(&n.log)).collect();
    let matches = nf1.local_int("ids:matches")? + nf2.local_int("ids:matches")?;
    let mut outcome = Outcome {
        case: case.into(),
        system: system.into(),
        packets: args.packets,
        flows: flows.len(),
        threshold,
        move_at_s: move_at,
        seconds,
        pps_before: handled_at_move as f64 / move_at,
        pps_after: (last.1 - handled_at_move) as f64 / (seconds - move_at),
        moved_flows: 0,
        moved_continued: 0,
        moved_restarted: 0,
        matches,
        flow_matches: counters.values().flat_map(|by_node| by_node.values()).sum(),
        over_threshold: 0,
        alerted: 0,
        missed: 0,
    };
    for (flow, (node, moves)) in &flows {
        let held = counters.get(flow);
        let total: i64 = held.map(|h| h.values().sum()).unwrap_or(0);
        let owner = held.and_then(|h| h.get(node)).copied().unwrap_or(0);
        if *moves > 0 {
            outcome.moved_flows += 1;
            match owner == total {
                true => outcome.moved_continued += 1,
                false => outcome.moved_restarted += 1,
            }
        }
        if total >= threshold as i64 {
            outcome.over_threshold += 1;
            match alerted.contains(flow) {
                true => outcome.alerted += 1,
                false => outcome.missed += 1,
            }
        }
    }
    Ok((outcome, samples))
}

/// The per-flow match counters each instance holds, summed per instance.
fn matches_by_instance(nf1: &Instance) -> anyhow::Result<[i64; 2]> {
    let mut held = [0, 0];
    for item in nf1.list("flow:.*:matches")? {
        let i = if item.origin == "nf1" { 0 } else { 1 };
        if let estate_guest::Value::Int(n) = item.value {
            held[i] += n;
        }
    }
    Ok(held)
}

/// flow → instance → its `flow:<flow>:matches` there.
fn flow_counters(nf1: &Instance) -> anyhow::Result<BTreeMap<String, BTreeMap<String, i64>>> {
    let mut counters: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for item in nf1.list("flow:.*:matches")? {
        let flow = item.key.strip_prefix("flow:").and_then(|k| k.strip_suffix(":matches"));
        if let (Some(flow), estate_guest::Value::Int(n)) = (flow, item.value) {
            counters.entry(flow.to_string()).or_default().insert(item.origin, n);
        }
    }
    Ok(counters)
}

/// flow → (its instance at the end, its moves), from the switch's `--flows-out`.
fn read_flows(path: &Path) -> anyhow::Result<BTreeMap<String, (String, u64)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let summary: serde_json::Value = serde_json::from_str(&text)?;
    let flows = summary["flows"].as_array().context("no flows in the switch's summary")?;
    flows
        .iter()
        .map(|f| {
            let key = f["flow"].as_str().context("flow without a key")?;
            let node = f["node"].as_str().context("flow without a node")?;
            Ok((key.to_string(), (node.to_string(), f["moves"].as_u64().unwrap_or(0))))
        })
        .collect()
}

/// The flows an instance alerted for, from its log (`ids alert flow=<flow> …`).
fn alerts_in(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split("ids alert flow=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// Writes `fig4.csv` (one row per case and system), `fig4-samples.csv` and
/// `fig4.png`, and prints the outcomes.
fn report(dir: &Path, outcomes: &[Outcome], series: &[Fig4Series]) -> anyhow::Result<()> {
    write_csv(&dir.join("fig4.csv"), outcomes)?;
    let rows: Vec<SampleRow<'_>> = series
        .iter()
        .flat_map(|s| {
            s.samples.iter().map(|x| SampleRow {
                case: &s.case,
                system: &s.system,
                t_s: x.t_s,
                nf1_matches: x.matches[0],
                nf2_matches: x.matches[1],
                pps: x.pps,
            })
        })
        .collect();
    write_csv(&dir.join("fig4-samples.csv"), &rows)?;
    plot::fig4(series, &dir.join("fig4.png")).map_err(anyhow::Error::msg)?;
    println!("fig4: case, system, moved flows (continued/restarted), alerted/over threshold, packets/s before → after");
    for o in outcomes {
        println!(
            "  {:<9} {:<8} {} ({}/{})  {}/{}  {:.0} → {:.0}",
            o.case,
            o.system,
            o.moved_flows,
            o.moved_continued,
            o.moved_restarted,
            o.alerted,
            o.over_threshold,
            o.pps_before,
            o.pps_after
        );
    }
    println!("wrote fig4.csv, fig4-samples.csv and fig4.png in {}", dir.display());
    Ok(())
}
