//! The operator protocol: a node's control socket ([`server`], run by the node's I/O
//! thread) and the one client of it ([`client`]). The messages are defined in the wire
//! module (`EC` frames) and re-exported here.

pub mod auth;
pub mod client;
pub(crate) mod server;

pub use crate::wire::{
    ControlCall, ControlReply, ControlRequest, GlobalAnswer, HandoffReport, LimitOverrides, MemberView, SecurityEntry,
};
pub use auth::{Credential, Principal};
pub use client::{Caller, ClientError, call, call_as};
