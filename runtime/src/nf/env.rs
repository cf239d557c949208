//! What a running NF reaches: the node's store through its guest's host calls, global
//! reads and takes through the driver, and the fetching of a moved flow's state.

use std::collections::HashMap;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use crate::global::{Consistency, GlobalError, GlobalOptions};
use crate::nf::parking::Adoption;
use crate::nf::{FlowState, NfCounters};
use crate::pattern::Pattern;
use crate::peering::driver::{Command, Inbox, global_read};
use crate::reduce::Reduced;
use crate::reduce::registry::Registry;
use crate::store::TenantStore;
use crate::wasm::NfState;
use estate_guest::{Item, Value};

/// The NF environment of a node: the tenant that owns its NF place (every host call
/// reaches that tenant's keys and reducers only), the driver, the registry.
pub(crate) struct NfContext {
    pub(crate) name: String,
    pub(crate) tenant: Arc<TenantStore>,
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) counters: Arc<NfCounters>,
}

/// Local state is the tenant's (its own `NfState`, below); the cluster is reached
/// through the driver.
impl NfState for NfContext {
    fn counter_add(&self, key: &str, delta: i64) -> Result<i64, String> {
        NfState::counter_add(&*self.tenant, key, delta)
    }

    fn get(&self, key: &str) -> Option<Value> {
        NfState::get(&*self.tenant, key)
    }

    fn set(&self, key: &str, value: Value) -> Result<(), String> {
        NfState::set(&*self.tenant, key, value)
    }

    fn del(&self, key: &str) -> bool {
        NfState::del(&*self.tenant, key)
    }

    fn global(&self, pattern: &str, reducer: &str, timeout: Duration, all: bool) -> Result<Option<Item>, String> {
        let consistency = if all { Consistency::All } else { Consistency::BestEffort };
        let options = GlobalOptions { timeout, consistency, ..GlobalOptions::default() };
        let answer = self
            .counters
            .timed_global(|| global_read(&self.inbox, &self.registry, &self.name, pattern, reducer, options))
            .map_err(|e| e.to_string())?;
        one_item(answer.result, reducer)
    }

    fn take(&self, pattern: &str) -> Result<usize, String> {
        self.bring(pattern, true)
    }

    fn metric_add(&self, name: &str, delta: i64) {
        self.counters.metric_add(name, delta);
    }

    fn emit(&self, event: &str) {
        self.counters.emit(event);
    }
}

/// The one item a global read gives an NF (a reducer that returns a list is an error).
pub(crate) fn one_item(result: Reduced, reducer: &str) -> Result<Option<Item>, String> {
    match result {
        Reduced::Nothing => Ok(None),
        Reduced::Value(v) => Ok(Some(Item::of(v))),
        Reduced::Item(item) => Ok(Some(item)),
        Reduced::Items(_) => Err(format!("reducer {reducer} returns a list; NFs take one item")),
    }
}

impl NfContext {
    /// Brings the keys matching `pattern` here from the other members. With `take`,
    /// the members give their items up and each is merged into this node's (counters
    /// add up, otherwise the newest wins); without, the newest version of each key is
    /// copied here and the members keep theirs.
    pub(crate) fn bring(&self, pattern: &str, take: bool) -> Result<usize, String> {
        if take {
            let pattern = Pattern::new(pattern).map_err(|e| e.to_string())?;
            let timeout = GlobalOptions::default().timeout;
            let (tx, rx) = mpsc::channel();
            self.inbox
                .send(Command::Take { tenant: self.name.clone(), pattern, timeout, reply: tx })
                .map_err(|e| e.to_string())?;
            // The protocol stores the items before it answers (and only then tells the
            // members that gave them up): the count is what came.
            return rx
                .recv_timeout(timeout + Duration::from_secs(10))
                .map_err(|_| GlobalError::Shutdown.to_string())?
                .map_err(|e| e.to_string());
        }
        let options = GlobalOptions::default();
        let answer = global_read(&self.inbox, &self.registry, &self.name, pattern, "list", options)
            .map_err(|e| e.to_string())?;
        let Reduced::Items(items) = answer.result else {
            return Ok(0);
        };
        // The newest version of each key wins (a flow that moved twice may have left
        // copies on two nodes); this node's own items are already here.
        let mut newest: HashMap<String, Item> = HashMap::new();
        for item in items.into_iter().filter(|i| i.origin != self.tenant.node()) {
            match newest.get(&item.key) {
                Some(have) if !crate::store::newer(item.version, &item.writer, have.version, &have.writer) => {}
                _ => {
                    newest.insert(item.key.clone(), item);
                }
            }
        }
        let adopted = newest.len();
        for (key, item) in newest {
            self.tenant.set(&key, item.value).map_err(|e| e.to_string())?;
        }
        Ok(adopted)
    }
}

