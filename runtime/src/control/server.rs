//! The control server: what each operator request does, answered now or deferred to
//! a worker (loading modules, unloading the NF, leaving). The control socket itself is
//! the driver's; this decides the replies.

use std::time::Duration;

use tracing::{info, warn};

use crate::control::auth::{AuthFailure, Principal};
use crate::global::GlobalOptions;
use crate::pattern::Pattern;
use crate::peering::driver::{Command, Driver, HandoffWaiter, Waiter};
use crate::peering::proto::Input;
use crate::peering::stats::bump;
use crate::reduce::registry::LoadError;
use crate::store::{DEFAULT_TENANT, QuotaExceeded, StoreError};
use crate::wire::{ControlCall, ControlReply, ControlRequest};

/// A request refused before it ran: counted, logged in the security log, answered.
struct Refused {
    reason: &'static str,
    message: String,
}

/// What kind of request this is, for the security log (never its arguments).
fn kind(req: &ControlRequest) -> &'static str {
    match req {
        ControlRequest::Set { .. } => "set",
        ControlRequest::Get { .. } => "get",
        ControlRequest::Del { .. } => "del",
        ControlRequest::Global { .. } => "global",
        ControlRequest::Members => "members",
        ControlRequest::ReducerLoad { .. } => "reducer load",
        ControlRequest::ReducerUnload { .. } => "reducer unload",
        ControlRequest::ReducerList => "reducer list",
        ControlRequest::NfLoad { .. } => "nf load",
        ControlRequest::NfReplace { .. } => "nf replace",
        ControlRequest::NfUnload => "nf unload",
        ControlRequest::NfStatus => "nf status",
        ControlRequest::Stats => "stats",
        ControlRequest::SecurityLog => "security log",
        ControlRequest::Leave { .. } => "leave",
    }
}

impl Driver {
    /// Who sends `call`, and the tenant it acts in; or why it is refused. Deny by
    /// default: with a credentials file every request needs a credential it accepts,
    /// a tenant acts only in its own tenant, and node-wide requests are the admin's.
    fn authorize(&mut self, call: &ControlCall) -> Result<(Principal, String), Refused> {
        let principal = match &mut self.credentials {
            // No credentials file: a loopback-only control socket, the admin's.
            None => Principal::Admin,
            Some(credentials) => {
                credentials.refresh();
                credentials.check(call.credential.as_ref()).map_err(|failure| Refused {
                    reason: "unauthenticated",
                    message: match failure {
                        AuthFailure::Missing => {
                            "this node requires a credential (--credential FILE or ESTATE_CREDENTIAL)"
                        }
                        AuthFailure::Wrong => "credential not accepted",
                    }
                    .into(),
                })?
            }
        };
        let forbidden = |message: String| Refused { reason: "forbidden", message };
        let tenant = match (&principal, &call.tenant) {
            (Principal::Admin, t) => t.clone().unwrap_or_else(|| DEFAULT_TENANT.to_string()),
            (Principal::Tenant(own), None) => own.clone(),
            (Principal::Tenant(own), Some(t)) if t == own => own.clone(),
            (Principal::Tenant(own), Some(_)) => {
                return Err(forbidden(format!("tenant:{own} may act only in tenant {own}")));
            }
        };
        let admin_only = matches!(
            call.request,
            ControlRequest::Members | ControlRequest::Leave { .. } | ControlRequest::SecurityLog
        );
        if admin_only && principal != Principal::Admin {
            return Err(forbidden(format!("{} is the admin's", kind(&call.request))));
        }
        let nf = matches!(
            call.request,
            ControlRequest::NfLoad { .. }
                | ControlRequest::NfReplace { .. }
                | ControlRequest::NfUnload
                | ControlRequest::NfStatus
        );
        if nf && principal != Principal::Admin && tenant != self.nf_tenant {
            return Err(forbidden("this node's NF place belongs to another tenant".into()));
        }
        let node_wide = principal == Principal::Admin && call.tenant.is_none();
        let tenant_free = admin_only || (node_wide && matches!(call.request, ControlRequest::Stats));
        if !tenant_free && !self.tenants.has(&tenant) {
            return Err(Refused { reason: "unknown tenant", message: format!("unknown tenant {tenant:?}") });
        }
        Ok((principal, tenant))
    }

