//! The operator protocol: a node's control socket ([`server`], run by the node's I/O
//! thread) and the one client of it ([`client`]). The messages are defined in the wire
//! module (`EC` frames) and re-exported here.

pub mod client;
pub(crate) mod server;

pub use crate::wire::{ControlReply, ControlRequest, GlobalAnswer, HandoffReport, LimitOverrides, MemberView};
pub use client::{ClientError, call};
