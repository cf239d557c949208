//! The reducers a node knows: built-ins by name, Wasm reducers hot-loaded by name, and
//! a cache of compiled modules by content hash (sha256).
//!
//! Loading under an existing name swaps an `Arc` under a lock: a read that already
//! resolved the old module keeps it until it finishes, new reads get the new one. A
//! module compiles once per node, however many names or pushed-down reads use it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::reduce::Builtin;
use crate::wasm::{GuestError, Limits, ReducerModule, WasmHost, sha256};

/// Longest reducer name accepted.
pub const MAX_NAME_LEN: usize = 64;
/// Compiled modules kept without a name (fetched for push-down) before the cache is
/// trimmed.
const CACHE_LIMIT: usize = 64;

/// A Wasm reducer loaded under a name.
#[derive(Debug)]
pub struct Loaded {
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
}

/// A compiled module and its bytes.
type Cached = (ReducerModule, Arc<Vec<u8>>);

/// Reducers of one node.
#[derive(Debug)]
pub struct Registry {
    host: Arc<WasmHost>,
    by_name: RwLock<HashMap<String, Arc<Loaded>>>,
    by_hash: Mutex<HashMap<[u8; 32], Cached>>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && name.parse::<Builtin>().is_err()
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

    /// Loads (or replaces) the reducer `name` from `bytes`, run under `limits` (the
    /// host's defaults if `None`).
    pub fn load(&self, name: &str, bytes: Vec<u8>, limits: Option<Limits>) -> Result<ReducerInfo, LoadError> {
        if !valid_name(name) {
            return Err(LoadError::InvalidName(name.to_string()));
        }
        let limits = limits.unwrap_or_else(|| self.host.limits().clone());
        let module = self.host.load_reducer_with(&bytes, limits)?;
        let bytes = Arc::new(bytes);
        self.remember(module.clone(), bytes.clone());
        let loaded = Arc::new(Loaded { name: name.to_string(), module, bytes });
        let info = info(&loaded);
        self.by_name.write().unwrap().insert(name.to_string(), loaded);
        Ok(info)
    }

    /// Unloads `name`; reads in flight finish on it. Returns whether it was loaded.
    pub fn unload(&self, name: &str) -> bool {
        self.by_name.write().unwrap().remove(name).is_some()
    }

    /// Resolves a reducer name: built-ins first, then loaded reducers.
    pub fn resolve(&self, name: &str) -> Result<ReducerRef, UnknownReducer> {
        if let Ok(b) = name.parse::<Builtin>() {
            return Ok(ReducerRef::Builtin(b));
        }
        if let Some(loaded) = self.by_name.read().unwrap().get(name) {
            return Ok(ReducerRef::Wasm(loaded.clone()));
        }
        let mut names: Vec<String> = self.list().into_iter().map(|r| r.name).collect();
        names.sort();
        Err(UnknownReducer { name: name.to_string(), known: names })
    }

    /// Every reducer: built-ins, then loaded ones by name.
    pub fn list(&self) -> Vec<ReducerInfo> {
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
        let mut loaded: Vec<ReducerInfo> = self.by_name.read().unwrap().values().map(|l| info(l)).collect();
        loaded.sort_by(|a, b| a.name.cmp(&b.name));
        rows.extend(loaded);
        rows
    }

    /// The compiled module with content hash `hash`, if this node has it.
    pub fn module(&self, hash: &[u8; 32]) -> Option<ReducerModule> {
        self.by_hash.lock().unwrap().get(hash).map(|(m, _)| m.clone())
    }

    /// The bytes of the module with content hash `hash`, if this node has them.
    pub fn bytes(&self, hash: &[u8; 32]) -> Option<Arc<Vec<u8>>> {
        self.by_hash.lock().unwrap().get(hash).map(|(_, b)| b.clone())
    }

    /// Installs a module fetched from a peer for push-down: checks that `bytes` hash
    /// to `hash`, compiles once under the host's default limits, caches.
    pub fn install(&self, hash: &[u8; 32], bytes: Vec<u8>) -> Result<ReducerModule, LoadError> {
        let got = sha256(&bytes);
        if &got != hash {
            return Err(LoadError::HashMismatch { expected: hex::encode(hash), got: hex::encode(got) });
        }
        if let Some(module) = self.module(hash) {
            return Ok(module);
        }
        let module = self.host.load_reducer(&bytes)?;
        self.remember(module.clone(), Arc::new(bytes));
        Ok(module)
    }

    fn remember(&self, module: ReducerModule, bytes: Arc<Vec<u8>>) {
        let mut cache = self.by_hash.lock().unwrap();
        if cache.len() >= CACHE_LIMIT {
            // Keep what a name still uses; drop the rest (it is fetched again if needed).
            let named: Vec<[u8; 32]> = self.by_name.read().unwrap().values().map(|l| *l.module.hash()).collect();
            cache.retain(|h, _| named.contains(h));
        }
        cache.insert(*module.hash(), (module, bytes));
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
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::new(Arc::new(WasmHost::new(Limits::default()).unwrap()))
    }

    const REDUCER: &str = r#"(module
        (memory (export "memory") 1)
        (func (export "estate_abi_version") (result i32) i32.const 2)
        (func (export "estate_reducer_flags") (result i32) i32.const 1)
        (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
        (func (export "estate_reduce") (param i32 i32 i32) (result i32) i32.const 1))"#;

    #[test]
    fn load_replace_unload() {
        let r = registry();
        let info = r.load("mine", REDUCER.as_bytes().to_vec(), None).unwrap();
        assert!(info.combinable && info.kind == "wasm");
        assert!(matches!(r.resolve("mine"), Ok(ReducerRef::Wasm(_))));
        assert!(matches!(r.resolve("sum"), Ok(ReducerRef::Builtin(Builtin::Sum))));
        let held = r.resolve("mine").unwrap();
        let other = REDUCER.replace("i32.const 1))", "i32.const 1) (func (export \"x\")))");
        r.load("mine", other.into_bytes(), None).unwrap();
        let ReducerRef::Wasm(now) = r.resolve("mine").unwrap() else { panic!() };
        let ReducerRef::Wasm(before) = held else { panic!() };
        assert_ne!(now.module.hash(), before.module.hash(), "a replaced reducer resolves to the new module");
        assert!(r.unload("mine"));
        assert!(r.resolve("mine").unwrap_err().to_string().contains("unknown reducer"));
        assert!(!r.unload("mine"));
    }

    #[test]
    fn names_are_checked() {
        let r = registry();
        for bad in ["", "sum", "a b", &"x".repeat(65)] {
            assert!(matches!(r.load(bad, REDUCER.as_bytes().to_vec(), None), Err(LoadError::InvalidName(_))), "{bad}");
        }
    }

    #[test]
    fn install_checks_the_hash_and_compiles_once() {
        let r = registry();
        let bytes = REDUCER.as_bytes().to_vec();
        let hash = sha256(&bytes);
        let mut tampered = bytes.clone();
        tampered.push(b' ');
        assert!(matches!(r.install(&hash, tampered), Err(LoadError::HashMismatch { .. })));
        assert!(r.module(&hash).is_none());
        r.install(&hash, bytes.clone()).unwrap();
        assert!(r.module(&hash).is_some());
        assert_eq!(r.bytes(&hash).unwrap().as_slice(), bytes.as_slice());
    }
}
