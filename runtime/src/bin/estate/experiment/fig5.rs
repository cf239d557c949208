//! Fig. 5: N replicated `ids` instances, each over its own synthetic stream (no flow
//! moves), on four systems: `baseline` (state local, shared with nobody),
//! `centralmem` (one Redis server), `clustermem` (a Redis Cluster, one server per
//! instance, at least three) and `estate`. Measured per run: packets/s per instance
//! and overall over a window, and the average delay of the NFs' global reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use estate::backend::servers::{RedisCluster, RedisServer};
use estate::backend::{RedisState, StateBackend};
use serde::Serialize;

use super::plot::{self, Fig5Point};
use super::proc::Instance;
use super::{Run, median, prepare, write_csv};

/// The systems, in the order they run and are reported.
pub(crate) const SYSTEMS: [&str; 4] = ["baseline", "centralmem", "clustermem", "estate"];

#[derive(clap::Args, Debug)]
pub(crate) struct Fig5Args {
    /// Numbers of instances to run, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16")]
    pub(crate) instances: Vec<usize>,
    /// Directory for the CSV files, the plot and the instances' logs.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Seconds measured per run (after every instance is running).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Runs per system and number of instances (the CSV has each; plots show medians).
    #[arg(long, default_value_t = 3)]
    pub(crate) repetitions: usize,
    /// The systems to run.
    #[arg(long, value_delimiter = ',', default_value = "baseline,centralmem,clustermem,estate")]
    pub(crate) systems: Vec<String>,
    /// Flows per instance (each instance has flows of its own).
    #[arg(long, default_value_t = 1000)]
    pub(crate) flows: usize,
    /// Share of packets whose payload carries an attack pattern.
    #[arg(long, default_value_t = 0.002)]
    pub(crate) share: f64,
    /// The ids alert threshold: a flow's global read happens when its count reaches it.
    #[arg(long, default_value_t = 1)]
    pub(crate) threshold: u64,
    /// Heartbeat interval of estate's instances, in milliseconds (failure detection
    /// suspects a member after 5 and removes it after 15 intervals of silence).
    #[arg(long, default_value_t = estate::node::Timing::default().heartbeat_ms)]
    pub(crate) heartbeat_ms: u64,
    /// Packets per instance. Without it the streams outlast the run; with it every
    /// instance handles exactly this many and the window ends when all are done (or
    /// after --duration), so the counts of the systems can be compared.
    #[arg(long)]
    pub(crate) packets: Option<u64>,
}

/// One run: one system, one number of instances, one repetition.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) system: String,
    pub(crate) instances: usize,
    pub(crate) repetition: usize,
    /// Length of the measured window.
    pub(crate) seconds: f64,
    /// Packets handled in the window, all instances.
    pub(crate) window_packets: u64,
    pub(crate) pps_per_instance: f64,
    pub(crate) pps_overall: f64,
    /// Global reads the NFs made over the whole run, and their average delay.
    pub(crate) global_reads: u64,
    pub(crate) global_delay_ms: Option<f64>,
    /// Packets the NFs handled over the whole run, as their counters say.
    pub(crate) packets: u64,
    /// The same, as the state says (`ids:packets` summed over the instances).
    pub(crate) state_packets: i64,
    /// Matches and alerts in the state, summed over the instances.
    pub(crate) matches: i64,
    pub(crate) alerts: i64,
    /// Failed requests to Redis.
    pub(crate) backend_errors: u64,
}

/// Medians over repetitions.
#[derive(Clone, Debug, Serialize)]
struct Median {
    system: String,
    instances: usize,
    runs: usize,
    pps_per_instance: f64,
    pps_overall: f64,
    global_delay_ms: Option<f64>,
}

/// The servers a system's instances use, stopped when dropped.
enum Servers {
    None,
    Central(RedisServer),
    Cluster(RedisCluster),
}

impl Servers {
    fn start(system: &str, instances: usize) -> anyhow::Result<Servers> {
        Ok(match system {
            "centralmem" => Servers::Central(RedisServer::start(false)?),
            "clustermem" => Servers::Cluster(RedisCluster::start(instances)?),
            _ => Servers::None,
        })
    }

    fn backend(&self, system: &str) -> StateBackend {
        match (self, system) {
            (Servers::Central(server), _) => server.backend(),
            (Servers::Cluster(cluster), _) => cluster.backend(),
            (Servers::None, "baseline") => StateBackend::None,
            (Servers::None, _) => StateBackend::Estate,
        }
    }
}

/// The `ids` configuration of the experiment.
pub(crate) fn ids_config(threshold: u64) -> String {
    format!("pattern = attack\npattern = evil\nthreshold = {threshold}\n")
}

