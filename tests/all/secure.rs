//! Authenticated and encrypted peering with real `estate` processes: keyed nodes form a
//! cluster, strangers (no key, a key not in the roster, a member claiming another id)
//! stay out and are counted, a recorded frame sent again is refused, and a node's key
//! is rolled while reads with consistency `all` keep succeeding.

use crate::support::{self, NodeProc};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use estate::control::{ControlReply, ControlRequest};
use estate::node::{Consistency, Stats};
use estate::reduce::Reduced;
use estate::testing::{Body, Entropy, Envelope, KeyPair, Out, Roster, Secure, encode};
use estate_guest::Value;

/// A temporary folder for key files and rosters, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("estate-secure-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }

    /// `estate keygen --out FILE`; returns the public key it printed first.
    fn keygen(&self, file: &str) -> String {
        let out = support::estate().args(["keygen", "--out", &self.path(file)]).output().unwrap();
        assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let public = stdout.lines().next().unwrap().to_string();
        assert_eq!(public.len(), 64, "{stdout:?}");
        public
    }

    /// Writes `lines` as the roster `file`, atomically (a node never reads half of it).
    fn roster(&self, file: &str, lines: &[(&str, &str)]) -> String {
        let text: String = lines.iter().map(|(id, key)| format!("{id} {key}\n")).collect();
        replace(&self.path(&format!("{file}.tmp")), &self.path(file), &text);
        self.path(file)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn replace(tmp: &str, path: &str, text: &str) {
    std::fs::write(tmp, format!("# roster\n{text}")).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

fn keyed(id: &str, join: &[&str], key: &str, roster: &str) -> NodeProc {
    NodeProc::start_with(id, join, &["--key", key, "--roster", roster])
}

/// Every id in the node's member list, joining ones too.
fn all_member_ids(node: &NodeProc) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&node.ok(&["members", "--json"])).unwrap();
    let mut ids: Vec<String> = v.as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

#[test]
fn keyed_nodes_form_a_cluster_and_strangers_stay_out() {
    let dir = Dir::new("cluster");
    let (a, b, c) = (dir.keygen("a.key"), dir.keygen("b.key"), dir.keygen("c.key"));
    dir.keygen("x.key");
    let roster = dir.roster("roster", &[("a", &a), ("b", &b), ("c", &c)]);
    let na = keyed("a", &[], &dir.path("a.key"), &roster);
    let nb = keyed("b", &[&na.listen], &dir.path("b.key"), &roster);
    let nc = keyed("c", &[&na.listen], &dir.path("c.key"), &roster);
    for n in [&na, &nb, &nc] {
        n.wait_members(&["a", "b", "c"]);
    }
    for (n, v) in [(&na, "1"), (&nb, "2"), (&nc, "4")] {
        n.ok(&["set", "k", v]);
    }
    let answer = nb.global("k", "sum", &["--consistency", "all"]);
    assert_eq!(answer["result"], serde_json::json!(7));
    assert_eq!(answer["answered"], serde_json::json!(["a", "b", "c"]));
    assert!(na.stats()["handshakes"].as_u64().unwrap() >= 4, "{}", na.stats());

    // A node without a key speaks plaintext: refused.
    let plain = NodeProc::start("p", &[&na.listen]);
    // A node whose key is not in the roster: refused at the handshake.
    let unknown = keyed("x", &[&na.listen], &dir.path("x.key"), &roster);
    // A roster member claiming another id: its messages are dropped.
    let liar = keyed("d", &[&na.listen], &dir.path("c.key"), &roster);
    na.wait_stat("plaintext_refused", 1);
    na.wait_stat("unknown_peer", 1);
    na.wait_stat("identity_mismatch", 1);
    // They keep greeting (every second): after more rounds of refusals, still outside.
    let stats = na.stats();
    na.wait_stat("plaintext_refused", stats["plaintext_refused"].as_u64().unwrap() + 2);
    na.wait_stat("identity_mismatch", stats["identity_mismatch"].as_u64().unwrap() + 2);
    for n in [&na, &nb, &nc] {
        assert_eq!(all_member_ids(n), ["a", "b", "c"], "{} lets a stranger in", n.id);
    }
    for n in [&plain, &unknown, &liar] {
        assert_eq!(all_member_ids(n), std::slice::from_ref(&n.id), "{} found no way in", n.id);
    }
    let answer = na.global("k", "sum", &["--consistency", "all"]);
    assert_eq!(answer["result"], serde_json::json!(7));
}

/// Random bytes for a secure channel played by the test.
struct Os;

impl Entropy for Os {
    fn fill(&mut self, buf: &mut [u8]) {
        rand::fill(buf);
    }
}

/// Receives one frame on `socket` (bounded wait).
fn recv(socket: &zmq::Socket) -> Vec<u8> {
    assert!(socket.poll(zmq::POLLIN, 10_000).unwrap() > 0, "no answer");
    socket.recv_bytes(0).unwrap()
}

#[test]
fn a_recorded_frame_sent_again_is_refused_and_forged_ones_are_counted() {
    let dir = Dir::new("replay");
    let a = dir.keygen("a.key");
    let tester = KeyPair::generate(&mut Os);
    let roster_path = dir.roster("roster", &[("a", &a), ("t", &tester.public().to_string())]);
    let na = keyed("a", &[], &dir.path("a.key"), &roster_path);

    // The test plays member `t` over raw ZeroMQ with its own secure channel.
    let roster = Roster::parse(&std::fs::read_to_string(&roster_path).unwrap(), "roster").unwrap();
    let mut channel = Secure::new(tester, roster, Box::new(Os), Arc::new(Stats::default()));
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_linger(0).unwrap();
    dealer.connect(&na.listen).unwrap();
    // A message a node counts as `rejected` from a non-member, once it got through.
    let probe = |from: &str| {
        encode(&Envelope {
            from: from.into(),
            clock: 1,
            body: Body::ModuleRequest { tenant: "default".into(), hash: [0; 32] },
        })
    };
    let send_all = |out: Vec<Out>| -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        for o in out {
            let Out::Dealer { frame, .. } = o else { panic!("unexpected {o:?}") };
            dealer.send(&frame, 0).unwrap();
            sent.push(frame);
        }
        sent
    };
    let mut out = Vec::new();
    channel.seal(&na.listen, probe("t"), 0, &mut out);
    send_all(std::mem::take(&mut out)); // Init; the message waits for the session.
    channel.from_dealer(&na.listen, &recv(&dealer), 1, &mut out);
    let sent = send_all(std::mem::take(&mut out)); // Fin, then the message.
    assert_eq!(sent.len(), 2);
    let recorded = sent[1].clone();
    // Authenticated and decrypted: then dropped as a non-member's.
    na.wait_stat("rejected", 1);
    na.wait_stat("handshakes", 1);

    dealer.send(&recorded, 0).unwrap();
    let stats = na.wait_stat("replay", 1);
    assert_eq!(stats["replay"].as_u64(), Some(1), "{stats}");
    assert_eq!(stats["rejected"].as_u64(), Some(1), "the replay was not delivered: {stats}");

    // One bit flipped in a fresh frame: it fails authentication.
    channel.seal(&na.listen, probe("t"), 2, &mut out);
    let mut forged = std::mem::take(&mut out).pop().map(|o| match o {
        Out::Dealer { frame, .. } => frame,
        o => panic!("unexpected {o:?}"),
    });
    let forged = forged.as_mut().unwrap();
    let last = forged.len() - 1;
    forged[last] ^= 0x80;
    dealer.send(&forged[..], 0).unwrap();
    na.wait_stat("bad_mac", 1);

    // Member `t` claiming to be `a`: authenticated as `t`, so dropped.
    channel.seal(&na.listen, probe("a"), 3, &mut out);
    send_all(std::mem::take(&mut out));
    na.wait_stat("identity_mismatch", 1);
    let stats = na.stats();
    assert_eq!(stats["rejected"].as_u64(), Some(1), "{stats}");
    assert_eq!(all_member_ids(&na), ["a"]);
    // The admin's security log names the refusals by peer.
    let log: serde_json::Value = serde_json::from_str(&na.ok(&["security-log", "--json"])).unwrap();
    let has =
        |reason: &str| log.as_array().unwrap().iter().any(|e| e["reason"] == reason && e["principal"] == "peer:t");
    assert!(has("replay") && has("identity mismatch"), "{log}");
}

