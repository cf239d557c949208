//! Translation (`external = …`): the rewrites both ways, unsolicited inbound packets,
//! replies that reach an instance other than the one that allocated their port (the
//! cluster read, its cache and its memory of misses), and the external ports of two
//! instances over one simulated cluster.

use super::*;
use estate_guest::nf::flow_key;

const EXTERNAL: [u8; 4] = [198, 51, 100, 1];
const CLIENT: ([u8; 4], u16) = ([10, 0, 0, 1], 40000);
const SERVER: ([u8; 4], u16) = ([192, 168, 0, 1], 443);

/// A TCP packet from `src` to `dst` of the flow `flow`.
fn between(src: ([u8; 4], u16), dst: ([u8; 4], u16), flow: &str) -> Packet<'_> {
    Packet { src, dst, ..packet(flow) }
}

fn translating(config: &str) -> Nat {
    nat(&format!("{config}\nexternal = 198.51.100.1"))
}

fn forward(src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Decision {
    Decision { verdict: Verdict::Forward, rewrite: Some(Rewrite { src, dst }) }
}

const DROP: Decision = Decision { verdict: Verdict::Drop, rewrite: None };

#[test]
fn external_parses_and_errors_name_the_line() {
    assert_eq!(nat("ports = 1-2").external(), None);
    assert_eq!(nat("external = 198.51.100.1\nports = 1-2").external(), Some(EXTERNAL));
    for (config, needle) in [
        ("ports = 1-2\nexternal = 198.51.100", "line 2 \"external = 198.51.100\": external must be an IPv4"),
        ("ports = 1-2\nexternal = 1.2.3.256", "line 2 \"external = 1.2.3.256\""),
        ("ports = 1-2\nexternal = +1.2.3.4", "line 2 \"external = +1.2.3.4\""),
        ("ports = 1-2\nexternal =", "external must be an IPv4 address"),
        ("ports = 1-2\nexternal = 1.2.3.4\nexternal = 1.2.3.5", "line 3 \"external = 1.2.3.5\": external given twice"),
        ("external = 1.2.3.4", "no port range configured"),
    ] {
        let err = Nat::from_config(config).unwrap_err();
        assert!(err.starts_with("nat: "), "{config:?}: {err}");
        assert!(err.contains(needle), "{config:?}: {err}");
    }
    assert_eq!(parse_endpoint("10.0.0.1:40000"), Some(CLIENT));
    for bad in ["10.0.0.1", "10.0.0.1:", "10.0.0.1:65536", "10.0.0:1", "10.0.0.1:+1", ":1"] {
        assert_eq!(parse_endpoint(bad), None, "{bad}");
    }
    assert_eq!(endpoint_text(CLIENT), "10.0.0.1:40000");
}

#[test]
fn outbound_packets_leave_from_the_external_port_and_replies_reach_the_inside_end() {
    let c = cluster(1);
    let mut env = Env::new(&c, 0);
    let mut n = translating("ports = 20000-29999\nblock = 100");
    let flow = flow_key(6, CLIENT, SERVER);
    let out = n.decide(&between(CLIENT, SERVER, &flow), &mut env);
    let first = port(&env, &flow).unwrap();
    assert_eq!(out, forward((EXTERNAL, first), SERVER), "the source rewritten, the destination kept");
    assert_eq!(env.value(&port_key(first)), Some(Value::Text("10.0.0.1:40000".into())));
    // Later packets of the flow leave from the same port; nothing is allocated again.
    assert_eq!(n.decide(&between(CLIENT, SERVER, &flow), &mut env), out);
    assert_eq!(n.on_packet(&between(CLIENT, SERVER, &flow), &mut env), Verdict::Forward);
    assert_eq!((env.reads, env.int("nat:allocated")), (1, Some(1)));
    // The server's replies go to the external port: the destination becomes the
    // client's, the source stays the server's.
    let back = flow_key(6, SERVER, (EXTERNAL, first));
    assert_eq!(n.decide(&between(SERVER, (EXTERNAL, first), &back), &mut env), forward(SERVER, CLIENT));
    // Another client (or another port of the same one) gets a port of its own, and the
    // replies to each port reach their own inside end.
    let other = ([10, 0, 0, 2], 40000);
    let flow2 = flow_key(6, other, SERVER);
    assert_eq!(n.decide(&between(other, SERVER, &flow2), &mut env).verdict, Verdict::Forward);
    let port2 = port(&env, &flow2).unwrap();
    assert_ne!(port2, first);
    let back2 = flow_key(6, SERVER, (EXTERNAL, port2));
    assert_eq!(n.decide(&between(SERVER, (EXTERNAL, port2), &back2), &mut env), forward(SERVER, other));
    assert_eq!(n.decide(&between(SERVER, (EXTERNAL, first), &back), &mut env), forward(SERVER, CLIENT));
    // Inbound packets allocated nothing, and were all solicited.
    assert_eq!((env.int("nat:allocated"), env.int("nat:unsolicited")), (Some(2), None));
    assert!(env.keys_with_prefix(&nat_key(&back)).is_empty());
}

#[test]
fn unsolicited_inbound_packets_are_dropped_and_counted() {
    let c = cluster(2);
    let mut env = Env::new(&c, 0);
    let mut n = translating("ports = 20000-29999");
    let to = (EXTERNAL, 20005);
    let flow = flow_key(6, SERVER, to);
    assert_eq!(n.decide(&between(SERVER, to, &flow), &mut env), DROP);
    assert_eq!(n.on_packet(&between(SERVER, to, &flow), &mut env), Verdict::Drop);
    assert_eq!(env.int("nat:unsolicited"), Some(2));
    // The port is in the range: the first packet asked the cluster, the second
    // remembered the miss.
    assert_eq!(env.lookups, 1);
    // An inbound packet claims nothing and maps nothing.
    assert_eq!((env.reads, env.int("nat:allocated"), env.int("nat:exhausted")), (0, None, None));
    assert_eq!(env.int("nat:inbound_remote"), None);
    assert!(env.keys_with_prefix("nat:port:").is_empty(), "a miss is not stored");
    assert!(env.keys_with_prefix("nat:block:").is_empty() && env.keys_with_prefix("flow:").is_empty());
    // A reverse key that holds no endpoint (written behind the NF's back) maps nothing.
    for junk in [Value::Text("nowhere".into()), Value::Int(7)] {
        env.set(&port_key(20005), junk).unwrap();
        assert_eq!(n.decide(&between(SERVER, to, &flow), &mut env), DROP);
    }
    assert_eq!(env.int("nat:unsolicited"), Some(4));
    // … nor is it looked up in the cluster.
    env.now += MISS_TTL_MS;
    assert_eq!(n.decide(&between(SERVER, to, &flow), &mut env), DROP);
    assert_eq!(env.lookups, 1);
}

#[test]
fn without_external_nothing_is_rewritten_or_reversed() {
    let c = cluster(1);
    let mut env = Env::new(&c, 0);
    let mut n = nat("ports = 20000-29999");
    let to = (EXTERNAL, 20000);
    // Even a packet to what would be the external address is an ordinary flow here.
    for (src, dst) in [(CLIENT, SERVER), (SERVER, to)] {
        let flow = flow_key(6, src, dst);
        assert_eq!(
            n.decide(&between(src, dst, &flow), &mut env),
            Decision { verdict: Verdict::Forward, rewrite: None }
        );
    }
    assert_eq!(env.int("nat:allocated"), Some(2));
    assert!(env.keys_with_prefix("nat:port:").is_empty());
}

#[test]
fn two_translating_instances_never_hand_out_the_same_external_port() {
    let c = cluster(2);
    let (mut env_a, mut env_b) = (Env::new(&c, 0), Env::new(&c, 1));
    let config = "ports = 1000-1079\nblock = 8";
    let (mut a, mut b) = (translating(config), translating(config));
    let handed = |nat: &mut Nat, env: &mut Env, client: ([u8; 4], u16)| -> u16 {
        let flow = flow_key(6, client, SERVER);
        let d = nat.decide(&between(client, SERVER, &flow), env);
        let Some(Rewrite { src: (EXTERNAL, port), dst: SERVER }) = d.rewrite else { panic!("{d:?}") };
        assert_eq!(d.verdict, Verdict::Forward);
        port
    };
    let (mut ports_a, mut ports_b) = (BTreeMap::new(), BTreeMap::new());
    for i in 0..30u8 {
        // The first client is the same on both: both try the same block first.
        let (ca, cb) = if i == 0 { (CLIENT, CLIENT) } else { (([10, 0, 1, i], 5000), ([10, 0, 2, i], 5000)) };
        assert!(ports_a.insert(handed(&mut a, &mut env_a, ca), ca).is_none());
        assert!(ports_b.insert(handed(&mut b, &mut env_b, cb), cb).is_none());
    }
    assert!(env_b.int("nat:conflicts").unwrap() >= 1, "the two met on a block");
    let in_common: Vec<&u16> = ports_a.keys().filter(|p| ports_b.contains_key(p)).collect();
    assert!(in_common.is_empty(), "{in_common:?}");
    // Replies reach the right client at either instance: locally at the one that
    // allocated the port, through the cluster at the other.
    let replies =
        |mine: &mut Nat, env_mine: &mut Env, theirs: &mut Nat, env_theirs: &mut Env, ports: &BTreeMap<u16, _>| {
            let lookups = env_mine.lookups;
            for (port, client) in ports {
                let back = flow_key(6, SERVER, (EXTERNAL, *port));
                let reply = between(SERVER, (EXTERNAL, *port), &back);
                assert_eq!(mine.decide(&reply, env_mine), forward(SERVER, *client));
                assert_eq!(theirs.decide(&reply, env_theirs), forward(SERVER, *client));
            }
            assert_eq!(env_mine.lookups, lookups, "its own ports are found locally");
        };
    replies(&mut a, &mut env_a, &mut b, &mut env_b, &ports_a);
    replies(&mut b, &mut env_b, &mut a, &mut env_a, &ports_b);
    assert_eq!((env_a.lookups, env_b.lookups), (30, 30));
    assert_eq!((env_a.int("nat:inbound_remote"), env_b.int("nat:inbound_remote")), (Some(30), Some(30)));
    assert_eq!((env_a.int("nat:unsolicited"), env_b.int("nat:unsolicited")), (None, None));
    // The cached copies handed out nothing: each instance still allocated only its own.
    assert_eq!((env_a.int("nat:allocated"), env_b.int("nat:allocated")), (Some(30), Some(30)));
}

#[test]
fn a_reply_at_another_instance_is_translated_through_the_cluster_and_cached() {
    let c = cluster(2);
    let (mut env_a, mut env_b) = (Env::new(&c, 0), Env::new(&c, 1));
    let config = "ports = 20000-29999\nblock = 100";
    let (mut a, mut b) = (translating(config), translating(config));
    let flow = flow_key(6, CLIENT, SERVER);
    assert_eq!(a.decide(&between(CLIENT, SERVER, &flow), &mut env_a).verdict, Verdict::Forward);
    let p = port(&env_a, &flow).unwrap();
    // The switch sends the reply (another flow key) to B, which never saw the flow.
    let back = flow_key(6, SERVER, (EXTERNAL, p));
    let reply = between(SERVER, (EXTERNAL, p), &back);
    assert_eq!(env_b.value(&port_key(p)), None);
    assert_eq!(b.decide(&reply, &mut env_b), forward(SERVER, CLIENT));
    assert_eq!((env_b.lookups, env_b.int("nat:inbound_remote")), (1, Some(1)));
    // B keeps a copy of the reverse mapping: later replies stay local.
    assert_eq!(env_b.value(&port_key(p)), Some(Value::Text("10.0.0.1:40000".into())));
    for _ in 0..3 {
        assert_eq!(b.decide(&reply, &mut env_b), forward(SERVER, CLIENT));
        env_b.now += MISS_TTL_MS;
    }
    assert_eq!(b.on_packet(&reply, &mut env_b), Verdict::Forward);
    assert_eq!((env_b.lookups, env_b.int("nat:inbound_remote")), (1, Some(1)));
    // B allocated nothing, claimed nothing, dropped nothing; A's mapping is untouched.
    assert_eq!((env_b.reads, env_b.int("nat:allocated"), env_b.int("nat:unsolicited")), (0, None, None));
    assert!(env_b.keys_with_prefix("nat:block:").is_empty() && env_b.keys_with_prefix("flow:").is_empty());
    assert_eq!(env_a.value(&port_key(p)), Some(Value::Text("10.0.0.1:40000".into())));
    assert_eq!((env_a.lookups, env_a.int("nat:inbound_remote")), (0, None));
    assert_eq!(b.misses.len(), 0, "a hit is no miss");
}

#[test]
fn replies_to_unmapped_ports_are_dropped_and_the_miss_is_remembered() {
    let c = cluster(2);
    let (mut env_a, mut env_b) = (Env::new(&c, 0), Env::new(&c, 1));
    let config = "ports = 20000-29999\nblock = 100";
    let (mut a, mut b) = (translating(config), translating(config));
    // The port A will hand out to its first flow, not mapped anywhere yet.
    let flow = flow_key(6, CLIENT, SERVER);
    let p = a.block_ports(first_candidate(&a, &flow)).0;
    let back = flow_key(6, SERVER, (EXTERNAL, p));
    let reply = between(SERVER, (EXTERNAL, p), &back);
    assert_eq!(b.decide(&reply, &mut env_b), DROP);
    assert_eq!((env_b.lookups, env_b.int("nat:unsolicited")), (1, Some(1)));
    // Within the window the miss stands, even though A maps the port meanwhile.
    assert_eq!(a.decide(&between(CLIENT, SERVER, &flow), &mut env_a).verdict, Verdict::Forward);
    assert_eq!(port(&env_a, &flow), Some(p));
    env_b.now += MISS_TTL_MS - 1;
    assert_eq!(b.decide(&reply, &mut env_b), DROP);
    assert_eq!((env_b.lookups, env_b.int("nat:unsolicited")), (1, Some(2)));
    // After it, B asks again and finds A's mapping.
    env_b.now += 1;
    assert_eq!(b.decide(&reply, &mut env_b), forward(SERVER, CLIENT));
    assert_eq!((env_b.lookups, env_b.int("nat:inbound_remote")), (2, Some(1)));
    // A port outside the range is never looked up.
    for outside in [19999, 30000] {
        let back = flow_key(6, SERVER, (EXTERNAL, outside));
        assert_eq!(b.decide(&between(SERVER, (EXTERNAL, outside), &back), &mut env_b), DROP);
    }
    assert_eq!((env_b.lookups, env_b.int("nat:unsolicited")), (2, Some(4)));
    // A failed read is a miss too.
    env_b.refuse_lookups = true;
    let q = 29000;
    let back = flow_key(6, SERVER, (EXTERNAL, q));
    let stray = between(SERVER, (EXTERNAL, q), &back);
    for _ in 0..2 {
        assert_eq!(b.decide(&stray, &mut env_b), DROP);
    }
    assert_eq!((env_b.lookups, env_b.int("nat:unsolicited")), (3, Some(6)));
    // If the clock goes back, the misses are forgotten.
    env_b.now -= 1000;
    assert_eq!(b.decide(&stray, &mut env_b), DROP);
    assert_eq!(env_b.lookups, 4);
}

#[test]
fn the_memory_of_misses_is_bounded_and_forgets_the_oldest() {
    let c = cluster(2);
    let mut env = Env::new(&c, 1);
    let mut n = translating("ports = 20000-29999");
    let stray = |n: &mut Nat, env: &mut Env, port: u16| {
        let back = flow_key(6, SERVER, (EXTERNAL, port));
        assert_eq!(n.decide(&between(SERVER, (EXTERNAL, port), &back), env), DROP);
    };
    let count = u16::try_from(MAX_MISSES).unwrap() + 1;
    for i in 0..count {
        stray(&mut n, &mut env, 20000 + i);
    }
    assert_eq!((env.lookups, n.misses.len()), (u32::from(count), MAX_MISSES));
    // The newest are remembered, the oldest (20000) forgotten: it is asked about again.
    stray(&mut n, &mut env, 20000 + count - 1);
    stray(&mut n, &mut env, 20001);
    assert_eq!(env.lookups, u32::from(count));
    stray(&mut n, &mut env, 20000);
    assert_eq!((env.lookups, n.misses.len()), (u32::from(count) + 1, MAX_MISSES));
    // Expired misses are let go.
    env.now += MISS_TTL_MS;
    stray(&mut n, &mut env, 20001);
    assert_eq!((env.lookups, n.misses.len()), (u32::from(count) + 2, 1));
    assert_eq!(env.int("nat:unsolicited"), Some(i64::from(count) + 4));
}

#[test]
fn without_flow_state_sharing_replies_are_translated_only_where_their_port_was_allocated() {
    let c = cluster(2);
    let (mut env_a, mut env_b) = (Env::new(&c, 0), Env::new(&c, 1));
    let config = "ports = 20000-29999\nblock = 100";
    let (mut a, mut b) = (translating(config), translating(config));
    let flow = flow_key(6, CLIENT, SERVER);
    a.decide(&between(CLIENT, SERVER, &flow), &mut env_a);
    let p = port(&env_a, &flow).unwrap();
    // `--flow-state off`: the node refuses global reads.
    env_a.refuse_lookups = true;
    env_b.refuse_lookups = true;
    let back = flow_key(6, SERVER, (EXTERNAL, p));
    let reply = between(SERVER, (EXTERNAL, p), &back);
    assert_eq!(a.decide(&reply, &mut env_a), forward(SERVER, CLIENT));
    assert_eq!(b.decide(&reply, &mut env_b), DROP);
    assert_eq!((env_a.lookups, env_b.lookups), (0, 1));
    assert_eq!((env_b.int("nat:unsolicited"), env_b.int("nat:inbound_remote")), (Some(1), None));
    assert_eq!(env_b.value(&port_key(p)), None);
}
