//! Unit tests: the firewall over the SDK's `MemoryState`.

use super::*;
use estate_guest::Direction;
use estate_guest::testing::MemoryState;

const CLIENT: ([u8; 4], u16) = ([10, 0, 0, 1], 40000);
const SERVER: ([u8; 4], u16) = ([192, 168, 0, 1], 443);

fn packet(src: ([u8; 4], u16), dst: ([u8; 4], u16), flow: &str) -> Packet<'_> {
    Packet { proto: 6, src, dst, direction: Direction::Forward, moved: false, tcp_flags: 0, flow, payload: b"x" }
}

/// A TCP packet with the flags `tcp_flags`.
fn segment(src: ([u8; 4], u16), dst: ([u8; 4], u16), flow: &str, tcp_flags: u8) -> Packet<'_> {
    Packet { tcp_flags, ..packet(src, dst, flow) }
}

#[test]
fn configuration_parses_and_errors_name_the_line() {
    let fw =
        Firewall::from_config("# nets\ninside = 10.0.0.0/8\n\n  inside=192.168.1.7  \ninside = 0.0.0.0/0").unwrap();
    assert_eq!(fw.inside().len(), 3);
    for (config, needle) in [
        ("inside = 10.0.0.0/8\ninside = 10.1.0.0/8", "line 2 \"inside = 10.1.0.0/8\": 10.1.0.0 has bits set"),
        ("inside = 10.0.0.0/33", "line 1 \"inside = 10.0.0.0/33\": prefix length \"33\""),
        ("inside = 10.0.0/8", "\"10.0.0\" is not an IPv4 address"),
        ("inside = 10.0.0.256/32", "\"10.0.0.256\" is not an IPv4 address"),
        ("inside = +10.0.0.0/8", "is not an IPv4 address"),
        ("inside = 10.0.0.0/", "prefix length \"\""),
        ("inside = ", "\"\" is not an IPv4 address"),
        ("inside = 10.0.0.0/8\noutside = 1.2.3.4", "line 2 \"outside = 1.2.3.4\": unknown setting"),
        ("inside = 10.0.0.0/8\nidle_timeout_ms = 0", "idle_timeout_ms must be an integer >= 1"),
        ("inside = 10.0.0.0/8\nidle_timeout_ms = 5\nidle_timeout_ms = 6", "twice"),
        ("inside 10.0.0.0/8", "line 1 \"inside 10.0.0.0/8\": expected `inside ="),
        ("# nothing", "no inside network"),
        ("", "no inside network"),
    ] {
        let err = Firewall::from_config(config).unwrap_err();
        assert!(err.starts_with("firewall: "), "{config:?}: {err}");
        assert!(err.contains(needle), "{config:?}: {err}");
    }
}

#[test]
fn networks_match_by_prefix() {
    let fw = Firewall::from_config("inside = 10.0.0.0/8\ninside = 172.16.0.0/12\ninside = 192.0.2.9").unwrap();
    for (ip, inside) in [
        ([10, 0, 0, 0], true),
        ([10, 255, 255, 255], true),
        ([11, 0, 0, 0], false),
        ([9, 255, 255, 255], false),
        ([172, 31, 255, 255], true),
        ([172, 32, 0, 0], false),
        ([172, 15, 255, 255], false),
        ([192, 0, 2, 9], true),
        ([192, 0, 2, 8], false),
    ] {
        assert_eq!(fw.is_inside(ip), inside, "{ip:?}");
    }
    let all = Firewall::from_config("inside = 0.0.0.0/0").unwrap();
    assert!(all.is_inside([255, 255, 255, 255]) && all.is_inside([0, 0, 0, 0]));
}

