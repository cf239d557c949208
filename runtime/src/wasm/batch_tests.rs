//! Batches of packets in one guest call (`estate_on_packets`).

use super::*;
use crate::nf::input::synth::{OwnedPacket, SynthConfig, synthetic};
use crate::store::{DEFAULT_TENANT, Store, TenantStore};
use estate_guest::abi::batch::MAX_PACKETS;
use estate_guest::nf::Rewrite;
use estate_guest::{Value, Verdict};

fn host() -> WasmHost {
    WasmHost::new(Limits { wall_time: Duration::from_millis(100), ..Limits::default() }).unwrap()
}

fn tenant() -> Arc<TenantStore> {
    Store::new("n").tenant(DEFAULT_TENANT).unwrap()
}

fn packets(n: usize) -> Vec<OwnedPacket> {
    synthetic(&SynthConfig { seed: 5, flows: 7, packets: n, ..SynthConfig::default() }).collect()
}

/// An NF whose `estate_on_packets(ptr, len, count)` runs `body`; its `estate_on_packet`
/// drops every packet, so a test sees which entry point decided. The verdict of packet
/// `$i` goes at `ptr + $i`.
fn batch_nf(body: &str) -> Vec<u8> {
    format!(
        r#"(module
            (import "estate" "packet_rewrite" (func $rewrite (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 2)
            (func (export "estate_abi_version") (result i32) i32.const {ABI_VERSION})
            (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "estate_packet_buffer") (param i32) (result i32) i32.const 4096)
            (func (export "estate_nf_init") (param i32 i32) (result i32) i32.const 0)
            (func (export "estate_on_packet") (param i32 i32) (result i32) i32.const 1)
            (func (export "estate_on_packets") (param $ptr i32) (param $len i32) (param $count i32) (result i32)
                (local $i i32)
                {body}))"#
    )
    .into_bytes()
}

/// Forward even packets, drop odd ones, up to packet `upto` (exclusive) of the batch.
fn decide(upto: &str) -> String {
    format!(
        "(block $done (loop $next
            (br_if $done (i32.ge_u (local.get $i) {upto}))
            (i32.store8 (i32.add (local.get $ptr) (local.get $i)) (i32.and (local.get $i) (i32.const 1)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $next)))"
    )
}

fn run(nf: &mut NfInstance, packets: &[OwnedPacket]) -> (Vec<Decision>, Result<(), GuestError>) {
    let views: Vec<_> = packets.iter().map(OwnedPacket::as_packet).collect();
    let mut decided = Vec::new();
    let outcome = nf.on_packets(&views, &mut decided);
    (decided, outcome)
}

fn alternating(n: usize) -> Vec<Verdict> {
    (0..n).map(|i| if i % 2 == 0 { Verdict::Forward } else { Verdict::Drop }).collect()
}

#[test]
fn a_batch_is_one_call_and_each_packet_gets_the_verdict_written_for_it() {
    let host = host();
    let nf = host.load_nf(&batch_nf(&format!("{} i32.const 0", decide("(local.get $count)")))).unwrap();
    let mut instance = host.start_nf(&nf, tenant(), "").unwrap();
    // More than a batch: the host splits it, and each part counts from its own first.
    let n = MAX_PACKETS + 5;
    let (decided, outcome) = run(&mut instance, &packets(n));
    outcome.unwrap();
    let verdicts: Vec<Verdict> = decided.iter().map(|(v, _)| *v).collect();
    let mut expected = alternating(MAX_PACKETS);
    expected.extend(alternating(5));
    assert_eq!(verdicts, expected);
    // A batch of one is a batch too; `on_packet` goes through estate_on_packet, which
    // drops.
    let (decided, outcome) = run(&mut instance, &packets(1));
    outcome.unwrap();
    assert_eq!(decided, [(Verdict::Forward, None)]);
    assert_eq!(instance.on_packet(&packets(1)[0].as_packet()).unwrap(), Verdict::Drop);
}

