//! The reducers a node knows: built-ins by name (shared by every tenant), and per
//! tenant, Wasm reducers hot-loaded by name and a cache of compiled modules by content
//! hash (sha256).
//!
//! Loading under an existing name swaps an `Arc` under a lock: a read that already
//! resolved the old module keeps it until it finishes, new reads get the new one. A
//! module compiles once per tenant on a node, however many names or pushed-down reads
//! use it. Tenants never share names, modules or cache room: the same name in two
//! tenants is two reducers, and one tenant's modules never evict another's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::reduce::Builtin;
use crate::store::QuotaExceeded;
use crate::tenancy::Quotas;
use crate::wasm::{GuestError, Limits, ReducerModule, WasmHost, sha256};

/// Longest reducer name accepted.
pub const MAX_NAME_LEN: usize = 64;
/// Compiled modules kept without a name (fetched for push-down) before the cache is
/// trimmed.
const CACHE_LIMIT: usize = 64;

/// A Wasm reducer loaded under a name.
#[derive(Debug)]
pub struct Loaded {
    /// The tenant that loaded it.
    pub tenant: String,
    /// The name it was loaded under.
    pub name: String,
    /// The compiled module.
    pub module: ReducerModule,
    /// The module's bytes (served to peers that need them for push-down).
    pub bytes: Arc<Vec<u8>>,
}

/// What a reducer name resolves to.
#[derive(Clone, Debug)]
pub enum ReducerRef {
    /// A built-in reducer.
    Builtin(Builtin),
    /// A loaded Wasm reducer.
    Wasm(Arc<Loaded>),
}

impl ReducerRef {
    /// The name the reducer was asked for by.
    pub fn name(&self) -> &str {
        match self {
            ReducerRef::Builtin(b) => b.name(),
            ReducerRef::Wasm(l) => &l.name,
        }
    }

    /// Whether it may be pushed down to peers.
    pub fn combinable(&self) -> bool {
        match self {
            ReducerRef::Builtin(_) => true,
            ReducerRef::Wasm(l) => l.module.combinable(),
        }
    }
}

/// A row of `reducer list`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReducerInfo {
    /// Name.
    pub name: String,
    /// `builtin` or `wasm`.
    pub kind: String,
    /// sha256 of the module, hex (empty for built-ins).
    pub hash: String,
    /// Module size in bytes (0 for built-ins).
    pub size: usize,
    /// Whether it may be pushed down.
    pub combinable: bool,
}

/// No reducer has this name. Nothing happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reducer {name:?}; known reducers: {}", known.join(", "))]
pub struct UnknownReducer {
    /// The name asked for.
    pub name: String,
    /// The reducers the node knows, sorted.
    pub known: Vec<String>,
}

/// Why a load or fetch was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The name is a built-in's, empty, too long, or has odd characters.
    #[error("invalid reducer name {0:?}: 1 to {MAX_NAME_LEN} of [A-Za-z0-9_.-], not a built-in name")]
    InvalidName(String),
    /// The bytes are not the module with the expected hash.
    #[error("module bytes do not match their hash: expected {expected}, got {got}")]
    HashMismatch {
        /// The hash asked for.
        expected: String,
        /// The hash of the bytes received.
        got: String,
    },
    /// The module failed to compile or check.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// The node has no such tenant.
    #[error("no tenant {0:?} on this node")]
    NoSuchTenant(String),
    /// Loading would take the tenant over its `reducers`, `modules` or
    /// `module_bytes` quota here.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
}

/// A compiled module and its bytes.
type Cached = (ReducerModule, Arc<Vec<u8>>);

/// A tenant's name for something (a reducer name, a module hash).
type Scoped<K> = (String, K);

/// Reducers of one node.
#[derive(Debug)]
pub struct Registry {
    host: Arc<WasmHost>,
    by_name: RwLock<HashMap<Scoped<String>, Arc<Loaded>>>,
    by_hash: Mutex<HashMap<Scoped<[u8; 32]>, Cached>>,
}

fn scoped<K>(tenant: &str, k: K) -> Scoped<K> {
    (tenant.to_string(), k)
}

fn valid_name(name: &str) -> bool {
    crate::tenancy::is_name(name, MAX_NAME_LEN) && name.parse::<Builtin>().is_err()
}

impl Registry {
    /// An empty registry running its reducers on `host`.
    pub fn new(host: Arc<WasmHost>) -> Registry {
        Registry { host, by_name: RwLock::default(), by_hash: Mutex::default() }
    }

    /// The Wasm host.
    pub fn host(&self) -> &Arc<WasmHost> {
        &self.host
    }

