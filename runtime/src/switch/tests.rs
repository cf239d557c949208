use super::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::nf::counters::NfCounters;
use crate::nf::input::synth::{SynthConfig, synthetic};

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn flows(n: usize) -> Vec<String> {
    let config = SynthConfig { flows: n, packets: 20 * n, ..SynthConfig::default() };
    let mut keys: Vec<String> = synthetic(&config).map(|p| p.flow).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n);
    keys
}

fn table(start: &[&str], flows: &[String]) -> Assignment {
    let mut a = Assignment::new(names(&["A", "B", "C"]), &names(start)).unwrap();
    for f in flows {
        a.route(f);
    }
    a
}

#[test]
fn marks_are_vlan_ids_that_change_with_every_move() {
    assert_eq!(mark_of_move(0), 0);
    assert_eq!((mark_of_move(1), mark_of_move(2), mark_of_move(3)), (1, 2, 3));
    assert_eq!(mark_of_move(4094), 4094);
    assert_eq!(mark_of_move(4095), 1, "wraps, skipping 0 and 4095");
    assert!((1..20_000).all(|n| mark_of_move(n) != mark_of_move(n + 1)));
    assert!((1..20_000).all(|n| (1..=MAX_MARK).contains(&mark_of_move(n))));
}

#[test]
fn new_flows_spread_over_the_start_nodes_the_same_way_every_time() {
    let keys = flows(60);
    let a = table(&["A", "B"], &keys);
    let b = table(&["A", "B"], &keys);
    for f in &keys {
        assert_eq!(a.current(f), b.current(f));
        assert_eq!(a.current(f).unwrap().mark, 0);
    }
    let (on_a, on_b) = (a.flows_at(0), a.flows_at(1));
    assert_eq!((on_a + on_b, a.flows_at(2)), (60, 0));
    assert!((15..=45).contains(&on_a), "{on_a} of 60 on A");
    // Without start nodes, the first node takes everything.
    assert_eq!(table(&[], &keys).flows_at(0), 60);
}

#[test]
fn a_move_takes_its_fraction_deterministically() {
    let keys = flows(40);
    let mut a = table(&["A"], &keys);
    assert_eq!(a.move_share(0, 1, 0.5, 1), 20);
    assert_eq!((a.flows_at(0), a.flows_at(1)), (20, 20));
    let mut b = table(&["A"], &keys);
    b.move_share(0, 1, 0.5, 1);
    let moved: Vec<&String> = keys.iter().filter(|f| a.current(f).unwrap().node == 1).collect();
    assert!(moved.iter().all(|f| b.current(f).unwrap().node == 1), "the same flows move");
    assert!(moved.iter().all(|f| a.current(f).unwrap().mark == 1));
    // Another salt picks other flows; a tiny share still moves one; 1 moves all.
    let mut c = table(&["A"], &keys);
    c.move_share(0, 1, 0.5, 2);
    assert!(moved.iter().any(|f| c.current(f).unwrap().node == 0));
    assert_eq!(table(&["A"], &keys).move_share(0, 1, 0.001, 1), 1);
    assert_eq!(table(&["A"], &keys).move_share(0, 2, 1.0, 1), 40);
    // Only the source node's flows move; nothing to move is no move.
    assert_eq!(a.move_share(2, 1, 1.0, 3), 0);
    assert_eq!(a.move_share(1, 2, 0.25, 4), 5);
    assert_eq!((a.flows_at(0), a.flows_at(1), a.flows_at(2)), (20, 15, 5));
}

#[test]
fn a_drain_moves_everything_and_takes_no_new_flows() {
    let keys = flows(30);
    let mut a = table(&["A", "B"], &keys[..20]);
    let on_b = a.flows_at(1);
    assert_eq!(a.drain(1, 0), on_b);
    assert_eq!((a.flows_at(0), a.flows_at(1)), (20, 0));
    for f in &keys[20..] {
        assert_eq!(a.route(f).node, 0, "new flows avoid the drained node");
    }
    // Draining the last start node hands new flows to its successor.
    let mut solo = table(&["A"], &keys[..5]);
    solo.drain(0, 2);
    assert_eq!(solo.route(&keys[10]).node, 2);
}