/// The NF state of a run without state sharing: everything local, no global reads.
pub(crate) struct Unshared(pub(crate) Arc<dyn NfEnv>);

impl NfState for Unshared {
    fn counter_add(&self, key: &str, delta: i64) -> Result<i64, String> {
        self.0.counter_add(key, delta)
    }

    fn get(&self, key: &str) -> Option<Value> {
        self.0.get(key)
    }

    fn set(&self, key: &str, value: Value) -> Result<(), String> {
        self.0.set(key, value)
    }

    fn del(&self, key: &str) -> bool {
        self.0.del(key)
    }

    fn global(&self, _: &str, _: &str, _: Duration, _: bool) -> Result<Option<Item>, String> {
        Err("state sharing is off on this node".into())
    }

    fn take(&self, _: &str) -> Result<usize, String> {
        Err("state sharing is off on this node".into())
    }

    fn metric_add(&self, name: &str, delta: i64) {
        self.0.metric_add(name, delta)
    }

    fn emit(&self, event: &str) {
        self.0.emit(event)
    }
}

impl NfEnv for Unshared {
    fn adopt_flow(&self, _: &str, _: FlowState) -> Result<usize, String> {
        Ok(0)
    }
}

/// What a running NF reaches: its guest's host calls ([`NfState`]), and bringing a moved
/// flow's state here before the flow's first packet (no guest import reaches that).
pub trait NfEnv: NfState {
    /// Brings the state of `flow` (keys `flow:<flow>:…`) to this node from wherever it
    /// is in the cluster, by `mode`; returns the number of keys brought.
    fn adopt_flow(&self, flow: &str, mode: FlowState) -> Result<usize, String>;

    /// Starts bringing `flow`'s state here; the NF goes on with other flows meanwhile.
    /// By default the state is brought at once ([`NfEnv::adopt_flow`]).
    fn start_adopt(&self, flow: &str, mode: FlowState) -> Adoption {
        Adoption::Ready(self.adopt_flow(flow, mode))
    }
}

impl NfEnv for NfContext {
    fn adopt_flow(&self, flow: &str, mode: FlowState) -> Result<usize, String> {
        if mode == FlowState::Off {
            return Ok(0);
        }
        // Every key of the flow, on any member: `flow:<key>:…` with the key escaped.
        self.bring(&estate_guest::pattern::flow_keys(flow), mode == FlowState::Take)
    }

    /// A take goes out through the I/O thread and the NF does not wait for it; a copy
    /// (a read, then writes here) is brought at once.
    fn start_adopt(&self, flow: &str, mode: FlowState) -> Adoption {
        if mode != FlowState::Take {
            return Adoption::Ready(self.adopt_flow(flow, mode));
        }
        let pattern = match Pattern::new(&estate_guest::pattern::flow_keys(flow)) {
            Ok(pattern) => pattern,
            Err(e) => return Adoption::Ready(Err(e.to_string())),
        };
        let (tx, rx) = mpsc::channel();
        let take =
            Command::Take { tenant: self.name.clone(), pattern, timeout: GlobalOptions::default().timeout, reply: tx };
        match self.inbox.send(take) {
            Ok(()) => Adoption::Take(rx),
            Err(e) => Adoption::Ready(Err(e.to_string())),
        }
    }
}

/// A store tenant alone: local state, no global reads (tests and benchmarks).
impl NfState for TenantStore {
    fn counter_add(&self, key: &str, delta: i64) -> Result<i64, String> {
        self.add(key, delta).map_err(|e| e.to_string())
    }

    fn get(&self, key: &str) -> Option<Value> {
        TenantStore::get(self, key).map(|v| v.value)
    }

    fn set(&self, key: &str, value: Value) -> Result<(), String> {
        TenantStore::set(self, key, value).map(drop).map_err(|e| e.to_string())
    }

    fn del(&self, key: &str) -> bool {
        TenantStore::del(self, key)
    }
}