    /// Loads (or replaces) `tenant`'s reducer `name` from `bytes`, run under `limits`
    /// (the host's defaults if `None`).
    /// Refused, changing nothing, if it would take the tenant over `quotas`
    /// (`reducers`, `modules`, `module_bytes`).
    pub fn load(
        &self,
        tenant: &str,
        quotas: &Quotas,
        name: &str,
        bytes: Vec<u8>,
        limits: Option<Limits>,
    ) -> Result<ReducerInfo, LoadError> {
        if !valid_name(name) {
            return Err(LoadError::InvalidName(name.to_string()));
        }
        let replacing = self.by_name.read().unwrap().contains_key(&scoped(tenant, name.to_string()));
        if let Some(limit) = quotas.reducers.filter(|&l| !replacing && self.loaded(tenant) as u64 >= l) {
            return Err(QuotaExceeded { quota: "reducers", limit }.into());
        }
        self.make_room(tenant, quotas, bytes.len())?;
        let limits = quotas.clamp(&limits.unwrap_or_else(|| self.host.limits().clone()));
        let module = self.host.load_reducer_with(&bytes, limits)?;
        let bytes = Arc::new(bytes);
        self.remember(tenant, module.clone(), bytes.clone());
        let loaded = Arc::new(Loaded { tenant: tenant.to_string(), name: name.to_string(), module, bytes });
        let info = info(&loaded);
        self.by_name.write().unwrap().insert(scoped(tenant, name.to_string()), loaded);
        Ok(info)
    }

    /// Unloads `tenant`'s `name`; reads in flight finish on it. Returns whether it was
    /// loaded.
    pub fn unload(&self, tenant: &str, name: &str) -> bool {
        self.by_name.write().unwrap().remove(&scoped(tenant, name.to_string())).is_some()
    }

    /// Resolves a reducer name for `tenant`: built-ins first, then its loaded reducers.
    pub fn resolve(&self, tenant: &str, name: &str) -> Result<ReducerRef, UnknownReducer> {
        if let Ok(b) = name.parse::<Builtin>() {
            return Ok(ReducerRef::Builtin(b));
        }
        if let Some(loaded) = self.by_name.read().unwrap().get(&scoped(tenant, name.to_string())) {
            return Ok(ReducerRef::Wasm(loaded.clone()));
        }
        let mut names: Vec<String> = self.list(tenant).into_iter().map(|r| r.name).collect();
        names.sort();
        Err(UnknownReducer { name: name.to_string(), known: names })
    }

    /// How many Wasm reducers `tenant` has loaded.
    pub fn loaded(&self, tenant: &str) -> usize {
        self.by_name.read().unwrap().keys().filter(|(t, _)| t == tenant).count()
    }

    /// Every reducer `tenant` can use: built-ins, then its loaded ones by name.
    pub fn list(&self, tenant: &str) -> Vec<ReducerInfo> {
        let mut rows: Vec<ReducerInfo> = Builtin::ALL
            .iter()
            .map(|b| ReducerInfo {
                name: b.name().into(),
                kind: "builtin".into(),
                hash: String::new(),
                size: 0,
                combinable: true,
            })
            .collect();
        let by_name = self.by_name.read().unwrap();
        let mut loaded: Vec<ReducerInfo> =
            by_name.iter().filter(|((t, _), _)| t == tenant).map(|(_, l)| info(l)).collect();
        loaded.sort_by(|a, b| a.name.cmp(&b.name));
        rows.extend(loaded);
        rows
    }

    /// `tenant`'s compiled module with content hash `hash`, if this node has it.
    pub fn module(&self, tenant: &str, hash: &[u8; 32]) -> Option<ReducerModule> {
        self.by_hash.lock().unwrap().get(&scoped(tenant, *hash)).map(|(m, _)| m.clone())
    }

    /// The bytes of `tenant`'s module with content hash `hash`, if this node has them.
    pub fn bytes(&self, tenant: &str, hash: &[u8; 32]) -> Option<Arc<Vec<u8>>> {
        self.by_hash.lock().unwrap().get(&scoped(tenant, *hash)).map(|(_, b)| b.clone())
    }

    /// Installs a module fetched from a peer for a read of `tenant` pushed down here:
    /// checks that `bytes` hash to `hash`, compiles once, its calls run under `limits`
    /// within the tenant's ceilings, and caches it as the tenant's (within its
    /// `modules` and `module_bytes` quotas).
    pub fn install(
        &self,
        tenant: &str,
        quotas: &Quotas,
        hash: &[u8; 32],
        bytes: Vec<u8>,
        limits: Limits,
    ) -> Result<ReducerModule, LoadError> {
        let got = sha256(&bytes);
        if &got != hash {
            return Err(LoadError::HashMismatch { expected: hex::encode(hash), got: hex::encode(got) });
        }
        if let Some(module) = self.module(tenant, hash) {
            return Ok(module);
        }
        self.make_room(tenant, quotas, bytes.len())?;
        let module = self.host.load_reducer_with(&bytes, quotas.clamp(&limits))?;
        self.remember(tenant, module.clone(), Arc::new(bytes));
        Ok(module)
    }

