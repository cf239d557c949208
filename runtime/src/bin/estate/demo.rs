//! `estate demo`: three nodes on loopback (real ZeroMQ over TCP), a write on each, and
//! global reads — built-in reducers, and the `sum` reducer guest run under wasmtime
//! over the items a global `list` brought back.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use estate::guests;
use estate::nf::input::synth::{SynthConfig, synthetic};
use estate::nf::{FailPolicy, FlowState};
use estate::node::{Consistency, GlobalOptions, Node, NodeConfig};
use estate::reduce::Reduced;
use estate::text::human;
use estate::wasm::{Limits, WasmHost};
use estate_guest::Value;

fn wait_for_members(nodes: &[&Node], n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes.iter().any(|node| node.members().iter().filter(|m| m.state != "joining").count() != n) {
        if Instant::now() > deadline {
            bail!("the nodes did not find each other within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn show(r: &Reduced) -> String {
    match r {
        Reduced::Nothing => "(nothing)".into(),
        Reduced::Value(v) => human(v),
        Reduced::Item(i) if i.origin.is_empty() => human(&i.value),
        Reduced::Item(i) if i.writer == i.origin => {
            format!("{} (from {}, version {})", human(&i.value), i.origin, i.version)
        }
        Reduced::Item(i) => {
            format!("{} (from {}, written by {} at version {})", human(&i.value), i.origin, i.writer, i.version)
        }
        Reduced::Items(items) => format!("{} items", items.len()),
    }
}

/// The sum of `c` over the cluster as `node` reads it, with who answered.
fn sum_of_c(node: &Node) -> anyhow::Result<String> {
    let answer = node.get_global("c", "sum", GlobalOptions::default())?;
    Ok(format!("{}   (answered: {})", show(&answer.result), answer.answered.join(", ")))
}

pub fn run() -> anyhow::Result<()> {
    let n1 = Node::start(NodeConfig::new("n1", "tcp://127.0.0.1:*"))?;
    let mut nodes = vec![n1];
    for id in ["n2", "n3"] {
        let mut config = NodeConfig::new(id, "tcp://127.0.0.1:*");
        config.join.push(nodes[0].endpoint().to_string());
        nodes.push(Node::start(config)?);
    }
    for n in &nodes {
        println!("node {} listening on {}", n.id(), n.endpoint());
    }
    wait_for_members(&nodes.iter().collect::<Vec<_>>(), 3)?;
    let view: Vec<String> = nodes[0].members().into_iter().map(|m| m.id).collect();
    println!("membership seen by n1: {}", view.join(", "));

    for (node, (c, flows)) in nodes.iter().zip([(1_234_567, 2), (1, 3), (10, 1)]) {
        // A counter: its shares add up wherever they move (a take, a leave).
        node.add("c", c)?;
        for f in 0..flows {
            node.set(&format!("flow:{}:{f}", node.id()), Value::Int(100 + f))?;
        }
        println!("{}: set c = {c} and {flows} flow:* keys", node.id());
    }
    // n2 writes after it has seen n3's write (through a global read): its write is then
    // the newer one by causality, whatever the two clocks say, since every answer's
    // clock moves n2's hybrid logical clock past n3's write.
    nodes[2].set("owner", Value::Text("n3 was first".into()))?;
    let everyone = GlobalOptions { consistency: Consistency::All, ..GlobalOptions::default() };
    nodes[1].get_global("owner", "latest", everyone)?;
    nodes[1].set("owner", Value::Text("n2 wrote last".into()))?;
    println!("n3: set owner; n2: read owner (global), then set owner");

    let opts = GlobalOptions::default();
    for (pattern, reducer) in [("c", "sum"), ("flow:.*", "count"), ("flow:.*", "max"), ("owner", "latest")] {
        let answer = nodes[0].get_global(pattern, reducer, opts)?;
        println!(
            "n1: global {pattern:?} --reduce {reducer} = {}   (answered: {})",
            show(&answer.result),
            answer.answered.join(", ")
        );
    }

    // The same sum, computed by a Wasm guest over the items a global list fetched.
    let host = WasmHost::new(Limits::default())?;
    let sum = host.load_reducer(&guests::require("reducer_sum")?).context("loading the sum guest")?;
    let Reduced::Items(items) = nodes[1].get_global("c", "list", opts)?.result else {
        bail!("list returned no item list");
    };
    let total = host.reduce_all(&sum, &items)?.map_or("(nothing)".into(), |item| human(&item.value));
    println!("n2: wasm reducer_sum over global list of \"c\" ({} items) = {total}", items.len());

    // Hot-load a Wasm reducer into the running n1 and push it down: n2 and n3 fetch the
    // module from n1 by hash, and each sends one partial (sum, count) instead of items.
    let info = nodes[0].load_reducer("mean", guests::require("reducer_mean")?, &Default::default())?;
    println!("n1: reducer load mean (sha256 {}…, combinable: {})", &info.hash[..12], info.combinable);
    let remote = GlobalOptions { remote: true, timeout: Duration::from_secs(10), ..opts };
    for (pattern, options, mode) in [("flow:.*", opts, "fetch-all"), ("flow:.*", remote, "push-down")] {
        let answer = nodes[0].get_global(pattern, "mean", options)?;
        println!("n1: global {pattern:?} --reduce mean ({mode}) = {}", show(&answer.result));
    }

    // The paper's scenario: the ids NF (a Wasm guest) runs on n1 over 20 flows; then
    // flows 10..20 move to n2 (the fabric marks them), and n2 takes their state over
    // before it sees their first packet, so the per-flow counters continue.
    let ids = guests::require("nf_ids")?;
    let config = "pattern = attack\npattern = evil\nthreshold = 1000000\n";
    let run = |node: &Node, spec: &str| -> anyhow::Result<()> {
        let packets = synthetic(&spec.parse::<SynthConfig>().map_err(anyhow::Error::msg)?);
        node.run_nf(&ids, config, Box::new(packets), FailPolicy::Open, FlowState::Take)?;
        while !node.nf_finished() {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    };
    run(&nodes[0], "seed=1,flows=20,packets=2000,share=0.3")?;
    let moved_flow = synthetic(&"first=15,flows=1,packets=1".parse::<SynthConfig>().map_err(anyhow::Error::msg)?)
        .next()
        .map(|p| p.flow)
        .unwrap_or_default();
    let key = format!("flow:{moved_flow}:matches");
    let on = |node: &Node| node.get(&key).map_or("-".to_string(), |v| human(&v.value));
    println!("ids on n1: 2000 packets, 20 flows; {key} = {} on n1", on(&nodes[0]));
    run(&nodes[1], "seed=2,first=10,flows=10,packets=1000,share=0.3,moved=1")?;
    println!("flows 10..20 moved to n2 (1000 packets): {key} = {} on n2, {} on n1", on(&nodes[1]), on(&nodes[0]));
    let total = nodes[0].get_global("flow:.*:matches", "sum", opts)?;
    println!("n1: global \"flow:.*:matches\" --reduce sum = {}   (every match counted once)", show(&total.result));

    // Scale-in, the graceful way: n2 hands its state to the others (its share of the
    // counter `c` is added into a member's), leaves, and the sum stays.
    println!("before scale-in: n1: global \"c\" --reduce sum = {}", sum_of_c(&nodes[0])?);
    let report = nodes[1].leave(Duration::from_secs(10)).context("n2 leaving")?;
    println!("[graceful leave] n2 handed {} items to the others and left", report.items);
    println!("[graceful leave] n1: global \"c\" --reduce sum = {}   (kept)", sum_of_c(&nodes[0])?);

    // A crash: n3 stops without handing anything over, as a killed process would; what it
    // held (its own share of c and whatever it took over from n2) is gone.
    let held = nodes[2].get("c").map_or("nothing".into(), |v| human(&v.value));
    nodes.remove(2).shutdown();
    println!("[crash] n3 stopped without handing over its state (it held c = {held})");
    println!("[crash] n1: global \"c\" --reduce sum = {}   (n3's share lost)", sum_of_c(&nodes[0])?);
    for node in nodes {
        node.shutdown();
    }
    Ok(())
}
