//! The C guests of `guest-c/` against their Rust twins: `c_reducer_sum` answers what
//! `reducer_sum` answers, and `c_nf_count` leaves the state, verdicts and host calls
//! `nf_count` leaves, for the same input; and `estate_guest.h` spells the ABI's numbers
//! and names as `estate_guest::abi` does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};

use estate::guests;
use estate::nf::input::synth::{OwnedPacket, synthetic};
use estate::pattern::Pattern;
use estate::store::{DEFAULT_TENANT, Store, TenantStore};
use estate::wasm::{GuestError, Limits, NfState, ReducerModule, WasmHost};
use estate_guest::codec::encode_items;
use estate_guest::{Brought, Direction, Item, Packet, Phase, Value, Verdict, abi};

// --- the reducer ----------------------------------------------------------------------

/// One host with both sums compiled once for all tests.
struct Sums {
    host: WasmHost,
    rust: ReducerModule,
    c: ReducerModule,
}

fn sums() -> &'static Sums {
    static SUMS: OnceLock<Sums> = OnceLock::new();
    SUMS.get_or_init(|| {
        let host = WasmHost::new(Limits::default()).unwrap();
        let load = |name: &str| host.load_reducer(&guests::require(name).unwrap()).unwrap();
        let (rust, c) = (load("reducer_sum"), load("c_reducer_sum"));
        Sums { host, rust, c }
    })
}

/// A call's outcome, comparable: the answer, or the error's kind and message.
type Outcome = Result<Option<Item>, String>;

fn outcome(result: Result<Option<Item>, GuestError>) -> Outcome {
    result.map_err(|e| format!("{e:?}"))
}

/// Runs `call` on the Rust sum and on the C sum, asserts that both answered the same,
/// and returns that answer.
fn both(what: &str, call: impl Fn(&WasmHost, &ReducerModule) -> Result<Option<Item>, GuestError>) -> Outcome {
    let s = sums();
    let (rust, c) = (outcome(call(&s.host, &s.rust)), outcome(call(&s.host, &s.c)));
    assert_eq!(c, rust, "{what}: the C sum answered differently");
    rust
}

fn item(key: &str, value: Value, origin: &str) -> Item {
    Item { key: key.into(), value, origin: origin.into(), writer: origin.into(), version: 7 }
}

fn int(key: &str, v: i64, origin: &str) -> Item {
    item(key, Value::Int(v), origin)
}

fn answer_of(v: i64) -> Outcome {
    Ok(Some(Item::of(Value::Int(v))))
}

fn guest_error(message: &str) -> Outcome {
    Err(format!("{:?}", GuestError::Guest(message.into())))
}

fn bad_input(message: &str) -> Outcome {
    Err(format!("{:?}", GuestError::Abi(format!("reducer rejected its input: bad input: {message}"))))
}