    /// How many compiled modules of `tenant` are cached, and their bytes in total.
    pub fn cached(&self, tenant: &str) -> (usize, usize) {
        let cache = self.by_hash.lock().unwrap();
        let mine = cache.iter().filter(|((t, _), _)| t == tenant);
        mine.fold((0, 0), |(n, bytes), (_, (_, b))| (n + 1, bytes + b.len()))
    }

    /// Makes room in `tenant`'s part of the cache for one more module of `size` bytes
    /// within its quotas, dropping its modules no name uses (they are fetched again if
    /// needed); refused if its named modules alone leave no room.
    fn make_room(&self, tenant: &str, quotas: &Quotas, size: usize) -> Result<(), LoadError> {
        let (max_n, max_bytes) = (quotas.modules.unwrap_or(u64::MAX), quotas.module_bytes.unwrap_or(u64::MAX));
        if size as u64 > max_bytes {
            return Err(QuotaExceeded { quota: "module_bytes", limit: max_bytes }.into());
        }
        let fits = |(n, bytes): (usize, usize)| (n as u64) < max_n && (bytes + size) as u64 <= max_bytes;
        if fits(self.cached(tenant)) {
            return Ok(());
        }
        let named: Vec<Scoped<[u8; 32]>> =
            self.by_name.read().unwrap().values().map(|l| scoped(&l.tenant, *l.module.hash())).collect();
        self.by_hash.lock().unwrap().retain(|k, _| k.0 != tenant || named.contains(k));
        match self.cached(tenant) {
            now if fits(now) => Ok(()),
            (n, _) if n as u64 >= max_n => Err(QuotaExceeded { quota: "modules", limit: max_n }.into()),
            _ => Err(QuotaExceeded { quota: "module_bytes", limit: max_bytes }.into()),
        }
    }

    fn remember(&self, tenant: &str, module: ReducerModule, bytes: Arc<Vec<u8>>) {
        let mut cache = self.by_hash.lock().unwrap();
        if cache.keys().filter(|(t, _)| t == tenant).count() >= CACHE_LIMIT {
            // Keep what a name still uses; drop the tenant's other modules (fetched again
            // if needed). Other tenants' modules stay.
            let named: Vec<Scoped<[u8; 32]>> =
                self.by_name.read().unwrap().values().map(|l| scoped(&l.tenant, *l.module.hash())).collect();
            cache.retain(|k, _| k.0 != tenant || named.contains(k));
        }
        cache.insert(scoped(tenant, *module.hash()), (module, bytes));
    }
}

