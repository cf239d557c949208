//! The local state store of one node.
//!
//! Every node writes only its own items; `set`, `get` and `del` are strictly consistent
//! on the node (a read sees the last write, from any thread). Each item carries the
//! version of its last write, a hybrid-logical-clock timestamp, and the id of the node
//! that made it (its [`Writer`]). An item that moves to another node (a take, a
//! hand-off) keeps both, and the receiving node's clock observes the version, so a
//! later write there is newer: "latest" across nodes follows causality wherever the
//! items are, with the writer's id as a deterministic tie-break ([`newer`]).
//!
//! State is partitioned by tenant from the start: a [`TenantStore`] holds one tenant's
//! items and nothing reaches across tenants.
//!
//! **Architecture invariant:** the store knows nothing about ZeroMQ, Wasm or the CLI.
//! It is `Sync` and shared by reference (`Arc`) between the NF side and the peering
//! side; all locking is inside it and no lock is held across a call out of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use estate_guest::view::ValueRef;
use estate_guest::{Item, Value};
use serde::{Deserialize, Serialize};

use crate::hlc::Hlc;
use crate::pattern::Pattern;

mod block;
mod items;
mod writer;

use block::Block;
use items::Items;

pub use writer::{MAX_WRITER_LEN, MAX_WRITERS, Writer, WriterError};

/// The tenant every node has; the one used when none is named.
pub const DEFAULT_TENANT: &str = "default";
/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest text or bytes value accepted, in bytes.
pub const MAX_VALUE_LEN: usize = 1 << 20;

/// A value with the version and writer of its last write.
///
/// `(version, writer)` names the write: a node's clock never gives two writes the same
/// version, and the pair stays with the value when it moves to another node. This is
/// how reads report an item; the store itself keeps each item in one block (`block.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned {
    /// The value.
    pub value: Value,
    /// Hybrid logical clock timestamp of the write, on the writer's clock.
    pub version: u64,
    /// The node that made the write: this node, or the node the value was taken or
    /// handed over from (or the one that node had it from).
    pub writer: Writer,
    /// Whether the last write was an [`TenantStore::add`]: the value is this node's
    /// share of a count, so two nodes' values for the key add up.
    pub counter: bool,
}

impl Versioned {
    /// Whether `self` is a newer write than `other` ([`newer`]).
    pub fn newer_than(&self, other: &Versioned) -> bool {
        (self.version, self.writer) > (other.version, other.writer)
    }
}

/// A stored item, borrowed from the store ([`TenantStore::for_each_matching`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Entry<'a> {
    /// The key.
    pub key: &'a str,
    /// The value.
    pub value: ValueRef<'a>,
    /// As [`Versioned::version`].
    pub version: u64,
    /// As [`Versioned::writer`].
    pub writer: Writer,
    /// As [`Versioned::counter`].
    pub counter: bool,
}

/// An item leaving its node for another (a take, a hand-off), with how the receiver
/// merges it into its own value for the key (see [`TenantStore::merge`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Moving {
    /// The item: `origin` is the node it leaves, `writer` and `version` are those of
    /// its last write, which the receiver keeps.
    pub item: Item,
    /// The item is a counter share ([`Versioned::counter`]).
    pub counter: bool,
}

/// Why a write was refused. The store is unchanged.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StoreError {
    /// The key is longer than [`MAX_KEY_LEN`].
    #[error("key of {0} bytes is longer than the limit of {MAX_KEY_LEN}")]
    KeyTooLong(usize),
    /// The value is larger than [`MAX_VALUE_LEN`].
    #[error("value of {0} bytes is larger than the limit of {MAX_VALUE_LEN}")]
    ValueTooLarge(usize),
    /// An arithmetic update met a value that is not an integer.
    #[error("{key} holds {found}, not an integer")]
    NotAnInteger {
        /// The key.
        key: String,
        /// The type found there.
        found: &'static str,
    },
    /// An arithmetic update would overflow i64.
    #[error("{key}: i64 overflow")]
    Overflow {
        /// The key.
        key: String,
    },
    /// A moved item named a writer this node does not take (see [`Writer::from_peer`]).
    #[error("refused: {0}")]
    Writer(#[from] WriterError),
    /// The node is handing its state over to leave the cluster.
    #[error("this node is handing its state over and leaving; write elsewhere")]
    Closed,
    /// The node has no such tenant.
    #[error("no tenant {0:?} on this node")]
    NoSuchTenant(String),
    /// The write would take the tenant over its `keys` or `bytes` quota here.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
}

