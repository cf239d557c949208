//! The secure frames' byte layout, and the sliding replay window of a session.
//!
//! Every frame starts with `EN`, the secure layer's version and a kind byte; integers
//! are little-endian u64:
//!
//! | kind | after the header |
//! | --- | --- |
//! | 1 `Init` | token, Noise XX message 1 (32 bytes) |
//! | 2 `Resp` | token, responder's session index, Noise message 2 (96 bytes) |
//! | 3 `Fin` | responder's session index, Noise message 3 (64 bytes) |
//! | 4 `Data` | receiver's session index, first nonce, sealed chunks |
//! | 5 `Unknown` | a session index the sender does not have |
//!
//! A `Data` frame's plaintext (an `ES` peer frame) is cut into chunks of at most
//! [`CHUNK_DATA`] bytes, because a Noise message holds at most 65,535 bytes. Chunk `i`
//! of `k` is sealed with nonce `first + i` and starts with `i` and `k` (u32 each), so a
//! chunk cannot be moved, dropped or spliced into another frame without being noticed.
//! Every chunk but the last is [`CHUNK_SEALED`] bytes long, so the receiver cuts the
//! same boundaries.

use crate::wire::MAX_FRAME;

/// The secure frames' magic (plaintext peer frames use `ES`).
pub const MAGIC: [u8; 2] = *b"EN";
/// The secure layer's version.
pub const VERSION: u8 = 1;
const HEADER: usize = 3 + 1;

/// Noise XX message sizes with empty payloads (25519, 16-byte tags).
pub(super) const MSG1_LEN: usize = 32;
pub(super) const MSG2_LEN: usize = 32 + 32 + 16 + 16;
pub(super) const MSG3_LEN: usize = 32 + 16 + 16;

const TAG: usize = 16;
const CHUNK_HEAD: usize = 8;
/// Bytes of a sealed chunk: a Noise message of the largest size.
pub(super) const CHUNK_SEALED: usize = 65_535;
/// Plaintext bytes a chunk carries.
pub(super) const CHUNK_DATA: usize = CHUNK_SEALED - TAG - CHUNK_HEAD;
/// Largest sealed payload of a `Data` frame: a [`MAX_FRAME`] plaintext and its chunks'
/// overhead.
const MAX_SEALED: usize = MAX_FRAME + (MAX_FRAME / CHUNK_DATA + 1) * (TAG + CHUNK_HEAD);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Init = 1,
    Resp = 2,
    Fin = 3,
    Data = 4,
    Unknown = 5,
}