#[test]
fn c_sum_answers_what_rust_sum_answers() {
    let many: Vec<Item> = (0..1000).map(|i| int(&format!("k{i}"), i * 1_000_003 - 7, "n1")).collect();
    let cases: Vec<(&str, Vec<Item>, Outcome)> = vec![
        ("empty", vec![], Ok(None)),
        ("one", vec![int("a", -5, "n1")], answer_of(-5)),
        ("ints", vec![int("a", 40, "n1"), int("b", -2, "n2"), int("c", 4, "n3")], answer_of(42)),
        ("many", many, answer_of((0..1000).map(|i| i * 1_000_003 - 7).sum())),
        ("to max", vec![int("a", i64::MAX - 1, "n1"), int("b", 1, "n2")], answer_of(i64::MAX)),
        ("to min", vec![int("a", i64::MIN + 1, "n1"), int("b", -1, "n2")], answer_of(i64::MIN)),
        (
            "back from the edge",
            vec![int("a", i64::MAX, "n1"), int("b", -1, "n1"), int("c", 1, "n1")],
            answer_of(i64::MAX),
        ),
        ("overflow", vec![int("a", i64::MAX, "n1"), int("b", 1, "n2")], guest_error("sum: i64 overflow at b")),
        ("underflow", vec![int("a", i64::MIN, "n1"), int("né", -1, "n2")], guest_error("sum: i64 overflow at né")),
        (
            "floats",
            vec![item("x", Value::Float(1.5), "n1"), item("y", Value::Float(2.5), "n2")],
            guest_error("sum: x from n1 is float, not an integer"),
        ),
        (
            "mixed",
            vec![int("a", 1, "n1"), item("flow:9", Value::Float(-0.0), "n7"), item("t", Value::Text("x".into()), "n1")],
            guest_error("sum: flow:9 from n7 is float, not an integer"),
        ),
        (
            "text",
            vec![int("a", 1, "n1"), item("clé", Value::Text("12".into()), "nœud")],
            guest_error("sum: clé from nœud is text, not an integer"),
        ),
        (
            "bytes",
            vec![item("blob", Value::Bytes(vec![0xff, 0]), "n3"), int("a", 1, "n1")],
            guest_error("sum: blob from n3 is bytes, not an integer"),
        ),
        (
            "overflow before a float",
            vec![int("a", i64::MAX, "n1"), int("b", 1, "n2"), item("f", Value::Float(1.0), "n1")],
            guest_error("sum: i64 overflow at b"),
        ),
        ("value-only partials", vec![Item::of(Value::Int(10)), Item::of(Value::Int(-3))], answer_of(7)),
        // Values-only items (each decoder reads an integer one in one step) among items
        // that only look like them.
        (
            "values only, among look-alikes",
            vec![
                Item { version: u64::MAX, ..Item::of(Value::Int(5)) },
                int("", 2, "n1"),
                Item { writer: "w".into(), ..Item::of(Value::Int(-1)) },
                int("a", 3, ""),
            ],
            answer_of(9),
        ),
        (
            "values only, a float",
            vec![Item::of(Value::Int(1)), Item::of(Value::Float(2.0))],
            guest_error("sum:  from  is float, not an integer"),
        ),
        (
            "values only, overflow",
            vec![Item::of(Value::Int(i64::MAX)), Item::of(Value::Int(1))],
            guest_error("sum: i64 overflow at "),
        ),
    ];
    for (name, items, expected) in cases {
        for phase in [Phase::Items, Phase::Partials] {
            let got = both(&format!("{name}, {phase:?}"), |h, r| h.reduce(r, &items, phase));
            assert_eq!(got, expected, "{name}, {phase:?}");
        }
        assert_eq!(both(name, |h, r| h.reduce_all(r, &items)), expected, "{name}, fetch-all");
    }
}

/// Fetch-all and push-down (a partial per node, the partials combined, finished) give
/// one answer, in each language and across them: a partial of one combines in the other.
#[test]
fn push_down_answers_what_fetch_all_answers() {
    let s = sums();
    assert!(s.rust.combinable() && s.c.combinable(), "both may be pushed down");
    assert!(s.rust.values_only() && s.c.values_only(), "both read only values");
    let nodes: Vec<Vec<Item>> = vec![
        vec![int("a", 5, "n1"), int("b", i64::MAX / 2, "n1")],
        vec![],
        vec![int("c", -12, "n3"), int("d", 7, "n3"), int("e", i64::MIN / 4, "n3")],
        vec![int("f", 1, "n4")],
    ];
    let all: Vec<Item> = nodes.concat();
    let expected = answer_of(5 + i64::MAX / 2 - 12 + 7 + i64::MIN / 4 + 1);
    assert_eq!(both("fetch-all", |h, r| h.reduce_all(r, &all)), expected);

    let partials = |r: &ReducerModule| -> Vec<Item> {
        nodes.iter().filter_map(|items| s.host.reduce(r, items, Phase::Items).unwrap()).collect()
    };
    let (rust_partials, c_partials) = (partials(&s.rust), partials(&s.c));
    assert_eq!(c_partials, rust_partials);
    assert_eq!(c_partials.len(), 3, "the empty node has no partial");
    for (who, partials) in [("rust partials", &rust_partials), ("c partials", &c_partials)] {
        let pushed_down = both(who, |h, r| match h.reduce(r, partials, Phase::Partials)? {
            Some(combined) => h.finish(r, combined),
            None => Ok(None),
        });
        assert_eq!(pushed_down, expected, "{who}");
    }
    // One node's partial overflows the others: both refuse the combination alike.
    let over = [Item::of(Value::Int(i64::MAX)), Item::of(Value::Int(1))];
    assert_eq!(
        both("overflowing partials", |h, r| h.reduce(r, &over, Phase::Partials)),
        guest_error("sum: i64 overflow at ")
    );
}