/// A request refused because it would take a tenant over one of its quotas on this
/// node. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("quota {quota} of {limit} reached")]
pub struct QuotaExceeded {
    /// Which quota (`keys`, `bytes`, `reducers`, `modules`, `module_bytes`, `reads`,
    /// `wasm_jobs`).
    pub quota: &'static str,
    /// Its limit.
    pub limit: u64,
}

/// Orders two writes, each named by its version and its writer's node id: true if
/// `(a, a_writer)` is newer than `(b, b_writer)`. Versions decide; equal versions (two
/// nodes' clocks can give the same timestamp) are broken by writer id. Every node, and
/// every reducer of "latest", orders writes this way.
pub fn newer(a: u64, a_writer: &str, b: u64, b_writer: &str) -> bool {
    (a, a_writer) > (b, b_writer)
}

/// One node's store: a clock and one [`TenantStore`] per tenant.
#[derive(Debug)]
pub struct Store {
    node: Arc<str>,
    writer: Writer,
    clock: Arc<Hlc>,
    tenants: RwLock<HashMap<String, Arc<TenantStore>>>,
    /// Shared with every tenant: writes are refused (see [`Store::close_writes`]).
    closed: Arc<AtomicBool>,
}

impl Store {
    /// An empty store of node `node` with the default tenant.
    pub fn new(node: &str) -> Store {
        Store::with_tenants(node, [DEFAULT_TENANT])
    }

    /// An empty store of node `node` with exactly these tenants.
    pub fn with_tenants<'a>(node: &str, tenants: impl IntoIterator<Item = &'a str>) -> Store {
        let store = Store {
            node: node.into(),
            writer: Writer::new(node),
            clock: Arc::new(Hlc::new()),
            tenants: RwLock::default(),
            closed: Arc::default(),
        };
        for tenant in tenants {
            store.add_tenant(tenant);
        }
        store
    }

    /// The node's id: the origin of every item here, and the writer of every write made
    /// here.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The node's clock.
    pub fn clock(&self) -> &Hlc {
        &self.clock
    }

    /// The store of `tenant`, if the node has that tenant. Keep the handle for repeated
    /// use: it skips the tenant lookup.
    pub fn tenant(&self, tenant: &str) -> Option<Arc<TenantStore>> {
        self.tenants.read().unwrap().get(tenant).cloned()
    }

    /// Adds `tenant` (empty, without quotas) if the node does not have it yet; returns
    /// its store. Only configuration adds tenants: a name arriving from a peer or a
    /// client never does.
    pub fn add_tenant(&self, tenant: &str) -> Arc<TenantStore> {
        self.add_tenant_with(tenant, Quota::default())
    }

    /// Adds `tenant` (empty) with `quota` if the node does not have it yet; returns its
    /// store.
    pub fn add_tenant_with(&self, tenant: &str, quota: Quota) -> Arc<TenantStore> {
        let mut tenants = self.tenants.write().unwrap();
        tenants
            .entry(tenant.to_string())
            .or_insert_with(|| {
                Arc::new(TenantStore {
                    node: self.node.clone(),
                    writer: self.writer,
                    clock: self.clock.clone(),
                    items: RwLock::default(),
                    closed: self.closed.clone(),
                    quota,
                    refused: Default::default(),
                })
            })
            .clone()
    }

    /// Every tenant, by name.
    pub fn tenants(&self) -> Vec<(String, Arc<TenantStore>)> {
        self.tenants.read().unwrap().iter().map(|(name, t)| (name.clone(), t.clone())).collect()
    }

    /// Refuses writes (`set`, `add`, `merge`) in every tenant with
    /// [`StoreError::Closed`], for a node handing its state over: a write after the
    /// items were taken out would stay behind and be lost. Writers check under the
    /// tenant's lock, so a write either lands before a later `take_all` or is refused.
    pub fn close_writes(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Accepts writes again (the hand-off failed and the node stays).
    pub fn open_writes(&self) {
        self.closed.store(false, Ordering::Relaxed);
    }
}

/// One tenant's items on one node.
#[derive(Debug)]
pub struct TenantStore {
    node: Arc<str>,
    writer: Writer,
    clock: Arc<Hlc>,
    items: RwLock<Items>,
    closed: Arc<AtomicBool>,
    quota: Quota,
    /// Writes refused by the `keys` and the `bytes` quota.
    refused: [AtomicU64; 2],
}

