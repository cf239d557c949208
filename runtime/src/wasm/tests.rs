use super::*;
use estate_guest::{Item, Value};

fn host() -> WasmHost {
    WasmHost::new(Limits { wall_time: Duration::from_millis(100), ..Limits::default() }).unwrap()
}

/// A reducer shell in WAT whose `estate_reduce` body is `body`.
fn wat_reducer(body: &str) -> Vec<u8> {
    format!(
        r#"(module
            (import "estate" "result" (func $result (param i32 i32)))
            (memory (export "memory") 1)
            (func (export "estate_abi_version") (result i32) i32.const {ABI_VERSION})
            (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "estate_reduce") (param i32 i32 i32) (result i32) {body}))"#
    )
    .into_bytes()
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    // A generous wall-time limit, so fuel is the limit that binds even on a loaded
    // machine.
    let host =
        WasmHost::new(Limits { fuel: 1_000_000, wall_time: Duration::from_secs(30), ..Limits::default() }).unwrap();
    let r = host.load_reducer(&wat_reducer("(loop (br 0)) i32.const 0")).unwrap();
    assert!(matches!(host.reduce_all(&r, &[]), Err(GuestError::OutOfFuel(1_000_000))));
}

#[test]
fn infinite_loop_without_fuel_pressure_hits_the_deadline() {
    let host = WasmHost::new(Limits { fuel: u64::MAX / 2, wall_time: Duration::from_millis(30), ..Limits::default() })
        .unwrap();
    let r = host.load_reducer(&wat_reducer("(loop (br 0)) i32.const 0")).unwrap();
    assert!(matches!(host.reduce_all(&r, &[]), Err(GuestError::Timeout(_))));
}

#[test]
fn memory_grow_bomb_hits_the_memory_limit() {
    let host = host();
    let r = host.load_reducer(&wat_reducer("(drop (memory.grow (i32.const 60000))) i32.const 1")).unwrap();
    assert!(matches!(host.reduce_all(&r, &[]), Err(GuestError::MemoryLimit(_))), "{:?}", host.reduce_all(&r, &[]));
}

#[test]
fn unreachable_is_a_trap() {
    let host = host();
    let r = host.load_reducer(&wat_reducer("unreachable")).unwrap();
    assert!(matches!(host.reduce_all(&r, &[]), Err(GuestError::Trap(_))));
}

#[test]
fn huge_output_is_refused() {
    let host = host();
    let r = host.load_reducer(&wat_reducer("(call $result (i32.const 0) (i32.const 65536)) i32.const 0")).unwrap();
    let mut limits = host.limits().clone();
    limits.output_bytes = 100;
    let small = WasmHost::new(limits).unwrap();
    let r2 = small.load_reducer(&wat_reducer("(call $result (i32.const 0) (i32.const 65536)) i32.const 0")).unwrap();
    assert!(matches!(small.reduce_all(&r2, &[]), Err(GuestError::OutputLimit { size: 65536, limit: 100 })));
    // Within the default limit the same bytes are a malformed value, not a crash.
    assert!(matches!(host.reduce_all(&r, &[]), Err(GuestError::Abi(_))));
}

#[test]
fn out_of_bounds_result_traps() {
    let host = host();
    let r = host.load_reducer(&wat_reducer("(call $result (i32.const 65530) (i32.const 100)) i32.const 0")).unwrap();
    assert!(matches!(host.reduce_all(&r, &[]), Err(GuestError::Trap(_))));
}

#[test]
fn missing_and_mistyped_exports_are_rejected_at_load() {
    let host = host();
    let missing = br#"(module (memory (export "memory") 1))"#;
    assert!(matches!(host.load_reducer(missing), Err(GuestError::Invalid(_))));
    let mistyped = br#"(module (memory (export "memory") 1)
            (func (export "estate_abi_version") (result i64) i64.const 1)
            (func (export "estate_alloc") (param i32) (result i32) i32.const 0)
            (func (export "estate_reduce") (param i32 i32) (result i32) i32.const 0))"#;
    assert!(matches!(host.load_reducer(mistyped), Err(GuestError::Invalid(_))));
    assert!(matches!(host.load_reducer(b"not wasm"), Err(GuestError::Invalid(_))));
}

