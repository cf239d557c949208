//! The Wasm reducers of `reducers-wasm/`: their answers on hand-made items, their errors,
//! and, for every combinable one, that push-down (a partial per node, then the partials
//! combined) answers exactly what fetch-all (every item reduced in one place) answers.

use std::sync::OnceLock;
use std::thread;

use estate::guests;
use estate::wasm::{GuestError, Limits, ReducerModule, WasmHost};
use estate_guest::codec::decode_items;
use estate_guest::{Item, Phase, Value};

/// One host with every reducer compiled once for all tests: compiling is the slow part,
/// and sharing the modules also runs their warm instances from many threads.
struct Fixture {
    host: WasmHost,
    reducers: Vec<(&'static str, ReducerModule)>,
}

const NAMES: [&str; 6] = ["sum", "mean", "topk", "latest", "union", "median"];

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let host = WasmHost::new(Limits::default()).unwrap();
        let reducers = thread::scope(|s| {
            let host = &host;
            // `map` on an array is eager: all six compile at once, then are joined.
            NAMES
                .map(|name| s.spawn(move || (name, compile(host, name))))
                .into_iter()
                .map(|c| c.join().unwrap())
                .collect()
        });
        Fixture { host, reducers }
    })
}

fn compile(host: &WasmHost, name: &str) -> ReducerModule {
    let bytes = guests::require(&format!("reducer_{name}")).unwrap();
    host.load_reducer(&bytes).unwrap_or_else(|e| panic!("loading reducer_{name}: {e}"))
}

fn host() -> &'static WasmHost {
    &fixture().host
}

fn load(name: &str) -> ReducerModule {
    let found = fixture().reducers.iter().find(|(n, _)| *n == name);
    found.map(|(_, r)| r.clone()).unwrap_or_else(|| panic!("no reducer {name}"))
}

fn item(key: &str, value: Value, origin: &str, version: u64) -> Item {
    Item { key: key.into(), value, origin: origin.into(), writer: origin.into(), version }
}

fn int(key: &str, v: i64, origin: &str) -> Item {
    item(key, Value::Int(v), origin, 1)
}

fn float(key: &str, v: f64, origin: &str) -> Item {
    item(key, Value::Float(v), origin, 1)
}

fn text(key: &str, v: &str, origin: &str) -> Item {
    item(key, Value::Text(v.into()), origin, 1)
}

/// The answer's value, for a reduction that must succeed with one.
fn answer(result: Result<Option<Item>, GuestError>) -> Value {
    match result {
        Ok(Some(item)) => item.value,
        other => panic!("expected an answer, got {other:?}"),
    }
}

/// Asserts a guest error whose message contains every one of `parts`.
fn assert_guest_error(result: Result<Option<Item>, GuestError>, parts: &[&str]) {
    match result {
        Err(GuestError::Guest(msg)) => {
            for part in parts {
                assert!(msg.contains(part), "{msg:?} does not name {part:?}");
            }
        }
        other => panic!("expected a guest error naming {parts:?}, got {other:?}"),
    }
}

/// A value-only item, as partials are.
fn partial(value: Value) -> Item {
    Item::of(value)
}

fn mean_partial(sum: f64, count: i64) -> Value {
    let mut b = sum.to_le_bytes().to_vec();
    b.extend_from_slice(&count.to_le_bytes());
    Value::Bytes(b)
}

#[test]
fn combinable_flags() {
    for name in ["sum", "mean", "topk", "latest", "union"] {
        assert!(load(name).combinable(), "{name} should be combinable");
    }
    assert!(!load("median").combinable());
    // `sum` and `mean` read only values; the others read keys or writers too.
    assert!(load("sum").values_only() && load("mean").values_only());
    for name in ["topk", "latest", "union", "median"] {
        assert!(!load(name).values_only(), "{name}");
    }
    // `sum` and `mean` also take integer values alone; the others do not.
    assert!(load("sum").ints() && load("mean").ints());
    for name in ["topk", "latest", "union", "median"] {
        assert!(!load(name).ints(), "{name}");
    }
}

/// Integer values alone (`abi::INTS_PHASE`) as `sum` and `mean` take them where every
/// item is an integer.
fn ints(values: &[i64]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        estate_guest::ints::push(&mut out, *v);
    }
    out
}

