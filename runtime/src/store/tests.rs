use super::*;

#[test]
fn prefix_patterns_use_the_ordered_keys_and_agree_with_a_scan() {
    let t = Store::new("n").tenant(DEFAULT_TENANT).unwrap();
    for f in 0..50 {
        t.add(&format!("flow:{f}:packets"), 1).unwrap();
        t.set(&format!("flow:{f}:ct"), Value::Int(f)).unwrap();
    }
    t.set("flow:1\nx", Value::Int(0)).unwrap();
    t.set("flox", Value::Int(0)).unwrap();
    assert!(t.del("flow:7:ct"));
    t.take_matching(&Pattern::new(r"flow:9:.*").unwrap());
    t.take_all();
    for f in 0..50 {
        t.add(&format!("flow:{f}:packets"), 1).unwrap();
    }
    t.set("flow:1\nx", Value::Int(0)).unwrap();
    assert!(t.del("flow:3:packets"));
    let agree = |newline_keys: usize| {
        for source in ["flow:1.*", r"flow:1:.*", "flow:.*", ".*", r"flow:3:.*"] {
            let prefix = Pattern::new(source).unwrap();
            assert!(prefix.prefix().is_some());
            // The same pattern forced through the regex scan.
            let scan = Pattern::new(&format!("(?:{source})")).unwrap();
            assert!(scan.prefix().is_none());
            let keys = |p: &Pattern| {
                let mut k: Vec<String> = t.matching(p).into_iter().map(|i| i.key).collect();
                k.sort();
                k
            };
            assert_eq!(keys(&prefix), keys(&scan), "{source}");
        }
        assert_eq!(t.items.read().unwrap().newline_keys(), newline_keys);
    };
    agree(1);
    // Without a key holding a newline, a prefix's range is taken without a second look.
    t.del("flow:1\nx");
    agree(0);
    t.set("flow:2\ny", Value::Int(0)).unwrap();
    agree(1);
    assert_eq!(t.matching(&Pattern::new(r"flow:1:.*").unwrap()).len(), 1);
    assert_eq!(t.take_matching(&Pattern::new(r"flow:1.*").unwrap()).len(), 11, "flow:1 and flow:10..19");
    assert!(t.matching(&Pattern::new(r"flow:1.*").unwrap()).is_empty());
}

#[test]
fn merge_adds_counters_and_keeps_the_newest_register() {
    let (store_a, store_b) = (Store::new("a"), Store::new("b"));
    let (a, b) = (store_a.tenant(DEFAULT_TENANT).unwrap(), store_b.tenant(DEFAULT_TENANT).unwrap());
    a.add("hits", 5).unwrap();
    b.add("hits", 3).unwrap();
    let vb = b.set("port", Value::Int(20001)).unwrap();
    // a hears of b's write (as from any message of b's), so its next write is newer.
    store_a.clock().observe(vb);
    a.set("port", Value::Int(7)).unwrap();
    b.set("only-b", Value::Text("x".into())).unwrap();
    let moving = b.take_matching(&Pattern::new(".*").unwrap());
    assert!(b.is_empty());
    for m in moving {
        a.merge(m).unwrap();
    }
    // Counters are shares of one count: they add up, and stay counters.
    assert_eq!(a.get("hits").map(|v| (v.value, v.counter)), Some((Value::Int(8), true)));
    // A register: the newer write wins (a's, made after b's).
    assert_eq!(a.get("port").unwrap().value, Value::Int(7));
    assert_eq!(a.get("only-b").unwrap().value, Value::Text("x".into()));
    // A register set over a counter is not a counter any more.
    let va = a.set("hits", Value::Int(1)).unwrap();
    let store_c = Store::new("c");
    store_c.clock().observe(va);
    let c = store_c.tenant(DEFAULT_TENANT).unwrap();
    c.add("hits", 2).unwrap();
    for m in c.take_matching(&Pattern::new("hits").unwrap()) {
        a.merge(m).unwrap();
    }
    assert_eq!(a.get("hits").unwrap().value, Value::Int(2), "newer wins over a non-counter");
}

