//! Items borrowed from the host's input: a reducer that only reads its items (most do)
//! sees keys, origins and text values as `&str` into the input buffer, with no
//! allocation per item (`reducer!(f, borrowed)`; `docs/abi.md`, "Encoding").

use alloc::vec::Vec;

use crate::abi::value_tag::{BYTES as TAG_BYTES, FLOAT as TAG_FLOAT, INT as TAG_INT, TEXT as TAG_TEXT};
use crate::codec::{DecodeError, Item, Reader, Value, put_bytes};

/// A value borrowed from the input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueRef<'a> {
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// UTF-8 text.
    Text(&'a str),
    /// Opaque bytes.
    Bytes(&'a [u8]),
}

impl ValueRef<'_> {
    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            ValueRef::Int(_) => "int",
            ValueRef::Float(_) => "float",
            ValueRef::Text(_) => "text",
            ValueRef::Bytes(_) => "bytes",
        }
    }

    /// Appends the encoding of the value to `out`: the same bytes as
    /// [`Value::encode`] of [`to_value`](ValueRef::to_value).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            ValueRef::Int(v) => {
                out.push(TAG_INT);
                out.extend_from_slice(&v.to_le_bytes());
            }
            ValueRef::Float(v) => {
                out.push(TAG_FLOAT);
                out.extend_from_slice(&v.to_le_bytes());
            }
            ValueRef::Text(s) => {
                out.push(TAG_TEXT);
                put_bytes(out, s.as_bytes());
            }
            ValueRef::Bytes(b) => {
                out.push(TAG_BYTES);
                put_bytes(out, b);
            }
        }
    }

    /// The owned value.
    pub fn to_value(&self) -> Value {
        match *self {
            ValueRef::Int(v) => Value::Int(v),
            ValueRef::Float(v) => Value::Float(v),
            ValueRef::Text(s) => Value::Text(s.into()),
            ValueRef::Bytes(b) => Value::Bytes(b.to_vec()),
        }
    }
}

impl<'a> From<&'a Value> for ValueRef<'a> {
    fn from(value: &'a Value) -> ValueRef<'a> {
        match value {
            Value::Int(v) => ValueRef::Int(*v),
            Value::Float(v) => ValueRef::Float(*v),
            Value::Text(s) => ValueRef::Text(s),
            Value::Bytes(b) => ValueRef::Bytes(b),
        }
    }
}

/// An [`Item`] borrowed from the input: the same fields, nothing copied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ItemRef<'a> {
    /// The item's key.
    pub key: &'a str,
    /// The item's value.
    pub value: ValueRef<'a>,
    /// Id of the node that holds the item.
    pub origin: &'a str,
    /// Id of the node that made the item's last write.
    pub writer: &'a str,
    /// The item's version (larger is newer; equal versions ordered by `writer`).
    pub version: u64,
}