    /// Carries out one operator request from client `identity`.
    pub(crate) fn on_control(&mut self, identity: Vec<u8>, call: ControlCall) {
        let (principal, tenant_name) = match self.authorize(&call) {
            Ok(who) => who,
            Err(Refused { reason, message }) => {
                // One counter per reason.
                let counter = match reason {
                    "unauthenticated" => &self.stats.control_unauthenticated,
                    "unknown tenant" => &self.stats.unknown_tenant,
                    _ => &self.stats.control_forbidden,
                };
                let n = bump(counter);
                let who = call.credential.as_ref().map_or("-", |c| c.principal.as_str());
                warn!(principal = who, request = kind(&call.request), reason, total = n, "refused a control request");
                let object = format!("{} in {}", kind(&call.request), call.tenant.as_deref().unwrap_or("-"));
                self.security.record(reason, who, &object);
                return self.reply_control(identity, &ControlReply::Error(format!("refused: {message}")));
            }
        };
        let req = call.request;
        let node_wide = principal == Principal::Admin && call.tenant.is_none();
        // Authorized requests that act in a tenant have one; node-wide ones need none.
        let tenant = self.store.tenant(&tenant_name);
        let unknown = || ControlReply::Error(format!("unknown tenant {tenant_name:?}"));
        let quotas = self.tenants.quotas(&tenant_name).cloned().unwrap_or_default();
        let replace = matches!(req, ControlRequest::NfReplace { .. });
        if self.proto.handing_off() && matches!(req, ControlRequest::Set { .. } | ControlRequest::Del { .. }) {
            // The state is on its way to the other members: a write here now would stay
            // behind and be lost when the node exits.
            let reply = ControlReply::Error("this node is handing its state over and leaving; write elsewhere".into());
            return self.reply_control(identity, &reply);
        }
        let reply = match req {
            ControlRequest::Set { key, value } => match tenant.as_ref().map(|t| t.set(&key, value)) {
                None => unknown(),
                Some(Ok(version)) => ControlReply::Set(version),
                Some(Err(e)) => {
                    if let StoreError::Quota(QuotaExceeded { quota, .. }) = &e {
                        self.security.record(&format!("quota {quota}"), &principal.to_string(), &tenant_name);
                    }
                    ControlReply::Error(e.to_string())
                }
            },
            ControlRequest::Get { key } => match &tenant {
                None => unknown(),
                Some(t) => ControlReply::Value(t.get(&key).map(|v| (v.value, v.version))),
            },
            ControlRequest::Del { key } => tenant.map_or_else(unknown, |t| ControlReply::Deleted(t.del(&key))),
            ControlRequest::Members => ControlReply::Members(self.view.read().unwrap().clone()),
            ControlRequest::Stats if node_wide => ControlReply::Stats(self.node_stats()),
            ControlRequest::Stats => ControlReply::Stats(self.tenant_stats(&tenant_name, true)),
            ControlRequest::SecurityLog => ControlReply::SecurityLog(self.security.entries()),
            ControlRequest::ReducerList => ControlReply::Reducers(self.registry.list(&tenant_name)),
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
            ControlRequest::ReducerUnload { name } => ControlReply::Unloaded(self.registry.unload(&tenant_name, &name)),
            ControlRequest::ReducerLoad { name, bytes, limits } => {
                // Compiling can take a while: off the I/O thread.
                let (registry, stats) = (self.registry.clone(), self.stats.clone());
                self.workers.submit(move || {
                    let limits = limits.apply(registry.host().limits());
                    let loaded = registry.load(&tenant_name, &quotas, &name, bytes, Some(limits));
                    if let Err(LoadError::Quota(QuotaExceeded { quota, .. })) = &loaded {
                        stats.quota_refused(&tenant_name, quota);
                    }
                    let reply = match loaded {
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
                    .resolve(&tenant_name, &reducer)
                    .map_err(|e| e.to_string())
                    .and_then(|r| Pattern::new(&pattern).map(|p| (r, p)).map_err(|e| e.to_string()));
                match parsed {
                    Ok((reducer, pattern)) => {
                        let timeout = Duration::from_millis(timeout_ms);
                        let options = GlobalOptions { timeout, consistency, remote, take: false };
                        let waiter = Waiter::Control(identity);
                        self.feed(Input::Read { tenant: tenant_name, pattern, reducer, options, waiter });
                        return;
                    }
                    Err(e) => ControlReply::Error(e),
                }
            }
        };
        self.reply_control(identity, &reply);
    }
}

impl Driver {
    /// Every counter of the node (the admin's `stats`).
    fn node_stats(&self) -> Vec<(String, u64)> {
        let mut rows = self.stats.snapshot();
        rows.extend(self.nf_counters.snapshot());
        for name in self.tenants.names() {
            // The NF's counters are in the node's rows already.
            let of_tenant = self.tenant_stats(name, false);
            rows.extend(of_tenant.into_iter().map(|(k, v)| (format!("tenant.{name}.{k}"), v)));
        }
        rows
    }

    /// One tenant's counters on this node: its items and bytes, what its quotas
    /// refused, its reducers and modules, and (`with_nf`) its NF's counters if it owns
    /// the NF place.
    fn tenant_stats(&self, tenant: &str, with_nf: bool) -> Vec<(String, u64)> {
        let mut rows = Vec::new();
        if let Some(t) = self.store.tenant(tenant) {
            rows.push(("keys".into(), t.len() as u64));
            rows.push(("bytes".into(), t.bytes()));
            rows.extend(t.refusals().map(|(quota, n)| (format!("refused.{quota}"), n)));
        }
        rows.extend(self.stats.quota_refusals(tenant).into_iter().map(|(quota, n)| (format!("refused.{quota}"), n)));
        let (modules, module_bytes) = self.registry.cached(tenant);
        rows.push(("reducers".into(), self.registry.loaded(tenant) as u64));
        rows.push(("modules".into(), modules as u64));
        rows.push(("module_bytes".into(), module_bytes as u64));
        if with_nf && tenant == self.nf_tenant {
            rows.extend(self.nf_counters.snapshot());
        }
        rows
    }
}