/// Integer values alone (`abi::INTS_PHASE`): both answer alike, and what each answers on
/// the same items whole.
#[test]
fn integer_values_alone_are_summed_alike() {
    let s = sums();
    assert!(s.rust.ints() && s.c.ints(), "both take integer values alone");
    let ints = |values: &[i64]| -> Vec<u8> {
        let mut out = Vec::new();
        values.iter().for_each(|v| estate_guest::ints::push(&mut out, *v));
        out
    };
    for values in [&[][..], &[5], &[40, -2, 4], &[i64::MIN, i64::MAX, -1], &[i64::MAX, 1], &[i64::MIN, -1]] {
        let input = ints(values);
        let got = both(&format!("{values:?}"), |h, r| h.reduce_ints(r, &input));
        let items: Vec<Item> = values.iter().map(|v| int("k", *v, "n1")).collect();
        match values.iter().try_fold(0i64, |t, v| t.checked_add(*v)) {
            Some(_) => assert_eq!(got, both("whole", |h, r| h.reduce(r, &items, Phase::Items)), "{values:?}"),
            None => assert_eq!(got, guest_error("sum: i64 overflow"), "{values:?}"),
        }
    }
    let input = ints(&[1, 2, 3]);
    for cut in 1..8 {
        let got = both(&format!("cut {cut}"), |h, r| h.reduce_ints(r, &input[..input.len() - cut]));
        assert_eq!(got, bad_input(&format!("{} bytes left over", 8 - cut)), "cut {cut}");
    }
}

#[test]
fn finish_is_the_identity_in_both() {
    let full =
        Item { key: "k".into(), value: Value::Int(3), origin: "n1".into(), writer: "n9".into(), version: u64::MAX };
    for partial in [
        Item::of(Value::Int(42)),
        full,
        item("f", Value::Float(-2.25), "n2"),
        item("t", Value::Text("hé".into()), "n2"),
        item("", Value::Bytes(vec![]), ""),
    ] {
        let got = both("finish", |h, r| h.finish(r, partial.clone()));
        assert_eq!(got, Ok(Some(partial)));
    }
}

/// A valid encoded list to break: every field kind, unicode included.
fn sample_encoding() -> Vec<u8> {
    let items = [
        int("a", 1, "n1"),
        Item {
            key: "clé".into(),
            value: Value::Text("vé".into()),
            origin: "n2".into(),
            writer: "w".into(),
            version: 3,
        },
        item("b", Value::Bytes(vec![0xff, 0xfe]), "n3"),
    ];
    let mut buf = Vec::new();
    encode_items(&items, &mut buf);
    buf
}

