//! Peering: the protocol between nodes ([`proto`], without I/O) and the ZeroMQ driver
//! that runs it ([`driver`]).

pub(crate) mod driver;
pub mod proto;
pub mod stats;