#[test]
fn outside_first_is_dropped_and_return_traffic_of_an_opened_flow_passes() {
    let mut fw = Firewall::from_config("inside = 10.0.0.0/8").unwrap();
    let mut env = MemoryState::default();
    let flow = "6:10.0.0.1:40000-192.168.0.1:443";
    // The server speaks first: no entry, dropped, and no entry is created.
    assert_eq!(fw.on_packet(&packet(SERVER, CLIENT, flow), &mut env), Verdict::Drop);
    assert_eq!(fw.on_packet(&packet(SERVER, CLIENT, flow), &mut env), Verdict::Drop);
    assert_eq!(env.int(&ct_key(flow)), None);
    // The client opens the flow; the server's answers pass from then on.
    assert_eq!(fw.on_packet(&packet(CLIENT, SERVER, flow), &mut env), Verdict::Forward);
    assert_eq!(fw.on_packet(&packet(SERVER, CLIENT, flow), &mut env), Verdict::Forward);
    assert_eq!(fw.on_packet(&packet(CLIENT, SERVER, flow), &mut env), Verdict::Forward);
    assert_eq!(fw.on_packet(&packet(SERVER, CLIENT, flow), &mut env), Verdict::Forward);
    // Another flow of the same server is not opened by the first one.
    let other = "6:10.0.0.2:40001-192.168.0.1:443";
    assert_eq!(fw.on_packet(&packet(SERVER, ([10, 0, 0, 2], 40001), other), &mut env), Verdict::Drop);
    assert_eq!(env.int(&ct_key(flow)), Some(2), "refreshed by each inside packet");
    assert_eq!(env.int(&ct_key(other)), None);
    assert_eq!(env.int("fw:opened"), Some(1));
    assert_eq!(env.int("fw:passed"), Some(4));
    assert_eq!(env.int("fw:dropped"), Some(3));
}

#[test]
fn an_entry_brought_from_another_node_lets_return_traffic_pass_at_once() {
    let mut fw = Firewall::from_config("inside = 10.0.0.0/8").unwrap();
    let flow = "6:10.0.0.1:40000-192.168.0.1:443";
    // The host adopted the flow's entry before its first packet here.
    let mut env = MemoryState::default();
    env.values.insert(ct_key(flow), Value::Int(7));
    let mut p = packet(SERVER, CLIENT, flow);
    p.moved = true;
    p.direction = Direction::Reverse;
    assert_eq!(fw.on_packet(&p, &mut env), Verdict::Forward);
    assert_eq!(fw.on_packet(&packet(CLIENT, SERVER, flow), &mut env), Verdict::Forward);
    assert_eq!(env.int(&ct_key(flow)), Some(8));
    assert_eq!(env.int("fw:opened"), None, "the entry was not created here");
    // Without the entry (no state sharing), the same packet is dropped.
    let mut bare = MemoryState::default();
    assert_eq!(fw.on_packet(&p, &mut bare), Verdict::Drop);
}

#[test]
fn inside_to_inside_passes_and_outside_to_outside_never_does() {
    let mut fw = Firewall::from_config("inside = 10.0.0.0/8").unwrap();
    let mut env = MemoryState::default();
    let a = ([10, 0, 0, 1], 1000);
    let b = ([10, 0, 0, 2], 2000);
    assert_eq!(fw.on_packet(&packet(b, a, "f1"), &mut env), Verdict::Forward);
    assert_eq!(fw.on_packet(&packet(a, b, "f1"), &mut env), Verdict::Forward);
    let x = ([8, 8, 8, 8], 53);
    let y = ([1, 1, 1, 1], 53);
    assert_eq!(fw.on_packet(&packet(x, y, "f2"), &mut env), Verdict::Drop);
    assert_eq!(fw.on_packet(&packet(y, x, "f2"), &mut env), Verdict::Drop);
    assert_eq!(env.int(&ct_key("f1")), Some(2));
    assert_eq!(env.int(&ct_key("f2")), None);
}

#[test]
fn without_a_timeout_entries_never_expire() {
    let mut fw = Firewall::from_config("inside = 10.0.0.0/8").unwrap();
    assert_eq!(fw.idle_timeout_ms(), None);
    let mut env = MemoryState::default();
    let flow = "6:10.0.0.1:40000-192.168.0.1:443";
    fw.on_packet(&packet(CLIENT, SERVER, flow), &mut env);
    env.now = i64::MAX / 2;
    assert_eq!(fw.on_packet(&packet(SERVER, CLIENT, flow), &mut env), Verdict::Forward);
    assert_eq!(env.int(&seen_key(flow)), None, "no clock kept without a timeout");
}

