//! The control server: what each operator request does, answered now or deferred to
//! a worker (loading modules, unloading the NF, leaving). The control socket itself is
//! the driver's; this decides the replies.

use std::time::Duration;

use tracing::info;

use crate::global::GlobalOptions;
use crate::pattern::Pattern;
use crate::peering::driver::{Command, Driver, HandoffWaiter, Waiter};
use crate::peering::proto::Input;
use crate::store::DEFAULT_TENANT;
use crate::wire::{ControlReply, ControlRequest};

impl Driver {
    /// Carries out one operator request from client `identity`.
    pub(crate) fn on_control(&mut self, identity: Vec<u8>, req: ControlRequest) {
        let tenant = self.store.tenant(DEFAULT_TENANT);
        let replace = matches!(req, ControlRequest::NfReplace { .. });
        if self.proto.handing_off() && matches!(req, ControlRequest::Set { .. } | ControlRequest::Del { .. }) {
            // The state is on its way to the other members: a write here now would stay
            // behind and be lost when the node exits.
            let reply = ControlReply::Error("this node is handing its state over and leaving; write elsewhere".into());
            return self.reply_control(identity, &reply);
        }
        let reply = match req {
            ControlRequest::Set { key, value } => match tenant.set(&key, value) {
                Ok(version) => ControlReply::Set(version),
                Err(e) => ControlReply::Error(e.to_string()),
            },
            ControlRequest::Get { key } => ControlReply::Value(tenant.get(&key).map(|v| (v.value, v.version))),
            ControlRequest::Del { key } => ControlReply::Deleted(tenant.del(&key)),
            ControlRequest::Members => ControlReply::Members(self.view.read().unwrap().clone()),
            ControlRequest::Stats => {
                let mut rows = self.stats.snapshot();
                rows.extend(self.nf_counters.snapshot());
                ControlReply::Stats(rows)
            }
            ControlRequest::ReducerList => ControlReply::Reducers(self.registry.list()),
            ControlRequest::NfStatus => ControlReply::Nf(self.nf.status().to_string()),
            ControlRequest::NfUnload => {
                // Off the I/O thread: the NF may be waiting on a global read through it.
                let nf = self.nf.clone();
                self.workers.submit(move || {
                    let reply = ControlReply::Nf(if nf.unload() { "unloaded" } else { "none" }.into());
                    Command::ControlDone { identity, reply }
                });
                return;
            }
            ControlRequest::Leave { timeout_ms } => {
                let (nf, timeout) = (self.nf.clone(), Duration::from_millis(timeout_ms));
                self.workers.submit(move || {
                    nf.unload();
                    Command::HandOff { timeout, waiter: HandoffWaiter::Control(identity) }
                });
                return;
            }
            ControlRequest::NfLoad { bytes, config } | ControlRequest::NfReplace { bytes, config } => {
                // Compiling and building the instance can take a while: off the I/O thread.
                let nf = self.nf.clone();
                self.workers.submit(move || {
                    let done = if replace { nf.replace(&bytes, &config) } else { nf.load(&bytes, &config) };
                    let reply = match done {
                        Ok(what) => ControlReply::Nf(what.into()),
                        Err(e) => ControlReply::Error(e.to_string()),
                    };
                    Command::ControlDone { identity, reply }
                });
                return;
            }
            ControlRequest::ReducerUnload { name } => ControlReply::Unloaded(self.registry.unload(&name)),
            ControlRequest::ReducerLoad { name, bytes, limits } => {
                // Compiling can take a while: off the I/O thread.
                let registry = self.registry.clone();
                self.workers.submit(move || {
                    let limits = limits.apply(registry.host().limits());
                    let reply = match registry.load(&name, bytes, Some(limits)) {
                        Ok(info) => {
                            info!(reducer = %info.name, hash = %info.hash, "reducer loaded");
                            ControlReply::Loaded(info)
                        }
                        Err(e) => ControlReply::Error(e.to_string()),
                    };
                    Command::ControlDone { identity, reply }
                });
                return;
            }
            ControlRequest::Global { pattern, reducer, timeout_ms, consistency, remote } => {
                let parsed = self
                    .registry
                    .resolve(&reducer)
                    .map_err(|e| e.to_string())
                    .and_then(|r| Pattern::new(&pattern).map(|p| (r, p)).map_err(|e| e.to_string()));
                match parsed {
                    Ok((reducer, pattern)) => {
                        let timeout = Duration::from_millis(timeout_ms);
                        let options = GlobalOptions { timeout, consistency, remote, take: false };
                        self.feed(Input::Read { pattern, reducer, options, waiter: Waiter::Control(identity) });
                        return;
                    }
                    Err(e) => ControlReply::Error(e),
                }
            }
        };
        self.reply_control(identity, &reply);
    }
}