#[test]
fn oversized_modules_are_refused_naming_the_limit() {
    let host = host();
    let bytes = wat_reducer("i32.const 1");
    let limits = Limits { module_bytes: bytes.len() - 1, ..host.limits().clone() };
    let err = host.load_reducer_with(&bytes, limits).unwrap_err();
    assert!(matches!(err, GuestError::ModuleSize { .. }), "{err}");
    assert!(err.to_string().contains("module size limit"), "{err}");
}

#[test]
fn warm_instances_are_reused_and_stay_correct() {
    let host = host();
    let sum = host.load_reducer(&crate::guests::require("reducer_sum").unwrap()).unwrap();
    for n in 1..=20i64 {
        let items: Vec<Item> = (1..=n)
            .map(|i| Item {
                key: format!("k{i}"),
                value: Value::Int(i),
                origin: "a".into(),
                writer: "a".into(),
                version: 1,
            })
            .collect();
        let answer = host.reduce_all(&sum, &items).unwrap().unwrap();
        assert_eq!(answer.value, Value::Int(n * (n + 1) / 2));
    }
    assert_eq!(sum.idle.lock().unwrap().len(), 1, "one warm instance served every call");
}

#[test]
fn wrong_abi_version_is_rejected() {
    let host = host();
    let bytes = br#"(module (memory (export "memory") 1)
            (func (export "estate_abi_version") (result i32) i32.const 99)
            (func (export "estate_alloc") (param i32) (result i32) i32.const 0)
            (func (export "estate_reduce") (param i32 i32) (result i32) i32.const 0))"#;
    assert!(matches!(host.load_reducer(bytes), Err(GuestError::AbiVersion { found: 99 })));
}

/// An NF whose `estate_on_flow_moved` has `sig` and body `body`.
fn flow_moved_nf(sig: &str, body: &str) -> Vec<u8> {
    format!(
        r#"(module (memory (export "memory") 1)
            (func (export "estate_abi_version") (result i32) i32.const {ABI_VERSION})
            (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "estate_nf_init") (param i32 i32) (result i32) i32.const 0)
            (func (export "estate_on_packet") (param i32 i32) (result i32) i32.const 0)
            (func (export "estate_on_flow_moved") {sig} {body}))"#
    )
    .into_bytes()
}

#[test]
fn the_flow_moved_callback_gets_how_the_state_came_and_is_checked() {
    let host = host();
    let state: Arc<dyn NfState> = crate::store::Store::new("n").tenant(crate::store::DEFAULT_TENANT).unwrap();
    // Returns `brought` itself: 0 (copied) is ok, 1 (taken) is an error status.
    let nf = host.load_nf(&flow_moved_nf("(param i32 i32 i32) (result i32)", "local.get 2")).unwrap();
    let mut instance = host.start_nf(&nf, state.clone(), "").unwrap();
    instance.on_flow_moved("6:10.0.0.1:1-10.0.0.2:2", estate_guest::Brought::Copied).unwrap();
    let err = instance.on_flow_moved("f", estate_guest::Brought::Taken).unwrap_err();
    assert!(err.to_string().contains("estate_on_flow_moved returned 1"), "{err}");
    // A trap in the callback is a guest fault like any other.
    let nf = host.load_nf(&flow_moved_nf("(param i32 i32 i32) (result i32)", "unreachable")).unwrap();
    let mut instance = host.start_nf(&nf, state.clone(), "").unwrap();
    assert!(matches!(instance.on_flow_moved("f", estate_guest::Brought::Failed), Err(GuestError::Trap(_))));
    // The export with the wrong type is refused when the NF starts.
    let nf = host.load_nf(&flow_moved_nf("(param i32 i32) (result i32)", "i32.const 0")).unwrap();
    let err = host.start_nf(&nf, state, "").unwrap_err();
    assert!(err.to_string().contains("estate_on_flow_moved"), "{err}");
}

/// An NF whose `estate_on_packet` runs `body` (then forwards), with the state calls
/// imported and, in its memory, the key "k" at 0, the bytes ff fe at 16 and an Int(7)
/// value at 32.
/// A one-byte TCP packet.
fn one_packet() -> crate::nf::input::synth::OwnedPacket {
    let dir = estate_guest::nf::Direction::Forward;
    crate::nf::input::synth::OwnedPacket::new(6, ([10, 0, 0, 1], 1), ([10, 0, 0, 2], 2), dir, b"x".to_vec())
}