#[test]
fn undecodable_input_is_refused_alike() {
    let reduce = |what: &str, input: &[u8]| -> Outcome {
        let a = both(what, |h, r| h.reduce_encoded(r, input, Phase::Items));
        assert_eq!(both(what, |h, r| h.reduce_encoded(r, input, Phase::Partials)), a, "{what}: phases differ");
        a
    };
    let good = sample_encoding();
    assert_eq!(reduce("sample", &good), guest_error("sum: clé from n2 is text, not an integer"));
    for cut in 0..good.len() {
        assert_eq!(reduce(&format!("cut at {cut}"), &good[..cut]), bad_input("buffer ends inside a field"), "{cut}");
    }
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0, 0, 0]);
    assert_eq!(reduce("trailing", &trailing), bad_input("3 bytes left over"));
    assert_eq!(reduce("huge count", &u32::MAX.to_le_bytes()), bad_input("buffer ends inside a field"));
    assert_eq!(reduce("no items, then a byte", &[0, 0, 0, 0, 9]), bad_input("1 bytes left over"));

    // Byte offsets in the sample: count 4; item a: key 4+1, tag at 9.
    let mut bad_tag = good.clone();
    bad_tag[9] = 9;
    assert_eq!(reduce("bad tag", &bad_tag), bad_input("unknown value tag 9"));
    // Item two starts at 4 + (5 + 9 + 6 + 6 + 8) = 38: key "clé" at 42..46.
    assert_eq!(&good[42..46], "clé".as_bytes());
    for (what, bytes) in [
        ("lone continuation", &[0x80u8][..]),
        ("overlong", &[0xc0, 0x80]),
        ("surrogate", &[0xed, 0xa0, 0x80]),
        ("above U+10FFFF", &[0xf4, 0x90, 0x80, 0x80]),
        ("cut sequence", &[0xe2, 0x82]),
    ] {
        // Same length as "clé" (4 bytes), padded with ASCII.
        let mut key = bytes.to_vec();
        key.resize(4, b'k');
        let mut bad = good.clone();
        bad[42..46].copy_from_slice(&key);
        assert_eq!(reduce(what, &bad), bad_input("text is not UTF-8"), "{what}");
    }
    let mut four_byte = good.clone();
    four_byte[42..46].copy_from_slice("😀".as_bytes());
    assert_eq!(reduce("4-byte key", &four_byte), guest_error("sum: 😀 from n2 is text, not an integer"));

    // The whole list is decoded first: a bad item after a non-integer is bad input.
    let mut late = Vec::new();
    encode_items(&[item("t", Value::Text("x".into()), "n1"), int("b", 2, "n1")], &mut late);
    let last = late.len() - 9;
    late[last] = 0xfe; // the last writer, "n1", becomes "n\xfe": not UTF-8
    assert_eq!(reduce("late bad item", &late), bad_input("text is not UTF-8"));
}

/// A small deterministic generator (splitmix64): the same cases on every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn generated_item_lists_get_the_same_answers() {
    let mut g = Gen(2024);
    let keys = ["a", "b", "flow:6:10.0.0.1:5000-10.0.0.2:443:packets", "clé", ""];
    let mut seen = BTreeSet::new();
    for case in 0..400 {
        let items: Vec<Item> = (0..g.below(9))
            .map(|_| {
                let value = match g.below(20) {
                    0 => Value::Float(g.below(1000) as f64 / 8.0),
                    1 => Value::Text("12".into()),
                    2 => Value::Bytes(vec![g.below(256) as u8]),
                    3..=5 => Value::Int(if g.below(2) == 0 { i64::MAX - g.below(3) as i64 } else { i64::MIN }),
                    _ => Value::Int(g.below(2000) as i64 - 1000),
                };
                let (key, origin) = (keys[g.below(5) as usize], format!("n{}", g.below(4)));
                Item { key: key.into(), value, origin: origin.clone(), writer: origin, version: g.next() }
            })
            .collect();
        let phase = if case % 2 == 0 { Phase::Items } else { Phase::Partials };
        let got = both(&format!("case {case}: {items:?}"), |h, r| h.reduce(r, &items, phase));
        seen.insert(match &got {
            Ok(None) => "none",
            Ok(Some(_)) => "sum",
            Err(e) if e.contains("overflow") => "overflow",
            Err(_) => "not an integer",
        });
    }
    assert_eq!(seen.len(), 4, "the generator must reach every kind of answer: {seen:?}");
}

/// The C guest's bump heap starts over after each call: under a memory cap far below
/// what the calls allocate together, a warm instance answers call after call.
#[test]
fn the_c_heap_is_reused_call_after_call() {
    let limits = Limits { memory_bytes: 4 << 20, ..Limits::default() };
    let host = WasmHost::new(limits.clone()).unwrap();
    let c = host.load_reducer(&guests::require("c_reducer_sum").unwrap()).unwrap();
    let items: Vec<Item> = (0..40_000).map(|i| int("k", i, "n1")).collect();
    let mut input = Vec::new();
    encode_items(&items, &mut input);
    assert!(input.len() > 1 << 20, "each call takes more than a MiB");
    let expected = answer_of((0..40_000).sum());
    for call in 0..10 {
        assert_eq!(outcome(host.reduce_encoded(&c, &input, Phase::Items)), expected, "call {call}");
    }
}