#[test]
fn a_failed_batch_keeps_the_verdicts_written_before_the_failure() {
    let host = host();
    let cases = [
        // Two decided, then a trap: the third packet is the one it failed on.
        (format!("{} unreachable", decide("(i32.const 2)")), "unreachable"),
        // Two decided and a status of success: the rest were left undecided.
        (format!("{} i32.const 0", decide("(i32.const 2)")), "left packet 2 of 5 undecided"),
        // Two decided, then "bad input".
        (format!("{} i32.const 3", decide("(i32.const 2)")), "rejected its input"),
        // A byte that is no verdict stops the decided ones there.
        (
            format!(
                "{} (i32.store8 (i32.add (local.get $ptr) (i32.const 2)) (i32.const 7)) i32.const 0",
                decide("(local.get $count)")
            ),
            "left packet 2 of 5 undecided",
        ),
        (format!("{} i32.const 9", decide("(local.get $count)")), "returned 9"),
    ];
    for (body, needle) in cases {
        let nf = host.load_nf(&batch_nf(&body)).unwrap();
        let mut instance = host.start_nf(&nf, tenant(), "").unwrap();
        let (decided, outcome) = run(&mut instance, &packets(5));
        let err = outcome.unwrap_err();
        assert!(format!("{err:#}").contains(needle), "{needle}: {err:#}");
        let decided: Vec<Verdict> = decided.iter().map(|(v, _)| *v).collect();
        let expected = if needle == "returned 9" { alternating(5) } else { alternating(2) };
        assert_eq!(decided, expected, "{needle}");
    }
}

#[test]
fn a_rewrite_in_a_batch_belongs_to_the_first_packet_not_yet_decided() {
    let host = host();
    let asked = Rewrite { src: ([192, 0, 2, 1], 7), dst: ([10, 0, 0, 7], 80) };
    let call = "(call $rewrite (i32.const 0xc0000201) (i32.const 7) (i32.const 0x0a000007) (i32.const 80))";
    // Packet 0 decided, then the rewrite (packet 1's), then the rest; a rewrite after
    // every packet is decided belongs to none and is refused.
    let body = format!(
        "{} (drop {call}) {} (if (i32.ne {call} (i32.const 1)) (then unreachable)) i32.const 0",
        decide("(i32.const 1)"),
        decide("(local.get $count)")
    );
    let nf = host.load_nf(&batch_nf(&body)).unwrap();
    let mut instance = host.start_nf(&nf, tenant(), "").unwrap();
    let (decided, outcome) = run(&mut instance, &packets(4));
    outcome.unwrap();
    let rewrites: Vec<Option<Rewrite>> = decided.iter().map(|(_, r)| *r).collect();
    assert_eq!(rewrites, [None, Some(asked), None, None]);
    assert_eq!(instance.take_rewrite(), None, "nothing left over for a later packet");
}

#[test]
fn a_batch_gets_the_budget_of_its_packets() {
    // Each packet spins `n` rounds of 8 instructions, about 8n units of fuel, against a
    // budget of 20,000 a packet.
    let host = WasmHost::new(Limits { fuel: 20_000, ..Limits::default() }).unwrap();
    let spinning = |n: u32| {
        let body = format!(
            "(block $done (loop $next
                (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
                (local.set $len (i32.const 0))
                (loop $spin
                    (local.set $len (i32.add (local.get $len) (i32.const 1)))
                    (br_if $spin (i32.lt_u (local.get $len) (i32.const {n}))))
                (i32.store8 (i32.add (local.get $ptr) (local.get $i)) (i32.const 0))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $next))) i32.const 0"
        );
        let nf = host.load_nf(&batch_nf(&body)).unwrap();
        let mut instance = host.start_nf(&nf, tenant(), "").unwrap();
        run(&mut instance, &packets(8))
    };
    // 0.6 of a packet's budget each: 4.8 budgets for the batch of 8, which has 8.
    let (decided, outcome) = spinning(1_500);
    outcome.unwrap();
    assert_eq!(decided.len(), 8);
    // 1.5 budgets each: the batch's 8 run out in its sixth packet, and the five before it
    // keep their verdicts.
    let (decided, outcome) = spinning(3_750);
    assert!(matches!(outcome, Err(GuestError::OutOfFuel(20_000))), "{outcome:?}");
    assert_eq!(decided.len(), 5);
}