fn state_nf(body: &str) -> Vec<u8> {
    format!(
        r#"(module
            (import "estate" "counter_add" (func $add (param i32 i32 i64) (result i64)))
            (import "estate" "state_set" (func $set (param i32 i32 i32 i32) (result i32)))
            (import "estate" "state_get" (func $get (param i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "k")
            (data (i32.const 16) "\ff\fe")
            (data (i32.const 32) "\00\07\00\00\00\00\00\00\00")
            (func (export "estate_abi_version") (result i32) i32.const {ABI_VERSION})
            (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "estate_nf_init") (param i32 i32) (result i32) i32.const 0)
            (func (export "estate_on_packet") (param i32 i32) (result i32) {body} i32.const 0))"#
    )
    .into_bytes()
}

#[test]
fn state_calls_check_what_the_guest_points_at() {
    let host = host();
    let store = crate::store::Store::new("n").tenant(crate::store::DEFAULT_TENANT).unwrap();
    let packet = one_packet();
    let run = |body: &str| {
        let nf = host.load_nf(&state_nf(body)).unwrap();
        host.start_nf(&nf, store.clone(), "").unwrap().on_packet(&packet.as_packet())
    };
    // Well-formed calls work, borrowing key and value from guest memory.
    run("(drop (call $add (i32.const 0) (i32.const 1) (i64.const 5)))").unwrap();
    assert_eq!(store.get("k").map(|v| v.value), Some(Value::Int(5)));
    run("(drop (call $set (i32.const 0) (i32.const 1) (i32.const 32) (i32.const 9)))").unwrap();
    assert_eq!(store.get("k").map(|v| v.value), Some(Value::Int(7)));
    // Bad pointers, keys that are not UTF-8 and malformed values are guest faults
    // that name the problem; the store is untouched.
    for (body, needle) in [
        ("(drop (call $add (i32.const 65530) (i32.const 100) (i64.const 1)))", "outside its memory"),
        ("(drop (call $add (i32.const 16) (i32.const 2) (i64.const 1)))", "not UTF-8"),
        ("(drop (call $get (i32.const -1) (i32.const 1)))", "outside its memory"),
        ("(drop (call $set (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 2)))", "malformed value"),
        ("(drop (call $set (i32.const 0) (i32.const 1) (i32.const 65535) (i32.const 9)))", "outside its memory"),
    ] {
        let err = run(body).unwrap_err();
        assert!(err.to_string().contains(needle), "{body}: {err}");
    }
    assert_eq!(store.get("k").map(|v| v.value), Some(Value::Int(7)));
}

/// An NF whose verdict is `counter_try_add`'s answer (OK = forward, REFUSED = drop), and
/// that traps unless an OK add wrote `expect` at `out`.
fn try_add_nf(delta: i64, out: i32, expect: i64) -> Vec<u8> {
    format!(
        r#"(module
            (import "estate" "counter_try_add" (func $try_add (param i32 i32 i64 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "k")
            (func (export "estate_abi_version") (result i32) i32.const {ABI_VERSION})
            (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "estate_nf_init") (param i32 i32) (result i32) i32.const 0)
            (func (export "estate_on_packet") (param i32 i32) (result i32) (local $code i32)
                (local.set $code (call $try_add (i32.const 0) (i32.const 1) (i64.const {delta}) (i32.const {out})))
                (if (i32.eqz (local.get $code))
                    (then (if (i64.ne (i64.load (i32.const {out})) (i64.const {expect})) (then unreachable))))
                (local.get $code)))"#
    )
    .into_bytes()
}

#[test]
fn counter_try_add_answers_a_refusal_instead_of_trapping() {
    use estate_guest::Verdict;
    let host = host();
    let store = crate::store::Store::new("n").tenant(crate::store::DEFAULT_TENANT).unwrap();
    let packet = one_packet();
    let run = |delta: i64, out: i32, expect: i64| {
        let nf = host.load_nf(&try_add_nf(delta, out, expect)).unwrap();
        host.start_nf(&nf, store.clone(), "").unwrap().on_packet(&packet.as_packet())
    };
    // Added: OK, and the new value written where the guest asked.
    assert_eq!(run(5, 48, 5).unwrap(), Verdict::Forward);
    assert_eq!(run(2, 48, 7).unwrap(), Verdict::Forward);
    // An overflow and a text value are refused: no trap, the store unchanged.
    assert_eq!(run(i64::MAX, 48, 0).unwrap(), Verdict::Drop);
    assert_eq!(store.get("k").map(|v| v.value), Some(Value::Int(7)));
    store.set("k", Value::Text("t".into())).unwrap();
    assert_eq!(run(1, 48, 0).unwrap(), Verdict::Drop);
    assert_eq!(store.get("k").map(|v| v.value), Some(Value::Text("t".into())));
    // An output pointer outside guest memory is a guest fault.
    store.set("k", Value::Int(1)).unwrap();
    let err = run(1, 65534, 2).unwrap_err();
    assert!(err.to_string().contains("outside guest memory"), "{err}");
}