/// How far state arriving from other nodes (a take, a hand-off) may take a tenant
/// beyond its quotas: up to this multiple of them, so a scale-in does not fail on a
/// full node and a tenant still cannot grow without bound.
pub const MOVED_STATE_HEADROOM: u64 = 2;

/// A tenant's limits on this node's store. `None`: unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// Items held.
    pub keys: Option<u64>,
    /// Key and value bytes held.
    pub bytes: Option<u64>,
}

/// The size a value counts for against [`MAX_VALUE_LEN`] (8 for numbers).
pub(crate) fn value_len(value: &Value) -> usize {
    match value {
        Value::Int(_) | Value::Float(_) => 8,
        Value::Text(s) => s.len(),
        Value::Bytes(b) => b.len(),
    }
}

/// Refuses a key or value over the size limits.
fn check_size(key: &str, value: &Value) -> Result<(), StoreError> {
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::KeyTooLong(key.len()));
    }
    if value_len(value) > MAX_VALUE_LEN {
        return Err(StoreError::ValueTooLarge(value_len(value)));
    }
    Ok(())
}

impl TenantStore {
    /// The id of the node whose store this is.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Sets `key` to `value`; returns the new version.
    pub fn set(&self, key: &str, value: Value) -> Result<u64, StoreError> {
        check_size(key, &value)?;
        let mut items = self.items.write().unwrap();
        self.check_open()?;
        self.admit(&items, key, &value, 1)?;
        // Tick under the lock so that versions of one key increase in write order.
        let version = self.clock.tick();
        items.put(key, &Versioned { value, version, writer: self.writer, counter: false });
        Ok(version)
    }

    /// The value at `key`, with the version and writer of its last write.
    pub fn get(&self, key: &str) -> Option<Versioned> {
        self.items.read().unwrap().get(key).map(Block::versioned)
    }

    /// Deletes `key`; returns whether it was there.
    pub fn del(&self, key: &str) -> bool {
        self.items.write().unwrap().remove(key).is_some()
    }

    /// Refuses a write once the store is closed; called under the write lock, which
    /// orders it against `close_writes` followed by `take_all`.
    fn check_open(&self) -> Result<(), StoreError> {
        match self.closed.load(Ordering::Relaxed) {
            true => Err(StoreError::Closed),
            false => Ok(()),
        }
    }

    /// Refuses (and counts) a write that would take the tenant over its quota scaled
    /// by `times`.
    fn admit(&self, items: &Items, key: &str, value: &Value, times: u64) -> Result<(), StoreError> {
        if self.quota == Quota::default() {
            return Ok(());
        }
        items.admits(key, value, &self.quota, times).map_err(|(which, limit)| {
            self.refused[which].fetch_add(1, Ordering::Relaxed);
            StoreError::Quota(QuotaExceeded { quota: ["keys", "bytes"][which], limit })
        })
    }