/// `sum` and `mean` answer on integer values alone exactly what they answer on the same
/// items whole, to the last bit of a float; an overflow is still an error, a cut value
/// is bad input, and a reducer that did not declare the form is not called with it.
#[test]
fn integer_values_alone_give_the_answer_of_whole_items() {
    let host = host();
    let cases: [&[i64]; 5] =
        [&[], &[7], &[40, -2, 4], &[i64::MAX, i64::MIN, 3], &[1 << 53, 1, 1, 1, -(1 << 60), 12345, -9]];
    for name in ["sum", "mean"] {
        let r = load(name);
        for values in cases {
            let items: Vec<Item> = values.iter().enumerate().map(|(i, v)| int(&format!("k{i}"), *v, "n1")).collect();
            let whole = host.reduce(&r, &items, Phase::Items).unwrap();
            assert_eq!(host.reduce_ints(&r, &ints(values)).unwrap(), whole, "{name} of {values:?}");
        }
        let cut = &ints(&[1, 2])[..13];
        match host.reduce_ints(&r, cut) {
            Err(GuestError::Abi(msg)) => assert!(msg.contains("5 bytes left over"), "{name}: {msg}"),
            other => panic!("{name}: a cut value must be bad input, got {other:?}"),
        }
    }
    assert_guest_error(host.reduce_ints(&load("sum"), &ints(&[i64::MAX, 1])), &["sum: i64 overflow"]);
    match host.reduce_ints(&load("median"), &ints(&[1, 2])) {
        Err(GuestError::Abi(msg)) => assert!(msg.contains("integer values alone"), "{msg}"),
        other => panic!("median takes whole items only, got {other:?}"),
    }
}

#[test]
fn empty_input_is_no_answer() {
    let host = host();
    for name in ["sum", "mean", "topk", "latest", "union", "median"] {
        let r = load(name);
        assert_eq!(host.reduce_all(&r, &[]).unwrap(), None, "{name}");
        assert_eq!(host.reduce(&r, &[], Phase::Items).unwrap(), None, "{name}");
        if r.combinable() {
            assert_eq!(host.reduce(&r, &[], Phase::Partials).unwrap(), None, "{name}");
        }
    }
}

#[test]
fn sum_reduces_items_and_partials() {
    let host = host();
    let sum = load("sum");
    let items = [int("a", 40, "n1"), int("b", -2, "n2"), int("c", 4, "n3")];
    assert_eq!(answer(host.reduce_all(&sum, &items)), Value::Int(42));
    let partials = [partial(Value::Int(10)), partial(Value::Int(-3))];
    assert_eq!(answer(host.reduce(&sum, &partials, Phase::Partials)), Value::Int(7));
}

#[test]
fn mean_of_numbers() {
    let host = host();
    let mean = load("mean");
    let items = [int("a", 1, "n1"), int("b", 2, "n2"), int("c", 4, "n1")];
    assert_eq!(answer(host.reduce_all(&mean, &items)), Value::Float(7.0 / 3.0));
    let mixed = [int("a", 1, "n1"), float("b", 2.5, "n2")];
    assert_eq!(answer(host.reduce_all(&mean, &mixed)), Value::Float(1.75));
    assert_eq!(answer(host.reduce_all(&mean, &[int("a", -7, "n1")])), Value::Float(-7.0));
}

#[test]
fn mean_partials_are_sum_and_count() {
    let host = host();
    let mean = load("mean");
    let items = [int("a", 3, "n1"), float("b", 0.5, "n1")];
    let p = host.reduce(&mean, &items, Phase::Items).unwrap().unwrap();
    assert_eq!(p.value, mean_partial(3.5, 2));

    let partials = [partial(mean_partial(3.5, 2)), partial(mean_partial(10.0, 3))];
    let combined = host.reduce(&mean, &partials, Phase::Partials).unwrap().unwrap();
    assert_eq!(combined.value, mean_partial(13.5, 5));
    assert_eq!(answer(host.finish(&mean, combined)), Value::Float(13.5 / 5.0));
}