#[test]
fn marks_increase_with_every_move_of_a_flow() {
    let keys = flows(1);
    let mut a = table(&["A"], &keys);
    let mut marks = vec![a.route(&keys[0]).mark];
    for (from, to) in [(0, 1), (1, 0), (0, 1), (1, 2)] {
        assert_eq!(a.move_share(from, to, 1.0, 9), 1);
        marks.push(a.route(&keys[0]).mark);
    }
    assert_eq!(marks, [0, 1, 2, 3, 4]);
    let summary = a.summary();
    assert_eq!(summary[0].moves, 4);
    assert_eq!(summary[0].node, "C");
    assert_eq!(summary[0].packets, 6);
    let path: Vec<(&str, u16, u64)> = summary[0].path.iter().map(|s| (s.node.as_str(), s.mark, s.packets)).collect();
    assert_eq!(path, [("A", 0, 2), ("B", 1, 1), ("A", 2, 1), ("B", 3, 1), ("C", 4, 1)]);
}

#[test]
fn schedule_errors_name_the_event_and_the_problem() {
    let nodes = names(&["A", "B"]);
    let ok: Event = "100:move:0.5:A:B".parse().unwrap();
    assert_eq!(ok, Event { after: 100, step: Step::Move { fraction: 0.5, from: "A".into(), to: "B".into() } });
    assert_eq!(ok.to_string(), "100:move:0.5:A:B");
    assert_eq!("7:drain:B:A".parse::<Event>().unwrap().to_string(), "7:drain:B:A");
    for (spec, needle) in [
        ("x:move:0.5:A:B", "\"x\" is not a packet count"),
        ("", "is not a packet count"),
        ("10", "expected N:move:FRACTION:FROM:TO or N:drain:FROM:TO"),
        ("10:jump:A:B", "unknown action \"jump\""),
        ("10:move:0:A:B", "fraction \"0\""),
        ("10:move:1.5:A:B", "within (0, 1]"),
        ("10:move:NaN:A:B", "fraction \"NaN\""),
        ("10:move:half:A:B", "fraction \"half\""),
        ("10:move:A:B", "expected N:move:FRACTION:FROM:TO"),
        ("10:drain:A", "expected N:drain:FROM:TO"),
        ("10:drain:A:B:C", "expected N:drain:FROM:TO"),
        ("10:drain:A:A", "from A to itself"),
        ("10:drain::A", "\"\" is not a node name"),
    ] {
        let e = spec.parse::<Event>().unwrap_err().to_string();
        assert!(e.contains(&format!("{spec:?}")) && e.contains(needle), "{spec:?}: {e}");
    }
    let schedule = |specs: &[&str]| {
        Schedule::new(specs.iter().map(|s| s.parse().unwrap()).collect(), &nodes).map(|s| s.events().to_vec())
    };
    let e = schedule(&["10:move:0.5:A:C"]).unwrap_err().to_string();
    assert!(e.contains("\"10:move:0.5:A:C\"") && e.contains("no node named \"C\" (nodes: A, B)"), "{e}");
    let e = schedule(&["10:drain:B:A", "20:move:0.5:A:B"]).unwrap_err().to_string();
    assert!(e.contains("\"20:move:0.5:A:B\"") && e.contains("node B is drained after packet 10"), "{e}");
    // Ordered by packet count, stable among equals.
    let events = schedule(&["30:drain:B:A", "10:move:0.5:A:B", "10:move:1:A:B"]).unwrap();
    let order: Vec<String> = events.iter().map(Event::to_string).collect();
    assert_eq!(order, ["10:move:0.5:A:B", "10:move:1:A:B", "30:drain:B:A"]);
}

#[test]
fn assignment_refuses_bad_nodes() {
    assert!(Assignment::new(vec![], &[]).is_err());
    let e = Assignment::new(names(&["A", "A"]), &[]).unwrap_err().to_string();
    assert!(e.contains("named twice"), "{e}");
    let e = Assignment::new(names(&["A", "B"]), &names(&["C"])).unwrap_err().to_string();
    assert!(e.contains("start node \"C\""), "{e}");
    assert!(Assignment::new(names(&["a:b"]), &[]).is_err());
}