/// An NF whose `estate_on_packet` runs `body`, adding its i32 result to the counter
/// "k", with the matcher calls imported and, in its memory, the patterns `ab`, `c`
/// encoded at 0 (15 bytes) and the haystack `abcab` at 64.
fn matcher_nf(body: &str) -> Vec<u8> {
    format!(
        r#"(module
            (import "estate" "counter_add" (func $add (param i32 i32 i64) (result i64)))
            (import "estate" "matcher_new" (func $new (param i32 i32 i32) (result i32)))
            (import "estate" "matcher_count" (func $count (param i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "\02\00\00\00\02\00\00\00ab\01\00\00\00c")
            (data (i32.const 64) "abcab")
            (data (i32.const 128) "k")
            (func (export "estate_abi_version") (result i32) i32.const {ABI_VERSION})
            (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "estate_nf_init") (param i32 i32) (result i32) i32.const 0)
            (func (export "estate_on_packet") (param i32 i32) (result i32)
                (drop (call $add (i32.const 128) (i32.const 1) (i64.extend_i32_s {body})))
                i32.const 0))"#
    )
    .into_bytes()
}

#[test]
fn the_host_matcher_counts_in_guest_memory_and_refuses_what_is_wrong() {
    let packet = one_packet();
    let run = |host: &WasmHost, body: &str| {
        let store = crate::store::Store::new("n").tenant(crate::store::DEFAULT_TENANT).unwrap();
        let nf = host.load_nf(&matcher_nf(body)).unwrap();
        let verdict = host.start_nf(&nf, store.clone(), "").unwrap().on_packet(&packet.as_packet());
        verdict.map(|_| store.get("k").map(|v| v.value))
    };
    let host = host();
    let new = "(call $new (i32.const 0) (i32.const 15) (i32.const 0))";
    // `ab`, `c`, `ab`: leftmost-first, non-overlapping; with or without the prefilter.
    let count = format!("(call $count {new} (i32.const 64) (i32.const 5))");
    assert_eq!(run(&host, &count).unwrap(), Some(Value::Int(3)));
    let unfiltered =
        "(call $count (call $new (i32.const 0) (i32.const 15) (i32.const 1)) (i32.const 64) (i32.const 5))";
    assert_eq!(run(&host, unfiltered).unwrap(), Some(Value::Int(3)));
    // A bad encoding, and a ninth matcher, are answers (ERROR, the reason staged).
    assert_eq!(run(&host, "(call $new (i32.const 0) (i32.const 14) (i32.const 0))").unwrap(), Some(Value::Int(-1)));
    let nine = format!("{}(call $new (i32.const 0) (i32.const 15) (i32.const 0))", format!("(drop {new})").repeat(8));
    assert_eq!(run(&host, &nine).unwrap(), Some(Value::Int(-1)));
    // An unknown handle and a haystack outside memory are guest faults naming them.
    for (body, needle) in [
        ("(call $count (i32.const 5) (i32.const 64) (i32.const 5))", "no matcher 5"),
        (&*format!("(call $count {new} (i32.const 65530) (i32.const 100))"), "outside its memory"),
    ] {
        let err = run(&host, body).unwrap_err();
        assert!(err.to_string().contains(needle), "{body}: {err}");
    }
    // A scan is charged to the call's fuel: 64 KiB at 1 unit per 8 bytes is more than
    // 5,000 units.
    let poor = WasmHost::new(Limits { fuel: 5_000, wall_time: Duration::from_secs(30), ..Limits::default() }).unwrap();
    let big = format!("(call $count {new} (i32.const 0) (i32.const 65536))");
    assert!(matches!(run(&poor, &big), Err(GuestError::OutOfFuel(5_000))), "{:?}", run(&poor, &big));
    assert_eq!(run(&poor, &count).unwrap(), Some(Value::Int(3)), "a small scan fits the same budget");
}

