//! A hybrid logical clock: versions that follow causality and stay close to wall time.
//!
//! A timestamp is a `u64` with milliseconds since the Unix epoch in the high 48 bits and
//! a logical counter in the low 16. [`Hlc::tick`] never returns the same or a smaller
//! value twice on one node, even if the wall clock steps back; [`Hlc::observe`] folds in
//! a timestamp seen on a message, so a write that causally follows a remote write gets a
//! larger version even when the local wall clock is behind. Equal timestamps on
//! different nodes are ordered by node id (see [`crate::store::newer`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const LOGICAL_BITS: u32 = 16;

/// A hybrid logical clock shared by the threads of one node.
#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
}

/// Packs wall-clock milliseconds into a timestamp with a zero logical counter.
pub fn from_millis(ms: u64) -> u64 {
    ms << LOGICAL_BITS
}

/// The wall-clock milliseconds of a timestamp.
pub fn millis(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

fn wall() -> u64 {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    from_millis(ms)
}

impl Hlc {
    /// A clock that starts at the current wall time.
    pub fn new() -> Hlc {
        Hlc { last: AtomicU64::new(0) }
    }

    /// A new timestamp, larger than every one this clock returned or observed before.
    pub fn tick(&self) -> u64 {
        self.advance(wall())
    }

    /// Folds in a timestamp from another node; returns a new local timestamp above both.
    pub fn observe(&self, remote: u64) -> u64 {
        self.advance(wall().max(remote.saturating_add(1)))
    }

    fn advance(&self, floor: u64) -> u64 {
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = floor.max(last.saturating_add(1));
            match self.last.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// The last timestamp handed out or observed (0 before the first).
    pub fn peek(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing() {
        let clock = Hlc::new();
        let mut prev = 0;
        for _ in 0..100_000 {
            let t = clock.tick();
            assert!(t > prev);
            prev = t;
        }
    }

    #[test]
    fn observing_a_future_timestamp_moves_past_it() {
        let clock = Hlc::new();
        let ahead = clock.tick() + from_millis(60_000);
        let after = clock.observe(ahead);
        assert!(after > ahead);
        assert!(clock.tick() > after, "the clock stays ahead of what it observed");
        assert!(millis(after) >= millis(ahead));
    }

    #[test]
    fn concurrent_ticks_are_unique() {
        let clock = std::sync::Arc::new(Hlc::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = clock.clone();
                std::thread::spawn(move || (0..10_000).map(|_| c.tick()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
