use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::Duration;

use estate_guest::{Item, Phase};
use tracing::{error, warn};

use super::*;
use crate::global::Answer;
use crate::global::{Completion, Gathered, GlobalError, GlobalOptions, ReplyOutcome};
use crate::pattern::Pattern;
use crate::reduce::registry::{ReducerRef, Registry};
use crate::reduce::{self, Reduced};
use crate::store::{DEFAULT_TENANT, Moving};
use crate::wire::{Body, GlobalAnswer, RemoteReducer};

/// A read in flight: who waits, and how its answers are reduced.
pub(crate) struct ReadCtx {
    pub(crate) waiter: Waiter,
    pub(crate) reducer: ReducerRef,
    pub(crate) remote: bool,
}

/// Flattens the answers of a fetch-all read into items.
pub(crate) fn items_of(parts: Vec<Answer>) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    for part in parts {
        match part {
            Answer::Items(mut i) => items.append(&mut i),
            Answer::Taken(taken) => items.extend(taken.into_iter().map(|m| m.item)),
            _ => return Err("a member sent a partial where items were asked for".into()),
        }
    }
    Ok(items)
}

impl Driver {
    pub(crate) fn on_answer(&mut self, id: u128, from: &str, result: Result<Answer, String>) {
        // A take's items arriving after its deadline were deleted at the sender: they
        // are kept here rather than lost.
        let late = match &result {
            Ok(Answer::Taken(items)) if !items.is_empty() && !self.reads.is_outstanding(id) => Some(items.clone()),
            _ => None,
        };
        if let Some(items) = late {
            warn!(%from, items = items.len(), "a member's take answer arrived late; keeping its items");
            return self.keep_taken(items);
        }
        match self.reads.reply(id, from, result) {
            ReplyOutcome::Rejected => self.reject(from, "a reply to no outstanding read"),
            ReplyOutcome::Recorded => {}
            ReplyOutcome::Complete(done) => self.finish_read(done),
        }
    }

    pub(crate) fn start_read(
        &mut self,
        pattern: &Pattern,
        reducer: ReducerRef,
        options: GlobalOptions,
        waiter: Waiter,
    ) {
        if options.remote && options.take {
            return self.notify(waiter, Err(GlobalError::Invalid("take cannot be combined with push-down".into())));
        }
        if options.remote && !reducer.combinable() {
            let message = format!(
                "reducer {} is not combinable, so it cannot be pushed down to the peers; run it without --remote",
                reducer.name()
            );
            return self.notify(waiter, Err(GlobalError::Invalid(message)));
        }
        let id: u128 = rand::random();
        let mut asked: BTreeSet<String> = self.membership.live().map(|(id, _)| id.clone()).collect();
        let remote = match (&reducer, options.remote) {
            (_, false) => None,
            (ReducerRef::Builtin(b), true) => Some(RemoteReducer::Builtin(*b)),
            (ReducerRef::Wasm(l), true) => Some(RemoteReducer::Wasm(*l.module.hash())),
        };
        for member in &asked {
            let body = Body::GlobalRequest {
                id,
                tenant: DEFAULT_TENANT.to_string(),
                pattern: pattern.source().to_string(),
                reducer: remote.clone(),
                take: options.take,
            };
            self.send_to_member(member, body);
        }
        asked.insert(self.id.clone());
        let deadline = self.now() + options.timeout.as_millis() as u64;
        let ctx = ReadCtx { waiter, reducer: reducer.clone(), remote: options.remote };
        self.reads.start(id, options.consistency, asked, deadline, ctx);
        // This node answers its own read like any member; a Wasm partial is computed on
        // a worker and arrives as a command.
        match (reducer, options.remote) {
            // A take leaves this node's own items where they are.
            (_, false) if options.take => self.on_answer(id, &self.id.clone(), Ok(Answer::Taken(Vec::new()))),
            (_, false) => {
                let local = self.store.existing_tenant(DEFAULT_TENANT).map(|t| t.matching(pattern)).unwrap_or_default();
                self.on_answer(id, &self.id.clone(), Ok(Answer::Items(local)));
            }
            (ReducerRef::Builtin(b), true) => {
                let result = self.builtin_partial(DEFAULT_TENANT, pattern, b);
                self.on_answer(id, &self.id.clone(), result);
            }
            (ReducerRef::Wasm(loaded), true) => {
                let local = self.encoded_items(DEFAULT_TENANT, pattern);
                let host = self.registry.host().clone();
                self.workers.submit(move || {
                    let result = host
                        .reduce_encoded(&loaded.module, &local, Phase::Items)
                        .map(Answer::Wasm)
                        .map_err(|e| e.to_string());
                    Command::LocalAnswer { id, result }
                });
            }
        }
    }

