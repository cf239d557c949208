//! The operator protocol: requests to a node's control socket and their replies.

use estate_guest::Value;
use serde::{Deserialize, Serialize};

use crate::global::Consistency;
use crate::reduce::Reduced;
use crate::reduce::registry::ReducerInfo;

/// One control request as sent: who sends it, for which tenant, and what it asks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlCall {
    /// The caller's credential (none: accepted only by a node without a credentials
    /// file, which then takes every request as the admin's).
    pub credential: Option<Credential>,
    /// The tenant to act in: a tenant principal's own (or none), or any for the admin
    /// (none: `default`).
    pub tenant: Option<String>,
    /// The request.
    pub request: ControlRequest,
}

/// What a client sends to prove a principal (see `control::auth`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The principal, as `admin` or `tenant:NAME`.
    pub principal: String,
    /// The secret.
    pub secret: String,
}

/// One line of the security log: refusals of one reason, principal and object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityEntry {
    /// Why the node refused (`unauthenticated`, `forbidden`, `quota:keys`, …).
    pub reason: String,
    /// Who was refused (a principal, a peer, or `-`).
    pub principal: String,
    /// What was refused (a request kind, a tenant; never a value or a secret).
    pub object: String,
    /// How many times.
    pub count: u64,
    /// First and last time, in milliseconds since the Unix epoch.
    pub first_ms: u64,
    /// Last time, in milliseconds since the Unix epoch.
    pub last_ms: u64,
}

/// A request from the command line to a node's control socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Set a key.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Value,
    },
    /// Read a key.
    Get {
        /// The key.
        key: String,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
    },
    /// A global read.
    Global {
        /// Key pattern.
        pattern: String,
        /// Reducer name.
        reducer: String,
        /// Deadline in milliseconds.
        timeout_ms: u64,
        /// Consistency.
        consistency: Consistency,
        /// Push the reducer down to the peers.
        remote: bool,
    },
    /// The membership view.
    Members,
    /// Load (or replace) a Wasm reducer.
    ReducerLoad {
        /// Name to load it under.
        name: String,
        /// The module.
        bytes: Vec<u8>,
        /// Overrides of the node's default limits.
        limits: LimitOverrides,
    },
    /// Unload a Wasm reducer.
    ReducerUnload {
        /// Its name.
        name: String,
    },
    /// List the reducers.
    ReducerList,
    /// Load an NF: replace the running one between two packets, or start it on the
    /// node's held input.
    NfLoad {
        /// The module.
        bytes: Vec<u8>,
        /// Its configuration.
        config: String,
    },
    /// Replace the running NF between two packets; an error if none runs.
    NfReplace {
        /// The module.
        bytes: Vec<u8>,
        /// Its configuration.
        config: String,
    },
    /// Stop the NF.
    NfUnload,
    /// The NF's status.
    NfStatus,
    /// The node's counters (the tenant's own, for a tenant).
    Stats,
    /// The security log (admin only).
    SecurityLog,
    /// Graceful scale-in: stop the NF, hand every item to the other members, leave the
    /// cluster and exit. If the hand-off fails the node keeps its state and stays.
    Leave {
        /// How long the members may take to acknowledge, in milliseconds.
        timeout_ms: u64,
    },
}

/// What a graceful leave handed over.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffReport {
    /// Items handed over, in total.
    pub items: u64,
    /// Items stored by each member, by member id.
    pub members: Vec<(String, u64)>,
    /// Time from the start of the hand-off to the last acknowledgement, in microseconds.
    pub micros: u64,
}

/// Per-reducer overrides of the node's default limits (`None`: the default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitOverrides {
    /// Fuel per call.
    pub fuel: Option<u64>,
    /// Wall-clock limit per call, in milliseconds.
    pub wall_ms: Option<u64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Output limit in bytes.
    pub output_bytes: Option<u64>,
}

impl LimitOverrides {
    /// `base` with these overrides applied.
    pub fn apply(&self, base: &crate::wasm::Limits) -> crate::wasm::Limits {
        let mut l = base.clone();
        if let Some(f) = self.fuel {
            l.fuel = f;
        }
        if let Some(ms) = self.wall_ms {
            l.wall_time = std::time::Duration::from_millis(ms);
        }
        if let Some(m) = self.memory_bytes {
            l.memory_bytes = m as usize;
        }
        if let Some(o) = self.output_bytes {
            l.output_bytes = o as usize;
        }
        l
    }
}

/// A member as the membership view shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Node id.
    pub id: String,
    /// Listen endpoint.
    pub endpoint: String,
    /// `self`, `alive`, `suspect` or `joining`.
    pub state: String,
}

/// The answer of a global read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GlobalAnswer {
    /// The reducer that was applied.
    pub reducer: String,
    /// Whether it was pushed down to the peers.
    pub remote: bool,
    /// The reduced result.
    pub result: Reduced,
    /// Members that answered, the node itself included, sorted.
    pub answered: Vec<String>,
    /// Live members that did not answer before the deadline, or answered with an
    /// error, sorted.
    pub missing: Vec<String>,
}

/// A node's reply on the control socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlReply {
    /// A write was applied; its version.
    Set(u64),
    /// The value at a key, with its version.
    Value(Option<(Value, u64)>),
    /// Whether a deleted key existed.
    Deleted(bool),
    /// A global read's answer.
    Global(GlobalAnswer),
    /// The membership view.
    Members(Vec<MemberView>),
    /// The node's counters, by name.
    Stats(Vec<(String, u64)>),
    /// The security log, most recent last.
    SecurityLog(Vec<SecurityEntry>),
    /// A reducer was loaded.
    Loaded(ReducerInfo),
    /// Whether an unloaded reducer existed.
    Unloaded(bool),
    /// The reducers.
    Reducers(Vec<ReducerInfo>),
    /// What an NF request did, or the NF's status.
    Nf(String),
    /// The node handed its state over and is leaving.
    Left(HandoffReport),
    /// The request failed.
    Error(String),
}