// --- the NF ---------------------------------------------------------------------------

/// A store tenant that also writes down every host call the NF made, in order.
struct Recorded {
    tenant: Arc<TenantStore>,
    calls: Mutex<Vec<String>>,
}

impl Recorded {
    /// Writes down `call` and what it answered; returns the answer.
    fn log<R: std::fmt::Debug>(&self, call: String, answer: R) -> R {
        self.calls.lock().unwrap().push(format!("{call} -> {answer:?}"));
        answer
    }
}

impl NfState for Recorded {
    fn counter_add(&self, key: &str, delta: i64) -> Result<i64, String> {
        self.log(format!("counter_add {key:?} {delta}"), NfState::counter_add(&*self.tenant, key, delta))
    }

    fn get(&self, key: &str) -> Option<Value> {
        self.log(format!("get {key:?}"), NfState::get(&*self.tenant, key))
    }

    fn set(&self, key: &str, value: Value) -> Result<(), String> {
        self.log(format!("set {key:?} {value:?}"), NfState::set(&*self.tenant, key, value))
    }

    fn del(&self, key: &str) -> bool {
        self.log(format!("del {key:?}"), NfState::del(&*self.tenant, key))
    }

    fn metric_add(&self, name: &str, delta: i64) {
        self.log(format!("metric_add {name:?} {delta}"), ())
    }

    fn emit(&self, event: &str) {
        self.log(format!("emit {event:?}"), ())
    }
}

/// What one run of an NF over a packet stream left.
#[derive(Debug, PartialEq)]
struct Run {
    verdicts: Vec<Verdict>,
    calls: Vec<String>,
    state: BTreeMap<String, Value>,
}

fn counts() -> &'static (WasmHost, estate::wasm::NfModule, estate::wasm::NfModule) {
    static COUNTS: OnceLock<(WasmHost, estate::wasm::NfModule, estate::wasm::NfModule)> = OnceLock::new();
    COUNTS.get_or_init(|| {
        let host = WasmHost::new(Limits::default()).unwrap();
        let rust = host.load_nf(&guests::require("nf_count").unwrap()).unwrap();
        let c = host.load_nf(&guests::require("c_nf_count").unwrap()).unwrap();
        (host, rust, c)
    })
}