impl<'a> ItemRef<'a> {
    /// Decodes one item from the front of `r`, borrowing from its buffer.
    pub fn decode(r: &mut Reader<'a>) -> Result<ItemRef<'a>, DecodeError> {
        if let Some(item) = Self::values_only_int(r) {
            return Ok(item);
        }
        let key = r.str()?;
        let value = match r.u8()? {
            TAG_INT => ValueRef::Int(i64::from_le_bytes(r.array()?)),
            TAG_FLOAT => ValueRef::Float(f64::from_le_bytes(r.array()?)),
            TAG_TEXT => ValueRef::Text(r.str()?),
            TAG_BYTES => ValueRef::Bytes(r.bytes()?),
            tag => return Err(DecodeError::BadTag(tag)),
        };
        let (origin, writer) = (r.str()?, r.str()?);
        let version = u64::from_le_bytes(r.array()?);
        Ok(ItemRef { key, value, origin, writer, version })
    }

    /// The item a node sends a `VALUES_ONLY` reducer most (an integer with an empty key,
    /// origin and writer), read in one step (one length check, no UTF-8 check of empty
    /// strings: a Wasm guest's decoding of a pushed-down input is mostly this); `None`,
    /// with nothing read, for any other item.
    #[inline]
    pub(crate) fn values_only_int(r: &mut Reader<'a>) -> Option<ItemRef<'a>> {
        const LEN: usize = crate::codec::VALUES_ONLY_INT_LEN;
        let b: &[u8; LEN] = r.rest().first_chunk()?;
        let empty_at = |i: usize| b[i..i + 4] == [0; 4];
        if !(empty_at(0) && b[4] == TAG_INT && empty_at(13) && empty_at(17)) {
            return None;
        }
        let value = i64::from_le_bytes(*b[5..].first_chunk()?);
        let version = u64::from_le_bytes(*b[21..].first_chunk()?);
        r.skip(LEN);
        Some(ItemRef { key: "", value: ValueRef::Int(value), origin: "", writer: "", version })
    }

    /// The owned item.
    pub fn to_item(&self) -> Item {
        Item {
            key: self.key.into(),
            value: self.value.to_value(),
            origin: self.origin.into(),
            writer: self.writer.into(),
            version: self.version,
        }
    }
}

/// Decodes an encoded item list (as [`crate::codec::decode_items`] does), borrowing.
pub fn decode_item_refs(buf: &[u8]) -> Result<Vec<ItemRef<'_>>, DecodeError> {
    crate::codec::decode_list(buf, ItemRef::decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_items, encode_items};

    #[test]
    fn borrowed_items_are_the_owned_items() {
        let items = alloc::vec![
            Item { key: "a".into(), value: Value::Int(-5), origin: "n1".into(), writer: "n1".into(), version: 7 },
            Item { key: "b".into(), value: Value::Float(1.5), origin: "n2".into(), writer: "n4".into(), version: 8 },
            Item {
                key: "c".into(),
                value: Value::Text("hé".into()),
                origin: "n3".into(),
                writer: "n3".into(),
                version: 9
            },
            Item {
                key: "d".into(),
                value: Value::Bytes(alloc::vec![0, 255]),
                origin: "n".into(),
                writer: "m".into(),
                version: 1
            },
        ];
        let mut buf = Vec::new();
        encode_items(&items, &mut buf);
        let borrowed = decode_item_refs(&buf).unwrap();
        let owned: Vec<Item> = borrowed.iter().map(ItemRef::to_item).collect();
        assert_eq!(owned, items);
        assert_eq!(borrowed[2].value, ValueRef::Text("hé"));
        // Every truncation and a bad tag fail as the owned decoder does.
        for cut in 0..buf.len() {
            assert_eq!(decode_item_refs(&buf[..cut]).is_err(), decode_items(&buf[..cut]).is_err(), "cut at {cut}");
            assert!(decode_item_refs(&buf[..cut]).is_err());
        }
        let mut bad = buf.clone();
        bad[4 + 4 + 1] = 9; // the first item's value tag (after count, key length, key)
        assert_eq!(decode_item_refs(&bad), Err(DecodeError::BadTag(9)));
    }

    #[test]
    fn values_only_items_read_in_one_step_are_the_items() {
        // Values-only integers (the one-step path) among items that only look like them.
        let item = |key: &str, value: Value, origin: &str, writer: &str, version: u64| Item {
            key: key.into(),
            value,
            origin: origin.into(),
            writer: writer.into(),
            version,
        };
        let items = alloc::vec![
            item("", Value::Int(i64::MIN), "", "", u64::MAX),
            item("", Value::Float(2.5), "", "", 1),
            item("", Value::Int(7), "n1", "", 2),
            item("", Value::Int(-1), "", "w", 3),
            item("k", Value::Int(4), "", "", 4),
            item("", Value::Int(0), "", "", 0),
        ];
        let mut buf = Vec::new();
        encode_items(&items, &mut buf);
        let borrowed = decode_item_refs(&buf).unwrap();
        assert_eq!(borrowed.iter().map(ItemRef::to_item).collect::<Vec<_>>(), items);
        assert_eq!(decode_items(&buf).unwrap(), items);
        for cut in 0..buf.len() {
            assert!(decode_item_refs(&buf[..cut]).is_err(), "cut at {cut}");
            assert!(decode_items(&buf[..cut]).is_err(), "cut at {cut}");
        }
        // A values-only integer followed by a bad tag still fails on the tag.
        let mut bad = Vec::new();
        encode_items(&items[..1], &mut bad);
        bad[..4].copy_from_slice(&2u32.to_le_bytes());
        bad.extend_from_slice(&[0, 0, 0, 0, 9]);
        bad.extend_from_slice(&[0; 24]);
        assert_eq!(decode_item_refs(&bad), Err(DecodeError::BadTag(9)));
        assert_eq!(decode_items(&bad), Err(DecodeError::BadTag(9)));
    }
}