#[test]
fn a_key_is_rolled_while_reads_with_consistency_all_keep_succeeding() {
    let dir = Dir::new("roll");
    let (a1, b, c) = (dir.keygen("a.key"), dir.keygen("b.key"), dir.keygen("c.key"));
    std::fs::copy(dir.path("a.key"), dir.path("a-old.key")).unwrap();
    let roster = dir.roster("roster", &[("a", &a1), ("b", &b), ("c", &c)]);
    let na = keyed("a", &[], &dir.path("a.key"), &roster);
    let nb = keyed("b", &[&na.listen], &dir.path("b.key"), &roster);
    let nc = keyed("c", &[&na.listen], &dir.path("c.key"), &roster);
    let nodes = [&na, &nb, &nc];
    for n in nodes {
        n.wait_members(&["a", "b", "c"]);
        n.ok(&["set", "k", "1"]);
    }

    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    let reload = |n: &NodeProc| n.stats()["key_reloads"].as_u64().unwrap();
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut failures = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // Through the control client in this process (cheaper than a CLI
                // process per read, so the rest of the suite keeps its CPU).
                let node = nodes[i % 3];
                let request = ControlRequest::Global {
                    pattern: "k".into(),
                    reducer: "sum".into(),
                    timeout_ms: 3000,
                    consistency: Consistency::All,
                    remote: false,
                };
                match estate::control::call(&node.control, &request, Duration::from_secs(10)) {
                    Ok(ControlReply::Global(answer)) if answer.result == Reduced::Value(Value::Int(3)) => {}
                    other => failures.push(format!("{}: {other:?}", node.id)),
                }
                reads.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
            failures
        });
        let reads_after = |n: u64| {
            let target = reads.load(Ordering::Relaxed) + n;
            let deadline = Instant::now() + Duration::from_secs(60);
            while reads.load(Ordering::Relaxed) < target {
                assert!(Instant::now() < deadline, "reads stalled");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        reads_after(5);

        // 1. The new key joins every roster next to the old one.
        let a2 = dir.keygen("a-new.key");
        let before: Vec<u64> = nodes.iter().map(|n| reload(n)).collect();
        dir.roster("roster", &[("a", &a1), ("a", &a2), ("b", &b), ("c", &c)]);
        for (n, k) in nodes.iter().zip(&before) {
            n.wait_stat("key_reloads", k + 1);
        }
        reads_after(5);

        // 2. Node a switches to it: its sessions are renewed with the new key.
        let before = reload(&na);
        std::fs::rename(dir.path("a-new.key"), dir.path("a.key")).unwrap();
        na.wait_stat("key_reloads", before + 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while na.stats()["stale_sessions"].as_u64() != Some(0) {
            assert!(Instant::now() < deadline, "a's sessions were not renewed: {}", na.stats());
            std::thread::sleep(Duration::from_millis(20));
        }
        reads_after(5);

        // 3. The old key leaves every roster.
        let before: Vec<u64> = nodes.iter().map(|n| reload(n)).collect();
        dir.roster("roster", &[("a", &a2), ("b", &b), ("c", &c)]);
        for (n, k) in nodes.iter().zip(&before) {
            n.wait_stat("key_reloads", k + 1);
        }
        reads_after(10);
        stop.store(true, Ordering::Relaxed);
        let failures = reader.join().unwrap();
        assert!(failures.is_empty(), "reads failed during the roll: {failures:#?}");
    });
    assert!(reads.load(Ordering::Relaxed) >= 25);

    // The old key is refused now: a process holding it cannot join.
    let unknown_before = nb.stats()["unknown_peer"].as_u64().unwrap();
    let old = keyed("a-old", &[&nb.listen], &dir.path("a-old.key"), &roster);
    nb.wait_stat("unknown_peer", unknown_before + 1);
    assert_eq!(all_member_ids(&nb), ["a", "b", "c"]);
    assert_eq!(all_member_ids(&old), ["a-old"]);
    let answer = nc.global("k", "sum", &["--consistency", "all"]);
    assert_eq!(answer["answered"], serde_json::json!(["a", "b", "c"]));
}

