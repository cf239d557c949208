//! Integer values alone: the input of a reducer's [`crate::abi::INTS_PHASE`] call.
//!
//! A reducer that sums, counts or averages integer counters reads nothing of an item but
//! its value. Declared with `reducer!(…, ints = g)` ([`crate::abi::flags::INTS`]), it
//! gets, where every matching item is an integer, those integers and nothing else: 8
//! bytes each, `i64` little-endian, no count, no tags (`docs/abi.md`, "Reducers"). That
//! input is read with one load per value, where an item list costs a decoding per item.

use alloc::vec::Vec;

use crate::codec::DecodeError;

/// The integer values of store items, borrowed from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ints<'a>(&'a [u8]);

/// The bytes of one value.
const WIDTH: usize = 8;

impl<'a> Ints<'a> {
    /// The values encoded in `buf`; [`DecodeError::TrailingBytes`] when its length is
    /// not a multiple of 8.
    pub fn decode(buf: &'a [u8]) -> Result<Ints<'a>, DecodeError> {
        match buf.len() % WIDTH {
            0 => Ok(Ints(buf)),
            rest => Err(DecodeError::TrailingBytes(rest)),
        }
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.0.len() / WIDTH
    }

    /// Whether there is no value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values, in the order of the input.
    pub fn iter(&self) -> Values<'a> {
        self.into_iter()
    }
}

impl<'a> IntoIterator for Ints<'a> {
    type Item = i64;
    type IntoIter = Values<'a>;

    fn into_iter(self) -> Values<'a> {
        Values(self.0.chunks_exact(WIDTH))
    }
}

/// The values of [`Ints`], in order.
#[derive(Clone, Debug)]
pub struct Values<'a>(core::slice::ChunksExact<'a, u8>);

impl Iterator for Values<'_> {
    type Item = i64;

    fn next(&mut self) -> Option<i64> {
        let v = self.0.next()?;
        Some(i64::from_le_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Values<'_> {}

/// Appends one value to an `INTS_PHASE` input.
pub fn push(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_a_cut_value_is_refused() {
        let values = [0, -1, i64::MIN, i64::MAX, 42];
        let mut buf = Vec::new();
        for v in values {
            push(&mut buf, v);
        }
        let ints = Ints::decode(&buf).unwrap();
        assert_eq!((ints.len(), ints.is_empty()), (5, false));
        assert_eq!(ints.iter().collect::<Vec<_>>(), values);
        assert_eq!(ints.into_iter().collect::<Vec<_>>(), values);
        assert!(Ints::decode(&[]).unwrap().is_empty());
        for cut in 1..WIDTH {
            assert_eq!(Ints::decode(&buf[..buf.len() - cut]), Err(DecodeError::TrailingBytes(WIDTH - cut)));
        }
    }
}
