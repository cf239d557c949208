//! Bookkeeping of global reads in flight, without I/O.
//!
//! A read asks a set of live members; it completes as soon as every one of them has
//! answered or gone away, or at its deadline, whichever comes first. Replies are
//! accepted only for outstanding reads and only from members that were asked, once.

use std::collections::{BTreeSet, HashMap};

mod answer;

pub use answer::{Answer, finish_builtin, finish_wasm, items_of, taken_of};

use crate::reduce::ReduceError;
use std::time::Duration;

/// Consistency of a global read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Consistency {
    /// Reduce whatever answered before the deadline; the answer names who is missing.
    #[default]
    BestEffort,
    /// Fail unless every live member answered.
    All,
}

/// Options of a global read.
#[derive(Clone, Copy, Debug)]
pub struct GlobalOptions {
    /// Deadline of the read.
    pub timeout: Duration,
    /// Whether every live member must answer.
    pub consistency: Consistency,
    /// Push the reducer down: each member reduces its own items and sends a partial.
    pub remote: bool,
    /// Move the matching items here: every member sends them and deletes its copy
    /// (fetch-all only).
    pub take: bool,
}

impl Default for GlobalOptions {
    fn default() -> Self {
        GlobalOptions {
            timeout: Duration::from_millis(1000),
            consistency: Consistency::BestEffort,
            remote: false,
            take: false,
        }
    }
}

/// A global read a node served: a member's, or its own. Observers
/// ([`crate::node::Node::on_served_read`]) are told of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedRead {
    /// The id of the node that asked (this node's own id for its own reads).
    pub from: String,
    /// The tenant whose keys were read.
    pub tenant: String,
    /// The key pattern, as the reader gave it.
    pub pattern: String,
}

/// What a node calls for each global read it serves, on its I/O thread: it must return
/// quickly (hand the read to another thread for anything slow).
pub type ServedHook = std::sync::Arc<dyn Fn(&ServedRead) + Send + Sync>;

