//! Serving the members' reads: their items, a pushed-down reducer's partial, items given
//! up for a take, and the bytes of a module a member lacks.
//!
//! A pushed-down Wasm reducer travels by sha256. A node without the module asks the
//! requester for it, checks the bytes against the hash before compiling them, and
//! answers every read that waited for it; a module whose bytes never come (or do not
//! match) fails those reads with an error answer rather than silence.

use std::collections::HashMap;

use tracing::{info, warn};

use super::{Action, MatchingItems, Peering, Work};
use crate::global::Answer;
use crate::pattern::Pattern;
use crate::wasm::sha256;
use crate::wire::{self, Body, Budget, RemoteReducer};

/// How long a pushed-down read waits for a module's bytes.
pub const MODULE_WAIT_MS: u64 = 30_000;
/// Compiled patterns of recent requests kept.
const PATTERN_CACHE: usize = 256;

/// A peer's pushed-down read, waiting for the module's bytes.
#[derive(Debug)]
struct AwaitingModule {
    from: String,
    id: u128,
    /// The matching items, encoded when the module has arrived.
    items: MatchingItems,
    /// The budgets the reader runs the module under.
    budget: Budget,
    since: u64,
}

/// Reads waiting for modules, and the pattern cache.
#[derive(Debug, Default)]
pub(crate) struct Serving {
    /// By (tenant, module hash): a module is fetched and compiled per tenant.
    awaiting: HashMap<(String, [u8; 32]), Vec<AwaitingModule>>,
    patterns: HashMap<String, Pattern>,
}

impl Serving {
    fn pattern(&mut self, pattern: &str) -> Result<Pattern, String> {
        if let Some(p) = self.patterns.get(pattern) {
            return Ok(p.clone());
        }
        let compiled = Pattern::new(pattern).map_err(|e| e.to_string())?;
        if self.patterns.len() >= PATTERN_CACHE {
            self.patterns.clear();
        }
        self.patterns.insert(pattern.to_string(), compiled.clone());
        Ok(compiled)
    }
}