/// An NF that keeps its packet buffer at `buffer` (its `estate_packet_buffer` answers
/// that), and counts in "k" the packets whose record came there with proto TCP.
fn kept_buffer_nf(buffer: i32) -> Vec<u8> {
    format!(
        r#"(module
            (import "estate" "counter_add" (func $add (param i32 i32 i64) (result i64)))
            (memory (export "memory") 1)
            (data (i32.const 128) "k")
            (global $asked (mut i32) (i32.const 0))
            (func (export "estate_abi_version") (result i32) i32.const {ABI_VERSION})
            (func (export "estate_alloc") (param i32) (result i32) i32.const 8192)
            (func (export "estate_packet_buffer") (param i32) (result i32)
                (global.set $asked (i32.add (global.get $asked) (i32.const 1)))
                i32.const {buffer})
            (func (export "estate_nf_init") (param i32 i32) (result i32) i32.const 0)
            (func (export "estate_on_packet") (param i32 i32) (result i32)
                (if (i32.and (i32.eq (local.get 0) (i32.const {buffer}))
                             (i32.eq (i32.load8_u (local.get 0)) (i32.const 6)))
                    (then (drop (call $add (i32.const 128) (i32.const 1) (i64.extend_i32_u (global.get $asked))))))
                i32.const 0))"#
    )
    .into_bytes()
}

#[test]
fn packet_records_go_into_the_buffer_the_guest_keeps() {
    let host = host();
    let packet = one_packet();
    let store = crate::store::Store::new("n").tenant(crate::store::DEFAULT_TENANT).unwrap();
    let nf = host.load_nf(&kept_buffer_nf(4096)).unwrap();
    let mut instance = host.start_nf(&nf, store.clone(), "").unwrap();
    for _ in 0..3 {
        instance.on_packet(&packet.as_packet()).unwrap();
    }
    // Three records, all in the kept buffer, which was asked for once.
    assert_eq!(store.get("k").map(|v| v.value), Some(Value::Int(3)));
    // A buffer outside guest memory, or none, is the guest's fault, named.
    for (buffer, needle) in [(65000, "outside guest memory"), (0, "returned null")] {
        let nf = host.load_nf(&kept_buffer_nf(buffer)).unwrap();
        let err = host.start_nf(&nf, store.clone(), "").unwrap().on_packet(&packet.as_packet()).unwrap_err();
        assert!(err.to_string().contains(needle), "{buffer}: {err}");
    }
}

/// An NF that calls `packet_rewrite` as `init`, `packet` and `moved` say in its three
/// entry points: `estate_on_packet`'s verdict is the status of its body's last call,
/// the others add theirs to the counters "i" and "m".
fn rewrite_nf(init: &str, packet: &str, moved: &str) -> Vec<u8> {
    format!(
        r#"(module
            (import "estate" "packet_rewrite" (func $rewrite (param i32 i32 i32 i32) (result i32)))
            (import "estate" "counter_add" (func $add (param i32 i32 i64) (result i64)))
            (memory (export "memory") 1)
            (data (i32.const 128) "im")
            (func (export "estate_abi_version") (result i32) i32.const {ABI_VERSION})
            (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "estate_nf_init") (param i32 i32) (result i32)
                (drop (call $add (i32.const 128) (i32.const 1) (i64.extend_i32_s {init})))
                i32.const 0)
            (func (export "estate_on_packet") (param i32 i32) (result i32) {packet})
            (func (export "estate_on_flow_moved") (param i32 i32 i32) (result i32)
                (drop (call $add (i32.const 129) (i32.const 1) (i64.extend_i32_s {moved})))
                i32.const 0))"#
    )
    .into_bytes()
}

/// `packet_rewrite` from 192.0.2.1:`sport` to 10.0.0.7:`dport`.
fn rewrite_call(sport: i64, dport: i64) -> String {
    format!("(call $rewrite (i32.const 0xc0000201) (i32.const {sport}) (i32.const 0x0a000007) (i32.const {dport}))")
}

