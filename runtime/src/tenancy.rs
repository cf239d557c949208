//! Tenants: who owns state and code on a node, and what each may use.
//!
//! A node has exactly the tenants of its tenants file (every node of a cluster loads
//! the same file), or the one tenant `default` without one. A name that is not
//! configured does not exist: a request naming it is refused and nothing is created.
//!
//! The file is TOML, one table per tenant; every quota is optional (absent: no limit
//! beyond the node's own):
//!
//! ```toml
//! [tenants.acme]
//! keys = 100000          # items held on this node
//! bytes = 67108864       # key + value bytes held on this node
//! reducers = 8           # Wasm reducers loaded by name
//! modules = 16           # compiled modules cached (named and pushed down)
//! module_bytes = 8388608 # bytes of those modules
//! reads = 64             # global reads in flight started on this node
//! wasm_jobs = 2          # guest calls of this tenant on the worker pool at once
//! fuel = 100000000       # ceilings on its reducers' and NFs' budgets
//! wall_ms = 200
//! memory_bytes = 67108864
//! output_bytes = 1048576
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::store::{DEFAULT_TENANT, Quota};
use crate::wasm::Limits;

/// Longest tenant name accepted.
pub const MAX_TENANT_LEN: usize = 64;

pub use crate::store::MOVED_STATE_HEADROOM;

/// One tenant's limits on one node. `None`: unlimited (the node's own limits apply).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Items held on this node.
    pub keys: Option<u64>,
    /// Key and value bytes held on this node.
    pub bytes: Option<u64>,
    /// Wasm reducers loaded by name.
    pub reducers: Option<u64>,
    /// Compiled modules cached (loaded by name or fetched for push-down).
    pub modules: Option<u64>,
    /// Bytes of the modules cached.
    pub module_bytes: Option<u64>,
    /// Global reads in flight started on this node.
    pub reads: Option<u64>,
    /// Guest calls of this tenant on the worker pool at once.
    pub wasm_jobs: Option<u64>,
    /// Ceiling on fuel per guest call.
    pub fuel: Option<u64>,
    /// Ceiling on wall time per guest call, in milliseconds.
    pub wall_ms: Option<u64>,
    /// Ceiling on a guest's memory, in bytes.
    pub memory_bytes: Option<u64>,
    /// Ceiling on a guest call's output, in bytes.
    pub output_bytes: Option<u64>,
}

impl Quotas {
    /// The quotas the store enforces (`keys`, `bytes`).
    pub fn store(&self) -> Quota {
        Quota { keys: self.keys, bytes: self.bytes }
    }

    /// `limits` with every budget at most this tenant's ceiling (a per-load override
    /// above a ceiling is brought down to it).
    pub fn clamp(&self, limits: &Limits) -> Limits {
        let mut l = limits.clone();
        if let Some(fuel) = self.fuel {
            l.fuel = l.fuel.min(fuel);
        }
        if let Some(ms) = self.wall_ms {
            l.wall_time = l.wall_time.min(Duration::from_millis(ms));
        }
        if let Some(m) = self.memory_bytes {
            l.memory_bytes = l.memory_bytes.min(m as usize);
        }
        if let Some(o) = self.output_bytes {
            l.output_bytes = l.output_bytes.min(o as usize);
        }
        l
    }
}

/// A tenants file that could not be used. The node does not start.
#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    /// The file could not be read.
    #[error("cannot read the tenants file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid tenants file.
    #[error("invalid tenants file {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with the line.
        message: String,
    },
}

/// The tenants of a node and their quotas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenants {
    tenants: BTreeMap<String, Quotas>,
}

impl Default for Tenants {
    /// The one tenant `default`, without quotas.
    fn default() -> Self {
        Tenants { tenants: BTreeMap::from([(DEFAULT_TENANT.to_string(), Quotas::default())]) }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tenants: BTreeMap<String, Quotas>,
}

/// Whether `name` may name a tenant: 1 to [`MAX_TENANT_LEN`] of `[A-Za-z0-9_.-]`.
pub fn valid_name(name: &str) -> bool {
    is_name(name, MAX_TENANT_LEN)
}

/// Whether `name` is 1 to `max` of `[A-Za-z0-9_.-]`: the names of tenants and of
/// reducers.
pub(crate) fn is_name(name: &str, max: usize) -> bool {
    !name.is_empty() && name.len() <= max && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl Tenants {
    /// Parses a tenants file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Tenants, TenantsError> {
        let invalid = |message: String| TenantsError::Invalid { path: path.to_string(), message };
        let file: File = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if file.tenants.is_empty() {
            return Err(invalid("no tenant is configured ([tenants.NAME] tables)".into()));
        }
        if let Some(bad) = file.tenants.keys().find(|n| !valid_name(n)) {
            return Err(invalid(format!("invalid tenant name {bad:?}: 1 to {MAX_TENANT_LEN} of [A-Za-z0-9_.-]")));
        }
        Ok(Tenants { tenants: file.tenants })
    }

    /// Reads and parses the tenants file at `path`.
    pub fn load(path: &Path) -> Result<Tenants, TenantsError> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| TenantsError::Read { path: shown.clone(), source })?;
        Tenants::parse(&text, &shown)
    }

    /// The tenants' names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }

    /// `tenant`'s quotas, if the tenant exists.
    pub fn quotas(&self, tenant: &str) -> Option<&Quotas> {
        self.tenants.get(tenant)
    }

    /// Whether `tenant` exists.
    pub fn has(&self, tenant: &str) -> bool {
        self.tenants.contains_key(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tenants_and_quotas() {
        let t = Tenants::parse("[tenants.a]\nkeys = 10\nfuel = 5\n[tenants.b]\n", "t.toml").unwrap();
        assert_eq!(t.names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(t.quotas("a").unwrap().keys, Some(10));
        assert_eq!(t.quotas("b"), Some(&Quotas::default()));
        assert!(!t.has("default"), "only the tenants of the file exist");
        let clamped = t.quotas("a").unwrap().clamp(&Limits::default());
        assert_eq!(clamped.fuel, 5);
    }

    #[test]
    fn the_example_file_is_valid() {
        let t = Tenants::parse(include_str!("../../examples/tenants.toml"), "examples/tenants.toml").unwrap();
        assert_eq!(t.names().collect::<Vec<_>>(), ["acme", "globex"]);
        assert_eq!(t.quotas("acme").unwrap().wasm_jobs, Some(2));
    }

    #[test]
    fn refuses_bad_files_naming_the_problem() {
        for (text, says) in [
            ("[tenants.a]\nkeyz = 1\n", "keyz"),
            ("[tenants.a]\nkeys = -1\n", "line 2"),
            ("[tenants]\n", "no tenant"),
            ("[tenants.\"a b\"]\n", "invalid tenant name"),
            ("tenants = 3", "tenants"),
        ] {
            let e = Tenants::parse(text, "t.toml").unwrap_err().to_string();
            assert!(e.contains("t.toml") && e.contains(says), "{text:?}: {e}");
        }
    }
}