#[test]
fn mean_errors_name_the_item() {
    let host = host();
    let mean = load("mean");
    let bad = [int("a", 1, "n1"), text("flow:9", "x", "n7")];
    assert_guest_error(host.reduce_all(&mean, &bad), &["flow:9", "n7", "text"]);
    let bytes = [item("blob", Value::Bytes(vec![1; 16]), "n3", 1)];
    assert_guest_error(host.reduce_all(&mean, &bytes), &["blob", "n3", "bytes"]);

    for bad_partial in [
        Value::Int(3),
        Value::Bytes(vec![0; 15]),
        Value::Bytes(vec![0; 17]),
        mean_partial(1.0, 0),
        mean_partial(1.0, -2),
    ] {
        assert_guest_error(host.reduce(&mean, &[partial(bad_partial.clone())], Phase::Partials), &["mean", "partial"]);
        assert_guest_error(host.finish(&mean, partial(bad_partial)), &["mean", "partial"]);
    }
}

#[test]
fn topk_keeps_the_three_largest() {
    let host = host();
    let topk = load("topk");
    let items = [
        int("a", 5, "n1"),
        int("c", 9, "n2"),
        int("b", 9, "n1"),
        int("d", 1, "n3"),
        float("e", 7.5, "n3"),
        int("f", -4, "n2"),
    ];
    assert_eq!(answer(host.reduce_all(&topk, &items)), Value::Text("b n1 9\nc n2 9\ne n3 7.5".into()));
    // Fewer than three items; a float always shows its decimal point.
    let two = [float("x", 2.0, "n1"), int("y", -1, "n2")];
    assert_eq!(answer(host.reduce_all(&topk, &two)), Value::Text("x n1 2.0\ny n2 -1".into()));
}

#[test]
fn topk_breaks_ties_by_key_then_origin() {
    let host = host();
    let topk = load("topk");
    let items = [int("k", 2, "n2"), float("k", 2.0, "n1"), int("z", 3, "n9"), int("m", 2, "n0"), int("k", 2, "n3")];
    // Int(2) and Float(2.0) are equal values; the key, then the origin decides.
    assert_eq!(answer(host.reduce_all(&topk, &items)), Value::Text("z n9 3\nk n1 2.0\nk n2 2".into()));
    // Integers beyond 2^53 compare exactly with floats.
    let big = 1_i64 << 60;
    let items = [int("a", big + 1, "n1"), float("b", big as f64, "n1"), int("c", big - 1, "n1")];
    assert_eq!(
        answer(host.reduce_all(&topk, &items)),
        Value::Text(format!("a n1 {}\nb n1 {:?}\nc n1 {}", big + 1, big as f64, big - 1))
    );
}

#[test]
fn topk_partials_are_encoded_items() {
    let host = host();
    let topk = load("topk");
    let node1 = [item("a", Value::Int(5), "n1", 11), item("b", Value::Int(1), "n1", 12)];
    let node2 = [
        item("c", Value::Int(7), "n2", 21),
        item("d", Value::Int(3), "n2", 22),
        item("e", Value::Int(0), "n2", 23),
        item("f", Value::Int(6), "n2", 24),
    ];
    let p1 = host.reduce(&topk, &node1, Phase::Items).unwrap().unwrap();
    let p2 = host.reduce(&topk, &node2, Phase::Items).unwrap().unwrap();
    let Value::Bytes(bytes) = &p2.value else {
        panic!("partial is not bytes: {p2:?}");
    };
    assert_eq!(decode_items(bytes).unwrap(), vec![node2[0].clone(), node2[3].clone(), node2[1].clone()]);
    let combined = host.reduce(&topk, &[p1, p2], Phase::Partials).unwrap().unwrap();
    let Value::Bytes(bytes) = &combined.value else {
        panic!("combined partial is not bytes: {combined:?}");
    };
    assert_eq!(decode_items(bytes).unwrap(), vec![node2[0].clone(), node2[3].clone(), node1[0].clone()]);
    assert_eq!(answer(host.finish(&topk, combined)), Value::Text("c n2 7\nf n2 6\na n1 5".into()));
}

#[test]
fn topk_errors_name_the_item() {
    let host = host();
    let topk = load("topk");
    let bad = [int("a", 1, "n1"), text("flow:3", "x", "n4")];
    assert_guest_error(host.reduce_all(&topk, &bad), &["flow:3", "n4", "text"]);
    let nan = [float("flow:5", f64::NAN, "n6")];
    assert_guest_error(host.reduce_all(&topk, &nan), &["flow:5", "n6", "NaN"]);
    for bad_partial in [Value::Text("a n1 1".into()), Value::Bytes(vec![9, 9, 9])] {
        assert_guest_error(host.reduce(&topk, &[partial(bad_partial.clone())], Phase::Partials), &["topk", "partial"]);
        assert_guest_error(host.finish(&topk, partial(bad_partial)), &["topk", "partial"]);
    }
}