/// Why a global read failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GlobalError {
    /// Consistency `all` was asked for and some live members did not answer.
    #[error("incomplete: no answer from {} (consistency all)", .missing.join(", "))]
    Incomplete {
        /// The members that did not answer.
        missing: Vec<String>,
    },
    /// A member (possibly this node) could not produce its answer.
    #[error("{member}: {message}")]
    Member {
        /// The member.
        member: String,
        /// What went wrong there.
        message: String,
    },
    /// The reducer rejected the items.
    #[error(transparent)]
    Reduce(#[from] ReduceError),
    /// The request itself was refused (bad pattern, unknown reducer, reducer not
    /// combinable for push-down).
    #[error("{0}")]
    Invalid(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Shutdown,
    /// Refused: the tenant is at its `reads` quota on this node.
    #[error(transparent)]
    Quota(#[from] crate::store::QuotaExceeded),
}

/// The answers of a finished read, ready to be reduced.
#[derive(Debug, PartialEq)]
pub struct Gathered<A> {
    /// Members that answered, sorted.
    pub answered: Vec<String>,
    /// Members asked that did not answer, sorted.
    pub missing: Vec<String>,
    /// Their answers.
    pub parts: Vec<A>,
}

/// A finished read: whom to tell, and what was gathered.
pub type Completion<W, A> = (W, Result<Gathered<A>, GlobalError>);

#[derive(Debug)]
struct Pending<W, A> {
    consistency: Consistency,
    asked: BTreeSet<String>,
    answered: BTreeSet<String>,
    /// Asked members that can no longer answer (removed).
    gone: BTreeSet<String>,
    errors: Vec<(String, String)>,
    parts: Vec<A>,
    deadline: u64,
    waiter: W,
}

impl<W, A> Pending<W, A> {
    fn done(&self) -> bool {
        self.asked.iter().all(|m| self.answered.contains(m) || self.gone.contains(m))
    }

    fn finish(self) -> Completion<W, A> {
        let missing: Vec<String> = self.asked.iter().filter(|m| !self.answered.contains(*m)).cloned().collect();
        let result = if let Some((member, message)) = self.errors.into_iter().next() {
            Err(GlobalError::Member { member, message })
        } else if self.consistency == Consistency::All && !missing.is_empty() {
            Err(GlobalError::Incomplete { missing })
        } else {
            Ok(Gathered { answered: self.answered.into_iter().collect(), missing, parts: self.parts })
        };
        (self.waiter, result)
    }
}

/// What became of a reply.
#[derive(Debug)]
pub enum ReplyOutcome<W, A> {
    /// Not for an outstanding read, or from a member that was not asked or already
    /// answered: dropped.
    Rejected,
    /// Recorded; the read still waits for others.
    Recorded,
    /// Recorded, and the read is complete.
    Complete(Completion<W, A>),
}

/// Global reads in flight on one node.
#[derive(Debug)]
pub struct GlobalReads<W, A> {
    pending: HashMap<u128, Pending<W, A>>,
}

impl<W, A> Default for GlobalReads<W, A> {
    fn default() -> Self {
        GlobalReads { pending: HashMap::new() }
    }
}

impl<W, A> GlobalReads<W, A> {
    /// Starts read `id` that waits for the answers of `asked` (the node itself
    /// included: its own answer arrives through [`GlobalReads::reply`] like any other).
    pub fn start(&mut self, id: u128, consistency: Consistency, asked: BTreeSet<String>, deadline: u64, waiter: W) {
        let pending = Pending {
            consistency,
            asked,
            answered: BTreeSet::new(),
            gone: BTreeSet::new(),
            errors: Vec::new(),
            parts: Vec::new(),
            deadline,
            waiter,
        };
        self.pending.insert(id, pending);
    }

    /// Whether read `id` is still waiting for answers.
    pub fn is_outstanding(&self, id: u128) -> bool {
        self.pending.contains_key(&id)
    }

    /// Records `from`'s answer to read `id`. An error answer fails the read.
    pub fn reply(&mut self, id: u128, from: &str, result: Result<A, String>) -> ReplyOutcome<W, A> {
        let Some(p) = self.pending.get_mut(&id) else {
            return ReplyOutcome::Rejected;
        };
        if !p.asked.contains(from) || p.answered.contains(from) || p.gone.contains(from) {
            return ReplyOutcome::Rejected;
        }
        match result {
            Ok(answer) => {
                p.answered.insert(from.to_string());
                p.parts.push(answer);
            }
            Err(message) => {
                p.gone.insert(from.to_string());
                p.errors.push((from.to_string(), message));
            }
        }
        if p.done() || !p.errors.is_empty() {
            let p = self.pending.remove(&id).expect("present");
            ReplyOutcome::Complete(p.finish())
        } else {
            ReplyOutcome::Recorded
        }
    }

    /// A member was removed: reads waiting only for it complete (it counts as missing).
    pub fn member_down(&mut self, member: &str) -> Vec<Completion<W, A>> {
        for p in self.pending.values_mut() {
            if p.asked.contains(member) && !p.answered.contains(member) {
                p.gone.insert(member.to_string());
            }
        }
        self.take(|p| p.done())
    }

    /// Completes every read whose deadline is at or before `now`.
    pub fn expire(&mut self, now: u64) -> Vec<Completion<W, A>> {
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

    /// Whether a read in flight whose waiter satisfies `pred` still waits for
    /// `member`'s answer.
    pub fn any_waiting_on(&self, member: &str, pred: impl Fn(&W) -> bool) -> bool {
        self.pending.values().any(|p| {
            p.asked.contains(member) && !p.answered.contains(member) && !p.gone.contains(member) && pred(&p.waiter)
        })
    }

    /// Reads in flight.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no read is in flight.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn take(&mut self, pred: impl Fn(&Pending<W, A>) -> bool) -> Vec<Completion<W, A>> {
        let ids: Vec<u128> = self.pending.iter().filter(|(_, p)| pred(p)).map(|(id, _)| *id).collect();
        ids.into_iter().map(|id| self.pending.remove(&id).expect("present").finish()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer: the value and who sent it.
    fn items(v: i64, origin: &str) -> (i64, String) {
        (v, origin.to_string())
    }

    fn start(reads: &mut GlobalReads<u8, (i64, String)>, consistency: Consistency) {
        let asked = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        reads.start(1, consistency, asked, 100, 0);
        assert!(matches!(reads.reply(1, "a", Ok(items(5, "a"))), ReplyOutcome::Recorded));
    }

    #[test]
    fn completes_early_when_everyone_answered() {
        let mut reads = GlobalReads::default();
        start(&mut reads, Consistency::BestEffort);
        assert!(matches!(reads.reply(1, "b", Ok(items(5, "b"))), ReplyOutcome::Recorded));
        let ReplyOutcome::Complete((_, Ok(g))) = reads.reply(1, "c", Ok(items(5, "c"))) else {
            panic!("expected completion");
        };
        assert_eq!(g.answered, ["a", "b", "c"]);
        assert_eq!(g.parts.len(), 3);
        assert!(g.missing.is_empty() && reads.is_empty());
    }

    #[test]
    fn deadline_names_the_missing() {
        let mut reads = GlobalReads::default();
        start(&mut reads, Consistency::BestEffort);
        reads.reply(1, "b", Ok(items(5, "b")));
        assert!(reads.expire(99).is_empty());
        let done = reads.expire(100);
        let (_, Ok(g)) = &done[0] else { panic!() };
        assert_eq!(g.missing, ["c"]);
        assert_eq!(g.parts.len(), 2);
    }

    #[test]
    fn consistency_all_fails_when_someone_is_missing() {
        let mut reads = GlobalReads::default();
        start(&mut reads, Consistency::All);
        reads.reply(1, "b", Ok(items(0, "b")));
        let done = reads.expire(100);
        assert_eq!(done[0].1, Err(GlobalError::Incomplete { missing: vec!["c".into()] }));
    }

    #[test]
    fn an_error_answer_fails_the_read_at_once() {
        let mut reads = GlobalReads::default();
        start(&mut reads, Consistency::BestEffort);
        let ReplyOutcome::Complete((_, Err(e))) = reads.reply(1, "b", Err("guest ran out of fuel".into())) else {
            panic!("expected completion");
        };
        assert_eq!(e, GlobalError::Member { member: "b".into(), message: "guest ran out of fuel".into() });
    }

    #[test]
    fn member_down_completes_without_waiting_for_the_deadline() {
        let mut reads = GlobalReads::default();
        start(&mut reads, Consistency::BestEffort);
        reads.reply(1, "b", Ok(items(0, "b")));
        let done = reads.member_down("c");
        let (_, Ok(g)) = &done[0] else { panic!() };
        assert_eq!(g.missing, ["c"]);
    }

    #[test]
    fn unknown_ids_strangers_and_duplicates_are_rejected() {
        let mut reads = GlobalReads::default();
        start(&mut reads, Consistency::BestEffort);
        assert!(matches!(reads.reply(2, "b", Ok(items(0, "b"))), ReplyOutcome::Rejected));
        assert!(matches!(reads.reply(1, "x", Ok(items(1000, "x"))), ReplyOutcome::Rejected));
        assert!(matches!(reads.reply(1, "a", Ok(items(1000, "a"))), ReplyOutcome::Rejected));
        assert!(matches!(reads.reply(1, "b", Ok(items(1, "b"))), ReplyOutcome::Recorded));
        assert!(matches!(reads.reply(1, "b", Ok(items(1000, "b"))), ReplyOutcome::Rejected));
    }
}