#[test]
fn a_closed_store_refuses_writes_but_takes_back_its_own_items() {
    let store = Store::new("n");
    let (t, other) = (store.tenant(DEFAULT_TENANT).unwrap(), store.add_tenant("other"));
    t.add("c", 2).unwrap();
    store.close_writes();
    let taken = t.take_all();
    assert_eq!(t.set("k", Value::Int(1)), Err(StoreError::Closed));
    assert_eq!(other.add("c", 1), Err(StoreError::Closed), "every tenant");
    let item = Item { key: "m".into(), value: Value::Int(1), origin: "x".into(), writer: "x".into(), version: 1 };
    assert_eq!(t.merge(Moving { item, counter: true }), Err(StoreError::Closed));
    assert!(t.is_empty() && other.is_empty());
    // Items that could not be handed over go back even so.
    for m in taken {
        assert!(t.put_back(m).unwrap());
    }
    assert_eq!(t.get("c").map(|v| (v.value, v.counter)), Some((Value::Int(2), true)));
    store.open_writes();
    assert_eq!(t.add("c", 1), Ok(3));
}

#[test]
fn set_get_del_are_consistent() {
    let store = Store::new("n1");
    let t = store.tenant(DEFAULT_TENANT).unwrap();
    assert_eq!(t.get("k"), None);
    let v1 = t.set("k", Value::Int(5)).unwrap();
    let written = Versioned { value: Value::Int(5), version: v1, writer: Writer::new("n1"), counter: false };
    assert_eq!(t.get("k"), Some(written));
    let v2 = t.set("k", Value::Text("x".into())).unwrap();
    assert!(v2 > v1);
    assert_eq!(t.get("k").unwrap().value, Value::Text("x".into()));
    assert!(t.del("k"));
    assert!(!t.del("k"));
    assert_eq!(t.get("k"), None);
}

#[test]
fn tenants_are_isolated() {
    let store = Store::with_tenants("n1", ["a", "b"]);
    store.tenant("a").unwrap().set("k", Value::Int(1)).unwrap();
    assert_eq!(store.tenant("b").unwrap().get("k"), None);
    assert!(store.tenant(DEFAULT_TENANT).is_none(), "only the tenants named exist");
    assert!(store.tenant("zzz").is_none());
    assert!(store.tenant("zzz").is_none(), "asking creates nothing");
}

#[test]
fn limits_refuse_without_changing_state() {
    let t = Store::new("n1").tenant(DEFAULT_TENANT).unwrap();
    t.set("k", Value::Int(1)).unwrap();
    assert_eq!(t.set(&"k".repeat(MAX_KEY_LEN + 1), Value::Int(1)), Err(StoreError::KeyTooLong(MAX_KEY_LEN + 1)));
    assert!(matches!(t.set("k", Value::Bytes(vec![0; MAX_VALUE_LEN + 1])), Err(StoreError::ValueTooLarge(_))));
    assert_eq!(t.get("k").unwrap().value, Value::Int(1));
}

#[test]
fn add_is_exact_and_checked() {
    let t = Store::new("n1").tenant(DEFAULT_TENANT).unwrap();
    assert_eq!(t.add("c", 5).unwrap(), 5);
    assert_eq!(t.add("c", -2).unwrap(), 3);
    t.set("m", Value::Int(i64::MAX)).unwrap();
    assert_eq!(t.add("m", 1), Err(StoreError::Overflow { key: "m".into() }));
    t.set("s", Value::Text("x".into())).unwrap();
    assert!(matches!(t.add("s", 1), Err(StoreError::NotAnInteger { found: "text", .. })));
}

#[test]
fn matching_uses_regex_or_exact_key() {
    let t = Store::new("n7").tenant(DEFAULT_TENANT).unwrap();
    for k in ["flow:1", "flow:2", "other", "flow"] {
        t.set(k, Value::Int(1)).unwrap();
    }
    let keys = |p: &str| {
        let mut keys: Vec<String> = t.matching(&Pattern::new(p).unwrap()).into_iter().map(|i| i.key).collect();
        keys.sort();
        keys
    };
    assert_eq!(keys("flow:.*"), ["flow:1", "flow:2"]);
    assert_eq!(keys("flow"), ["flow"]);
    assert_eq!(keys("missing"), Vec::<String>::new());
    let item = &t.matching(&Pattern::new("other").unwrap())[0];
    assert_eq!((item.origin.as_str(), item.writer.as_str()), ("n7", "n7"));
}

