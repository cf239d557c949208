//! One stored item in one heap allocation: a 24-byte header (version, value word,
//! writer, key length, kind), then the key's bytes, then a text or bytes value's bytes.
//!
//! A 40-byte key with an integer value is a 64-byte block, against a `String` key
//! (24 bytes beside it, its bytes in an allocation of their own), a 48-byte
//! [`super::Versioned`] and a second copy of the key for the ordered index before. The
//! hash table owns the blocks ([`Block`]); the ordered index refers to the same blocks
//! ([`KeyRef`]) instead of holding its own copy of each key.
//!
//! **Invariant** (kept by [`super::items::Items`], the only user): a [`KeyRef`] is
//! dereferenced only while the block it points to is owned by a live [`Block`]. The
//! ordered index drops a key's `KeyRef` before the table drops its block.

use std::alloc::{self, Layout};
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ptr::NonNull;

use estate_guest::Value;
use estate_guest::view::ValueRef;

use super::{MAX_KEY_LEN, Versioned, Writer};

/// What precedes the key. `repr(C)`: the key starts at `size_of::<Header>()`.
#[repr(C)]
struct Header {
    version: u64,
    /// An integer's or a float's bits; the length of a text or bytes value.
    word: u64,
    writer: Writer,
    key_len: u16,
    kind: u8,
}

const HEADER: usize = size_of::<Header>();
const INT: u8 = 0;
const FLOAT: u8 = 1;
const TEXT: u8 = 2;
const BYTES: u8 = 3;
const KIND: u8 = 0b11;
/// Set in `kind` when the last write was a counter add ([`Versioned::counter`]).
const COUNTER: u8 = 0b100;

// The key's length fits in `key_len`.
const _: () = assert!(MAX_KEY_LEN <= u16::MAX as usize);

/// An item's block, owned: freed on drop.
#[repr(transparent)]
pub(super) struct Block(NonNull<Header>);

// SAFETY: a Block owns its allocation exclusively, like a Box of plain bytes; shared
// access only reads.
unsafe impl Send for Block {}
unsafe impl Sync for Block {}

/// The bytes of a text or bytes value; none for a number.
fn payload(value: &Value) -> &[u8] {
    match value {
        Value::Int(_) | Value::Float(_) => &[],
        Value::Text(s) => s.as_bytes(),
        Value::Bytes(b) => b,
    }
}

/// The header's `kind` and `word` for `v`.
fn kind_word(v: &Versioned) -> (u8, u64) {
    let (kind, word) = match v.value {
        Value::Int(i) => (INT, i as u64),
        Value::Float(f) => (FLOAT, f.to_bits()),
        Value::Text(ref s) => (TEXT, s.len() as u64),
        Value::Bytes(ref b) => (BYTES, b.len() as u64),
    };
    (kind | if v.counter { COUNTER } else { 0 }, word)
}

fn layout(key_len: usize, payload_len: usize) -> Layout {
    Layout::from_size_align(HEADER + key_len + payload_len, align_of::<Header>()).expect("a block's size fits")
}

