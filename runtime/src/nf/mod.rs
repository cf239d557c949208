//! Running an NF guest over a packet source, with a fail policy for guest faults.
//!
//! One thread per running NF hands it one packet at a time. A guest fault (a trap, a
//! budget exceeded, a broken ABI) gives that packet the NF's fail policy: forward
//! (fail-open) or drop (fail-closed); the fault is counted and logged, and the instance
//! is rebuilt from its configuration before the next packet, since a guest that
//! faulted may have left its memory in any state. State in the node's store survives.
//!
//! A moved flow's state is fetched before the NF sees the flow's first packet here. The
//! fabric's mark says which move brought the flow ([`OwnedPacket::mark`]): the state is
//! fetched again whenever a flow arrives with a mark other than the one it last came
//! with, so a flow that moves A→B→A→B is taken over by B twice.
//!
//! A packet source may wait for its packets (the steered input of
//! [`crate::switch::SteerSource`]); such a source polls its [`Input`]'s stop flag between
//! bounded waits, so stopping an NF never waits on traffic.

pub mod counters;
pub mod env;
pub mod input;
mod parking;
mod runner;
mod slot;

use std::fmt;
use std::str::FromStr;

use estate_guest::Verdict;

pub use counters::NfCounters;
pub use input::{Input, Packets};
pub use runner::NfRun;
pub use slot::{NfLoadError, NfSlot};

/// What a packet gets when the NF faults on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailPolicy {
    /// Forward it (availability first).
    Open,
    /// Drop it (safety first).
    Closed,
}

impl FromStr for FailPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(FailPolicy::Open),
            "closed" => Ok(FailPolicy::Closed),
            other => Err(format!("fail policy {other:?}: expected open or closed")),
        }
    }
}

impl FailPolicy {
    /// The verdict a packet gets under this policy when the NF faults.
    pub fn verdict(self) -> Verdict {
        match self {
            FailPolicy::Open => Verdict::Forward,
            FailPolicy::Closed => Verdict::Drop,
        }
    }
}

impl fmt::Display for FailPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailPolicy::Open => "open",
            FailPolicy::Closed => "closed",
        })
    }
}

/// What happens to a moved flow's state when its first packet reaches this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// Move: this node takes the flow's keys over; the old owners delete theirs, so
    /// global sums never count the flow twice.
    Take,
    /// The paper's copy: fetch the newest value of each key; the old copies stay.
    Copy,
    /// No state sharing (baseline): a moved flow starts from nothing here, and the
    /// NF's global reads are refused (it sees only what it counted itself).
    Off,
}

impl FromStr for FlowState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "take" => Ok(FlowState::Take),
            "copy" => Ok(FlowState::Copy),
            "off" => Ok(FlowState::Off),
            other => Err(format!("flow state {other:?}: expected take, copy or off")),
        }
    }
}

/// How a running NF treats faults and moved flows.
#[derive(Clone, Copy, Debug)]
pub struct NfSettings {
    /// What a packet gets when the NF faults on it.
    pub fail: FailPolicy,
    /// What happens to a moved flow's state.
    pub flows: FlowState,
}
