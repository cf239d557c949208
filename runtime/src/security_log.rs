//! The security log: a bounded record of what a node refused, readable by the admin
//! (`estate security-log`), in the manner of Redis' `ACL LOG`.
//!
//! Refusals of the same reason, principal and object fold into one entry with a count
//! and the first and last time; the log keeps the [`CAPACITY`] most recently refused
//! entries. Entries name request kinds, tenants, peers and quotas — never a key, a
//! value or a secret.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::wire::SecurityEntry;

/// Entries kept.
pub const CAPACITY: usize = 128;

/// A node's security log.
#[derive(Debug, Default)]
pub struct SecurityLog {
    entries: Mutex<VecDeque<SecurityEntry>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl SecurityLog {
    /// Records one refusal.
    pub fn record(&self, reason: &str, principal: &str, object: &str) {
        let now = now_ms();
        let mut entries = self.entries.lock().unwrap();
        let same = |e: &SecurityEntry| e.reason == reason && e.principal == principal && e.object == object;
        let mut entry = match entries.iter().position(same) {
            Some(i) => entries.remove(i).expect("present"),
            None => SecurityEntry {
                reason: reason.into(),
                principal: principal.into(),
                object: object.into(),
                count: 0,
                first_ms: now,
                last_ms: now,
            },
        };
        entry.count += 1;
        entry.last_ms = now;
        if entries.len() >= CAPACITY {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// Every entry, least recently refused first.
    pub fn entries(&self) -> Vec<SecurityEntry> {
        self.entries.lock().unwrap().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_repeats_and_stays_bounded() {
        let log = SecurityLog::default();
        log.record("forbidden", "tenant:b", "members");
        log.record("unauthenticated", "-", "get");
        log.record("forbidden", "tenant:b", "members");
        let e = log.entries();
        assert_eq!(e.len(), 2);
        assert_eq!((e[1].reason.as_str(), e[1].count), ("forbidden", 2), "the repeat moved to the end, counted");
        for i in 0..CAPACITY + 10 {
            log.record("quota", "tenant:a", &format!("o{i}"));
        }
        let e = log.entries();
        assert_eq!(e.len(), CAPACITY);
        assert_eq!(e.last().unwrap().object, format!("o{}", CAPACITY + 9));
    }
}
