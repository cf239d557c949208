//! Every message that crosses a socket, and the one codec that encodes them.
//!
//! A frame is a 2-byte magic (`ES` between peers, `EC` on the control socket), a
//! one-byte protocol version, then the message in bincode 2 (serde). bincode is used
//! here and nowhere else. Decoding is bounded: frames larger than [`MAX_FRAME`] are
//! refused before decoding, bincode's allocation limit is the frame size, trailing
//! bytes are an error, and nothing panics on hostile input.

use estate_guest::{Item, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::membership::MemberMsg;
use crate::reduce::{Builtin, Partial, Reduced};
use crate::registry::ReducerInfo;
use crate::store::Moving;

/// The protocol version spoken by this build.
pub const VERSION: u8 = 1;
/// Largest frame accepted or sent, in bytes.
pub const MAX_FRAME: usize = 16 << 20;

const PEER_MAGIC: [u8; 2] = *b"ES";
const CONTROL_MAGIC: [u8; 2] = *b"EC";

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
    /// Asks the receiver for the bytes of the reducer module with this sha256.
    ModuleRequest {
        /// sha256 of the module.
        hash: [u8; 32],
    },
    /// The bytes of a reducer module, answering [`Body::ModuleRequest`].
    ModuleData {
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
}

/// A reducer shipped to peers for push-down.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RemoteReducer {
    /// A built-in, by identity.
    Builtin(Builtin),
    /// A Wasm module, by content hash; a peer without it asks the requester for it.
    Wasm([u8; 32]),
}

/// What a node contributes to a global read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    /// Its matching items (fetch-all).
    Items(Vec<Item>),
    /// Its matching items, given up to the requester (take): deleted on this node.
    Taken(Vec<Moving>),
    /// Its partial for a pushed-down built-in.
    Builtin(Partial),
    /// Its partial for a pushed-down Wasm reducer (`None`: it had nothing to reduce).
    Wasm(Option<Item>),
}

/// Consistency of a global read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Reduce whatever answered before the deadline; the answer names who is missing.
    #[default]
    BestEffort,
    /// Fail unless every live member answered.
    All,
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
    /// The node's counters.
    Stats,
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

/// Why a frame could not be decoded. The frame is dropped; nothing else changes.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// The frame is larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes is larger than the limit of {MAX_FRAME}")]
    Oversized(usize),
    /// The frame does not start with the expected magic.
    #[error("not an estate frame")]
    BadMagic,
    /// The frame speaks another protocol version.
    #[error("protocol version {0}, this node speaks {VERSION}")]
    Version(u8),
    /// The body is malformed or truncated.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

fn encode_with<T: Serialize>(magic: [u8; 2], msg: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&magic);
    out.push(VERSION);
    // Serializing our own types into a Vec cannot fail, except past the size limit,
    // which the senders check (see `GlobalReply` construction in the node).
    bincode::serde::encode_into_std_write(msg, &mut out, config()).expect("encodable message");
    out
}

fn decode_with<T: DeserializeOwned>(magic: [u8; 2], frame: &[u8]) -> Result<T, DecodeError> {
    if frame.len() > MAX_FRAME {
        return Err(DecodeError::Oversized(frame.len()));
    }
    let Some((head, body)) = frame.split_first_chunk::<3>() else {
        return Err(DecodeError::BadMagic);
    };
    if head[..2] != magic {
        return Err(DecodeError::BadMagic);
    }
    if head[2] != VERSION {
        return Err(DecodeError::Version(head[2]));
    }
    let (msg, used) =
        bincode::serde::decode_from_slice(body, config()).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(DecodeError::Malformed(format!("{} trailing bytes", body.len() - used)));
    }
    Ok(msg)
}

/// Encodes a peer message.
pub fn encode(env: &Envelope) -> Vec<u8> {
    encode_with(PEER_MAGIC, env)
}

/// Decodes a peer message.
pub fn decode(frame: &[u8]) -> Result<Envelope, DecodeError> {
    decode_with(PEER_MAGIC, frame)
}

/// Encodes a control request.
pub fn encode_request(req: &ControlRequest) -> Vec<u8> {
    encode_with(CONTROL_MAGIC, req)
}

/// Decodes a control request.
pub fn decode_request(frame: &[u8]) -> Result<ControlRequest, DecodeError> {
    decode_with(CONTROL_MAGIC, frame)
}

/// Encodes a control reply.
pub fn encode_reply(reply: &ControlReply) -> Vec<u8> {
    encode_with(CONTROL_MAGIC, reply)
}

/// Decodes a control reply.
pub fn decode_reply(frame: &[u8]) -> Result<ControlReply, DecodeError> {
    decode_with(CONTROL_MAGIC, frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn sample() -> Envelope {
        Envelope {
            from: "node-1".into(),
            clock: 42,
            body: Body::GlobalReply {
                id: 7,
                result: Ok(Answer::Items(vec![Item {
                    key: "k".into(),
                    value: Value::Int(-1),
                    origin: "n".into(),
                    version: 3,
                }])),
            },
        }
    }

    #[test]
    fn round_trip() {
        let env = sample();
        assert_eq!(decode(&encode(&env)).unwrap(), env);
        let req = ControlRequest::Global {
            pattern: "flow:.*".into(),
            reducer: "sum".into(),
            timeout_ms: 10,
            consistency: Consistency::All,
            remote: true,
        };
        assert_eq!(decode_request(&encode_request(&req)).unwrap(), req);
    }

    #[test]
    fn truncations_and_garbage_are_errors_not_panics() {
        let frame = encode(&sample());
        for cut in 0..frame.len() {
            assert!(decode(&frame[..cut]).is_err(), "cut at {cut}");
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..2000 {
            let mut f = frame.clone();
            let i = rng.random_range(3..f.len());
            f[i] = rng.random();
            let _ = decode(&f);
            let len = rng.random_range(0..64);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if junk.len() >= 3 {
                junk[..3].copy_from_slice(&[b'E', b'S', VERSION]);
            }
            let _ = decode(&junk);
        }
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // A Vec length of u64::MAX inside a small frame must fail, not reserve memory.
        let mut frame = vec![b'E', b'S', VERSION, 1, b'a'];
        frame.extend_from_slice(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(decode(&frame).is_err());
    }

    #[test]
    fn oversized_magic_and_version_are_named() {
        assert_eq!(decode(&vec![0; MAX_FRAME + 1]), Err(DecodeError::Oversized(MAX_FRAME + 1)));
        assert_eq!(decode(b"XX\x01"), Err(DecodeError::BadMagic));
        assert_eq!(decode(b"ES\x09abc"), Err(DecodeError::Version(9)));
        assert_eq!(decode_request(&encode(&sample())), Err(DecodeError::BadMagic));
    }
}