/// A fabric that keeps what it was sent, refuses everything for `dead` nodes, and
/// records its settle calls.
#[derive(Default)]
struct Recorder {
    frames: Vec<Vec<Vec<u8>>>,
    dead: Vec<usize>,
    settles: Vec<(usize, u64)>,
}

impl Fabric for Recorder {
    fn send(&mut self, node: usize, frame: &[u8]) -> bool {
        if self.dead.contains(&node) {
            return false;
        }
        self.frames[node].push(frame.to_vec());
        true
    }

    fn settle(&mut self, node: usize, delivered: u64) -> bool {
        self.settles.push((node, delivered));
        true
    }
}

#[test]
fn a_run_sends_tags_moves_and_ends_every_input() {
    let config: SynthConfig = "seed=4,flows=20,packets=3000,share=0".parse().unwrap();
    let packets: Vec<OwnedPacket> = synthetic(&config).collect();
    let nodes = names(&["A", "B", "C"]);
    let events = ["1000:move:0.5:A:B", "2000:drain:B:A", "5000:move:0.5:A:C"];
    let schedule = Schedule::new(events.iter().map(|s| s.parse().unwrap()).collect(), &nodes).unwrap();
    let mut assignment = Assignment::new(nodes, &[]).unwrap();
    let mut fabric = Recorder { frames: vec![vec![]; 3], ..Recorder::default() };
    let report = run(packets.clone(), &mut assignment, &schedule, &mut fabric, None, None);

    assert_eq!(report.packets, 3000);
    assert_eq!(report.undeliverable(), 0);
    let moves: Vec<(&str, usize)> = report.moves.iter().map(|m| (m.event.as_str(), m.flows)).collect();
    assert_eq!(moves, [("1000:move:0.5:A:B", 10), ("2000:drain:B:A", 10)]);
    assert_eq!(report.skipped, ["5000:move:0.5:A:C"]);
    // Settled the old node with what it had been sent at that point.
    assert_eq!(fabric.settles, [(0, 1000), (1, report.nodes[1].sent)]);
    // Each input ended exactly once, with an empty frame last; C got nothing else.
    assert_eq!(fabric.frames[2], [Vec::<u8>::new()]);
    for node in &fabric.frames {
        assert_eq!(node.iter().filter(|f| f.is_empty()).count(), 1);
        assert!(node.last().unwrap().is_empty());
    }
    assert!(report.nodes.iter().all(|n| n.ended));
    let sent: u64 = report.nodes.iter().map(|n| n.sent).sum();
    assert_eq!(sent, 3000);

    // What B got: moved flows only, all with mark 1; A's later packets of the same
    // flows carry mark 2.
    let parse = |f: &Vec<u8>| {
        let p = pcap::parse(f).unwrap();
        (estate_guest::nf::flow_key(p.proto, p.src, p.dst), p.mark)
    };
    let on_b: Vec<(String, u16)> = fabric.frames[1].iter().filter(|f| !f.is_empty()).map(parse).collect();
    assert!(on_b.iter().all(|(_, mark)| *mark == 1));
    let on_a: Vec<(String, u16)> = fabric.frames[0].iter().filter(|f| !f.is_empty()).map(parse).collect();
    assert_eq!(on_a[..1000].iter().filter(|(_, m)| *m != 0).count(), 0);
    let back: std::collections::BTreeSet<&String> = on_a.iter().filter(|(_, m)| *m == 2).map(|(f, _)| f).collect();
    let went: std::collections::BTreeSet<&String> = on_b.iter().map(|(f, _)| f).collect();
    assert!(back.is_subset(&went) && !back.is_empty());

    // The summary adds up and matches the stream.
    let summary = assignment.summary();
    assert_eq!(summary.len(), 20);
    assert_eq!(summary.iter().map(|f| f.packets).sum::<u64>(), 3000);
    for f in &summary {
        assert_eq!(f.packets, packets.iter().filter(|p| p.flow == f.flow).count() as u64, "{}", f.flow);
        assert_eq!(f.node, "A");
        assert_eq!(f.path.iter().map(|s| s.packets).sum::<u64>(), f.packets);
    }
}

