//! Multi-pattern matching by the host: an NF registers its byte patterns once (at init)
//! and the host compiles them natively; each scan is one host call, bounded by the
//! haystack's length and charged to the guest's fuel (`docs/abi.md`, "Matcher"). A
//! matcher built with `Matcher::for_payloads` also has the host scan every packet's
//! payload before the NF gets it, so counting in a payload needs no host call.
//!
//! Matches are leftmost-first and non-overlapping: of patterns matching at the same
//! place the first given wins, and the scan resumes after each match.

use alloc::string::String;
use alloc::vec::Vec;

use crate::abi::matcher as limits;

/// The `matcher_new` encoding of `patterns`: a `u32` count, then each pattern as a
/// `u32` length and its bytes. An error for an empty pattern or beyond the limits of
/// [`crate::abi::matcher`].
pub fn encode_patterns<P: AsRef<[u8]>>(patterns: &[P]) -> Result<Vec<u8>, String> {
    let total: usize = patterns.iter().map(|p| p.as_ref().len()).sum();
    if patterns.is_empty() || patterns.len() > limits::MAX_PATTERNS as usize {
        return Err(alloc::format!("a matcher takes 1 to {} patterns, not {}", limits::MAX_PATTERNS, patterns.len()));
    }
    if total > limits::MAX_PATTERN_BYTES as usize {
        return Err(alloc::format!("patterns of {total} bytes exceed the limit of {}", limits::MAX_PATTERN_BYTES));
    }
    if patterns.iter().any(|p| p.as_ref().is_empty()) {
        return Err("a matcher's patterns must not be empty".into());
    }
    let mut out = Vec::with_capacity(4 + 4 * patterns.len() + total);
    out.extend_from_slice(&(patterns.len() as u32).to_le_bytes());
    for p in patterns {
        out.extend_from_slice(&(p.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(p.as_ref());
    }
    Ok(out)
}

/// Decodes what [`encode_patterns`] wrote, checking the same limits (for hosts).
pub fn decode_patterns(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut reader = crate::codec::Reader::new(bytes);
    let count = reader.u32().map_err(|e| alloc::format!("patterns: {e}"))?;
    if count == 0 || count > limits::MAX_PATTERNS {
        return Err(alloc::format!("a matcher takes 1 to {} patterns, not {count}", limits::MAX_PATTERNS));
    }
    let mut patterns = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let pattern = reader.bytes().map_err(|e| alloc::format!("patterns: {e}"))?;
        if pattern.is_empty() {
            return Err("a matcher's patterns must not be empty".into());
        }
        patterns.push(pattern);
    }
    reader.finish().map_err(|e| alloc::format!("patterns: {e}"))?;
    let total: usize = patterns.iter().map(|p| p.len()).sum();
    if total > limits::MAX_PATTERN_BYTES as usize {
        return Err(alloc::format!("patterns of {total} bytes exceed the limit of {}", limits::MAX_PATTERN_BYTES));
    }
    Ok(patterns)
}

/// A matcher compiled and run by the host (wasm32 guests only). A clone names the same
/// matcher.
#[cfg(target_arch = "wasm32")]
#[derive(Clone, Debug)]
pub struct Matcher {
    handle: i32,
    /// Whether the host scans every payload with it ([`Matcher::for_payloads`]).
    payloads: bool,
}

/// The payload matcher's count for the packet being handled: the payload's address and
/// length, and the count ([`crate::abi::batch::NOT_SCANNED`]: none).
#[cfg(target_arch = "wasm32")]
static SCANNED: Scanned = Scanned(core::cell::Cell::new((0, 0, crate::abi::batch::NOT_SCANNED)));

#[cfg(target_arch = "wasm32")]
struct Scanned(core::cell::Cell<(usize, usize, u32)>);

// SAFETY: wasm32 guests run on one thread (no `atomics` target feature is enabled), so
// the cell is never touched concurrently.
#[cfg(target_arch = "wasm32")]
unsafe impl Sync for Scanned {}

/// Records the host's count of the payload matcher's matches in `payload`, the payload
/// of the packet about to be handled.
#[cfg(target_arch = "wasm32")]
#[inline]
pub(crate) fn scanned(payload: &[u8], count: u32) {
    SCANNED.0.set((payload.as_ptr() as usize, payload.len(), count));
}

#[cfg(target_arch = "wasm32")]
impl Matcher {
    /// Has the host compile `patterns` (`prefilter`: skip ahead to the patterns' rare
    /// bytes first; the matches are the same either way).
    pub fn new<P: AsRef<[u8]>>(patterns: &[P], prefilter: bool) -> Result<Matcher, String> {
        let flags = if prefilter { 0 } else { limits::NO_PREFILTER };
        Matcher::build(patterns, flags)
    }

    /// As [`Matcher::new`], and the host also scans every packet's payload with it
    /// before the NF handles the packet (`abi::matcher::SCAN_PAYLOADS`): `count` of a
    /// packet's whole payload then answers from that scan, without a host call. The
    /// host then scans every payload, also those the NF does not count in; one such
    /// matcher per NF instance.
    pub fn for_payloads<P: AsRef<[u8]>>(patterns: &[P], prefilter: bool) -> Result<Matcher, String> {
        let flags = if prefilter { 0 } else { limits::NO_PREFILTER };
        Matcher::build(patterns, flags | limits::SCAN_PAYLOADS)
    }

    fn build<P: AsRef<[u8]>>(patterns: &[P], flags: i32) -> Result<Matcher, String> {
        let encoded = encode_patterns(patterns)?;
        match crate::hostcalls::matcher_new(&encoded, flags) {
            limits::ERROR => Err(String::from_utf8_lossy(&crate::hostcalls::staged()).into_owned()),
            handle => Ok(Matcher { handle, payloads: flags & limits::SCAN_PAYLOADS != 0 }),
        }
    }

    /// The number of non-overlapping, leftmost-first matches in `haystack`.
    #[inline]
    pub fn count(&self, haystack: &[u8]) -> usize {
        if self.payloads {
            let (at, len, count) = SCANNED.0.get();
            if count != crate::abi::batch::NOT_SCANNED && (at, len) == (haystack.as_ptr() as usize, haystack.len()) {
                return count as usize;
            }
        }
        crate::hostcalls::matcher_count(self.handle, haystack).max(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_round_trip_and_limits_hold_both_ways() {
        let encoded = encode_patterns(&[&b"attack"[..], b"evil"]).unwrap();
        assert_eq!(decode_patterns(&encoded).unwrap(), [&b"attack"[..], b"evil"]);
        assert!(encode_patterns::<&[u8]>(&[]).is_err());
        assert!(encode_patterns(&[&b""[..]]).is_err());
        let big = alloc::vec![b'x'; limits::MAX_PATTERN_BYTES as usize + 1];
        assert!(encode_patterns(&[&big]).unwrap_err().contains("exceed"));
        // A host refuses what a guest could forge past the SDK.
        let mut forged = 1u32.to_le_bytes().to_vec();
        forged.extend_from_slice(&(big.len() as u32).to_le_bytes());
        forged.extend_from_slice(&big);
        assert!(decode_patterns(&forged).unwrap_err().contains("exceed"));
        assert!(decode_patterns(&encoded[..encoded.len() - 1]).is_err());
        let mut trailing = encoded.clone();
        trailing.push(0);
        assert!(decode_patterns(&trailing).is_err());
        assert!(decode_patterns(&0u32.to_le_bytes()).is_err());
    }
}