impl Block {
    /// A block holding `key` and `v`. The caller checked the sizes ([`MAX_KEY_LEN`]).
    pub(super) fn new(key: &str, v: &Versioned) -> Block {
        assert!(key.len() <= MAX_KEY_LEN, "the store checks key lengths first");
        let bytes = payload(&v.value);
        let layout = layout(key.len(), bytes.len());
        // SAFETY: the layout has a non-zero size (the header).
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw.cast::<Header>()) else { alloc::handle_alloc_error(layout) };
        // SAFETY: `raw` is a fresh allocation of HEADER + key + payload bytes, aligned for
        // the header; the copies fill the bytes after it exactly.
        unsafe {
            let (kind, word) = kind_word(v);
            ptr.write(Header { version: v.version, word, writer: v.writer, key_len: key.len() as u16, kind });
            std::ptr::copy_nonoverlapping(key.as_ptr(), raw.add(HEADER), key.len());
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), raw.add(HEADER + key.len()), bytes.len());
        }
        Block(ptr)
    }

    fn header(&self) -> &Header {
        // SAFETY: the block is live and its header initialised (`new`).
        unsafe { self.0.as_ref() }
    }

    fn header_mut(&mut self) -> &mut Header {
        // SAFETY: as `header`, and `&mut self` is the only access.
        unsafe { self.0.as_mut() }
    }

    fn payload_len(&self) -> usize {
        match self.header().kind & KIND {
            TEXT | BYTES => self.header().word as usize,
            _ => 0,
        }
    }

    /// The item's key.
    pub(super) fn key(&self) -> &str {
        // SAFETY: the block is live; its `key_len` bytes after the header were copied
        // from a `&str`.
        unsafe {
            let bytes =
                std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>().add(HEADER), self.header().key_len as usize);
            std::str::from_utf8_unchecked(bytes)
        }
    }

    /// The key's entry in the ordered index: valid while this block lives.
    pub(super) fn key_ref(&self) -> KeyRef {
        KeyRef(self.0)
    }

    /// The value, borrowed.
    pub(super) fn value(&self) -> ValueRef<'_> {
        let h = self.header();
        let bytes = || {
            // SAFETY: a text or bytes value's `word` bytes follow the key (`new`).
            unsafe {
                std::slice::from_raw_parts(
                    self.0.as_ptr().cast::<u8>().add(HEADER + h.key_len as usize),
                    h.word as usize,
                )
            }
        };
        match h.kind & KIND {
            INT => ValueRef::Int(h.word as i64),
            FLOAT => ValueRef::Float(f64::from_bits(h.word)),
            // SAFETY: TEXT bytes were copied from a `String` (`new`, `write_in_place`).
            TEXT => ValueRef::Text(unsafe { std::str::from_utf8_unchecked(bytes()) }),
            _ => ValueRef::Bytes(bytes()),
        }
    }

    /// The integer value, if the value is one.
    pub(super) fn int(&self) -> Option<i64> {
        (self.header().kind & KIND == INT).then_some(self.header().word as i64)
    }

    /// Version of the last write.
    pub(super) fn version(&self) -> u64 {
        self.header().version
    }

    /// Writer of the last write.
    pub(super) fn writer(&self) -> Writer {
        self.header().writer
    }

    /// Whether the last write was a counter add.
    pub(super) fn counter(&self) -> bool {
        self.header().kind & COUNTER != 0
    }

    /// The item as the store reports it.
    pub(super) fn versioned(&self) -> Versioned {
        Versioned {
            value: self.value().to_value(),
            version: self.version(),
            writer: self.writer(),
            counter: self.counter(),
        }
    }

    /// What the item counts for against the `bytes` quota: key and value bytes.
    pub(super) fn footprint(&self) -> u64 {
        let value = match self.header().kind & KIND {
            INT | FLOAT => 8,
            _ => self.payload_len(),
        };
        (self.header().key_len as usize + value) as u64
    }

    /// Whether `v` fits this block's allocation: a number, or bytes of the same length
    /// as the payload the block has.
    pub(super) fn fits(&self, v: &Versioned) -> bool {
        payload(&v.value).len() == self.payload_len()
    }

    /// Overwrites the value, version, writer and counter flag with `v`'s, which
    /// [`fits`](Block::fits).
    pub(super) fn write_in_place(&mut self, v: &Versioned) {
        let bytes = payload(&v.value);
        assert_eq!(bytes.len(), self.payload_len(), "only a value of the block's size is written in place");
        let (kind, word) = kind_word(v);
        let key_len = self.header().key_len as usize;
        // SAFETY: the payload area after the key is `bytes.len()` long (asserted above).
        unsafe {
            let at = self.0.as_ptr().cast::<u8>().add(HEADER + key_len);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len());
        }
        let h = self.header_mut();
        (h.version, h.word, h.writer, h.kind) = (v.version, word, v.writer, kind);
    }

    /// Sets an integer value with its version and writer, as a counter add.
    pub(super) fn write_count(&mut self, value: i64, version: u64, writer: Writer) {
        let h = self.header_mut();
        assert_eq!(h.kind & KIND, INT, "only an integer is counted in place");
        (h.version, h.word, h.writer, h.kind) = (version, value as u64, writer, INT | COUNTER);
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let layout = layout(self.header().key_len as usize, self.payload_len());
        // SAFETY: allocated in `new` with this layout (the key and payload lengths
        // never change after it).
        unsafe { alloc::dealloc(self.0.as_ptr().cast(), layout) }
    }
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block").field("key", &self.key()).field("value", &self.value()).finish()
    }
}