#[test]
fn latest_is_the_largest_version_then_writer() {
    let host = host();
    let latest = load("latest");
    let items = [
        item("a", Value::Int(1), "n1", 10),
        item("b", Value::Text("new".into()), "n2", 30),
        item("c", Value::Float(0.5), "n3", 20),
    ];
    assert_eq!(host.reduce_all(&latest, &items).unwrap(), Some(items[1].clone()));
    // Equal versions: the larger writer wins.
    let tie =
        [item("k", Value::Int(1), "n9", 30), item("k", Value::Int(2), "n10", 30), item("k", Value::Int(3), "n1", 29)];
    assert_eq!(host.reduce_all(&latest, &tie).unwrap(), Some(tie[0].clone()));
    // The writer, not the node that holds the item now.
    let moved = Item { origin: "n0".into(), ..tie[0].clone() };
    let stayed = Item { writer: "n8".into(), origin: "n8".into(), ..tie[1].clone() };
    assert_eq!(host.reduce_all(&latest, &[stayed, moved.clone()]).unwrap(), Some(moved));
    // Partials are items too: the latest of the latest.
    assert_eq!(
        host.reduce(&latest, &[tie[2].clone(), items[1].clone()], Phase::Partials).unwrap(),
        Some(items[1].clone())
    );
}

#[test]
fn union_of_texts() {
    let host = host();
    let union = load("union");
    let items = [text("a", "web", "n1"), text("b", "dns", "n2"), text("c", "web", "n3"), text("d", "ssh\nntp", "n1")];
    assert_eq!(answer(host.reduce_all(&union, &items)), Value::Text("dns\nntp\nssh\nweb".into()));
    let with_empty = [text("a", "", "n1"), text("b", "x", "n1")];
    assert_eq!(answer(host.reduce_all(&union, &with_empty)), Value::Text("\nx".into()));
    let partials = [partial(Value::Text("a\nc".into())), partial(Value::Text("b\nc".into()))];
    assert_eq!(answer(host.reduce(&union, &partials, Phase::Partials)), Value::Text("a\nb\nc".into()));
}

#[test]
fn union_errors_name_the_item() {
    let host = host();
    let union = load("union");
    let bad = [text("a", "x", "n1"), int("flow:2", 5, "n8")];
    assert_guest_error(host.reduce_all(&union, &bad), &["flow:2", "n8", "int"]);
    assert_guest_error(
        host.reduce(&union, &[partial(Value::Bytes(vec![1]))], Phase::Partials),
        &["union", "partial", "bytes"],
    );
}

#[test]
fn median_of_numbers() {
    let host = host();
    let median = load("median");
    let odd = [int("a", 3, "n1"), int("b", 1, "n2"), int("c", 2, "n3")];
    assert_eq!(answer(host.reduce_all(&median, &odd)), Value::Int(2));
    let even = [int("a", 4, "n1"), int("b", 1, "n2"), int("c", 3, "n3"), int("d", 2, "n1")];
    assert_eq!(answer(host.reduce_all(&median, &even)), Value::Float(2.5));
    let mixed = [int("a", 10, "n1"), float("b", 2.5, "n2"), int("c", 1, "n3")];
    assert_eq!(answer(host.reduce_all(&median, &mixed)), Value::Float(2.5));
    let one = [float("a", -1.25, "n1")];
    assert_eq!(answer(host.reduce_all(&median, &one)), Value::Float(-1.25));
    let huge = [int("a", i64::MAX, "n1"), int("b", i64::MAX, "n2")];
    assert_eq!(answer(host.reduce_all(&median, &huge)), Value::Float(i64::MAX as f64));
}

#[test]
fn median_errors_name_the_item() {
    let host = host();
    let median = load("median");
    let bad = [int("a", 1, "n1"), text("flow:1", "x", "n5")];
    assert_guest_error(host.reduce_all(&median, &bad), &["flow:1", "n5", "text"]);
    let nan = [float("flow:4", f64::NAN, "n2")];
    assert_guest_error(host.reduce_all(&median, &nan), &["flow:4", "n2", "NaN"]);
}