/// A parsed secure frame, borrowing from the bytes received.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame<'a> {
    Init { token: u64, noise: &'a [u8] },
    Resp { token: u64, index: u64, noise: &'a [u8] },
    Fin { index: u64, noise: &'a [u8] },
    Data { index: u64, nonce: u64, sealed: &'a [u8] },
    Unknown { index: u64 },
}

/// Why bytes are not a secure frame.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum FrameError {
    #[error("a plaintext peer frame")]
    Plaintext,
    #[error("not an estate frame")]
    BadMagic,
    #[error("secure layer version {0}, this node speaks {VERSION}")]
    Version(u8),
    #[error("frame of {0} bytes is larger than the limit")]
    Oversized(usize),
    #[error("malformed secure frame: {0}")]
    Malformed(&'static str),
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Parses a frame: bounded, panic-free, exact sizes for handshake messages.
pub(super) fn parse(frame: &[u8]) -> Result<Frame<'_>, FrameError> {
    if frame.len() > HEADER + 16 + MAX_SEALED {
        return Err(FrameError::Oversized(frame.len()));
    }
    if frame.starts_with(b"ES") {
        return Err(FrameError::Plaintext);
    }
    let Some((head, body)) = frame.split_first_chunk::<HEADER>() else {
        return Err(FrameError::BadMagic);
    };
    if head[..2] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if head[2] != VERSION {
        return Err(FrameError::Version(head[2]));
    }
    let exact =
        |len: usize, what: &'static str| if body.len() == len { Ok(()) } else { Err(FrameError::Malformed(what)) };
    let first = u64_at(body, 0).ok_or(FrameError::Malformed("truncated"))?;
    Ok(match head[3] {
        k if k == Kind::Init as u8 => {
            exact(8 + MSG1_LEN, "Init size")?;
            Frame::Init { token: first, noise: &body[8..] }
        }
        k if k == Kind::Resp as u8 => {
            exact(16 + MSG2_LEN, "Resp size")?;
            let index = u64_at(body, 8).ok_or(FrameError::Malformed("truncated"))?;
            Frame::Resp { token: first, index, noise: &body[16..] }
        }
        k if k == Kind::Fin as u8 => {
            exact(8 + MSG3_LEN, "Fin size")?;
            Frame::Fin { index: first, noise: &body[8..] }
        }
        k if k == Kind::Data as u8 => {
            let nonce = u64_at(body, 8).ok_or(FrameError::Malformed("truncated"))?;
            let sealed = &body[16..];
            let last = sealed.len() % CHUNK_SEALED;
            if sealed.is_empty() || (last != 0 && last < TAG + CHUNK_HEAD) {
                return Err(FrameError::Malformed("Data size"));
            }
            Frame::Data { index: first, nonce, sealed }
        }
        k if k == Kind::Unknown as u8 => {
            exact(8, "Unknown size")?;
            Frame::Unknown { index: first }
        }
        _ => return Err(FrameError::Malformed("unknown kind")),
    })
}

fn header(kind: Kind, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + capacity);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    out
}

pub(super) fn init(token: u64, noise: &[u8]) -> Vec<u8> {
    let mut out = header(Kind::Init, 8 + noise.len());
    out.extend_from_slice(&token.to_le_bytes());
    out.extend_from_slice(noise);
    out
}

pub(super) fn resp(token: u64, index: u64, noise: &[u8]) -> Vec<u8> {
    let mut out = header(Kind::Resp, 16 + noise.len());
    out.extend_from_slice(&token.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(noise);
    out
}

pub(super) fn fin(index: u64, noise: &[u8]) -> Vec<u8> {
    let mut out = header(Kind::Fin, 8 + noise.len());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(noise);
    out
}

pub(super) fn unknown(index: u64) -> Vec<u8> {
    let mut out = header(Kind::Unknown, 8);
    out.extend_from_slice(&index.to_le_bytes());
    out
}

/// How many chunks a plaintext of `len` bytes takes (at least one).
pub(super) fn chunks(len: usize) -> usize {
    len.div_ceil(CHUNK_DATA).max(1)
}

/// A `Data` frame's header; the sealed chunks are appended to it.
pub(super) fn data_header(index: u64, nonce: u64, plaintext_len: usize) -> Vec<u8> {
    let mut out = header(Kind::Data, 16 + plaintext_len + chunks(plaintext_len) * (TAG + CHUNK_HEAD));
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&nonce.to_le_bytes());
    out
}

/// The plaintext of chunk `i` of `k` carrying `data`.
pub(super) fn chunk_plain(i: usize, k: usize, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHUNK_HEAD + data.len());
    out.extend_from_slice(&(i as u32).to_le_bytes());
    out.extend_from_slice(&(k as u32).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// The data of an opened chunk expected at position `i` of `k`; `None` if it says it
/// belongs elsewhere.
pub(super) fn chunk_data(opened: &[u8], i: usize, k: usize) -> Option<&[u8]> {
    let (head, data) = opened.split_first_chunk::<CHUNK_HEAD>()?;
    let at = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let of = u32::from_le_bytes(head[4..].try_into().ok()?) as usize;
    (at == i && of == k).then_some(data)
}

/// Nonces a session's receiver remembers behind the newest one (as WireGuard).
pub const REPLAY_WINDOW: u64 = 2048;
const WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// A sliding window over the nonces a session has accepted: a nonce seen before, or
/// older than [`REPLAY_WINDOW`] behind the newest, is refused.
#[derive(Clone, Debug, Default)]
pub(super) struct ReplayWindow {
    /// One past the newest nonce accepted.
    next: u64,
    /// Bit `n % REPLAY_WINDOW`: nonce `n` accepted, for `n` in the window.
    bits: [u64; WORDS],
}

impl ReplayWindow {
    fn bit(n: u64) -> (usize, u64) {
        let slot = n % REPLAY_WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }

    /// Whether `nonce` may still be accepted.
    pub(super) fn fresh(&self, nonce: u64) -> bool {
        if nonce >= self.next {
            return true;
        }
        if self.next - nonce > REPLAY_WINDOW {
            return false;
        }
        let (word, mask) = Self::bit(nonce);
        self.bits[word] & mask == 0
    }

    /// Records `nonce` as accepted (after its frame was authenticated).
    pub(super) fn accept(&mut self, nonce: u64) {
        if nonce >= self.next {
            if nonce - self.next >= REPLAY_WINDOW {
                self.bits = [0; WORDS];
            } else {
                for n in self.next..nonce {
                    let (word, mask) = Self::bit(n);
                    self.bits[word] &= !mask;
                }
            }
            self.next = nonce.saturating_add(1);
        }
        let (word, mask) = Self::bit(nonce);
        self.bits[word] |= mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_refuses_repeats_and_stale_nonces() {
        let mut w = ReplayWindow::default();
        for n in [0, 1, 5, 3] {
            assert!(w.fresh(n), "{n}");
            w.accept(n);
            assert!(!w.fresh(n), "{n} again");
        }
        assert!(w.fresh(2) && w.fresh(4), "gaps stay open");
        w.accept(5000);
        assert!(!w.fresh(2), "too old");
        assert!(!w.fresh(5000 - REPLAY_WINDOW), "just out of the window");
        assert!(w.fresh(5001 - REPLAY_WINDOW), "the oldest one still in it");
        w.accept(5001 - REPLAY_WINDOW);
        assert!(!w.fresh(5001 - REPLAY_WINDOW));
        // Sliding on clears the slots it reuses.
        w.accept(5000 + REPLAY_WINDOW - 1);
        assert!(w.fresh(5000 + 10));
    }

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        assert_eq!(parse(&init(7, &[1; MSG1_LEN])), Ok(Frame::Init { token: 7, noise: &[1; MSG1_LEN] }));
        assert_eq!(parse(&resp(7, 9, &[2; MSG2_LEN])), Ok(Frame::Resp { token: 7, index: 9, noise: &[2; MSG2_LEN] }));
        assert_eq!(parse(&fin(9, &[3; MSG3_LEN])), Ok(Frame::Fin { index: 9, noise: &[3; MSG3_LEN] }));
        assert_eq!(parse(&unknown(9)), Ok(Frame::Unknown { index: 9 }));
        assert_eq!(parse(b"ES\x02abc"), Err(FrameError::Plaintext));
        assert_eq!(parse(b"XY"), Err(FrameError::BadMagic));
        assert_eq!(parse(b"EN\x07\x01"), Err(FrameError::Version(7)));
        let frame = init(7, &[1; MSG1_LEN]);
        for cut in 0..frame.len() {
            assert!(parse(&frame[..cut]).is_err(), "cut at {cut}");
        }
        let mut data = data_header(1, 2, 0);
        data.extend_from_slice(&[0; 10]);
        assert_eq!(parse(&data), Err(FrameError::Malformed("Data size")));
        assert!(parse(&vec![0; HEADER + 17 + MAX_SEALED]).is_err());
    }

    #[test]
    fn chunks_know_their_place() {
        let plain = chunk_plain(1, 3, b"abc");
        assert_eq!(chunk_data(&plain, 1, 3), Some(&b"abc"[..]));
        assert_eq!(chunk_data(&plain, 0, 3), None);
        assert_eq!(chunk_data(&plain, 1, 2), None);
        assert_eq!(chunk_data(&plain[..4], 1, 3), None);
        assert_eq!(chunks(0), 1);
        assert_eq!(chunks(CHUNK_DATA), 1);
        assert_eq!(chunks(CHUNK_DATA + 1), 2);
    }
}