/// A key in the ordered index: a pointer to the block that holds it (see the module's
/// invariant), ordered by the key's bytes.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(super) struct KeyRef(NonNull<Header>);

// SAFETY: only reads the block, which the table owns, under the same lock as the index.
unsafe impl Send for KeyRef {}
unsafe impl Sync for KeyRef {}

impl KeyRef {
    /// The block the key is in, borrowed for as long as the index entry is.
    pub(super) fn block(&self) -> &Block {
        // SAFETY: both types are a transparent `NonNull<Header>`, and the block is live
        // and owned by the table (the module's invariant); a `&Block` never drops it.
        unsafe { &*(self as *const KeyRef).cast::<Block>() }
    }

    fn key(&self) -> &str {
        self.block().key()
    }
}

impl Borrow<str> for KeyRef {
    fn borrow(&self) -> &str {
        self.key()
    }
}

impl PartialEq for KeyRef {
    fn eq(&self, other: &KeyRef) -> bool {
        self.key() == other.key()
    }
}

impl Eq for KeyRef {}

impl PartialOrd for KeyRef {
    fn partial_cmp(&self, other: &KeyRef) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyRef {
    fn cmp(&self, other: &KeyRef) -> Ordering {
        self.key().cmp(other.key())
    }
}

impl std::fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.key().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(value: Value, counter: bool) -> Versioned {
        Versioned { value, version: 7, writer: Writer::new("block-test"), counter }
    }

    #[test]
    fn a_block_holds_what_was_written() {
        for (value, counter) in [
            (Value::Int(-3), true),
            (Value::Float(2.5), false),
            (Value::Text("héllo".into()), false),
            (Value::Bytes(vec![0, 255, 7]), false),
            (Value::Text(String::new()), false),
        ] {
            let written = v(value, counter);
            let block = Block::new("flow:1:x", &written);
            assert_eq!(block.key(), "flow:1:x");
            assert_eq!(block.versioned(), written);
            assert_eq!(block.footprint(), 8 + super::super::value_len(&written.value) as u64);
        }
        assert_eq!(Block::new("", &v(Value::Int(1), false)).key(), "");
        let long = "k".repeat(MAX_KEY_LEN);
        assert_eq!(Block::new(&long, &v(Value::Int(1), false)).key(), long);
    }

    #[test]
    fn values_of_the_same_size_are_written_in_place() {
        let mut block = Block::new("k", &v(Value::Text("abc".into()), false));
        assert!(block.fits(&v(Value::Bytes(b"xyz".to_vec()), false)));
        assert!(!block.fits(&v(Value::Text("abcd".into()), false)));
        assert!(!block.fits(&v(Value::Int(1), false)));
        let next = Versioned {
            value: Value::Bytes(b"xyz".to_vec()),
            version: 9,
            writer: Writer::new("other"),
            counter: false,
        };
        block.write_in_place(&next);
        assert_eq!(block.versioned(), next);

        let mut number = Block::new("n", &v(Value::Float(1.0), false));
        number.write_in_place(&v(Value::Int(4), false));
        assert_eq!(number.int(), Some(4));
        number.write_count(5, 11, Writer::new("block-test"));
        assert_eq!((number.int(), number.version(), number.counter()), (Some(5), 11, true));
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_flow_counter_is_one_block_of_64_bytes() {
        assert_eq!(HEADER, 24);
        assert_eq!(layout("flow:00000000000000000001:00000000000001".len(), 0).size(), 64);
        assert_eq!(size_of::<Block>(), 8);
    }

    #[test]
    fn key_refs_order_by_key() {
        let (a, b) = (Block::new("a:2", &v(Value::Int(0), false)), Block::new("a:10", &v(Value::Int(0), false)));
        assert!(b.key_ref() < a.key_ref(), "bytewise, as the keys' strings");
        let set: std::collections::BTreeSet<KeyRef> = [a.key_ref(), b.key_ref()].into();
        assert!(set.contains("a:2"));
        assert_eq!(set.range::<str, _>((std::ops::Bound::Included("a:1"), std::ops::Bound::Unbounded)).count(), 2);
    }
}