#[test]
fn keys_are_private_and_a_node_refuses_to_listen_openly_without_them() {
    let dir = Dir::new("checks");
    let a = dir.keygen("a.key");
    let roster = dir.roster("roster", &[("a", &a)]);
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&dir.path("a.key")), 0o600);
    let again = support::estate().args(["keygen", "--out", &dir.path("a.key")]).output().unwrap();
    assert!(!again.status.success(), "a key is never overwritten");

    let run = |args: &[&str]| {
        let out = support::estate().args(["node", "--id", "n"]).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&["--listen", "tcp://0.0.0.0:0"]);
    assert!(err.contains("not a loopback address"), "{err}");
    std::fs::write(dir.path("open.key"), std::fs::read(dir.path("a.key")).unwrap()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path("open.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let err = run(&["--listen", "tcp://127.0.0.1:0", "--key", &dir.path("open.key"), "--roster", &roster]);
    assert!(err.contains("readable by group or others"), "{err}");
    std::fs::write(dir.path("bad-roster"), format!("a {a}\nb not-a-key\n")).unwrap();
    let err = run(&["--listen", "tcp://127.0.0.1:0", "--key", &dir.path("a.key"), "--roster", &dir.path("bad-roster")]);
    assert!(err.contains("bad-roster, line 2"), "{err}");
    assert!(Path::new(&dir.path("a.key")).exists());
}
