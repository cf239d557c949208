//! Bookkeeping of global reads in flight, without I/O.
//!
//! A read asks a set of live members; it completes as soon as every one of them has
//! answered or gone away, or at its deadline, whichever comes first. Replies are
//! accepted only for outstanding reads and only from members that were asked, once.

use std::collections::{BTreeSet, HashMap};

use estate_guest::Item;

use crate::reduce::{self, Builtin, ReduceError};
use crate::wire::{Consistency, GlobalAnswer};

/// Why a global read failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GlobalError {
    /// Consistency `all` was asked for and some live members did not answer.
    #[error("incomplete: no answer from {} (consistency all)", .missing.join(", "))]
    Incomplete {
        /// The members that did not answer.
        missing: Vec<String>,
    },
    /// The reducer rejected the items.
    #[error(transparent)]
    Reduce(#[from] ReduceError),
    /// The request itself was refused (bad pattern, unknown reducer).
    #[error("{0}")]
    Invalid(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Shutdown,
}

/// A finished read: whom to tell, and what.
pub type Completion<W> = (W, Result<GlobalAnswer, GlobalError>);

#[derive(Debug)]
struct Pending<W> {
    reducer: Builtin,
    consistency: Consistency,
    asked: BTreeSet<String>,
    answered: BTreeSet<String>,
    /// Asked members that can no longer answer (removed, or answered with an error).
    gone: BTreeSet<String>,
    items: Vec<Item>,
    deadline: u64,
    waiter: W,
}

impl<W> Pending<W> {
    fn done(&self) -> bool {
        self.asked
            .iter()
            .all(|m| self.answered.contains(m) || self.gone.contains(m))
    }

    fn finish(self) -> Completion<W> {
        let missing: Vec<String> = self
            .asked
            .iter()
            .filter(|m| !self.answered.contains(*m))
            .cloned()
            .collect();
        let result = if self.consistency == Consistency::All && !missing.is_empty() {
            Err(GlobalError::Incomplete { missing })
        } else {
            reduce::reduce(self.reducer, self.items)
                .map(|result| GlobalAnswer {
                    reducer: self.reducer,
                    result,
                    answered: self.answered.into_iter().collect(),
                    missing,
                })
                .map_err(GlobalError::from)
        };
        (self.waiter, result)
    }
}

/// What became of a reply.
#[derive(Debug)]
pub enum ReplyOutcome<W> {
    /// Not for an outstanding read, or from a member that was not asked or already
    /// answered: dropped.
    Rejected,
    /// Recorded; the read still waits for others.
    Recorded,
    /// Recorded, and the read is complete.
    Complete(Completion<W>),
}

/// Global reads in flight on one node.
#[derive(Debug)]
pub struct GlobalReads<W> {
    pending: HashMap<u128, Pending<W>>,
}

impl<W> Default for GlobalReads<W> {
    fn default() -> Self {
        GlobalReads {
            pending: HashMap::new(),
        }
    }
}

impl<W> GlobalReads<W> {
    /// Starts read `id`: the local node `me` answered with `local`; `asked` are the other
    /// live members the request was sent to. Completes at once when nobody else was asked.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        id: u128,
        reducer: Builtin,
        consistency: Consistency,
        me: &str,
        local: Vec<Item>,
        asked: BTreeSet<String>,
        deadline: u64,
        waiter: W,
    ) -> Option<Completion<W>> {
        let mut pending = Pending {
            reducer,
            consistency,
            asked,
            answered: BTreeSet::new(),
            gone: BTreeSet::new(),
            items: local,
            deadline,
            waiter,
        };
        pending.asked.insert(me.to_string());
        pending.answered.insert(me.to_string());
        if pending.done() {
            return Some(pending.finish());
        }
        self.pending.insert(id, pending);
        None
    }

    /// Records `from`'s reply to read `id`.
    pub fn reply(
        &mut self,
        id: u128,
        from: &str,
        result: Result<Vec<Item>, String>,
    ) -> ReplyOutcome<W> {
        let Some(p) = self.pending.get_mut(&id) else {
            return ReplyOutcome::Rejected;
        };
        if !p.asked.contains(from) || p.answered.contains(from) || p.gone.contains(from) {
            return ReplyOutcome::Rejected;
        }
        match result {
            Ok(items) => {
                p.answered.insert(from.to_string());
                p.items.extend(items);
            }
            Err(_) => {
                p.gone.insert(from.to_string());
            }
        }
        if p.done() {
            let p = self.pending.remove(&id).expect("present");
            ReplyOutcome::Complete(p.finish())
        } else {
            ReplyOutcome::Recorded
        }
    }

    /// A member was removed: reads waiting only for it complete (it counts as missing).
    pub fn member_down(&mut self, member: &str) -> Vec<Completion<W>> {
        for p in self.pending.values_mut() {
            if p.asked.contains(member) && !p.answered.contains(member) {
                p.gone.insert(member.to_string());
            }
        }
        self.take(|p| p.done())
    }

    /// Completes every read whose deadline is at or before `now`.
    pub fn expire(&mut self, now: u64) -> Vec<Completion<W>> {
        self.take(|p| p.deadline <= now)
    }

    /// Fails every read (the node is shutting down).
    pub fn abort(&mut self) -> Vec<W> {
        self.pending.drain().map(|(_, p)| p.waiter).collect()
    }

    /// The earliest deadline of a read in flight.
    pub fn next_deadline(&self) -> Option<u64> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Reads in flight.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no read is in flight.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn take(&mut self, pred: impl Fn(&Pending<W>) -> bool) -> Vec<Completion<W>> {
        let ids: Vec<u128> = self
            .pending
            .iter()
            .filter(|(_, p)| pred(p))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .map(|id| self.pending.remove(&id).expect("present").finish())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reduce::Reduced;
    use estate_guest::Value;

    fn item(v: i64, origin: &str) -> Item {
        Item {
            key: "c".into(),
            value: Value::Int(v),
            origin: origin.into(),
            version: 1,
        }
    }

    fn asked(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn start(reads: &mut GlobalReads<u8>, consistency: Consistency) -> Option<Completion<u8>> {
        reads.start(
            1,
            Builtin::Sum,
            consistency,
            "a",
            vec![item(5, "a")],
            asked(&["b", "c"]),
            100,
            0,
        )
    }

    #[test]
    fn completes_early_when_everyone_answered() {
        let mut reads = GlobalReads::default();
        assert!(start(&mut reads, Consistency::BestEffort).is_none());
        assert!(matches!(
            reads.reply(1, "b", Ok(vec![item(5, "b")])),
            ReplyOutcome::Recorded
        ));
        let ReplyOutcome::Complete((_, Ok(answer))) = reads.reply(1, "c", Ok(vec![item(5, "c")]))
        else {
            panic!("expected completion");
        };
        assert_eq!(answer.result, Reduced::Value(Value::Int(15)));
        assert_eq!(answer.answered, ["a", "b", "c"]);
        assert!(answer.missing.is_empty() && reads.is_empty());
    }

    #[test]
    fn deadline_names_the_missing() {
        let mut reads = GlobalReads::default();
        start(&mut reads, Consistency::BestEffort);
        reads.reply(1, "b", Ok(vec![item(5, "b")]));
        assert!(reads.expire(99).is_empty());
        let done = reads.expire(100);
        let (_, Ok(answer)) = &done[0] else { panic!() };
        assert_eq!(answer.missing, ["c"]);
        assert_eq!(answer.result, Reduced::Value(Value::Int(10)));
    }

    #[test]
    fn consistency_all_fails_when_someone_is_missing() {
        let mut reads = GlobalReads::default();
        start(&mut reads, Consistency::All);
        reads.reply(1, "b", Ok(vec![]));
        let done = reads.expire(100);
        assert_eq!(
            done[0].1,
            Err(GlobalError::Incomplete {
                missing: vec!["c".into()]
            })
        );
    }

    #[test]
    fn member_down_completes_without_waiting_for_the_deadline() {
        let mut reads = GlobalReads::default();
        start(&mut reads, Consistency::BestEffort);
        reads.reply(1, "b", Ok(vec![]));
        let done = reads.member_down("c");
        let (_, Ok(answer)) = &done[0] else { panic!() };
        assert_eq!(answer.missing, ["c"]);
    }

    #[test]
    fn unknown_ids_strangers_and_duplicates_are_rejected() {
        let mut reads = GlobalReads::default();
        start(&mut reads, Consistency::BestEffort);
        assert!(matches!(
            reads.reply(2, "b", Ok(vec![])),
            ReplyOutcome::Rejected
        ));
        assert!(matches!(
            reads.reply(1, "x", Ok(vec![item(1000, "x")])),
            ReplyOutcome::Rejected
        ));
        assert!(matches!(
            reads.reply(1, "a", Ok(vec![item(1000, "a")])),
            ReplyOutcome::Rejected
        ));
        assert!(matches!(
            reads.reply(1, "b", Ok(vec![item(1, "b")])),
            ReplyOutcome::Recorded
        ));
        assert!(matches!(
            reads.reply(1, "b", Ok(vec![item(1000, "b")])),
            ReplyOutcome::Rejected
        ));
    }

    #[test]
    fn alone_completes_at_once() {
        let mut reads: GlobalReads<u8> = GlobalReads::default();
        let done = reads.start(
            1,
            Builtin::Count,
            Consistency::All,
            "a",
            vec![item(1, "a")],
            BTreeSet::new(),
            5,
            0,
        );
        assert_eq!(
            done.unwrap().1.unwrap().result,
            Reduced::Value(Value::Int(1))
        );
    }
}
