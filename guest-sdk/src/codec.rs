//! The byte format in which host and guest exchange values and items (see
//! `docs/abi.md`, "Encoding"). Little-endian, length-prefixed, no padding.
//!
//! The host runtime uses this same module, so both sides agree by construction. Every
//! decoder is bounded by its input: a short or malformed buffer is an [`DecodeError`],
//! never a panic and never an allocation larger than the input.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::abi::value_tag::{BYTES as TAG_BYTES, FLOAT as TAG_FLOAT, INT as TAG_INT, TEXT as TAG_TEXT};
use crate::view::ValueRef;

/// A typed state value.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Value {
    /// A signed 64-bit integer; sums of integers stay exact.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// UTF-8 text.
    Text(String),
    /// Opaque bytes.
    Bytes(Vec<u8>),
}

impl Value {
    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
        }
    }

    /// Appends the encoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        ValueRef::from(self).encode(out)
    }

    /// Decodes one value from the front of `r`.
    pub fn decode(r: &mut Reader<'_>) -> Result<Value, DecodeError> {
        match r.u8()? {
            TAG_INT => Ok(Value::Int(i64::from_le_bytes(r.array()?))),
            TAG_FLOAT => Ok(Value::Float(f64::from_le_bytes(r.array()?))),
            TAG_TEXT => Ok(Value::Text(r.text()?)),
            TAG_BYTES => Ok(Value::Bytes(r.bytes()?.to_vec())),
            tag => Err(DecodeError::BadTag(tag)),
        }
    }

    /// Decodes a buffer that holds exactly one value.
    pub fn decode_exact(buf: &[u8]) -> Result<Value, DecodeError> {
        let mut r = Reader::new(buf);
        let v = Value::decode(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

/// One state item as a reducer sees it: where it is, and which write it is.
///
/// An item keeps the version and writer of its last write wherever it moves, so
/// `(version, writer)` names the write and orders any two items of a key cluster-wide,
/// while `origin` says which node holds it now.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Item {
    /// The item's key.
    pub key: String,
    /// The item's value.
    pub value: Value,
    /// Id of the node that holds the item (the node a read got it from).
    pub origin: String,
    /// Id of the node that made the item's last write. The same as `origin` unless the
    /// item moved to another node since (a take, a hand-off).
    pub writer: String,
    /// The item's version: the hybrid logical clock timestamp of its last write (larger
    /// is newer; equal versions are ordered by `writer`).
    pub version: u64,
}

impl Item {
    /// Appends the encoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.key.as_bytes());
        self.value.encode(out);
        put_bytes(out, self.origin.as_bytes());
        put_bytes(out, self.writer.as_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
    }

    /// Decodes one item from the front of `r`.
    pub fn decode(r: &mut Reader<'_>) -> Result<Item, DecodeError> {
        if let Some(item) = crate::view::ItemRef::values_only_int(r) {
            return Ok(item.to_item());
        }
        let key = r.text()?;
        let value = Value::decode(r)?;
        let origin = r.text()?;
        let writer = r.text()?;
        let version = u64::from_le_bytes(r.array()?);
        Ok(Item { key, value, origin, writer, version })
    }
}

/// Encodes a list of items: a `u32` count followed by the items.
pub fn encode_items(items: &[Item], out: &mut Vec<u8>) {
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for item in items {
        item.encode(out);
    }
}

/// Builds an encoded item list from borrowed parts, without building [`Item`]s first
/// (the host encodes store entries straight into a guest's input this way).
#[derive(Debug)]
pub struct ItemsWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for ItemsWriter {
    fn default() -> Self {
        ItemsWriter { buf: alloc::vec![0; 4], count: 0 }
    }
}

impl ItemsWriter {
    /// Appends one item (the fields of an [`Item`], in its order).
    pub fn push(&mut self, key: &str, value: ValueRef<'_>, origin: &str, writer: &str, version: u64) {
        put_bytes(&mut self.buf, key.as_bytes());
        value.encode(&mut self.buf);
        put_bytes(&mut self.buf, origin.as_bytes());
        put_bytes(&mut self.buf, writer.as_bytes());
        self.buf.extend_from_slice(&version.to_le_bytes());
        self.count += 1;
    }

    /// Appends an item with an empty key, origin and writer: what a `VALUES_ONLY`
    /// reducer gets ([`crate::abi::flags::VALUES_ONLY`]). The same bytes as
    /// [`ItemsWriter::push`] of `("", value, "", "", version)`; an integer, the usual
    /// value, in one write.
    pub fn push_value(&mut self, value: ValueRef<'_>, version: u64) {
        let ValueRef::Int(v) = value else {
            return self.push("", value, "", "", version);
        };
        let mut item = [0; VALUES_ONLY_INT_LEN];
        item[4] = TAG_INT;
        item[5..13].copy_from_slice(&v.to_le_bytes());
        item[21..].copy_from_slice(&version.to_le_bytes());
        self.buf.extend_from_slice(&item);
        self.count += 1;
    }

    /// The encoded list (the same bytes [`encode_items`] makes).
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// Decodes a buffer that holds exactly one list of items.
pub fn decode_items(buf: &[u8]) -> Result<Vec<Item>, DecodeError> {
    decode_list(buf, Item::decode)
}

/// Decodes a `u32` count and that many items with `one`, and nothing after them.
pub(crate) fn decode_list<'a, T>(
    buf: &'a [u8],
    one: impl Fn(&mut Reader<'a>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let mut r = Reader::new(buf);
    let count = r.u32()? as usize;
    // Every item takes at least MIN_ITEM_LEN bytes, so a count larger than the buffer
    // could hold is malformed; never reserve more than the input justifies.
    if count > r.remaining() / MIN_ITEM_LEN {
        return Err(DecodeError::Truncated);
    }
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        items.push(one(&mut r)?);
    }
    r.finish()?;
    Ok(items)
}

/// An encoded integer item with an empty key, origin and writer: key length, tag,
/// value, origin length, writer length, version.
pub(crate) const VALUES_ONLY_INT_LEN: usize = 4 + (1 + 8) + 4 + 4 + 8;

/// The smallest encoded item: empty key, an empty text or bytes value (tag and length),
/// empty origin and writer, version.
const MIN_ITEM_LEN: usize = 4 + (1 + 4) + 4 + 4 + 8;

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Why a buffer could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ended inside a field.
    Truncated,
    /// An unknown value type tag.
    BadTag(u8),
    /// Text that is not UTF-8.
    BadUtf8,
    /// Bytes were left over after the last field.
    TrailingBytes(usize),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("buffer ends inside a field"),
            DecodeError::BadTag(t) => write!(f, "unknown value tag {t}"),
            DecodeError::BadUtf8 => f.write_str("text is not UTF-8"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} bytes left over"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// A bounds-checked cursor over a byte buffer.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    /// The bytes not yet read, without reading them.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Skips `n` bytes, which [`Reader::rest`] showed are there.
    pub(crate) fn skip(&mut self, n: usize) {
        self.buf = &self.buf[n..];
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a `u32`-length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// Reads a `u32`-length-prefixed UTF-8 string, borrowed from the buffer.
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        utf8(self.bytes()?)
    }

    /// Reads a `u32`-length-prefixed UTF-8 string.
    pub fn text(&mut self) -> Result<String, DecodeError> {
        self.str().map(String::from)
    }
}