pub(crate) fn run(run: &Run, args: Fig5Args) -> anyhow::Result<()> {
    for system in &args.systems {
        if !SYSTEMS.contains(&system.as_str()) {
            bail!("unknown system {system:?}: expected {}", SYSTEMS.join(", "));
        }
    }
    if args.instances.is_empty() || args.instances.contains(&0) || args.repetitions == 0 {
        bail!("--instances needs numbers >= 1 and --repetitions >= 1");
    }
    let ids = prepare(&args.out)?;
    let total = args.instances.len() * args.repetitions * args.systems.len();
    let mut rows = Vec::new();
    for &n in &args.instances {
        for repetition in 1..=args.repetitions {
            // Systems interleaved, so a slow phase of the machine hits them alike.
            for system in &args.systems {
                let label = format!("{system} n={n} rep={repetition}");
                run.progress(&format!("[{}/{total}] fig5 {label}: starting", rows.len() + 1));
                let row = one(run, &args, &ids, system, n, repetition).with_context(|| label.clone())?;
                run.progress(&format!(
                    "[{}/{total}] fig5 {label}: {:.0} packets/s per instance, {:.0} overall, global delay {}",
                    rows.len() + 1,
                    row.pps_per_instance,
                    row.pps_overall,
                    row.global_delay_ms.map_or("-".into(), |d| format!("{d:.2} ms")),
                ));
                rows.push(row);
            }
        }
    }
    report(&args.out, &rows)
}

/// One run.
fn one(run: &Run, args: &Fig5Args, ids: &Path, system: &str, n: usize, repetition: usize) -> anyhow::Result<Row> {
    let servers = Servers::start(system, n)?;
    let backend = servers.backend(system);
    let logs = args.out.join("logs").join(format!("fig5-{system}-n{n}-r{repetition}"));
    std::fs::create_dir_all(&logs)?;
    let packets = args.packets.unwrap_or(u64::MAX / 2);
    let mut instances: Vec<Instance> = Vec::new();
    for i in 0..n {
        let input = format!(
            "synth:seed={},first={},flows={},packets={packets},share={},patterns=attack|evil",
            repetition * 1000 + i + 1,
            i * args.flows,
            args.flows,
            args.share
        );
        let mut node_args = vec!["--input".to_string(), input, "--state-backend".into(), backend.to_string()];
        if system == "baseline" {
            node_args.extend(["--flow-state".into(), "off".into()]);
        }
        if system == "estate" {
            let hb = args.heartbeat_ms;
            for (flag, ms) in [("--heartbeat-ms", hb), ("--suspect-ms", hb * 5), ("--remove-ms", hb * 15)] {
                node_args.extend([flag.to_string(), ms.to_string()]);
            }
        }
        // Only estate's instances form a cluster: the others share through Redis, or not at all.
        let join = instances.first().filter(|_| system == "estate").map(|first| first.listen.clone());
        instances.push(Instance::start(&logs, &format!("nf{}", i + 1), join.as_deref(), &node_args)?);
    }
    if system == "estate" {
        for instance in &instances {
            instance.wait_members(n)?;
        }
    }
    // Loaded side by side, so the instances start (and compile the module) together.
    let config = ids_config(args.threshold);
    std::thread::scope(|s| {
        let loads: Vec<_> = instances.iter().map(|i| s.spawn(|| i.load_nf(ids, &config))).collect();
        loads.into_iter().try_for_each(|l| l.join().unwrap_or_else(|_| bail!("loading the NF panicked")))
    })?;
    // The window starts once every instance has handled a packet.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !instances
        .iter()
        .map(|i| i.stats().map(|s| s["nf_packets"] > 0))
        .collect::<anyhow::Result<Vec<_>>>()?
        .iter()
        .all(|&b| b)
    {
        if Instant::now() > deadline {
            bail!("not every instance started handling packets within 60 s");
        }
        run.sleep(Duration::from_millis(20))?;
    }
    let start = Instant::now();
    let before = packets_of(&instances)?;
    let window = Duration::from_secs_f64(args.duration);
    while start.elapsed() < window {
        run.sleep(Duration::from_millis(100))?;
        if args.packets.is_some() && all_finished(&instances)? {
            break;
        }
    }
    let after = packets_of(&instances)?;
    let seconds = start.elapsed().as_secs_f64();
    if args.packets.is_some() {
        // Comparable counts need every packet handled.
        let deadline = Instant::now() + window * 10 + Duration::from_secs(60);
        while !all_finished(&instances)? {
            if Instant::now() > deadline {
                bail!("the instances did not handle their {packets} packets in time");
            }
            run.sleep(Duration::from_millis(100))?;
        }
    }
    for instance in &instances {
        instance.unload_nf()?;
    }
    let stats: Vec<BTreeMap<String, u64>> = instances.iter().map(Instance::stats).collect::<anyhow::Result<_>>()?;
    let sum = |name: &str| stats.iter().map(|s| s.get(name).copied().unwrap_or(0)).sum::<u64>();
    let rates: Vec<f64> = before.iter().zip(&after).map(|(b, a)| (a - b) as f64 / seconds).collect();
    let (reads, read_us) = (sum("nf_global_reads"), sum("nf_global_read_us"));
    let state = state_totals(&instances, &backend)?;
    let row = Row {
        system: system.into(),
        instances: n,
        repetition,
        seconds,
        window_packets: after.iter().sum::<u64>() - before.iter().sum::<u64>(),
        pps_per_instance: rates.iter().sum::<f64>() / n as f64,
        pps_overall: rates.iter().sum(),
        global_reads: reads,
        global_delay_ms: (reads > 0).then(|| read_us as f64 / reads as f64 / 1000.0),
        packets: sum("nf_packets"),
        state_packets: state["ids:packets"],
        matches: state["ids:matches"],
        alerts: state["ids:alerts"],
        backend_errors: sum("nf_backend_errors"),
    };
    if row.state_packets != row.packets as i64 {
        bail!("the state counts {} packets, the NFs handled {}", row.state_packets, row.packets);
    }
    drop(instances);
    drop(servers);
    Ok(row)
}

