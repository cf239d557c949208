//! One tenant's view of a node: its keys, global reads and reducers, and nothing of any
//! other tenant's.

use std::sync::Arc;

use estate_guest::Value;

use crate::control::LimitOverrides;
use crate::global::{GlobalError, GlobalOptions};
use crate::peering::driver::{GlobalResult, Inbox, global_read};
use crate::reduce::registry::{LoadError, ReducerInfo, Registry};
use crate::store::{StoreError, TenantStore, Versioned};
use crate::tenancy::Quotas;

/// The node has no `default` tenant (its tenants file does not name one).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("this node has no tenant \"default\"; name one (Node::tenant)")]
pub(crate) struct NoDefault;

/// A tenant of a node ([`crate::node::Node::tenant`]): the library API scoped to it.
#[derive(Clone)]
pub struct Tenant {
    pub(super) name: String,
    pub(super) store: Arc<TenantStore>,
    pub(super) quotas: Quotas,
    pub(super) inbox: Arc<Inbox>,
    pub(super) registry: Arc<Registry>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Tenant {
    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tenant's items on this node.
    pub fn store(&self) -> &Arc<TenantStore> {
        &self.store
    }

    /// Sets `key`; returns the new version.
    pub fn set(&self, key: &str, value: Value) -> Result<u64, StoreError> {
        self.store.set(key, value)
    }

    /// Reads `key`.
    pub fn get(&self, key: &str) -> Option<Versioned> {
        self.store.get(key)
    }

    /// Deletes `key`; returns whether it existed.
    pub fn del(&self, key: &str) -> bool {
        self.store.del(key)
    }

    /// Adds `delta` to the integer counter at `key` (missing: 0); returns the new value.
    /// Counters add up when state moves between nodes, so a cluster-wide sum survives a
    /// take or a leave.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.store.add(key, delta)
    }

    /// Reads every live member's items of this tenant whose key matches `pattern` and
    /// reduces them with `reducer` (a built-in or one of this tenant's Wasm reducers).
    pub fn get_global(&self, pattern: &str, reducer: &str, options: GlobalOptions) -> GlobalResult {
        global_read(&self.inbox, &self.registry, &self.name, pattern, reducer, options)
    }

    /// Loads (or replaces) this tenant's Wasm reducer `name`, with `limits` overriding
    /// the node's defaults within the tenant's ceilings.
    pub fn load_reducer(&self, name: &str, bytes: Vec<u8>, limits: &LimitOverrides) -> Result<ReducerInfo, LoadError> {
        let limits = limits.apply(self.registry.host().limits());
        self.registry.load(&self.name, &self.quotas, name, bytes, Some(limits))
    }

    /// Unloads this tenant's Wasm reducer `name`; returns whether it was loaded.
    pub fn unload_reducer(&self, name: &str) -> bool {
        self.registry.unload(&self.name, name)
    }

    /// The reducers this tenant can use: built-ins, then its own.
    pub fn reducers(&self) -> Vec<ReducerInfo> {
        self.registry.list(&self.name)
    }
}

impl From<NoDefault> for GlobalError {
    fn from(e: NoDefault) -> Self {
        GlobalError::Invalid(e.to_string())
    }
}