/// xorshift64: a small deterministic PRNG, so every run checks the same cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform enough in `0..n` for a test.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

/// Random items: a few keys, origins and versions, so that ties happen.
fn random_items(rng: &mut Rng, value: fn(&mut Rng) -> Value) -> Vec<Item> {
    let n = rng.below(25) as usize;
    (0..n)
        .map(|_| Item {
            key: format!("flow:{}", rng.below(12)),
            origin: format!("n{}", rng.below(8)),
            writer: format!("n{}", rng.below(8)),
            version: rng.below(40),
            value: value(rng),
        })
        .collect()
}

fn moderate_int(rng: &mut Rng) -> Value {
    Value::Int(rng.range(-1_000_000, 1_000_000))
}

fn small_number(rng: &mut Rng) -> Value {
    // Few distinct values, integers and halves, so equal values of both types tie.
    let v = rng.range(-10, 10);
    if rng.below(3) == 0 { Value::Float(v as f64 / 2.0) } else { Value::Int(v) }
}

fn any_value(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => Value::Int(rng.range(-5, 5)),
        1 => Value::Float(rng.range(-5, 5) as f64 / 4.0),
        2 => short_text(rng),
        _ => Value::Bytes((0..rng.below(4)).map(|_| rng.below(3) as u8).collect()),
    }
}

fn short_text(rng: &mut Rng) -> Value {
    const ALPHABET: &[u8] = b"abc\n";
    let len = rng.below(4);
    let s = (0..len).map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize] as char).collect();
    Value::Text(s)
}

/// Every item reduced in one place: `finish(reduce(items))`.
fn fetch_all(host: &WasmHost, r: &ReducerModule, items: &[Item]) -> Option<Item> {
    host.reduce_all(r, items).unwrap()
}

/// A partial per node that has items, the partials combined, then finished.
fn push_down(host: &WasmHost, r: &ReducerModule, nodes: &[Vec<Item>]) -> Option<Item> {
    let partials: Vec<Item> = nodes
        .iter()
        .filter(|items| !items.is_empty())
        .filter_map(|items| host.reduce(r, items, Phase::Items).unwrap())
        .collect();
    if partials.is_empty() {
        return None;
    }
    let combined = host.reduce(r, &partials, Phase::Partials).unwrap()?;
    host.finish(r, combined).unwrap()
}

/// 200 random cases: push-down answers what fetch-all answers, compared by `same`.
fn check_push_down(
    name: &str,
    seed: u64,
    value: fn(&mut Rng) -> Value,
    same: fn(&Option<Item>, &Option<Item>) -> bool,
) {
    let host = host();
    let r = load(name);
    let mut rng = Rng(seed);
    for case in 0..200 {
        let items = random_items(&mut rng, value);
        let node_count = 1 + rng.below(8) as usize;
        let mut nodes = vec![Vec::new(); node_count];
        for item in &items {
            nodes[rng.below(node_count as u64) as usize].push(item.clone());
        }
        let all = fetch_all(host, &r, &items);
        let pushed = push_down(host, &r, &nodes);
        assert!(
            same(&all, &pushed),
            "{name}, case {case}: fetch-all {all:?} but push-down {pushed:?}\nnodes: {nodes:?}"
        );
    }
}

fn exactly(a: &Option<Item>, b: &Option<Item>) -> bool {
    a == b
}

fn within_1e9(a: &Option<Item>, b: &Option<Item>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => match (&a.value, &b.value) {
            (Value::Float(x), Value::Float(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) || x == y,
            _ => false,
        },
        _ => false,
    }
}

#[test]
fn push_down_equals_fetch_all_sum() {
    check_push_down("sum", 0x5eed_0001, moderate_int, exactly);
}

#[test]
fn push_down_equals_fetch_all_mean() {
    check_push_down("mean", 0x5eed_0002, moderate_int, within_1e9);
}

#[test]
fn push_down_equals_fetch_all_topk() {
    check_push_down("topk", 0x5eed_0003, small_number, exactly);
}

#[test]
fn push_down_equals_fetch_all_latest() {
    check_push_down("latest", 0x5eed_0004, any_value, exactly);
}

#[test]
fn push_down_equals_fetch_all_union() {
    check_push_down("union", 0x5eed_0005, short_text, exactly);
}