fn packets_of(instances: &[Instance]) -> anyhow::Result<Vec<u64>> {
    instances.iter().map(|i| Ok(i.stats()?["nf_packets"])).collect()
}

fn all_finished(instances: &[Instance]) -> anyhow::Result<bool> {
    for instance in instances {
        if instance.nf_status()? != "finished" {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `ids:packets`, `ids:matches` and `ids:alerts` summed over the instances, read where
/// the system keeps them.
fn state_totals(instances: &[Instance], backend: &StateBackend) -> anyhow::Result<BTreeMap<&'static str, i64>> {
    let keys = ["ids:packets", "ids:matches", "ids:alerts"];
    let mut totals: BTreeMap<&'static str, i64> = keys.iter().map(|k| (*k, 0)).collect();
    for instance in instances {
        match backend {
            StateBackend::Estate | StateBackend::None => {
                for key in keys {
                    *totals.get_mut(key).unwrap() += instance.local_int(key)?;
                }
            }
            redis => {
                let state = RedisState::connect(redis, "default", &instance.name, Default::default())?;
                for item in state.held().map_err(anyhow::Error::msg)? {
                    if let (Some(total), estate_guest::Value::Int(n)) = (totals.get_mut(item.key.as_str()), item.value)
                    {
                        *total += n;
                    }
                }
            }
        }
    }
    Ok(totals)
}

/// Writes `fig5.csv` (every run), `fig5-medians.csv`, `fig5.png`, and prints the
/// paper's claims and this targets against the medians.
fn report(dir: &Path, rows: &[Row]) -> anyhow::Result<()> {
    write_csv(&dir.join("fig5.csv"), rows)?;
    let mut groups: BTreeMap<(usize, usize), Vec<&Row>> = BTreeMap::new();
    for row in rows {
        let rank = SYSTEMS.iter().position(|s| *s == row.system).unwrap_or(SYSTEMS.len());
        groups.entry((row.instances, rank)).or_default().push(row);
    }
    let medians: Vec<Median> = groups
        .values()
        .map(|runs| {
            let delays: Vec<f64> = runs.iter().filter_map(|r| r.global_delay_ms).collect();
            Median {
                system: runs[0].system.clone(),
                instances: runs[0].instances,
                runs: runs.len(),
                pps_per_instance: median(runs.iter().map(|r| r.pps_per_instance).collect()),
                pps_overall: median(runs.iter().map(|r| r.pps_overall).collect()),
                global_delay_ms: (!delays.is_empty()).then(|| median(delays)),
            }
        })
        .collect();
    write_csv(&dir.join("fig5-medians.csv"), &medians)?;
    let points: Vec<Fig5Point> = medians
        .iter()
        .map(|m| Fig5Point {
            system: m.system.clone(),
            instances: m.instances,
            pps_per_instance: m.pps_per_instance,
            pps_overall: m.pps_overall,
            global_delay_ms: m.global_delay_ms,
        })
        .collect();
    plot::fig5(&points, &dir.join("fig5.png")).map_err(anyhow::Error::msg)?;
    let at = |system: &str, n: usize| medians.iter().find(|m| m.system == system && m.instances == n);
    println!("fig5 (medians): instances, estate/baseline, estate/centralmem, estate/clustermem per instance");
    let mut instance_counts: Vec<usize> = medians.iter().map(|m| m.instances).collect();
    instance_counts.dedup();
    for &n in &instance_counts {
        let ratio = |other: &str| match (at("estate", n), at(other, n)) {
            (Some(e), Some(o)) => format!("{:.2}", e.pps_per_instance / o.pps_per_instance),
            _ => "-".into(),
        };
        println!("  {n:>3}  {:>8}  {:>8}  {:>8}", ratio("baseline"), ratio("centralmem"), ratio("clustermem"));
    }
    let delay = |system: &str, n: usize| at(system, n).and_then(|m| m.global_delay_ms);
    println!("fig5 (medians): instances, global delay ms of centralmem, clustermem, estate");
    for &n in &instance_counts {
        let show = |d: Option<f64>| d.map_or("-".into(), |d| format!("{d:.3}"));
        let (c, k, e) = (delay("centralmem", n), delay("clustermem", n), delay("estate", n));
        println!("  {n:>3}  {:>8}  {:>8}  {:>8}", show(c), show(k), show(e));
    }
    println!("wrote fig5.csv, fig5-medians.csv and fig5.png in {}", dir.display());
    Ok(())
}
