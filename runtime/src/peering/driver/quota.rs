//! The quotas a node's driver enforces per tenant: global reads in flight started on
//! this node (`reads`) and guest calls on the worker pool at once (`wasm_jobs`). Both
//! are refused with the quota's name and counted for that tenant only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::global::GlobalError;
use crate::peering::stats::Stats;
use crate::store::QuotaExceeded;
use crate::tenancy::Tenants;

/// Reads and guest calls in flight, by tenant.
#[derive(Debug, Default)]
pub(crate) struct Load {
    reads: HashMap<String, u64>,
    jobs: Arc<Mutex<HashMap<String, u64>>>,
}

/// A guest call admitted under `wasm_jobs`; dropping it ends the call's share.
#[derive(Debug)]
pub(crate) struct JobSlot {
    jobs: Arc<Mutex<HashMap<String, u64>>>,
    tenant: String,
}

impl Drop for JobSlot {
    fn drop(&mut self) {
        if let Some(n) = self.jobs.lock().unwrap().get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Load {
    /// Admits one more read of `tenant` (takes are not limited: they move the tenant's
    /// own state, and refusing one would stall its flows).
    pub(crate) fn start_read(
        &mut self,
        tenants: &Tenants,
        stats: &Stats,
        tenant: &str,
        take: bool,
    ) -> Result<(), GlobalError> {
        if take {
            return Ok(());
        }
        let n = self.reads.entry(tenant.to_string()).or_default();
        if let Some(limit) = tenants.quotas(tenant).and_then(|q| q.reads).filter(|&l| *n >= l) {
            stats.quota_refused(tenant, "reads");
            return Err(QuotaExceeded { quota: "reads", limit }.into());
        }
        *n += 1;
        Ok(())
    }

    /// A read of `tenant` ended.
    pub(crate) fn end_read(&mut self, tenant: &str, take: bool) {
        if let Some(n) = self.reads.get_mut(tenant).filter(|_| !take) {
            *n = n.saturating_sub(1);
        }
    }

    /// Admits one more guest call of `tenant` on the worker pool.
    pub(crate) fn start_job(&self, tenants: &Tenants, stats: &Stats, tenant: &str) -> Result<JobSlot, String> {
        let mut jobs = self.jobs.lock().unwrap();
        let n = jobs.entry(tenant.to_string()).or_default();
        if let Some(limit) = tenants.quotas(tenant).and_then(|q| q.wasm_jobs).filter(|&l| *n >= l) {
            stats.quota_refused(tenant, "wasm_jobs");
            return Err(format!("quota wasm_jobs of {limit} reached"));
        }
        *n += 1;
        Ok(JobSlot { jobs: self.jobs.clone(), tenant: tenant.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_the_quota_for_that_tenant_only() {
        let tenants = Tenants::parse("[tenants.a]\nreads = 1\nwasm_jobs = 1\n[tenants.b]\n", "t").unwrap();
        let (stats, mut load) = (Stats::default(), Load::default());
        load.start_read(&tenants, &stats, "a", false).unwrap();
        let e = load.start_read(&tenants, &stats, "a", false).unwrap_err();
        assert_eq!(e.to_string(), "quota reads of 1 reached");
        load.start_read(&tenants, &stats, "a", true).expect("a take is not limited");
        load.start_read(&tenants, &stats, "b", false).unwrap();
        load.start_read(&tenants, &stats, "b", false).expect("b has no reads quota");
        load.end_read("a", true);
        assert!(load.start_read(&tenants, &stats, "a", false).is_err(), "a take's end frees nothing");
        load.end_read("a", false);
        load.start_read(&tenants, &stats, "a", false).expect("room again");
        let slot = load.start_job(&tenants, &stats, "a").unwrap();
        assert!(load.start_job(&tenants, &stats, "a").unwrap_err().contains("wasm_jobs"));
        drop(slot);
        load.start_job(&tenants, &stats, "a").expect("the job ended");
        assert_eq!(stats.quota_refusals("a"), [("reads", 2), ("wasm_jobs", 1)]);
        assert!(stats.quota_refusals("b").is_empty());
    }
}
