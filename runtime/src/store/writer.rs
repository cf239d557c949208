//! Writer ids, interned: a stored value names the node that wrote it in 4 bytes.
//!
//! A store holds millions of items but their writers are a handful of node ids (this
//! node, and the members values were taken or handed over from). Each distinct id is
//! kept once per process, in one table shared by every store, and a stored value keeps
//! only its 4-byte index in its block's header. Names are never removed: the table holds every node id that wrote a
//! value this process has seen (a node id is at most a few dozen bytes, and a cluster
//! has few of them).
//!
//! Resolving a writer's name takes no lock: the names live in segments that are only
//! appended to, and an id is handed out after its name is in place.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, OnceLock, RwLock};

/// The most distinct writers a process interns. A cluster has a handful of node ids;
/// a member sending items with made-up writers cannot grow the table without bound.
pub const MAX_WRITERS: usize = 4096;
/// The longest writer id interned (a node id's limit).
pub const MAX_WRITER_LEN: usize = 64;

/// A writer id that was not interned. The item that named it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriterError {
    /// Longer than [`MAX_WRITER_LEN`].
    #[error("writer id of {0} bytes is longer than the limit of {MAX_WRITER_LEN}")]
    TooLong(usize),
    /// [`MAX_WRITERS`] distinct writers are interned already.
    #[error("{MAX_WRITERS} distinct writers are known already; refusing a new one")]
    TooMany,
}

/// The id of the node that made a write, interned (see the module docs). The same name
/// is the same `Writer` in every store of the process. Writers are ordered by name, so
/// the order is the same on every node.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Writer(u32);

/// Ids by name; the write lock is held while a new name is added.
static IDS: LazyLock<RwLock<HashMap<&'static str, u32>>> = LazyLock::new(RwLock::default);

/// Names by id: segment `s` holds `FIRST << s` names, the ids after those of the
/// segments before it.
static NAMES: [OnceLock<Box<[OnceLock<&'static str>]>>; SEGMENTS] = [const { OnceLock::new() }; SEGMENTS];
const FIRST: usize = 32;
const SEGMENTS: usize = 28;

/// The segment and the index in it of id `id`.
fn slot(id: u32) -> (usize, usize) {
    let segment = (id as usize / FIRST + 1).ilog2() as usize;
    (segment, id as usize - FIRST * ((1 << segment) - 1))
}

impl Writer {
    /// The writer named `name`, interned on first use (a node's own id: infallible,
    /// whatever the table holds).
    pub fn new(name: &str) -> Writer {
        Writer::intern(name, usize::MAX).expect("a node's own id is always interned")
    }

    /// The writer named `name` from another node's item: refused if it is too long, or
    /// new while [`MAX_WRITERS`] are known.
    pub fn from_peer(name: &str) -> Result<Writer, WriterError> {
        if name.len() > MAX_WRITER_LEN {
            return Err(WriterError::TooLong(name.len()));
        }
        Writer::intern(name, MAX_WRITERS)
    }

    fn intern(name: &str, limit: usize) -> Result<Writer, WriterError> {
        if let Some(&id) = IDS.read().unwrap().get(name) {
            return Ok(Writer(id));
        }
        let mut ids = IDS.write().unwrap();
        if let Some(&id) = ids.get(name) {
            return Ok(Writer(id));
        }
        if ids.len() >= limit {
            return Err(WriterError::TooMany);
        }
        let id = u32::try_from(ids.len()).expect("fewer than 2^32 writers");
        let (segment, index) = slot(id);
        assert!(segment < SEGMENTS, "writer table full");
        let name: &'static str = Box::leak(name.into());
        let names = NAMES[segment].get_or_init(|| (0..FIRST << segment).map(|_| OnceLock::new()).collect());
        names[index].set(name).expect("a new id's slot is empty");
        ids.insert(name, id);
        Ok(Writer(id))
    }

    /// The writer's node id.
    pub fn name(self) -> &'static str {
        let (segment, index) = slot(self.0);
        // A Writer exists only once its name is in place (set before `new` returned).
        NAMES[segment].get().and_then(|names| names[index].get()).expect("an interned writer")
    }
}

impl Ord for Writer {
    fn cmp(&self, other: &Writer) -> Ordering {
        if self == other { Ordering::Equal } else { self.name().cmp(other.name()) }
    }
}

impl PartialOrd for Writer {
    fn partial_cmp(&self, other: &Writer) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.name())
    }
}

impl fmt::Display for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_one_writer_ordered_by_name() {
        let (a, b) = (Writer::new("writer-test-b"), Writer::new("writer-test-a"));
        assert_ne!(a, b);
        assert_eq!(Writer::new("writer-test-b"), a);
        assert_eq!(a.name(), "writer-test-b");
        assert!(b < a, "by name, not by id");
        assert_eq!(format!("{a} {b:?}"), "writer-test-b \"writer-test-a\"");
    }

    #[test]
    fn writers_from_peers_are_bounded() {
        assert_eq!(Writer::from_peer(&"w".repeat(MAX_WRITER_LEN + 1)), Err(WriterError::TooLong(MAX_WRITER_LEN + 1)));
        let known = Writer::new("bounded-known");
        // A full table still resolves the names it has, and takes no new one.
        assert_eq!(Writer::intern("bounded-known", 0), Ok(known));
        assert_eq!(Writer::intern("bounded-never-seen", 0), Err(WriterError::TooMany));
        assert!(Writer::from_peer("bounded-peer").is_ok());
    }

    #[test]
    fn segments_tile_the_ids() {
        let mut expected = (0, 0);
        for id in 0..10_000u32 {
            assert_eq!(slot(id), expected, "{id}");
            expected.1 += 1;
            if expected.1 == FIRST << expected.0 {
                expected = (expected.0 + 1, 0);
            }
        }
        let last = FIRST * ((1 << SEGMENTS) - 1) - 1;
        assert!(last >= u32::MAX as usize);
        assert_eq!(slot(u32::MAX).0, SEGMENTS - 1);
    }

    #[test]
    fn concurrent_interning_agrees() {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..300).map(|i| Writer::new(&format!("writer-race-{i}"))).collect::<Vec<_>>())
            })
            .collect();
        let all: Vec<Vec<Writer>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(all.windows(2).all(|w| w[0] == w[1]));
        for (i, w) in all[0].iter().enumerate() {
            assert_eq!(w.name(), format!("writer-race-{i}"));
        }
    }
}