/// Commands given at fixed points of the stream (by packets sent), with their answers.
struct Scripted {
    script: Vec<(u64, &'static str)>,
    sent: std::rc::Rc<std::cell::Cell<u64>>,
    answers: Vec<Result<String, String>>,
}

impl Commands for Scripted {
    fn poll(&mut self) -> Option<Step> {
        let (at, text) = *self.script.first()?;
        if at > self.sent.get() {
            return None;
        }
        self.script.remove(0);
        match parse_command(text) {
            Ok(step) => Some(step),
            Err(e) => {
                self.answers.push(Err(e.to_string()));
                self.poll()
            }
        }
    }

    fn answer(&mut self, outcome: Result<String, String>) {
        self.answers.push(outcome);
    }
}

/// A recorder that also counts what it was sent, for [`Scripted`].
struct Counting(Recorder, std::rc::Rc<std::cell::Cell<u64>>);

impl Fabric for Counting {
    fn send(&mut self, node: usize, frame: &[u8]) -> bool {
        self.1.set(self.1.get() + !frame.is_empty() as u64);
        self.0.send(node, frame)
    }

    fn settle(&mut self, node: usize, delivered: u64) -> bool {
        self.0.settle(node, delivered)
    }
}

#[test]
fn commands_take_steps_while_the_stream_runs_and_bad_ones_are_refused() {
    let config: SynthConfig = "seed=4,flows=20,packets=3000,share=0".parse().unwrap();
    let nodes = names(&["A", "B"]);
    let mut assignment = Assignment::new(nodes, &[]).unwrap();
    let sent = std::rc::Rc::new(std::cell::Cell::new(0));
    let mut fabric = Counting(Recorder { frames: vec![vec![]; 2], ..Recorder::default() }, sent.clone());
    let mut commands = Scripted {
        script: vec![
            (500, "move 0.5 A B"),
            (600, "move 2 A B"),
            (700, "jump A B"),
            (800, "move 0.5 A C"),
            (1500, "drain B A"),
            (1600, "move 0.5 A B"),
        ],
        sent,
        answers: Vec::new(),
    };
    let report = run(synthetic(&config), &mut assignment, &Schedule::default(), &mut fabric, None, Some(&mut commands));
    let answers = &commands.answers;
    assert_eq!(answers.len(), 6, "{answers:?}");
    assert_eq!(answers[0], Ok("move 0.5 A B after 512 packets: 10 flows".to_string()), "polled every 16 packets");
    assert!(answers[1].as_ref().unwrap_err().contains("fraction"), "{answers:?}");
    assert!(answers[2].as_ref().unwrap_err().contains("unknown action"), "{answers:?}");
    assert!(answers[3].as_ref().unwrap_err().contains("no node"), "{answers:?}");
    assert_eq!(answers[4], Ok("drain B A after 1504 packets: 10 flows".to_string()));
    assert!(answers[5].as_ref().unwrap_err().contains("B was drained"), "{answers:?}");
    let moves: Vec<(&str, usize)> = report.moves.iter().map(|m| (m.event.as_str(), m.flows)).collect();
    assert_eq!(moves, [("512:move:0.5:A:B", 10), ("1504:drain:B:A", 10)]);
    assert_eq!(report.packets, 3000);
    assert!(report.nodes.iter().all(|n| n.ended));
}

#[test]
fn undeliverable_packets_are_counted_per_node_and_flow() {
    let config: SynthConfig = "seed=5,flows=10,packets=500,share=0".parse().unwrap();
    let nodes = names(&["A", "B"]);
    let mut assignment = Assignment::new(nodes.clone(), &nodes).unwrap();
    let mut fabric = Recorder { frames: vec![vec![], vec![]], dead: vec![1], ..Recorder::default() };
    let report = run(synthetic(&config), &mut assignment, &Schedule::default(), &mut fabric, None, None);
    assert_eq!(report.nodes[1].sent, 0);
    assert_eq!(report.undeliverable(), report.nodes[1].undeliverable);
    assert_eq!(report.nodes[0].sent + report.nodes[1].undeliverable, 500);
    assert!(report.nodes[0].ended && !report.nodes[1].ended);
    let lost: u64 = assignment.summary().iter().flat_map(|f| &f.path).map(|s| s.undeliverable).sum();
    assert_eq!(lost, report.nodes[1].undeliverable);
}

#[test]
fn pacing_holds_the_rate() {
    // At 500 packets/s the nth packet is due at n × 2 ms after the start.
    let mut pacer = Pacer { rate: 500.0, since: Instant::now(), count: 0 };
    assert_eq!(pacer.wait(Duration::ZERO), Duration::from_millis(2));
    for _ in 2..50 {
        pacer.wait(Duration::ZERO);
    }
    assert_eq!(pacer.wait(Duration::from_millis(40)), Duration::from_millis(60), "the 50th, 40 ms in");
    assert_eq!(pacer.wait(Duration::from_millis(500)), Duration::ZERO, "late: no wait, no burst to catch up");
    pacer.restart();
    assert_eq!(pacer.wait(Duration::ZERO), Duration::from_millis(2), "counted again after a restart");
}

#[test]
fn steered_frames_reach_the_source_over_zeromq() {
    let counters = Arc::new(NfCounters::default());
    let mut source = SteerSource::bind("tcp://127.0.0.1:*", counters.clone()).unwrap();
    assert!(source.endpoint().starts_with("tcp://127.0.0.1:") && !source.endpoint().ends_with('*'));
    let config: SynthConfig = "seed=7,flows=4,packets=30,share=0".parse().unwrap();
    let mut packets: Vec<OwnedPacket> = synthetic(&config).collect();
    packets[3].mark = 2;
    let nodes = vec![("A".to_string(), source.endpoint().to_string())];
    let mut fabric =
        ZmqFabric::connect(&nodes, &HashMap::new(), Duration::from_secs(5), Duration::from_secs(1)).unwrap();
    assert!(fabric.send(0, &pcap::frame(&packets[0])));
    assert!(fabric.send(0, b"garbage"));
    for p in &packets[1..] {
        assert!(fabric.send(0, &pcap::frame(p)));
    }
    assert!(fabric.send(0, &[]));
    let got: Vec<OwnedPacket> = source.by_ref().collect();
    assert_eq!(got.len(), 30);
    assert_eq!(counters.bad_frames.load(Ordering::Relaxed), 1);
    for (a, b) in packets.iter().zip(&got) {
        assert_eq!((&a.flow, &a.payload, a.mark), (&b.flow, &b.payload, b.mark));
    }
    assert!(source.next().is_none(), "ended for good");
}

#[test]
fn a_waiting_source_stops_when_asked() {
    let source = SteerSource::bind("tcp://127.0.0.1:*", Arc::default()).unwrap();
    let stop = source.stop.clone();
    let (done, ended) = std::sync::mpsc::channel();
    let waiting = std::thread::spawn(move || done.send(source.count()).unwrap());
    // It waits for packets (several bounded polls) until it is asked to stop.
    assert!(ended.recv_timeout(Duration::from_millis(300)).is_err(), "a source without packets keeps waiting");
    stop.store(true, Ordering::Relaxed);
    // A generous bound only against a hang: the source checks its flag between polls.
    assert_eq!(ended.recv_timeout(Duration::from_secs(30)), Ok(0), "it ended, having seen no packet");
    waiting.join().unwrap();
}

#[test]
fn a_dead_node_costs_one_send_timeout() {
    // Nothing listens on port 1 of loopback.
    let nodes = vec![("A".to_string(), "tcp://127.0.0.1:1".to_string())];
    let mut fabric =
        ZmqFabric::connect(&nodes, &HashMap::new(), Duration::from_millis(100), Duration::from_millis(100)).unwrap();
    assert!(!(0..200).any(|_| fabric.send(0, b"frame")));
    assert_eq!(fabric.timeouts(), 1, "one send waited its timeout; the other 199 did not wait");
}
