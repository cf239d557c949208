//! Peering: the protocol between nodes ([`proto`], without I/O), the authenticated and
//! encrypted channel between them ([`secure`], without I/O), and the ZeroMQ driver that
//! runs both ([`driver`]).

pub(crate) mod driver;
pub mod proto;
pub mod secure;
pub mod stats;