#[test]
fn an_idle_entry_closes_and_return_traffic_keeps_it_open() {
    let mut fw = Firewall::from_config("inside = 10.0.0.0/8\nidle_timeout_ms = 1000").unwrap();
    let mut env = MemoryState::default();
    let flow = "6:10.0.0.1:40000-192.168.0.1:443";
    fw.on_packet(&packet(CLIENT, SERVER, flow), &mut env);
    // Return traffic within the timeout passes, and refreshes the entry.
    for t in [900, 1800, 2700] {
        env.now = t;
        assert_eq!(fw.on_packet(&packet(SERVER, CLIENT, flow), &mut env), Verdict::Forward, "at {t}");
    }
    assert_eq!(env.int(&seen_key(flow)), Some(2700));
    // Idle for longer than the timeout: the entry is closed, and the flow is new.
    env.now = 3701;
    assert_eq!(fw.on_packet(&packet(SERVER, CLIENT, flow), &mut env), Verdict::Drop);
    assert_eq!((env.int(&ct_key(flow)), env.int(&seen_key(flow))), (None, None));
    assert_eq!(env.int("fw:expired"), Some(1));
    // The inside end opens it again.
    assert_eq!(fw.on_packet(&packet(CLIENT, SERVER, flow), &mut env), Verdict::Forward);
    assert_eq!(fw.on_packet(&packet(SERVER, CLIENT, flow), &mut env), Verdict::Forward);
    assert_eq!(env.int("fw:opened"), Some(2));
}

#[test]
fn the_sweep_deletes_entries_of_flows_that_never_send_again() {
    let mut fw = Firewall::from_config("inside = 10.0.0.0/8\nidle_timeout_ms = 1000").unwrap();
    let mut env = MemoryState::default();
    let flows: Vec<String> = (0..100).map(|i| format!("6:10.0.1.{i}:1-192.168.0.1:443")).collect();
    for (i, flow) in flows.iter().enumerate() {
        let client = ([10, 0, 1, i as u8], 1);
        fw.on_packet(&packet(client, SERVER, flow), &mut env);
    }
    // One flow moved away meanwhile: its keys left this node.
    env.values.remove(&ct_key(&flows[7]));
    env.values.remove(&seen_key(&flows[7]));
    assert_eq!(fw.tracked(), 100);
    // Later, one other flow stays busy; every packet of it sweeps a few others.
    env.now = 5000;
    let busy = "6:10.0.0.1:40000-192.168.0.1:443";
    for _ in 0..40 {
        assert_eq!(fw.on_packet(&packet(CLIENT, SERVER, busy), &mut env), Verdict::Forward);
    }
    assert_eq!(fw.tracked(), 1, "only the busy flow is left");
    assert!(flows.iter().all(|f| env.int(&ct_key(f)).is_none() && env.int(&seen_key(f)).is_none()));
    assert_eq!(env.int("fw:expired"), Some(99), "the moved flow was not this node's to close");
    assert_eq!(env.int(&ct_key(busy)), Some(40));
}

#[test]
fn new_tcp_parses_and_defaults_to_any() {
    assert_eq!(Firewall::from_config("inside = 10.0.0.0/8").unwrap().new_tcp(), NewTcp::Any);
    assert_eq!(Firewall::from_config("inside = 10.0.0.0/8\nnew_tcp = any").unwrap().new_tcp(), NewTcp::Any);
    assert_eq!(Firewall::from_config("new_tcp=syn\ninside = 10.0.0.0/8").unwrap().new_tcp(), NewTcp::Syn);
    for (config, needle) in [
        ("inside = 10.0.0.0/8\nnew_tcp = SYN", "line 2 \"new_tcp = SYN\": new_tcp must be `any` or `syn`"),
        ("inside = 10.0.0.0/8\nnew_tcp =", "new_tcp must be `any` or `syn`"),
        ("inside = 10.0.0.0/8\nnew_tcp = syn\nnew_tcp = any", "line 3 \"new_tcp = any\": new_tcp given twice"),
        ("new_tcp = syn", "no inside network"),
    ] {
        let err = Firewall::from_config(config).unwrap_err();
        assert!(err.contains(needle), "{config:?}: {err}");
    }
}

#[test]
fn with_new_tcp_any_any_inside_segment_opens_a_flow() {
    let mut fw = Firewall::from_config("inside = 10.0.0.0/8\nnew_tcp = any").unwrap();
    let mut env = MemoryState::default();
    let flow = "6:10.0.0.1:40000-192.168.0.1:443";
    // A mid-connection segment from inside opens the entry, as it always did.
    assert_eq!(fw.on_packet(&segment(CLIENT, SERVER, flow, tcp::ACK | tcp::PSH), &mut env), Verdict::Forward);
    assert_eq!(fw.on_packet(&segment(SERVER, CLIENT, flow, tcp::ACK), &mut env), Verdict::Forward);
    assert_eq!((env.int(&ct_key(flow)), env.int("fw:opened"), env.int("fw:invalid")), (Some(1), Some(1), None));
}