    /// The tenant's quota on this node.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Writes refused by the `keys` and the `bytes` quota, by name.
    pub fn refusals(&self) -> [(&'static str, u64); 2] {
        [("keys", 0), ("bytes", 1)].map(|(name, i)| (name, self.refused[i].load(Ordering::Relaxed)))
    }

    /// Key and value bytes held.
    pub fn bytes(&self) -> u64 {
        self.items.read().unwrap().bytes()
    }

    /// Adds `delta` to the integer at `key` (missing counts as 0); returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        if key.len() > MAX_KEY_LEN {
            return Err(StoreError::KeyTooLong(key.len()));
        }
        let mut items = self.items.write().unwrap();
        self.check_open()?;
        let counted =
            |current: i64| current.checked_add(delta).ok_or_else(|| StoreError::Overflow { key: key.to_string() });
        // One hash lookup for a key that exists (the common case: a counter per packet),
        // changed in place: an integer replacing an integer leaves the byte count as it was.
        if let Some(block) = items.get_mut(key) {
            let Some(current) = block.int() else {
                return Err(StoreError::NotAnInteger { key: key.to_string(), found: block.value().type_name() });
            };
            let next = counted(current)?;
            block.write_count(next, self.clock.tick(), self.writer);
            return Ok(next);
        }
        let next = counted(0)?;
        self.admit(&items, key, &Value::Int(next), 1)?;
        let version = self.clock.tick();
        items.put(key, &Versioned { value: Value::Int(next), version, writer: self.writer, counter: true });
        Ok(next)
    }

    /// Merges an item that another node gave up into this node's value for its key:
    /// two counters add up (each was its node's share of the count, so the cluster's
    /// sum is unchanged); otherwise the newer write wins ([`Versioned::newer_than`]), and
    /// a key this node does not have is simply stored. The item keeps the version and
    /// writer of its last write (a sum of two counter shares, those of the newer share),
    /// and this node's clock observes that version, so a later write here is newer.
    /// Returns whether the store changed.
    pub fn merge(&self, moving: Moving) -> Result<bool, StoreError> {
        self.merge_into(moving, false)
    }

    /// Puts back an item this node took out and could not hand over (refused,
    /// unacknowledged, too large to send): merged like [`TenantStore::merge`], even
    /// while writes are closed.
    pub fn put_back(&self, moving: Moving) -> Result<bool, StoreError> {
        self.merge_into(moving, true)
    }

    fn merge_into(&self, moving: Moving, even_closed: bool) -> Result<bool, StoreError> {
        let Moving { item: Item { key, value, writer, version, .. }, counter } = moving;
        check_size(&key, &value)?;
        let moved = Versioned { value, version, writer: Writer::from_peer(&writer)?, counter };
        let mut items = self.items.write().unwrap();
        if !even_closed {
            self.check_open()?;
            // State moving here is admitted beyond the quota, up to the headroom; state
            // put back was this node's already.
            self.admit(&items, &key, &moved.value, MOVED_STATE_HEADROOM)?;
        }
        self.clock.observe(version);
        let merged = match items.get(&key).map(Block::versioned) {
            None => moved,
            Some(have) => match (&have.value, &moved.value) {
                (Value::Int(a), Value::Int(b)) if have.counter && moved.counter => {
                    let value = Value::Int(a.checked_add(*b).ok_or_else(|| StoreError::Overflow { key: key.clone() })?);
                    let newer = if moved.newer_than(&have) { &moved } else { &have };
                    Versioned { value, version: newer.version, writer: newer.writer, counter: true }
                }
                _ if moved.newer_than(&have) => moved,
                _ => return Ok(false),
            },
        };
        items.put(&key, &merged);
        Ok(true)
    }

    /// Removes every item whose key matches `pattern` and returns them (move semantics:
    /// another node takes them over), atomically under the write lock.
    pub fn take_matching(&self, pattern: &Pattern) -> Vec<Moving> {
        let mut items = self.items.write().unwrap();
        let keys: Vec<String> = items.matching(pattern).map(|b| b.key().to_string()).collect();
        keys.iter().filter_map(|key| items.remove(key)).map(|b| self.moving(&b)).collect()
    }

    /// Removes every item and returns them (a hand-off), atomically.
    pub fn take_all(&self) -> Vec<Moving> {
        let mut items = self.items.write().unwrap();
        items.drain().map(|b| self.moving(&b)).collect()
    }

    /// An item taken out of this store.
    fn moving(&self, block: &Block) -> Moving {
        Moving { item: self.item(block), counter: block.counter() }
    }

    /// An item of this store, as reads and takes report it.
    fn item(&self, block: &Block) -> Item {
        Item {
            key: block.key().to_string(),
            value: block.value().to_value(),
            origin: self.node.to_string(),
            writer: block.writer().name().to_string(),
            version: block.version(),
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.read().unwrap().len()
    }

    /// Whether the tenant has no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with every entry whose key matches `pattern`, borrowed from the store
    /// under the read lock (keep `f` short, and write to no store in it), stopping at
    /// the first error.
    pub fn for_each_matching<E>(
        &self,
        pattern: &Pattern,
        mut f: impl FnMut(Entry<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let items = self.items.read().unwrap();
        items.matching(pattern).try_for_each(|b| {
            f(Entry { key: b.key(), value: b.value(), version: b.version(), writer: b.writer(), counter: b.counter() })
        })
    }

    /// Every item whose key matches `pattern`, in no particular order: held by this node
    /// (`origin`), with the version and writer of its last write.
    pub fn matching(&self, pattern: &Pattern) -> Vec<Item> {
        let items = self.items.read().unwrap();
        items.matching(pattern).map(|b| self.item(b)).collect()
    }
}

#[cfg(test)]
mod tests;
