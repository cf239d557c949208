//! A tenant's items: a hash table of [`Block`]s for the hot path, and the same keys in
//! order so prefix patterns (a moved flow's `flow:<flow>:.*`) find their keys without
//! a scan.
//!
//! One allocation per item, shared by both indexes: the table owns each block, the
//! ordered index points into it ([`KeyRef`]). Every change of the index goes through
//! here, which keeps the invariant of [`super::block`]: a key leaves the ordered index
//! before its block is freed.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::ops::Bound;

use estate_guest::Value;
use hashbrown::HashTable;

use super::block::{Block, KeyRef};
use super::{Quota, Versioned, value_len};
use crate::pattern::Pattern;

#[derive(Debug, Default)]
pub(super) struct Items {
    /// The blocks, by key. foldhash: several times faster than SipHash on flow-sized
    /// keys, with a random per-process seed.
    table: HashTable<Block>,
    hasher: foldhash::fast::RandomState,
    /// The same keys, ordered. Touched only when a key appears or goes (or a text or
    /// bytes value changes length, which moves its block).
    ordered: BTreeSet<KeyRef>,
    /// Key and value bytes held (what the `bytes` quota counts).
    bytes: u64,
    /// Keys holding a newline: while there are none, a key in a prefix's range matches
    /// the prefix pattern without looking at it again (`.` matches anything else).
    newline_keys: usize,
}

/// What an item counts for against the `bytes` quota.
fn footprint(key: &str, value: &Value) -> u64 {
    (key.len() + value_len(value)) as u64
}

impl Items {
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    #[cfg(test)]
    pub(super) fn newline_keys(&self) -> usize {
        self.newline_keys
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) fn get(&self, key: &str) -> Option<&Block> {
        self.table.find(self.hash(key), |b| b.key() == key)
    }

    /// The block of `key`, to change its value in place ([`Block::write_count`]: the
    /// key and the value's size stay, so neither index nor byte count changes).
    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut Block> {
        self.table.find_mut(self.hash(key), |b| b.key() == key)
    }

    /// Sets `key`: in place when the value has the size of the one there; the ordered
    /// index changes only for a new key or a block that had to move.
    pub(super) fn put(&mut self, key: &str, v: &Versioned) {
        self.bytes += footprint(key, &v.value);
        let hash = self.hash(key);
        let Some(block) = self.table.find_mut(hash, |b| b.key() == key) else {
            let block = Block::new(key, v);
            self.newline_keys += key.contains('\n') as usize;
            self.ordered.insert(block.key_ref());
            let hasher = &self.hasher;
            self.table.insert_unique(hash, block, |b| hasher.hash_one(b.key()));
            return;
        };
        self.bytes -= block.footprint();
        if block.fits(v) {
            return block.write_in_place(v);
        }
        // The old block's key leaves the index before the block is freed.
        self.ordered.remove(key);
        *block = Block::new(key, v);
        self.ordered.insert(block.key_ref());
    }

    pub(super) fn remove(&mut self, key: &str) -> Option<Block> {
        let entry = self.table.find_entry(self.hash(key), |b| b.key() == key).ok()?;
        self.ordered.remove(key);
        self.newline_keys -= key.contains('\n') as usize;
        let (block, _) = entry.remove();
        self.bytes -= block.footprint();
        Some(block)
    }

    /// Every block, the items left empty.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = Block> + '_ {
        self.ordered.clear();
        (self.bytes, self.newline_keys) = (0, 0);
        self.table.drain()
    }

    /// Whether writing `value` at `key` keeps the items within `quota` scaled by
    /// `times`; the quota that it would break if not.
    pub(super) fn admits(&self, key: &str, value: &Value, quota: &Quota, times: u64) -> Result<(), (usize, u64)> {
        let old = self.get(key);
        if let Some(keys) = quota.keys
            && old.is_none()
            && self.len() as u64 >= keys.saturating_mul(times)
        {
            return Err((0, keys));
        }
        if let Some(bytes) = quota.bytes {
            let after = self.bytes + footprint(key, value) - old.map_or(0, Block::footprint);
            if after > bytes.saturating_mul(times) {
                return Err((1, bytes));
            }
        }
        Ok(())
    }

    /// The blocks whose key matches `pattern`: one lookup for an exact key, a range of
    /// the ordered keys for a prefix, a scan for any other regex.
    pub(super) fn matching<'a>(&'a self, pattern: &'a Pattern) -> Box<dyn Iterator<Item = &'a Block> + 'a> {
        if let Some(key) = pattern.exact() {
            return Box::new(self.get(key).into_iter());
        }
        if let Some(prefix) = pattern.prefix() {
            // The range ends where the keys that start with the prefix end, so a key in
            // it is not compared with the prefix again (unless there is no such end).
            let end = after_prefix(prefix);
            let bounded = end.is_some() || prefix.is_empty();
            let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let range = self.ordered.range::<str, _>((Bound::Included(prefix), upper));
            let check = self.newline_keys > 0;
            return Box::new(
                range
                    .map(KeyRef::block)
                    .take_while(move |b| bounded || b.key().starts_with(prefix))
                    .filter(move |b| !check || pattern.matches(b.key())),
            );
        }
        Box::new(self.table.iter().filter(move |b| pattern.matches(b.key())))
    }
}

/// The least string above every string that starts with `prefix`: `prefix` with its last
/// character replaced by the next one (strings order as their code points do). `None`
/// for an empty prefix, or one that ends in `char::MAX`.
fn after_prefix(prefix: &str) -> Option<String> {
    let last = prefix.chars().next_back()?;
    let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32)?;
    let mut end = prefix[..prefix.len() - last.len_utf8()].to_string();
    end.push(next);
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_prefix_is_above_every_key_with_it_and_below_the_rest() {
        assert_eq!(after_prefix("flow:").as_deref(), Some("flow;"));
        assert_eq!(after_prefix("a\u{d7ff}").as_deref(), Some("a\u{e000}"), "past the surrogates");
        assert_eq!(after_prefix(""), None);
        assert_eq!(after_prefix("a\u{10ffff}"), None);
        for prefix in ["flow:", "é", "a\u{7f}", "a\u{7ff}", "\u{ffff}"] {
            let end = after_prefix(prefix).unwrap();
            for key in [prefix.to_string(), format!("{prefix}\u{10ffff}\u{10ffff}"), format!("{prefix}zz")] {
                assert!(key.as_str() < end.as_str(), "{key:?} < {end:?}");
            }
            assert!(!end.starts_with(prefix) && end.as_str() > prefix);
        }
    }
}
