//! estate: state management for elastic network functions.
//!
//! Every node keeps its own state in a local [`store`] and answers global reads from
//! its peers over ZeroMQ ([`node`]); NF logic and custom reducers run as sandboxed Wasm
//! guests ([`wasm`]). See `docs/ARCHITECTURE.md` for the map.
//!
//! ```no_run
//! use estate::node::{GlobalOptions, Node, NodeConfig};
//! use estate_guest::Value;
//!
//! let a = Node::start(NodeConfig::new("a", "tcp://127.0.0.1:*")).unwrap();
//! let mut config = NodeConfig::new("b", "tcp://127.0.0.1:*");
//! config.join.push(a.endpoint().to_string());
//! let b = Node::start(config).unwrap();
//! a.set("c", Value::Int(5)).unwrap();
//! b.set("c", Value::Int(7)).unwrap();
//! // Once b has joined:
//! let answer = a.get_global("c", "sum", GlobalOptions::default()).unwrap();
//! println!("{:?} from {:?}", answer.result, answer.answered);
//! ```
pub mod backend;
pub mod control;
/// Fuzz targets over every decoder of outside bytes, for `fuzz/` and the smoke test.
/// Not a stable API.
#[doc(hidden)]
pub mod fuzzing;
pub mod global;
pub mod guests;
pub mod hlc;
pub mod metrics;
pub mod nf;
pub mod node;
pub mod pattern;
pub(crate) mod peering;
pub mod reduce;
pub mod security_log;
pub mod store;
pub mod switch;
pub mod tenancy;
/// A real-traffic testbed of network namespaces and veth pairs (needs root).
pub mod testbed;
pub mod text;
pub mod wasm;
pub(crate) mod wire;

/// Peer-protocol internals for the project's own tests, which play a member over raw
/// ZeroMQ. Not a stable API.
#[doc(hidden)]
pub mod testing {
    pub use crate::global::Answer;
    pub use crate::peering::proto::membership::MemberMsg;
    pub use crate::peering::secure::{Entropy, KeyPair, MAGIC, Out, PublicKey, REPLAY_WINDOW, Roster, Secure, VERSION};
    pub use crate::wire::{
        Body, ControlReply, DecodeError, Envelope, MAX_FRAME, decode, decode_reply, encode, encode_request,
    };
}
