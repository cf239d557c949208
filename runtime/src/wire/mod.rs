//! Every message that crosses a socket, and the one codec that encodes them.
//!
//! A frame is a 2-byte magic (`ES` between peers, `EC` on the control socket), a
//! one-byte protocol version, then the message in bincode 2 (serde). bincode is used
//! here and nowhere else. Decoding is bounded: frames larger than [`MAX_FRAME`] are
//! refused before decoding, bincode's allocation limit is the frame size, trailing
//! bytes are an error, and nothing panics on hostile input.

use serde::Serialize;
use serde::de::DeserializeOwned;

mod control;
mod peer;

pub use control::*;
pub use peer::*;

/// The protocol version spoken by this build.
pub const VERSION: u8 = 3;
/// Largest frame accepted or sent, in bytes.
pub const MAX_FRAME: usize = 16 << 20;

const PEER_MAGIC: [u8; 2] = *b"ES";
const CONTROL_MAGIC: [u8; 2] = *b"EC";

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

/// Whether a peer frame from `from` carrying `body` stays within [`MAX_FRAME`], so the
/// receiver will take it. Large item lists are sized exactly (an encoding pass that
/// writes nothing); everything else is bounded cheaply first.
pub fn fits(from: &str, body: &Body) -> bool {
    // Generous per-item overhead: length prefixes, tags, version, the `counter` flag.
    const ITEM_OVERHEAD: usize = 48;
    let items_bound = |keys: &mut dyn Iterator<Item = (&str, &estate_guest::Value, &str)>| -> usize {
        keys.map(|(k, v, o)| k.len() + crate::store::value_len(v) + o.len() + ITEM_OVERHEAD).sum()
    };
    let bound = match body {
        Body::GlobalReply { result: Ok(crate::global::Answer::Items(items)), .. } => {
            Some(items_bound(&mut items.iter().map(|i| (i.key.as_str(), &i.value, i.origin.as_str()))))
        }
        Body::GlobalReply { result: Ok(crate::global::Answer::Taken(items)), .. } => {
            Some(items_bound(&mut items.iter().map(|m| (m.item.key.as_str(), &m.item.value, m.item.origin.as_str()))))
        }
        _ => None,
    };
    if bound.is_some_and(|b| b + from.len() + 64 <= MAX_FRAME) {
        return true;
    }
    #[derive(Serialize)]
    struct EnvelopeRef<'a> {
        from: &'a str,
        clock: u64,
        body: &'a Body,
    }
    let mut size = bincode::enc::write::SizeWriter::default();
    let env = EnvelopeRef { from, clock: u64::MAX, body };
    bincode::serde::encode_into_writer(&env, &mut size, config()).is_ok() && 3 + size.bytes_written <= MAX_FRAME
}

/// Decodes a peer message.
pub fn decode(frame: &[u8]) -> Result<Envelope, DecodeError> {
    decode_with(PEER_MAGIC, frame)
}

/// Encodes a control request.
pub fn encode_request(req: &ControlCall) -> Vec<u8> {
    encode_with(CONTROL_MAGIC, req)
}

/// Decodes a control request.
pub fn decode_request(frame: &[u8]) -> Result<ControlCall, DecodeError> {
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
    use estate_guest::{Item, Value};
    use rand::{Rng, SeedableRng};

    use crate::global::{Answer, Consistency};

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
                    writer: "m".into(),
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
        let credential = Some(Credential { principal: "tenant:a".into(), secret: "s".into() });
        let call = ControlCall { credential, tenant: Some("a".into()), request: req };
        assert_eq!(decode_request(&encode_request(&call)).unwrap(), call);
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