/// Whether every byte is ASCII, 8 bytes at a time (Wasm has 64-bit loads; core's
/// `is_ascii` goes a `usize`, 4 bytes on wasm32, at a time). The bytes after the last
/// whole word are checked as the last 8 bytes, overlapping it.
#[inline]
fn ascii(bytes: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let word = |w: &[u8]| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
    let Some(last) = bytes.len().checked_sub(8) else {
        return bytes.iter().fold(0, |high, &b| high | b) & 0x80 == 0;
    };
    let high = bytes.chunks_exact(8).fold(word(&bytes[last..]), |high, w| high | word(w));
    high & HIGH == 0
}

/// `bytes` as text, if they are UTF-8. Keys, origins and flow keys are nearly always
/// ASCII, which is checked 8 bytes at a time; anything else takes the full check. (The
/// host checks the keys guests hand it with this too.)
#[inline]
pub fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    if ascii(bytes) {
        // SAFETY: ASCII is UTF-8.
        return Ok(unsafe { core::str::from_utf8_unchecked(bytes) });
    }
    core::str::from_utf8(bytes).map_err(|_| DecodeError::BadUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn sample() -> Vec<Item> {
        vec![
            Item { key: "a".into(), value: Value::Int(-5), origin: "n1".into(), writer: "n1".into(), version: 7 },
            Item { key: "b".into(), value: Value::Float(1.5), origin: "n2".into(), writer: "n4".into(), version: 8 },
            Item {
                key: "flow:1".into(),
                value: Value::Text("hé".into()),
                origin: "n3".into(),
                writer: "né".into(),
                version: 9,
            },
            Item {
                key: "".into(),
                value: Value::Bytes(vec![0, 255]),
                origin: "".into(),
                writer: "".into(),
                version: 0,
            },
        ]
    }

    #[test]
    fn text_is_checked_alike_ascii_or_not() {
        let samples: [&[u8]; 9] = [
            b"",
            b"a",
            b"flow:6:10.0.0.1:5000-10.0.0.2:443:packets",
            "clé".as_bytes(),
            b"abcdefg\x80",
            b"\x80bcdefgh",
            b"abcdefgh\xff",
            &[0x7f; 17],
            &[0xc0, 0x80],
        ];
        for bytes in samples {
            assert_eq!(ascii(bytes), bytes.is_ascii(), "{bytes:?}");
            assert_eq!(utf8(bytes).ok(), core::str::from_utf8(bytes).ok(), "{bytes:?}");
        }
        // A non-ASCII byte at every position of strings of 1 to 20 bytes (shorter than a
        // word, whole words, and words with a tail read overlapping the last word).
        for len in 1..=20 {
            assert!(ascii(&[b'k'; 20][..len]), "{len}");
            for at in 0..len {
                let mut bytes = [b'k'; 20];
                bytes[at] = 0x80;
                assert!(!ascii(&bytes[..len]) && utf8(&bytes[..len]).is_err(), "{len} {at}");
            }
        }
    }

    #[test]
    fn items_round_trip() {
        let mut buf = Vec::new();
        encode_items(&sample(), &mut buf);
        assert_eq!(decode_items(&buf).unwrap(), sample());
    }

    #[test]
    fn writer_matches_encode_items() {
        let mut w = ItemsWriter::default();
        for i in sample() {
            w.push(&i.key, (&i.value).into(), &i.origin, &i.writer, i.version);
        }
        let mut buf = Vec::new();
        encode_items(&sample(), &mut buf);
        assert_eq!(w.finish(), buf);
        // Values only: the items with their key, origin and writer emptied.
        let (mut w, mut emptied) = (ItemsWriter::default(), Vec::new());
        for i in sample() {
            w.push_value((&i.value).into(), i.version);
            emptied.push(Item { key: String::new(), origin: String::new(), writer: String::new(), ..i });
        }
        buf.clear();
        encode_items(&emptied, &mut buf);
        assert_eq!(w.finish(), buf);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut buf = Vec::new();
        encode_items(&sample(), &mut buf);
        for cut in 0..buf.len() {
            assert!(decode_items(&buf[..cut]).is_err(), "cut at {cut} decoded");
        }
        buf.push(0);
        assert_eq!(decode_items(&buf), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn smallest_items_round_trip() {
        let items = vec![Item::of(Value::Text(String::new())), Item::of(Value::Bytes(Vec::new()))];
        let mut buf = Vec::new();
        encode_items(&items, &mut buf);
        assert_eq!(buf.len(), 4 + 2 * MIN_ITEM_LEN);
        assert_eq!(decode_items(&buf).unwrap(), items);
    }

    #[test]
    fn huge_count_is_rejected_without_allocating() {
        let buf = u32::MAX.to_le_bytes();
        assert_eq!(decode_items(&buf), Err(DecodeError::Truncated));
    }

    #[test]
    fn bad_tag_and_utf8() {
        assert_eq!(Value::decode_exact(&[9]), Err(DecodeError::BadTag(9)));
        assert_eq!(Value::decode_exact(&[2, 1, 0, 0, 0, 0xff]), Err(DecodeError::BadUtf8));
    }
}