#[test]
fn a_moved_item_keeps_its_version_and_writer() {
    let (store_a, store_b) = (Store::new("a"), Store::new("b"));
    let (a, b) = (store_a.tenant(DEFAULT_TENANT).unwrap(), store_b.tenant(DEFAULT_TENANT).unwrap());
    let written = a.set("r", Value::Int(1)).unwrap();
    // b's clock is far behind a's: the moved write still reads as a's, at a's version.
    for m in a.take_matching(&Pattern::new("r").unwrap()) {
        assert_eq!((m.item.origin.as_str(), m.item.writer.as_str(), m.item.version), ("a", "a", written));
        assert!(b.merge(m).unwrap());
    }
    let held = b.get("r").unwrap();
    assert_eq!((held.version, held.writer), (written, Writer::new("a")));
    let item = &b.matching(&Pattern::new("r").unwrap())[0];
    assert_eq!((item.origin.as_str(), item.writer.as_str(), item.version), ("b", "a", written));
    // b's clock observed the version: its next write is newer.
    assert!(b.set("other", Value::Int(0)).unwrap() > written);
    // Moved on again, from b to a third node: still a's write.
    let store_c = Store::new("c");
    for m in b.take_all() {
        store_c.tenant(DEFAULT_TENANT).unwrap().merge(m).unwrap();
    }
    let held = store_c.tenant(DEFAULT_TENANT).unwrap().get("r").unwrap();
    assert_eq!((held.value, held.version, held.writer.name()), (Value::Int(1), written, "a"));
}

#[test]
fn equal_versions_are_ordered_by_writer() {
    let t = Store::new("m").tenant(DEFAULT_TENANT).unwrap();
    let moving = |writer: &str, value: i64| Moving {
        item: Item { key: "r".into(), value: Value::Int(value), origin: "x".into(), writer: writer.into(), version: 7 },
        counter: false,
    };
    assert!(t.merge(moving("b", 1)).unwrap());
    assert!(!t.merge(moving("a", 2)).unwrap(), "a's write at the same version is older");
    assert!(!t.merge(moving("b", 1)).unwrap(), "the same write again changes nothing");
    assert!(t.merge(moving("c", 3)).unwrap());
    assert_eq!(t.get("r").map(|v| (v.value, v.writer.name())), Some((Value::Int(3), "c")));
}

#[test]
fn merged_counter_shares_carry_the_newer_write() {
    let (store_a, store_b, store_c) = (Store::new("a"), Store::new("b"), Store::new("c"));
    let tenant = |s: &Store| s.tenant(DEFAULT_TENANT).unwrap();
    tenant(&store_a).add("hits", 5).unwrap();
    // b's clock is an hour ahead: its share is the newest write of the count.
    let ahead = crate::hlc::from_millis(crate::hlc::millis(store_a.clock().tick()) + 3_600_000);
    store_b.clock().observe(ahead);
    tenant(&store_b).add("hits", 3).unwrap();
    let newest = tenant(&store_b).get("hits").unwrap().version;
    tenant(&store_c).add("hits", 1).unwrap();
    for from in [&store_b, &store_c] {
        for m in tenant(from).take_all() {
            tenant(&store_a).merge(m).unwrap();
        }
    }
    // The sum of the three shares, with the version and writer of b's, the newest.
    let held = tenant(&store_a).get("hits").unwrap();
    assert_eq!((held.value, held.version, held.writer.name(), held.counter), (Value::Int(9), newest, "b", true));
}

#[test]
fn concurrent_adds_lose_nothing() {
    let store = Arc::new(Store::new("n1"));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let t = store.tenant(DEFAULT_TENANT).unwrap();
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    t.add("c", 1).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(store.tenant(DEFAULT_TENANT).unwrap().get("c").unwrap().value, Value::Int(40_000));
}

#[test]
fn newer_breaks_ties_by_writer() {
    assert!(newer(2, "a", 1, "z"));
    assert!(newer(1, "b", 1, "a"));
    assert!(!newer(1, "a", 1, "b"));
}
