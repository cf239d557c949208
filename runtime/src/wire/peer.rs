//! Messages between peers: one [`Envelope`] per frame.

use serde::{Deserialize, Serialize};

use crate::global::Answer;
use crate::peering::proto::membership::MemberMsg;
use crate::reduce::Builtin;
use crate::store::Moving;
use crate::wasm::Limits;

/// A message between peers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending node's id.
    pub from: String,
    /// The sender's hybrid logical clock when it sent this.
    pub clock: u64,
    /// What the message says.
    pub body: Body,
}

/// The kinds of peer message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// Membership: join, handshake, heartbeat, leave.
    Member(MemberMsg),
    /// Asks for the items of `tenant` whose key matches `pattern`, or (push-down) for
    /// their reduction by `reducer`.
    GlobalRequest {
        /// Unguessable id of the read (128 random bits).
        id: u128,
        /// Tenant whose items are read.
        tenant: String,
        /// Key pattern (a regular expression or an exact key).
        pattern: String,
        /// `None`: send the items. `Some`: reduce them here and send the partial.
        reducer: Option<RemoteReducer>,
        /// Move semantics (a flow moved to the requester): send the items and delete
        /// them here, so the requester becomes their only owner.
        take: bool,
    },
    /// The answer to a [`Body::GlobalRequest`].
    GlobalReply {
        /// The request's id.
        id: u128,
        /// The items or partial, or why the node could not answer.
        result: Result<Answer, String>,
    },
    /// Asks the receiver for the bytes of the reducer module with this sha256, which a
    /// read of `tenant` pushed down.
    ModuleRequest {
        /// The tenant whose read pushed the module down.
        tenant: String,
        /// sha256 of the module.
        hash: [u8; 32],
    },
    /// The bytes of a reducer module, answering [`Body::ModuleRequest`].
    ModuleData {
        /// The tenant whose read pushed the module down.
        tenant: String,
        /// sha256 the bytes must have.
        hash: [u8; 32],
        /// The module.
        bytes: Vec<u8>,
    },
    /// A leaving node hands part of its state to the receiver (graceful scale-in); the
    /// receiver merges the items into its own store and acknowledges.
    Handoff {
        /// Id of this batch (128 random bits).
        id: u128,
        /// Tenant the items belong to.
        tenant: String,
        /// The items, with how to merge each.
        items: Vec<Moving>,
    },
    /// The answer to a [`Body::Handoff`]: every item was stored except `refused`.
    HandoffAck {
        /// The batch's id.
        id: u128,
        /// Items stored.
        stored: u64,
        /// Keys that could not be stored, with why (the sender keeps those items).
        refused: Vec<(String, String)>,
    },
    /// The taker of take `id` stored the items the receiver gave up for it: the
    /// receiver forgets its lent copy (a take's second step).
    TakeAck {
        /// The take's id.
        id: u128,
    },
}

/// A reducer shipped to peers for push-down.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RemoteReducer {
    /// A built-in, by identity.
    Builtin(Builtin),
    /// A Wasm module, by content hash (a peer without it asks the requester for it),
    /// and the budgets its owner runs it under (the peer applies them within the
    /// reading tenant's ceilings).
    Wasm {
        /// sha256 of the module.
        hash: [u8; 32],
        /// Budgets per call.
        budget: Budget,
    },
}

/// A reducer's budgets per call, as they travel with a pushed-down read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Fuel.
    pub fuel: u64,
    /// Wall time, in milliseconds.
    pub wall_ms: u64,
    /// Memory, in bytes.
    pub memory_bytes: u64,
    /// Output, in bytes.
    pub output_bytes: u64,
}

impl From<&Limits> for Budget {
    fn from(l: &Limits) -> Self {
        Budget {
            fuel: l.fuel,
            wall_ms: l.wall_time.as_millis() as u64,
            memory_bytes: l.memory_bytes as u64,
            output_bytes: l.output_bytes as u64,
        }
    }
}

impl Budget {
    /// These budgets on top of `base` (which gives what a budget does not carry).
    pub fn limits(&self, base: &Limits) -> Limits {
        Limits {
            fuel: self.fuel,
            wall_time: std::time::Duration::from_millis(self.wall_ms),
            memory_bytes: self.memory_bytes.try_into().unwrap_or(usize::MAX),
            output_bytes: self.output_bytes.try_into().unwrap_or(usize::MAX),
            ..base.clone()
        }
    }
}