/// The SDK's NFs decide the same in batches as one packet at a time, with the same
/// state left behind.
#[test]
fn sdk_nfs_decide_alike_in_batches_and_one_by_one() {
    let host = host();
    let traffic = packets(300);
    for (guest, config) in [
        ("nf_firewall", "inside = 10.0.0.0/9\nnew_tcp = syn\n"),
        ("nf_ids", "pattern = attack\npattern = evil\nthreshold = 3\n"),
    ] {
        let nf = host.load_nf(&crate::guests::require(guest).unwrap()).unwrap();
        let (one, many) = (tenant(), tenant());
        let mut single = host.start_nf(&nf, one.clone(), config).unwrap();
        let by_one: Vec<Decision> =
            traffic.iter().map(|p| (single.on_packet(&p.as_packet()).unwrap(), single.take_rewrite())).collect();
        let mut batched = host.start_nf(&nf, many.clone(), config).unwrap();
        let (by_batch, outcome) = run(&mut batched, &traffic);
        outcome.unwrap();
        assert_eq!(by_batch, by_one, "{guest}");
        let drops = by_one.iter().filter(|(v, _)| *v == Verdict::Drop).count();
        if guest == "nf_firewall" {
            assert!(drops > 0 && drops < by_one.len(), "both verdicts: {drops} drops");
        }
        let dump = |t: &TenantStore| -> Vec<(String, Value)> {
            let all = crate::pattern::Pattern::new(".*").unwrap();
            let mut items: Vec<_> = t.matching(&all).into_iter().map(|i| (i.key, i.value)).collect();
            items.sort_by(|a, b| a.0.cmp(&b.0));
            items
        };
        assert!(!dump(&many).is_empty(), "{guest} keeps state");
        assert_eq!(dump(&many), dump(&one), "{guest}");
    }
}

/// An NF whose `estate_nf_init` runs `init` (its status is the answer) with the
/// patterns `ab`, `c` encoded at 0 (15 bytes), and whose `estate_on_packets` adds each
/// packet's scan count to the counter `s` and forwards it.
fn scan_nf(init: &str) -> Vec<u8> {
    format!(
        r#"(module
            (import "estate" "counter_add" (func $add (param i32 i32 i64) (result i64)))
            (import "estate" "matcher_new" (func $new (param i32 i32 i32) (result i32)))
            (memory (export "memory") 2)
            (data (i32.const 0) "\02\00\00\00\02\00\00\00ab\01\00\00\00c")
            (data (i32.const 128) "s")
            (func (export "estate_abi_version") (result i32) i32.const {ABI_VERSION})
            (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "estate_packet_buffer") (param i32) (result i32) i32.const 4096)
            (func (export "estate_nf_init") (param i32 i32) (result i32) {init})
            (func (export "estate_on_packet") (param i32 i32) (result i32) i32.const 1)
            (func (export "estate_on_packets") (param $ptr i32) (param $len i32) (param $count i32) (result i32)
                (local $i i32)
                (block $done (loop $next
                    (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
                    (drop (call $add (i32.const 128) (i32.const 1) (i64.extend_i32_u
                        (i32.load (i32.add (i32.add (local.get $ptr) (local.get $count))
                                           (i32.mul (local.get $i) (i32.const 4)))))))
                    (i32.store8 (i32.add (local.get $ptr) (local.get $i)) (i32.const 0))
                    (local.set $i (i32.add (local.get $i) (i32.const 1)))
                    (br $next)))
                i32.const 0))"#
    )
    .into_bytes()
}

#[test]
fn a_payload_matcher_scans_every_payload_of_a_batch_before_the_call() {
    use estate_guest::abi::{batch::NOT_SCANNED, matcher::SCAN_PAYLOADS};
    let host = host();
    let payloads: [&[u8]; 4] = [b"abcab", b"", b"xxcx", b"aabbcc"];
    let traffic: Vec<OwnedPacket> =
        payloads.iter().map(|p| OwnedPacket { payload: p.to_vec(), ..packets(1).remove(0) }).collect();
    let register =
        |flags: i32| format!("(i32.shr_u (call $new (i32.const 0) (i32.const 15) (i32.const {flags})) (i32.const 30))");
    let sum = |init: &str| {
        let nf = host.load_nf(&scan_nf(init)).unwrap();
        let store = tenant();
        let mut instance = host.start_nf(&nf, store.clone(), "").unwrap();
        let (decided, outcome) = run(&mut instance, &traffic);
        outcome.unwrap();
        assert_eq!(decided.len(), traffic.len());
        store.get("s").map(|v| v.value)
    };
    // `ab`, `c`: 3 + 0 + 1 + 3 matches (leftmost-first, not overlapping).
    assert_eq!(sum(&register(SCAN_PAYLOADS)), Some(Value::Int(7)));
    assert_eq!(sum(&register(SCAN_PAYLOADS | 1)), Some(Value::Int(7)), "without prefilter alike");
    // A matcher that does not scan payloads leaves every count "not scanned".
    assert_eq!(sum(&register(0)), Some(Value::Int(4 * i64::from(NOT_SCANNED))));
    // One payload matcher per instance: a second is refused (-1, so init answers 2).
    let twice = format!("(drop {}) {}", register(SCAN_PAYLOADS), register(SCAN_PAYLOADS));
    let nf = host.load_nf(&scan_nf(&twice)).unwrap();
    assert!(host.start_nf(&nf, tenant(), "").is_err());
}