/// Runs the Rust count (`c == false`) or the C count with `config` over `packets`, on a
/// fresh store that `prepare` may fill first; a configuration error is the `Err`.
fn run(c: bool, config: &str, packets: &[Packet<'_>], prepare: impl Fn(&TenantStore)) -> Result<Run, String> {
    let (host, rust_nf, c_nf) = counts();
    let tenant = Store::new("n1").tenant(DEFAULT_TENANT).unwrap();
    prepare(&tenant);
    let recorded = Arc::new(Recorded { tenant: tenant.clone(), calls: Mutex::default() });
    let mut nf =
        host.start_nf(if c { c_nf } else { rust_nf }, recorded.clone(), config).map_err(|e| format!("{e:?}"))?;
    let verdicts = packets.iter().map(|p| nf.on_packet(p).unwrap()).collect();
    for brought in Brought::ALL {
        nf.on_flow_moved("6:10.0.0.1:5000-10.0.0.2:443", *brought).unwrap();
    }
    let all = Pattern::new(".*").unwrap();
    let state = tenant.matching(&all).into_iter().map(|i| (i.key, i.value)).collect();
    let calls = recorded.calls.lock().unwrap().clone();
    Ok(Run { verdicts, calls, state })
}

/// Both counts over the same packets: asserts they agree, returns the Rust run.
fn run_both(config: &str, packets: &[Packet<'_>], prepare: impl Fn(&TenantStore)) -> Result<Run, String> {
    let rust = run(false, config, packets, &prepare);
    let c = run(true, config, packets, &prepare);
    assert_eq!(c, rust, "config {config:?}: the C count differs");
    rust
}

#[test]
fn c_count_leaves_the_state_rust_count_leaves() {
    let owned: Vec<OwnedPacket> = synthetic(&"seed=11,flows=25,packets=3000,moved=1".parse().unwrap()).collect();
    let packets: Vec<Packet<'_>> = owned.iter().map(OwnedPacket::as_packet).collect();
    assert!(packets.iter().any(|p| p.direction == Direction::Reverse) && packets.iter().all(|p| p.moved));
    for (config, max) in [("max_payload = 300", Some(300)), ("", None)] {
        let got = run_both(config, &packets, |_| {}).unwrap();
        // And what both left is what the NF is meant to leave.
        let kept = |p: &&Packet<'_>| max.is_none_or(|m| p.payload.len() <= m);
        let forwarded: Vec<&Packet<'_>> = packets.iter().filter(kept).collect();
        let expected: Vec<Verdict> =
            packets.iter().map(|p| if kept(&p) { Verdict::Forward } else { Verdict::Drop }).collect();
        assert_eq!(got.verdicts, expected);
        let mut state = BTreeMap::new();
        let mut add = |k: String, d: i64| match state.entry(k).or_insert(Value::Int(0)) {
            Value::Int(v) => *v += d,
            other => panic!("{other:?}"),
        };
        for p in &packets {
            if kept(&p) {
                add("count:packets".into(), 1);
                add("count:bytes".into(), p.payload.len() as i64);
                add(format!("flow:{}:packets", p.flow), 1);
            } else {
                add("count:dropped".into(), 1);
            }
        }
        assert_eq!(got.state, state, "{config:?}");
        assert_eq!(got.calls.len(), 3 * forwarded.len() + (packets.len() - forwarded.len()));
        assert!(max.is_none() || forwarded.len() < packets.len(), "the stream must drop some");
    }
}

#[test]
fn refused_adds_lose_only_that_count_in_both() {
    let owned: Vec<OwnedPacket> = synthetic(&"seed=3,flows=4,packets=50".parse().unwrap()).collect();
    let packets: Vec<Packet<'_>> = owned.iter().map(OwnedPacket::as_packet).collect();
    let got = run_both("", &packets, |t| {
        t.set("count:bytes", Value::Text("not a number".into())).unwrap();
    })
    .unwrap();
    assert_eq!(got.verdicts, vec![Verdict::Forward; 50]);
    assert_eq!(got.state["count:bytes"], Value::Text("not a number".into()));
    assert_eq!(got.state["count:packets"], Value::Int(50));
    assert_eq!(got.calls.iter().filter(|c| c.contains("count:bytes") && c.contains("Err(")).count(), 50);
}

/// How a configuration is meant to end: a payload limit (or none), or an error about a
/// value or about a line (the message quotes it as Rust's `{:?}` does).
enum Expect {
    Limit(Option<usize>),
    BadValue(&'static str),
    BadLine(&'static str),
}

#[test]
fn c_count_reads_its_configuration_as_rust_count_does() {
    use Expect::*;
    let cases = [
        ("", Limit(None)),
        ("\n\n  \n\t\r\n", Limit(None)),
        ("max_payload = 3", Limit(Some(3))),
        ("max_payload=0", Limit(Some(0))),
        ("  max_payload =  +7 \r\n", Limit(Some(7))),
        ("max_payload = 2\nmax_payload = 5", Limit(Some(5))),
        ("max_payload = 5\r\n\r\nmax_payload = 2\r\n", Limit(Some(2))),
        ("\u{a0}max_payload\u{3000}=\u{2003}4\u{85}", Limit(Some(4))),
        ("max_payload = 0004", Limit(Some(4))),
        ("max_payload = 4294967295", Limit(Some(4_294_967_295))),
        ("max_payload = 4294967296", BadValue("4294967296")),
        ("max_payload = -1", BadValue("-1")),
        ("max_payload = lots", BadValue("lots")),
        ("max_payload =", BadValue("")),
        ("max_payload = +", BadValue("+")),
        ("max_payload = 1 2", BadValue("1 2")),
        ("max_payload = ５", BadValue("５")),
        ("max_payload = 1\u{0}", BadValue("1\u{0}")),
        ("max_payload = \"q\\\"\t\u{1}\u{1f}\u{7f}'x", BadValue("\"q\\\"\t\u{1}\u{1f}\u{7f}'x")),
        ("max_payload = 3 = 4", BadValue("3 = 4")),
        ("# a comment", BadLine("# a comment")),
        ("max_payload", BadLine("max_payload")),
        ("foo = 1", BadLine("foo = 1")),
        ("MAX_PAYLOAD = 1", BadLine("MAX_PAYLOAD = 1")),
        ("max_payload = 3\nmax-payload = 4", BadLine("max-payload = 4")),
        ("bad\tline \\ with \"quotes\" and é", BadLine("bad\tline \\ with \"quotes\" and é")),
    ];
    let sizes = [0usize, 1, 2, 3, 4, 5, 6, 7, 8, 100];
    let payloads: Vec<Vec<u8>> = sizes.iter().map(|n| vec![b'x'; *n]).collect();
    let packets: Vec<Packet<'_>> = payloads
        .iter()
        .map(|payload| Packet {
            proto: 17,
            src: ([10, 0, 0, 1], 5000),
            dst: ([10, 0, 0, 2], 53),
            direction: Direction::Forward,
            moved: false,
            tcp_flags: 0,
            flow: "17:10.0.0.1:5000-10.0.0.2:53",
            payload,
        })
        .collect();
    for (config, expect) in cases {
        let got = run_both(config, &packets, |_| {});
        match expect {
            Limit(max) => {
                let verdicts: Vec<Verdict> = sizes
                    .iter()
                    .map(|n| if max.is_some_and(|m| *n > m) { Verdict::Drop } else { Verdict::Forward })
                    .collect();
                assert_eq!(got.map(|r| r.verdicts), Ok(verdicts), "{config:?}");
            }
            BadValue(v) => {
                let message = format!("count: bad max_payload {v:?}");
                assert_eq!(got, Err(format!("{:?}", GuestError::Guest(message))), "{config:?}");
            }
            BadLine(line) => {
                let message = format!("count: unknown configuration line {line:?}");
                assert_eq!(got, Err(format!("{:?}", GuestError::Guest(message))), "{config:?}");
            }
        }
    }
}

// --- the header -----------------------------------------------------------------------

fn header() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-c/include/estate_guest.h");
    std::fs::read_to_string(path).unwrap()
}

/// Every `ESTATE_*` number of the header, by name, is the number `estate_guest::abi`
/// defines, and it defines no other.
#[test]
fn the_header_numbers_are_the_abi_numbers() {
    // A number alone, or in parentheses, then at most a comment.
    let defined = regex::Regex::new(r"(?m)^#define ESTATE_(\w+) +\(?(-?\d+)\)? *(/\*.*)?$").unwrap();
    let header = header();
    let found: BTreeMap<String, i64> =
        defined.captures_iter(&header).map(|c| (c[1].to_string(), c[2].parse().unwrap())).collect();
    let mut expected: BTreeMap<String, i64> = [
        ("ABI_VERSION", abi::VERSION),
        ("ALLOC_FAILED", abi::ALLOC_FAILED),
        ("FLAGS_NONE", abi::flags::NONE),
        ("FLAG_COMBINABLE", abi::flags::COMBINABLE),
        ("FLAG_VALUES_ONLY", abi::flags::VALUES_ONLY),
        ("FLAG_INTS", abi::flags::INTS),
        ("PHASE_INTS", abi::INTS_PHASE),
        ("STATUS_ITEM", abi::status::ITEM),
        ("STATUS_NONE", abi::status::NONE),
        ("STATUS_ERROR", abi::status::ERROR),
        ("STATUS_BAD_INPUT", abi::status::BAD_INPUT),
        ("STATUS_OK", abi::status::OK),
        ("STATE_GET_ABSENT", abi::state_get::ABSENT),
        ("STATE_GET_FOUND", abi::state_get::FOUND),
        ("STATE_SET_OK", abi::state_set::OK),
        ("STATE_SET_REFUSED", abi::state_set::REFUSED),
        ("STATE_DEL_ABSENT", abi::state_del::ABSENT),
        ("STATE_DEL_DELETED", abi::state_del::DELETED),
        ("GLOBAL_NONE", abi::global::NONE),
        ("GLOBAL_ITEM", abi::global::ITEM),
        ("GLOBAL_ERROR", abi::global::ERROR),
        ("COUNTER_TRY_ADD_OK", abi::counter_try_add::OK),
        ("COUNTER_TRY_ADD_REFUSED", abi::counter_try_add::REFUSED),
        ("MATCHER_ERROR", abi::matcher::ERROR),
        ("MATCHER_NO_PREFILTER", abi::matcher::NO_PREFILTER),
        ("MATCHER_SCAN_PAYLOADS", abi::matcher::SCAN_PAYLOADS),
        ("REWRITE_OK", abi::rewrite::OK),
        ("REWRITE_ERROR", abi::rewrite::ERROR),
    ]
    .into_iter()
    .map(|(name, code)| (name.to_string(), i64::from(code)))
    .collect();
    for (name, limit) in [
        ("MATCHER_MAX_PATTERNS", abi::matcher::MAX_PATTERNS),
        ("MATCHER_MAX_PATTERN_BYTES", abi::matcher::MAX_PATTERN_BYTES),
        ("MATCHER_MAX_MATCHERS", abi::matcher::MAX_MATCHERS),
        ("MATCHER_BYTES_PER_FUEL", abi::matcher::BYTES_PER_FUEL),
    ] {
        expected.insert(name.into(), limit.into());
    }
    expected.insert("TAKE_ERROR".into(), abi::take::ERROR);
    expected.insert("BATCH_PENDING".into(), abi::batch::PENDING.into());
    expected.insert("BATCH_MAX_PACKETS".into(), abi::batch::MAX_PACKETS as i64);
    expected.insert("BATCH_NOT_SCANNED".into(), abi::batch::NOT_SCANNED.into());
    use estate_guest::nf::tcp;
    for (name, bit) in [
        ("FIN", tcp::FIN),
        ("SYN", tcp::SYN),
        ("RST", tcp::RST),
        ("PSH", tcp::PSH),
        ("ACK", tcp::ACK),
        ("URG", tcp::URG),
        ("ECE", tcp::ECE),
        ("CWR", tcp::CWR),
    ] {
        expected.insert(format!("TCP_{name}"), bit.into());
    }
    use abi::value_tag;
    for (name, tag) in
        [("INT", value_tag::INT), ("FLOAT", value_tag::FLOAT), ("TEXT", value_tag::TEXT), ("BYTES", value_tag::BYTES)]
    {
        expected.insert(format!("TAG_{name}"), tag.into());
    }
    // The enums by their variant names: `Phase::Partials` is ESTATE_PHASE_PARTIALS.
    let mut codes = |kind: &str, named: Vec<(String, i64)>| {
        for (variant, code) in named {
            expected.insert(format!("{kind}_{}", variant.to_uppercase()), code);
        }
    };
    codes("PHASE", Phase::ALL.iter().map(|v| (format!("{v:?}"), v.code().into())).collect());
    codes("VERDICT", Verdict::ALL.iter().map(|v| (format!("{v:?}"), v.code().into())).collect());
    codes("BROUGHT", Brought::ALL.iter().map(|v| (format!("{v:?}"), v.code().into())).collect());
    codes("DIRECTION", Direction::ALL.iter().map(|v| (format!("{v:?}"), v.code().into())).collect());
    assert_eq!(found, expected);
}

/// The header imports exactly the ABI's host calls from its module, and names exactly
/// its exports.
#[test]
fn the_header_names_are_the_abi_names() {
    let header = header();
    let strings = |pattern: &str| -> BTreeSet<String> {
        let re = regex::Regex::new(pattern).unwrap();
        re.captures_iter(&header).map(|c| c[1].to_string()).collect()
    };
    let imports = strings(r#"(?m)^ESTATE_IMPORT\("(\w+)"\)"#);
    assert_eq!(imports, abi::import::ALL.iter().map(|s| s.to_string()).collect());
    let module = strings(r#"(?m)^#define ESTATE_IMPORT_MODULE "(\w+)""#);
    assert_eq!(module, BTreeSet::from([abi::IMPORT_MODULE.to_string()]));
    let exports = strings(r#"(?m)^#define ESTATE_EXPORT_\w+ "(\w+)""#);
    assert_eq!(exports, abi::export::ALL.iter().map(|s| s.to_string()).collect());
}