fn info(l: &Loaded) -> ReducerInfo {
    ReducerInfo {
        name: l.name.clone(),
        kind: "wasm".into(),
        hash: hex::encode(l.module.hash()),
        size: l.bytes.len(),
        combinable: l.module.combinable(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const T: &str = "t";

    fn registry() -> Registry {
        Registry::new(Arc::new(WasmHost::new(Limits::default()).unwrap()))
    }

    /// A combinable Wasm reducer that answers nothing (for tests of loading and
    /// fetching modules).
    pub(crate) const REDUCER: &str = r#"(module
        (memory (export "memory") 1)
        (func (export "estate_abi_version") (result i32) i32.const 3)
        (func (export "estate_reducer_flags") (result i32) i32.const 1)
        (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
        (func (export "estate_reduce") (param i32 i32 i32) (result i32) i32.const 1))"#;

    #[test]
    fn load_replace_unload() {
        let r = registry();
        let info = r.load(T, &Quotas::default(), "mine", REDUCER.as_bytes().to_vec(), None).unwrap();
        assert!(info.combinable && info.kind == "wasm");
        assert!(matches!(r.resolve(T, "mine"), Ok(ReducerRef::Wasm(_))));
        assert!(matches!(r.resolve(T, "sum"), Ok(ReducerRef::Builtin(Builtin::Sum))));
        let held = r.resolve(T, "mine").unwrap();
        let other = REDUCER.replace("i32.const 1))", "i32.const 1) (func (export \"x\")))");
        r.load(T, &Quotas::default(), "mine", other.into_bytes(), None).unwrap();
        let ReducerRef::Wasm(now) = r.resolve(T, "mine").unwrap() else { panic!() };
        let ReducerRef::Wasm(before) = held else { panic!() };
        assert_ne!(now.module.hash(), before.module.hash(), "a replaced reducer resolves to the new module");
        assert!(r.unload(T, "mine"));
        assert!(r.resolve(T, "mine").unwrap_err().to_string().contains("unknown reducer"));
        assert!(!r.unload(T, "mine"));
    }

    #[test]
    fn names_are_checked() {
        let r = registry();
        for bad in ["", "sum", "a b", &"x".repeat(65)] {
            assert!(
                matches!(
                    r.load(T, &Quotas::default(), bad, REDUCER.as_bytes().to_vec(), None),
                    Err(LoadError::InvalidName(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn install_checks_the_hash_and_compiles_once() {
        let r = registry();
        let bytes = REDUCER.as_bytes().to_vec();
        let hash = sha256(&bytes);
        let mut tampered = bytes.clone();
        tampered.push(b' ');
        assert!(matches!(
            r.install(T, &Quotas::default(), &hash, tampered, Limits::default()),
            Err(LoadError::HashMismatch { .. })
        ));
        assert!(r.module(T, &hash).is_none());
        r.install(T, &Quotas::default(), &hash, bytes.clone(), Limits::default()).unwrap();
        assert!(r.module(T, &hash).is_some());
        assert_eq!(r.bytes(T, &hash).unwrap().as_slice(), bytes.as_slice());
    }

    #[test]
    fn tenants_have_their_own_names_and_modules() {
        let r = registry();
        r.load("a", &Quotas::default(), "mine", REDUCER.as_bytes().to_vec(), None).unwrap();
        assert!(r.resolve("b", "mine").is_err(), "b does not see a's reducer");
        assert_eq!(r.list("b").iter().filter(|i| i.kind == "wasm").count(), 0);
        let other = REDUCER.replace("i32.const 1))", "i32.const 1) (func (export \"y\")))");
        r.load("b", &Quotas::default(), "mine", other.into_bytes(), None).unwrap();
        let (ReducerRef::Wasm(a), ReducerRef::Wasm(b)) =
            (r.resolve("a", "mine").unwrap(), r.resolve("b", "mine").unwrap())
        else {
            panic!("both are Wasm reducers")
        };
        assert_ne!(a.module.hash(), b.module.hash(), "the same name in two tenants is two reducers");
        let hash = *a.module.hash();
        assert!(r.module("a", &hash).is_some());
        assert!(r.module("b", &hash).is_none() && r.bytes("b", &hash).is_none(), "b cannot reach a's module");
        assert!(r.unload("b", "mine"));
        assert!(r.resolve("a", "mine").is_ok(), "unloading b's name leaves a's");
        assert_eq!((r.loaded("a"), r.loaded("b")), (1, 0));
    }

    #[test]
    fn one_tenants_modules_never_evict_anothers() {
        let r = registry();
        let keep = REDUCER.as_bytes().to_vec();
        let keep_hash = sha256(&keep);
        r.install("a", &Quotas::default(), &keep_hash, keep, Limits::default()).unwrap();
        for i in 0..CACHE_LIMIT + 5 {
            let bytes =
                REDUCER.replace("i32.const 1))", &format!("i32.const 1) (func (export \"f{i}\")))")).into_bytes();
            r.install("b", &Quotas::default(), &sha256(&bytes), bytes, Limits::default()).unwrap();
        }
        assert!(r.module("a", &keep_hash).is_some(), "a's module survived b filling its cache");
        assert!(r.cached("b").0 <= CACHE_LIMIT);
    }

    #[test]
    fn quotas_refuse_with_their_name_and_change_nothing() {
        let r = registry();
        let quotas = Quotas { reducers: Some(1), modules: Some(2), ..Quotas::default() };
        r.load("a", &quotas, "one", REDUCER.as_bytes().to_vec(), None).unwrap();
        let other = REDUCER.replace("i32.const 1))", "i32.const 1) (func (export \"z\")))").into_bytes();
        let e = r.load("a", &quotas, "two", other.clone(), None).unwrap_err();
        assert!(matches!(e, LoadError::Quota(QuotaExceeded { quota: "reducers", limit: 1 })), "{e}");
        assert!(e.to_string().contains("reducers"));
        assert!(r.resolve("a", "two").is_err());
        r.load("a", &quotas, "one", other, None).expect("replacing under a name needs no new room");
        r.load("b", &Quotas::default(), "two", REDUCER.as_bytes().to_vec(), None).expect("b is not limited by a");
        let tiny = Quotas { module_bytes: Some(10), ..Quotas::default() };
        let e = r
            .install("c", &tiny, &sha256(REDUCER.as_bytes()), REDUCER.as_bytes().to_vec(), Limits::default())
            .unwrap_err();
        assert!(matches!(e, LoadError::Quota(QuotaExceeded { quota: "module_bytes", .. })), "{e}");
    }
}
