//! State backends of the NF place: where an NF's host calls (get, set, del,
//! counter_add, global reads, a moved flow's state) go.
//!
//! - `estate` (the default): the node's own store, global reads over the peering.
//! - `none`: the node's own store, nothing shared (global reads refused, moved flows
//!   start from nothing): the paper's baseline.
//! - `redis://HOST:PORT`: every state access is a request to one Redis server shared by
//!   all instances (the paper's *centralmem*).
//! - `redis-cluster://HOST:PORT,HOST:PORT,…`: the same against a Redis Cluster (the
//!   paper's *clustermem*), keys spread over its nodes by hash slot.
//!
//! The NF does not know which one it runs on: the same Wasm module runs unchanged on
//! each. `docs/paper.md` says how each Redis command maps to a host call.
//!
//! What a Redis backend does not give: the tenant's `keys` and `bytes` quotas bound the
//! node's store only (a Redis server is bounded by its own `maxmemory`); tenants are
//! kept apart by key prefix on a server the operator chose for them, not by Redis ACLs;
//! a global read's deadline is the connection's response timeout (5 s), not the one the
//! NF asked for; and a cluster's masters are found once, at start (no resharding while
//! the node runs).

mod codec;
mod redis;
pub mod servers;

use std::fmt;
use std::str::FromStr;

pub use self::redis::{RedisError, RedisState};

/// Where an NF's state lives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StateBackend {
    /// The node's store, shared with the cluster through estate.
    #[default]
    Estate,
    /// The node's store, shared with nobody.
    None,
    /// One central Redis server (`redis://HOST:PORT`).
    Redis(String),
    /// A Redis Cluster, reached through any of these nodes (`redis://HOST:PORT` each).
    RedisCluster(Vec<String>),
}

impl FromStr for StateBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<StateBackend, String> {
        let expected = "expected estate, none, redis://HOST:PORT or redis-cluster://HOST:PORT[,HOST:PORT…]";
        match s {
            "estate" => return Ok(StateBackend::Estate),
            "none" => return Ok(StateBackend::None),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix("redis-cluster://") {
            let nodes: Vec<String> =
                rest.split(',').filter(|n| !n.is_empty()).map(|n| format!("redis://{n}")).collect();
            if nodes.is_empty() {
                return Err(format!("state backend {s:?}: no cluster node given; {expected}"));
            }
            return Ok(StateBackend::RedisCluster(nodes));
        }
        if s.starts_with("redis://") && s.len() > "redis://".len() {
            return Ok(StateBackend::Redis(s.to_string()));
        }
        Err(format!("state backend {s:?}: {expected}"))
    }
}

impl fmt::Display for StateBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateBackend::Estate => f.write_str("estate"),
            StateBackend::None => f.write_str("none"),
            StateBackend::Redis(url) => f.write_str(url),
            StateBackend::RedisCluster(nodes) => {
                let hosts: Vec<&str> = nodes.iter().map(|n| n.trim_start_matches("redis://")).collect();
                write!(f, "redis-cluster://{}", hosts.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_and_print_back() {
        for text in ["estate", "none", "redis://127.0.0.1:6379", "redis-cluster://127.0.0.1:7000,127.0.0.1:7001"] {
            let backend: StateBackend = text.parse().unwrap();
            assert_eq!(backend.to_string(), text);
        }
        let cluster: StateBackend = "redis-cluster://a:1,b:2".parse().unwrap();
        assert_eq!(cluster, StateBackend::RedisCluster(vec!["redis://a:1".into(), "redis://b:2".into()]));
        for bad in ["", "redis://", "redis-cluster://", "redis-cluster://,", "memcached://x:1", "Estate"] {
            let error = bad.parse::<StateBackend>().unwrap_err();
            assert!(error.contains("expected estate"), "{bad:?}: {error}");
        }
    }
}