#[test]
fn with_new_tcp_syn_only_an_opening_syn_opens_a_tcp_flow() {
    let mut fw = Firewall::from_config("inside = 10.0.0.0/8\nnew_tcp = syn").unwrap();
    let mut env = MemoryState::default();
    let flow = "6:10.0.0.1:40000-192.168.0.1:443";
    // From inside, without an entry: no SYN, or SYN with ACK (a reply's flags), or
    // nothing at all, is invalid: dropped, counted, nothing opened.
    for flags in [tcp::ACK, tcp::ACK | tcp::PSH, tcp::SYN | tcp::ACK, tcp::FIN | tcp::ACK, tcp::RST, 0] {
        assert_eq!(fw.on_packet(&segment(CLIENT, SERVER, flow, flags), &mut env), Verdict::Drop, "{flags:#x}");
    }
    assert_eq!((env.int(&ct_key(flow)), env.int("fw:invalid"), env.int("fw:dropped")), (None, Some(6), Some(6)));
    // A SYN from outside is dropped as ever, and is not counted invalid.
    assert_eq!(fw.on_packet(&segment(SERVER, CLIENT, flow, tcp::SYN), &mut env), Verdict::Drop);
    assert_eq!((env.int("fw:invalid"), env.int("fw:dropped")), (Some(6), Some(7)));
    // The client's SYN opens the flow (ECN bits do not matter); then every segment of
    // it passes both ways, and each one from inside refreshes the entry.
    let syn = tcp::SYN | tcp::ECE | tcp::CWR;
    assert_eq!(fw.on_packet(&segment(CLIENT, SERVER, flow, syn), &mut env), Verdict::Forward);
    assert_eq!(fw.on_packet(&segment(SERVER, CLIENT, flow, tcp::SYN | tcp::ACK), &mut env), Verdict::Forward);
    assert_eq!(fw.on_packet(&segment(CLIENT, SERVER, flow, tcp::ACK), &mut env), Verdict::Forward);
    assert_eq!(fw.on_packet(&segment(CLIENT, SERVER, flow, tcp::FIN | tcp::ACK), &mut env), Verdict::Forward);
    assert_eq!((env.int(&ct_key(flow)), env.int("fw:opened"), env.int("fw:invalid")), (Some(3), Some(1), Some(6)));
    // An entry brought from another node is refreshed by any segment from inside.
    let moved = "6:10.0.0.2:40001-192.168.0.1:443";
    env.values.insert(ct_key(moved), Value::Int(5));
    let client = ([10, 0, 0, 2], 40001);
    assert_eq!(fw.on_packet(&segment(client, SERVER, moved, tcp::ACK), &mut env), Verdict::Forward);
    assert_eq!(env.int(&ct_key(moved)), Some(6));
    // UDP (and any other protocol) from inside opens as with `any`, flags or not.
    let udp = "17:10.0.0.1:5353-192.168.0.1:53";
    let query = Packet { proto: 17, ..packet(([10, 0, 0, 1], 5353), ([192, 168, 0, 1], 53), udp) };
    assert_eq!(fw.on_packet(&query, &mut env), Verdict::Forward);
    assert_eq!(env.int(&ct_key(udp)), Some(1));
    assert_eq!(env.int("fw:invalid"), Some(6));
}

#[test]
fn with_new_tcp_syn_an_expired_flow_needs_a_new_syn() {
    let mut fw = Firewall::from_config("inside = 10.0.0.0/8\nidle_timeout_ms = 1000\nnew_tcp = syn").unwrap();
    let mut env = MemoryState::default();
    let flow = "6:10.0.0.1:40000-192.168.0.1:443";
    assert_eq!(fw.on_packet(&segment(CLIENT, SERVER, flow, tcp::SYN), &mut env), Verdict::Forward);
    env.now = 500;
    assert_eq!(fw.on_packet(&segment(CLIENT, SERVER, flow, tcp::ACK), &mut env), Verdict::Forward);
    // Idle too long: the entry closes, and a mid-connection segment cannot reopen it.
    env.now = 1501;
    assert_eq!(fw.on_packet(&segment(CLIENT, SERVER, flow, tcp::ACK), &mut env), Verdict::Drop);
    assert_eq!((env.int(&ct_key(flow)), env.int("fw:expired"), env.int("fw:invalid")), (None, Some(1), Some(1)));
    assert_eq!(fw.on_packet(&segment(CLIENT, SERVER, flow, tcp::SYN), &mut env), Verdict::Forward);
    assert_eq!(env.int("fw:opened"), Some(2));
}