impl<W, H> Peering<W, H> {
    /// Answers a member's global read: its items, their partial, or (take) the items
    /// themselves, given up.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn serve(
        &mut self,
        from: String,
        id: u128,
        tenant: &str,
        pattern: &str,
        reducer: Option<RemoteReducer>,
        take: bool,
        now: u64,
        out: &mut Vec<Action<W, H>>,
    ) {
        if self.store.tenant(tenant).is_none() {
            // Only configured tenants exist: a read for another creates nothing here.
            self.unknown_tenant(&from, tenant, "read", out);
            return self.send_answer(&from, id, Err(format!("unknown tenant {tenant:?}")), out);
        }
        let pattern = match self.serving.pattern(pattern) {
            Ok(p) => p,
            Err(e) => return self.send_answer(&from, id, Err(e), out),
        };
        match (take, reducer) {
            (true, Some(_)) => self.send_answer(&from, id, Err("take cannot be pushed down".into()), out),
            (true, None) => self.give_up(&from, id, tenant, &pattern, now, out),
            (false, None) => {
                let items = self.store.tenant(tenant).map(|t| t.matching(&pattern)).unwrap_or_default();
                self.send_answer(&from, id, Ok(Answer::Items(items)), out);
            }
            (false, Some(RemoteReducer::Builtin(b))) => {
                let result = self.builtin_partial(tenant, &pattern, b);
                self.send_answer(&from, id, result, out);
            }
            (false, Some(RemoteReducer::Wasm { hash, budget })) => {
                let items = self.matching_items(tenant, &pattern);
                let tenant = tenant.to_string();
                if self.modules.has(&tenant, &hash) {
                    return out.push(Action::Work(Work::PeerPartial { to: from, id, tenant, hash, budget, items }));
                }
                let key = (tenant, hash);
                let first = !self.serving.awaiting.contains_key(&key);
                let waiting = AwaitingModule { from: from.clone(), id, items, budget, since: now };
                self.serving.awaiting.entry(key.clone()).or_default().push(waiting);
                if first {
                    self.send_to_member(&from, Body::ModuleRequest { tenant: key.0, hash }, out);
                }
            }
        }
    }

    /// A take: the matching items leave this node's store for the requester's, lent
    /// until it confirms storing them (`lend.rs`).
    fn give_up(
        &mut self,
        from: &str,
        id: u128,
        tenant: &str,
        pattern: &Pattern,
        now: u64,
        out: &mut Vec<Action<W, H>>,
    ) {
        let items = self.store.tenant(tenant).map(|t| t.take_matching(pattern)).unwrap_or_default();
        info!(%from, items = items.len(), "items taken over by a member");
        let body = Body::GlobalReply { id, result: Ok(Answer::Taken(items)) };
        if wire::fits(&self.id, &body) {
            if let Body::GlobalReply { result: Ok(Answer::Taken(items)), .. } = &body {
                self.lend(from, id, tenant, items, now);
            }
            return self.send_to_member(from, body, out);
        }
        // Too large to send: nothing moves. Not an error answer, which would fail the
        // whole take and lose what other members already gave up.
        warn!(%from, "items to give up exceed the frame limit; they stay here");
        if let Body::GlobalReply { result: Ok(Answer::Taken(items)), .. } = body {
            self.put_back(tenant, items);
        }
        self.send_answer(from, id, Ok(Answer::Taken(Vec::new())), out);
    }

    /// Sends `to` this node's answer to its read `id`; an answer too large for a frame
    /// becomes an error answer that says so (the receiver would refuse the frame).
    pub(super) fn send_answer(&self, to: &str, id: u128, result: Result<Answer, String>, out: &mut Vec<Action<W, H>>) {
        let mut body = Body::GlobalReply { id, result };
        if !wire::fits(&self.id, &body) {
            let result = Err(format!("the reply exceeds the frame limit of {} bytes", wire::MAX_FRAME));
            body = Body::GlobalReply { id, result };
        }
        self.send_to_member(to, body, out);
    }

    /// A member lacks a module this node pushed down: send its bytes, but only for a
    /// read in flight of that tenant that pushes the module down and still waits for
    /// that member. Any other request is refused and counted: module bytes are the
    /// tenant's, not the cluster's.
    pub(super) fn module_request(&self, from: &str, tenant: &str, hash: [u8; 32], out: &mut Vec<Action<W, H>>) {
        if self.store.tenant(tenant).is_none() {
            return self.unknown_tenant(from, tenant, "module request", out);
        }
        let bytes = match self.reads.pushes_down(tenant, &hash, from) {
            true => self.modules.bytes(tenant, &hash),
            false => None,
        };
        match bytes {
            Some(bytes) => {
                let tenant = tenant.to_string();
                self.send_to_member(from, Body::ModuleData { tenant, hash, bytes: bytes.to_vec() }, out)
            }
            None => {
                let n = super::bump(&self.stats.module_refused);
                warn!(%from, %tenant, hash = %hex::encode(hash), total = n, "refused a module request for no read of ours");
                let object = format!("module {} of {tenant}", hex::encode(&hash[..8]));
                out.push(Action::Refused { reason: "module refused", from: from.to_string(), object });
            }
        }
    }

    /// A module's bytes arrived: compile them if someone waits and they are the module.
    pub(super) fn module_data(
        &mut self,
        from: &str,
        tenant: String,
        hash: [u8; 32],
        bytes: Vec<u8>,
        out: &mut Vec<Action<W, H>>,
    ) {
        let Some(budget) = self.serving.awaiting.get(&(tenant.clone(), hash)).and_then(|w| w.first()).map(|a| a.budget)
        else {
            return self.reject(from, "module bytes nobody asked for");
        };
        if sha256(&bytes) != hash {
            self.reject(from, "module bytes that do not match their hash");
            let message = format!("the bytes {from} sent for module {} do not match its hash", hex::encode(hash));
            return self.module_installed(&tenant, hash, Err(message), out);
        }
        out.push(Action::Work(Work::Install { tenant, hash, budget, bytes }));
    }

    /// A fetched module compiled (or not): answer the reads that waited for it.
    pub(super) fn module_installed(
        &mut self,
        tenant: &str,
        hash: [u8; 32],
        result: Result<(), String>,
        out: &mut Vec<Action<W, H>>,
    ) {
        for a in self.serving.awaiting.remove(&(tenant.to_string(), hash)).unwrap_or_default() {
            match &result {
                Ok(()) => {
                    let (to, id, tenant, budget, items) = (a.from, a.id, tenant.to_string(), a.budget, a.items);
                    out.push(Action::Work(Work::PeerPartial { to, id, tenant, hash, budget, items }))
                }
                Err(e) => self.send_answer(&a.from, a.id, Err(e.clone()), out),
            }
        }
    }

    /// Fails the reads that waited too long for a module's bytes.
    pub(super) fn expire_awaiting(&mut self, now: u64, out: &mut Vec<Action<W, H>>) {
        let expired: Vec<(String, [u8; 32])> = self
            .serving
            .awaiting
            .iter()
            .filter(|(_, w)| w.iter().all(|a| now.saturating_sub(a.since) > MODULE_WAIT_MS))
            .map(|(k, _)| k.clone())
            .collect();
        for (tenant, hash) in expired {
            self.module_installed(&tenant, hash, Err("the module's bytes never arrived".into()), out);
        }
    }
}