    /// Reduces a finished read's answers and tells its waiter (via a worker for Wasm).
    pub(crate) fn finish_read(&mut self, (ctx, gathered): Completion<ReadCtx, Answer>) {
        let Gathered { answered, missing, parts } = match gathered {
            Ok(g) => g,
            Err(e) => return self.notify(ctx.waiter, Err(e)),
        };
        if let Waiter::Take(tx) = ctx.waiter {
            let mut taken = Vec::new();
            for part in parts {
                match part {
                    Answer::Taken(mut items) => taken.append(&mut items),
                    _ => warn!("a member answered a take with something else"),
                }
            }
            if let Err(mpsc::SendError(Ok(items))) = tx.send(Ok(taken)) {
                // The taker gave up waiting: the items are this node's now all the same.
                self.keep_taken(items);
            }
            return;
        }
        let (name, remote) = (ctx.reducer.name().to_string(), ctx.remote);
        let answer = move |result| GlobalAnswer { reducer: name, remote, result, answered, missing };
        match ctx.reducer.clone() {
            ReducerRef::Builtin(b) => {
                let reduced = if ctx.remote {
                    let mut partials = Vec::new();
                    for part in parts {
                        match part {
                            Answer::Builtin(p) => partials.push(p),
                            _ => {
                                let e =
                                    GlobalError::Invalid("a member sent items where a partial was asked for".into());
                                return self.notify(ctx.waiter, Err(e));
                            }
                        }
                    }
                    reduce::combine(b, partials)
                } else {
                    match items_of(parts) {
                        Ok(items) => reduce::reduce(b, items),
                        Err(e) => return self.notify(ctx.waiter, Err(GlobalError::Invalid(e))),
                    }
                };
                let result = reduced.map(answer).map_err(GlobalError::from);
                self.notify(ctx.waiter, result);
            }
            ReducerRef::Wasm(loaded) => {
                let host = self.registry.host().clone();
                let (waiter, name) = (ctx.waiter, loaded.name.clone());
                self.workers.submit(move || {
                    let run = || -> Result<Option<Item>, String> {
                        if remote {
                            let mut partials = Vec::new();
                            for part in parts {
                                match part {
                                    Answer::Wasm(Some(item)) => partials.push(item),
                                    Answer::Wasm(None) => {}
                                    _ => return Err("a member sent items where a partial was asked for".into()),
                                }
                            }
                            if partials.is_empty() {
                                return Ok(None);
                            }
                            let combined =
                                host.reduce(&loaded.module, &partials, Phase::Partials).map_err(|e| e.to_string())?;
                            match combined {
                                Some(item) => host.finish(&loaded.module, item).map_err(|e| e.to_string()),
                                None => Ok(None),
                            }
                        } else {
                            host.reduce_all(&loaded.module, &items_of(parts)?).map_err(|e| e.to_string())
                        }
                    };
                    let result = match run() {
                        Ok(Some(item)) => Ok(answer(Reduced::Item(item))),
                        Ok(None) => Ok(answer(Reduced::Nothing)),
                        Err(message) => {
                            Err(GlobalError::Member { member: format!("reducer {name} on this node"), message })
                        }
                    };
                    Command::Finished { waiter, result }
                });
            }
        }
    }

    /// Stores items given up to this node (by a take nobody waits for any more).
    pub(crate) fn keep_taken(&mut self, items: Vec<Moving>) {
        // Handing over: they go along with the rest.
        if self.handoff.is_some() {
            return self.hand_over(DEFAULT_TENANT, items);
        }
        let tenant = self.store.tenant(DEFAULT_TENANT);
        for moving in items {
            let key = moving.item.key.clone();
            if let Err(e) = tenant.merge(moving) {
                // Only once the node has handed everything over and is leaving.
                error!(%key, "a taken item arrived too late to keep, and is lost: {e}");
            }
        }
    }
}

/// A global read on behalf of a library call or an NF.
pub(crate) fn global_read(
    inbox: &Inbox,
    registry: &Registry,
    pattern: &str,
    reducer: &str,
    options: GlobalOptions,
) -> GlobalResult {
    let pattern = Pattern::new(pattern).map_err(|e| GlobalError::Invalid(e.to_string()))?;
    let reducer = registry.resolve(reducer).map_err(GlobalError::Invalid)?;
    let (tx, rx) = mpsc::channel();
    inbox.send(Command::Global { pattern, reducer, options, reply: tx })?;
    // The I/O thread completes every read at its deadline (a final Wasm reduction runs
    // under its own wall-time limit); the grace only covers a dead thread.
    rx.recv_timeout(options.timeout + Duration::from_secs(10)).map_err(|_| GlobalError::Shutdown)?
}