#[test]
fn packet_rewrite_is_recorded_for_the_packet_being_handled_only() {
    use estate_guest::Verdict;
    use estate_guest::abi::rewrite;
    use estate_guest::nf::Rewrite;
    let host = host();
    let packet = one_packet();
    let store = crate::store::Store::new("n").tenant(crate::store::DEFAULT_TENANT).unwrap();
    let start = |packet_body: &str| {
        let nf = host.load_nf(&rewrite_nf(&rewrite_call(1, 2), packet_body, &rewrite_call(1, 2))).unwrap();
        host.start_nf(&nf, store.clone(), "").unwrap()
    };
    let asked = |sport: u16, dport: u16| Rewrite { src: ([192, 0, 2, 1], sport), dst: ([10, 0, 0, 7], dport) };
    assert_eq!((rewrite::OK, rewrite::ERROR), (Verdict::Forward.code(), Verdict::Drop.code()));

    // Asked: take_rewrite has it, once; a second call for the packet replaces the first.
    let mut nf = start(&rewrite_call(20000, 80));
    assert_eq!(nf.on_packet(&packet.as_packet()).unwrap(), Verdict::Forward);
    assert_eq!(nf.take_rewrite(), Some(asked(20000, 80)));
    assert_eq!(nf.take_rewrite(), None);
    let mut nf = start(&format!("(drop {}) {}", rewrite_call(1, 1), rewrite_call(0, 65535)));
    assert_eq!(nf.on_packet(&packet.as_packet()).unwrap(), Verdict::Forward);
    assert_eq!(nf.take_rewrite(), Some(asked(0, 65535)));
    // Outside estate_on_packet (init, flow moved) the call is refused: ERROR, nothing kept.
    assert_eq!(store.get("i").map(|v| v.value), Some(Value::Int(i64::from(rewrite::ERROR) * 2)));
    nf.on_flow_moved("f", estate_guest::Brought::Copied).unwrap();
    assert_eq!(store.get("m").map(|v| v.value), Some(Value::Int(i64::from(rewrite::ERROR))));
    assert_eq!(nf.take_rewrite(), None);

    // A port outside 0..=65535 is refused, and an earlier rewrite of the packet stays.
    for (sport, dport) in [(65536, 80), (80, -1), (i64::from(i32::MIN), 80)] {
        let mut nf = start(&rewrite_call(sport, dport));
        assert_eq!(nf.on_packet(&packet.as_packet()).unwrap(), Verdict::Drop, "{sport} {dport}");
        assert_eq!(nf.take_rewrite(), None);
    }
    let mut nf = start(&format!("(drop {}) {}", rewrite_call(7, 8), rewrite_call(7, 65536)));
    assert_eq!(nf.on_packet(&packet.as_packet()).unwrap(), Verdict::Drop);
    assert_eq!(nf.take_rewrite(), Some(asked(7, 8)));

    // None asked: None, even when the packet before asked and nobody took it.
    let mut nf = start(
        "(if (result i32) (i32.eqz (i32.load8_u (i32.const 200))) \
         (then (i32.store8 (i32.const 200) (i32.const 1)) (drop (call $rewrite (i32.const 1) (i32.const 2) \
         (i32.const 3) (i32.const 4))) (i32.const 0)) (else (i32.const 0)))",
    );
    nf.on_packet(&packet.as_packet()).unwrap();
    nf.on_packet(&packet.as_packet()).unwrap();
    assert_eq!(nf.take_rewrite(), None);
    // A packet whose handling failed leaves no rewrite either.
    let mut nf = start(&format!("(drop {}) unreachable", rewrite_call(1, 2)));
    assert!(matches!(nf.on_packet(&packet.as_packet()), Err(GuestError::Trap(_))));
    assert_eq!(nf.take_rewrite(), None);
}

#[test]
fn a_reducer_cannot_rewrite_packets() {
    let host = host();
    let bytes = format!(
        r#"(module
            (import "estate" "packet_rewrite" (func $rewrite (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "estate_abi_version") (result i32) i32.const {ABI_VERSION})
            (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "estate_reduce") (param i32 i32 i32) (result i32) (drop {}) i32.const 1))"#,
        rewrite_call(1, 2)
    );
    let reducer = host.load_reducer(bytes.as_bytes()).unwrap();
    let err = host.reduce_all(&reducer, &[]).unwrap_err();
    assert!(err.to_string().contains("packet_rewrite is only available to NF guests"), "{err}");
}
