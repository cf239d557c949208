use std::convert::Infallible;

use estate_guest::Phase;
use estate_guest::codec::ItemsWriter;
use tracing::{info, warn};

use super::*;
use crate::global::Answer;
use crate::pattern::Pattern;
use crate::reduce::{Builtin, PartialBuilder};
use crate::wire::{self, Body, MAX_FRAME, RemoteReducer};

/// A peer's pushed-down read, waiting for the module's bytes.
/// How long a pushed-down read waits for a module's bytes.
const MODULE_WAIT_MS: u64 = 30_000;
/// Compiled patterns of recent peer requests kept.
const PATTERN_CACHE: usize = 256;

pub(crate) struct AwaitingModule {
    pub(crate) from: String,
    pub(crate) id: u128,
    /// The matching items, already in the guest encoding.
    pub(crate) items: Vec<u8>,
    pub(crate) since: u64,
}

impl Driver {
    /// Answers a member's global read: its items, or (push-down) their partial.
    pub(crate) fn serve(
        &mut self,
        from: String,
        id: u128,
        tenant: &str,
        pattern: &str,
        reducer: Option<RemoteReducer>,
        take: bool,
    ) {
        let pattern = match self.pattern(pattern) {
            Ok(p) => p,
            Err(e) => return self.send_answer(&from, id, Err(e)),
        };
        if take {
            if reducer.is_some() {
                return self.send_answer(&from, id, Err("take cannot be pushed down".into()));
            }
            let store = self.store.tenant(tenant);
            let items = store.take_matching(&pattern);
            info!(%from, items = items.len(), "items taken over by a member");
            let reply = self.envelope(Body::GlobalReply { id, result: Ok(Answer::Taken(items)) });
            let frame = wire::encode(&reply);
            if frame.len() > MAX_FRAME {
                // Too large to send: nothing moves. Not an error answer, which would
                // fail the whole take and lose what other members already gave up.
                warn!(%from, size = frame.len(), "items to give up exceed the frame limit; they stay here");
                if let Body::GlobalReply { result: Ok(Answer::Taken(items)), .. } = reply.body {
                    for moving in items {
                        let _ = store.put_back(moving);
                    }
                }
                return self.send_answer(&from, id, Ok(Answer::Taken(Vec::new())));
            }
            return self.send_frame_to_member(&from, frame);
        }
        if let Some(RemoteReducer::Builtin(b)) = reducer {
            let result = self.builtin_partial(tenant, &pattern, b);
            return self.send_answer(&from, id, result);
        }
        match reducer {
            None => {
                let items = self.store.existing_tenant(tenant).map(|t| t.matching(&pattern)).unwrap_or_default();
                self.send_answer(&from, id, Ok(Answer::Items(items)));
            }
            Some(RemoteReducer::Builtin(_)) => unreachable!("handled above"),
            Some(RemoteReducer::Wasm(hash)) => match self.registry.module(&hash) {
                Some(_) => {
                    let items = self.encoded_items(tenant, &pattern);
                    self.reduce_for_peer(from, id, hash, items);
                }
                None => {
                    let items = self.encoded_items(tenant, &pattern);
                    let first = !self.awaiting.contains_key(&hash);
                    let since = self.now();
                    self.awaiting.entry(hash).or_default().push(AwaitingModule {
                        from: from.clone(),
                        id,
                        items,
                        since,
                    });
                    if first {
                        self.send_to_member(&from, Body::ModuleRequest { hash });
                    }
                }
            },
        }
    }

    /// This node's partial of a pushed-down built-in, straight from the store.
    pub(crate) fn builtin_partial(&self, tenant: &str, pattern: &Pattern, reducer: Builtin) -> Result<Answer, String> {
        let mut builder = PartialBuilder::new(reducer, &self.id);
        if let Some(t) = self.store.existing_tenant(tenant) {
            t.for_each_matching(pattern, |key, v| builder.push(key, &v.value, v.writer.name(), v.version))
                .map_err(|e| e.to_string())?;
        }
        Ok(Answer::Builtin(builder.finish()))
    }

    /// The matching items of `tenant`, encoded for a guest straight from the store.
    pub(crate) fn encoded_items(&self, tenant: &str, pattern: &Pattern) -> Vec<u8> {
        let mut writer = ItemsWriter::default();
        if let Some(t) = self.store.existing_tenant(tenant) {
            let pushed: Result<(), Infallible> = t.for_each_matching(pattern, |key, v| {
                writer.push(key, &v.value, &self.id, v.writer.name(), v.version);
                Ok(())
            });
            let Ok(()) = pushed;
        }
        writer.finish()
    }

    pub(crate) fn reduce_for_peer(&self, to: String, id: u128, hash: [u8; 32], items: Vec<u8>) {
        let registry = self.registry.clone();
        self.workers.submit(move || {
            let result = match registry.module(&hash) {
                Some(module) => registry
                    .host()
                    .reduce_encoded(&module, &items, Phase::Items)
                    .map(Answer::Wasm)
                    .map_err(|e| e.to_string()),
                None => Err("the module was evicted before it ran".into()),
            };
            Command::PeerAnswer { to, id, result }
        });
    }

    pub(crate) fn send_answer(&mut self, to: &str, id: u128, result: Result<Answer, String>) {
        let mut frame = wire::encode(&self.envelope(Body::GlobalReply { id, result }));
        // Never send a frame the other side will refuse: say so instead.
        if frame.len() > MAX_FRAME {
            let result = Err(format!("reply of {} bytes exceeds the frame limit of {MAX_FRAME}", frame.len()));
            frame = wire::encode(&self.envelope(Body::GlobalReply { id, result }));
        }
        self.send_frame_to_member(to, frame);
    }

    pub(crate) fn expire_awaiting(&mut self, now: u64) {
        let expired: Vec<[u8; 32]> = self
            .awaiting
            .iter()
            .filter(|(_, w)| w.iter().all(|a| now.saturating_sub(a.since) > MODULE_WAIT_MS))
            .map(|(h, _)| *h)
            .collect();
        for hash in expired {
            for a in self.awaiting.remove(&hash).unwrap_or_default() {
                self.send_answer(&a.from, a.id, Err("the module's bytes never arrived".into()));
            }
        }
    }

    pub(crate) fn pattern(&mut self, pattern: &str) -> Result<Pattern, String> {
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
