//! The Redis backends (*centralmem*, *clustermem*): every host call of the NF is a
//! request to Redis, over the maintained `redis` crate (its cluster client routes a
//! single-key command to the slot's owner).
//!
//! | host call            | central server                 | cluster                          |
//! |----------------------|--------------------------------|----------------------------------|
//! | `counter_add`        | `INCRBY`                       | `INCRBY` at the slot's owner     |
//! | `get`, `set`, `del`  | `GET`, `SET`, `DEL`            | the same, at the slot's owner    |
//! | global read          | `SCAN MATCH` + `MGET` per page | per master: `SCAN MATCH` + a pipeline of `GET`s per page |
//! | moved flow (`take`)  | global read's scan + `GETDEL` + `INCRBY`/`SET` | the same              |
//!
//! Per-packet calls are not pipelined: each returns a value the guest may act on
//! before its next call (the `ids` NF compares a flow's new match count with its
//! threshold), so the NF waits for each. A global read pipelines its fetches: one
//! round trip per scanned page (up to [`SCAN_PAGE`] keys) and server. Multi-key `MGET`
//! is refused by a cluster across slots, hence the `GET` pipeline there. Redis has no
//! regular expressions: the scan narrows by glob as far as the pattern allows
//! ([`super::codec::scan_glob`]) and the pattern filters what comes back. Redis keeps
//! no versions: items read from it carry version 0, written by the instance whose key
//! it is.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use estate_guest::{Item, Value};
use redis::cluster::ClusterClientBuilder;
use redis::{Client, Connection, ConnectionLike};
use tracing::warn;

use super::StateBackend;
use super::codec::{decode, encode, redis_key, scan_glob, split_key};
use crate::nf::env::{NfEnv, one_item};
use crate::nf::{FlowState, NfCounters};
use crate::pattern::Pattern;
use crate::reduce::{Builtin, reduce};
use crate::wasm::NfState;

/// Keys asked for per `SCAN` step (its `COUNT`), and fetched per round trip.
pub const SCAN_PAGE: usize = 1000;
/// Deadline of connecting to a Redis server and of each answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a Redis backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// A server did not answer (or refused).
    #[error("redis at {at}: {source}")]
    Connect {
        /// The server's address.
        at: String,
        /// What the client said.
        source: redis::RedisError,
    },
    /// The instance's id or tenant cannot be part of a Redis key.
    #[error("{0:?} cannot be part of a Redis key: no ':', '*', '?', '[', ']' or '\\' allowed")]
    BadName(String),
    /// The cluster answered, but not as a Redis Cluster does.
    #[error("redis cluster: {0}")]
    Cluster(String),
    /// [`RedisState::connect`] was given a backend that is not Redis.
    #[error("state backend {0} is not a Redis backend")]
    NotRedis(String),
}

/// An NF's state in Redis: a central server or a cluster.
pub struct RedisState {
    tenant: String,
    node: String,
    /// Single-key requests: to the server, or routed to the slot's owner.
    keys: Mutex<Box<dyn ConnectionLike + Send>>,
    /// One connection per server holding keys (the central server; every cluster
    /// master), for scans and their fetches.
    shards: Vec<Mutex<Connection>>,
    cluster: bool,
    counters: Arc<NfCounters>,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("node", &self.node)
            .field("cluster", &self.cluster)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

fn connect(url: &str) -> Result<Connection, RedisError> {
    let error = |source| RedisError::Connect { at: url.to_string(), source };
    let connection = Client::open(url).and_then(|c| c.get_connection_with_timeout(TIMEOUT)).map_err(error)?;
    connection.set_read_timeout(Some(TIMEOUT)).map_err(error)?;
    connection.set_write_timeout(Some(TIMEOUT)).map_err(error)?;
    Ok(connection)
}

/// The masters of the cluster that `seed` belongs to, as `redis://HOST:PORT`, from
/// `CLUSTER NODES`.
fn masters(seed: &mut Connection, at: &str) -> Result<Vec<String>, RedisError> {
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(seed)
        .map_err(|source| RedisError::Connect { at: at.to_string(), source })?;
    let mut found = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(address), Some(flags)) = (fields.get(1), fields.get(2)) else { continue };
        if flags.split(',').any(|f| f == "master") && !flags.contains("fail") {
            let host_port = address.split(['@', ',']).next().unwrap_or_default();
            found.push(format!("redis://{host_port}"));
        }
    }
    if found.is_empty() {
        return Err(RedisError::Cluster(format!("{at} lists no master in CLUSTER NODES")));
    }
    Ok(found)
}

fn check_name(name: &str) -> Result<(), RedisError> {
    match name.is_empty() || name.contains([':', '*', '?', '[', ']', '\\']) {
        true => Err(RedisError::BadName(name.to_string())),
        false => Ok(()),
    }
}

impl RedisState {
    /// Connects instance `node` of `tenant` to `backend` (a Redis one); counts into
    /// `counters` (global reads and their time, refused requests).
    pub fn connect(
        backend: &StateBackend,
        tenant: &str,
        node: &str,
        counters: Arc<NfCounters>,
    ) -> Result<RedisState, RedisError> {
        check_name(tenant)?;
        check_name(node)?;
        let (keys, shards, cluster): (Box<dyn ConnectionLike + Send>, _, _) = match backend {
            StateBackend::Redis(url) => (Box::new(connect(url)?), vec![connect(url)?], false),
            StateBackend::RedisCluster(seeds) => {
                let seed = seeds.first().ok_or_else(|| RedisError::Cluster("no seed node".into()))?;
                let masters = masters(&mut connect(seed)?, seed)?;
                let client = ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(TIMEOUT)
                    .response_timeout(TIMEOUT)
                    .build()
                    .and_then(|c| c.get_connection())
                    .map_err(|source| RedisError::Connect { at: seed.clone(), source })?;
                let shards = masters.iter().map(|m| connect(m)).collect::<Result<Vec<_>, _>>()?;
                (Box::new(client), shards, true)
            }
            other => return Err(RedisError::NotRedis(other.to_string())),
        };
        let shards = shards.into_iter().map(Mutex::new).collect();
        Ok(RedisState { tenant: tenant.into(), node: node.into(), keys: Mutex::new(keys), shards, cluster, counters })
    }

    fn key(&self, key: &str) -> String {
        redis_key(&self.tenant, &self.node, key)
    }

    /// Counts and logs a failed request; the NF gets the message.
    fn refused(&self, what: &str, error: redis::RedisError) -> String {
        self.counters.backend_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        warn!("redis: {what}: {error}");
        format!("redis: {what}: {error}")
    }

    /// Runs `cmd` on the single-key connection; a failure is counted and logged.
    fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        cmd.query(&mut **self.keys.lock().unwrap()).map_err(|e| self.refused("request", e))
    }

    /// Every instance's items whose key matches `pattern`, with their Redis keys.
    fn scan(&self, pattern: &Pattern) -> Result<Vec<(String, Item)>, String> {
        let glob = scan_glob(&self.tenant, pattern);
        let mut found = Vec::new();
        for shard in &self.shards {
            let connection = &mut *shard.lock().unwrap();
            let mut cursor = 0u64;
            loop {
                let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&glob)
                    .arg("COUNT")
                    .arg(SCAN_PAGE)
                    .query(connection)
                    .map_err(|e| self.refused("scan", e))?;
                let page: Vec<String> = page
                    .into_iter()
                    .filter(|k| split_key(&self.tenant, k).is_some_and(|(_, key)| pattern.matches(key)))
                    .collect();
                self.fetch(connection, page, &mut found)?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(found)
    }

    /// Fetches the values of `keys` (one round trip) into `found`; keys deleted since
    /// the scan are skipped.
    fn fetch(
        &self,
        connection: &mut Connection,
        keys: Vec<String>,
        found: &mut Vec<(String, Item)>,
    ) -> Result<(), String> {
        if keys.is_empty() {
            return Ok(());
        }
        let values: Vec<Option<Vec<u8>>> = if self.cluster {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("GET").arg(key);
            }
            pipe.query(connection)
        } else {
            redis::cmd("MGET").arg(&keys).query(connection)
        }
        .map_err(|e| self.refused("fetch", e))?;
        for (redis_key, value) in keys.into_iter().zip(values) {
            let (Some(value), Some((node, key))) = (value, split_key(&self.tenant, &redis_key)) else { continue };
            let item =
                Item { key: key.into(), value: decode(&value), origin: node.into(), writer: node.into(), version: 0 };
            found.push((redis_key, item));
        }
        Ok(())
    }

    /// Every item this instance holds (for operators and experiments reading what an NF
    /// left).
    pub fn held(&self) -> Result<Vec<Item>, String> {
        let all = Pattern::new(".*").map_err(|e| e.to_string())?;
        Ok(self.scan(&all)?.into_iter().map(|(_, item)| item).filter(|item| item.origin == self.node).collect())
    }

    /// Brings the other instances' keys matching `pattern` to this instance: with
    /// `take`, each is removed where it was (`GETDEL`) and merged here (integers add up,
    /// other values replace); without, copied.
    fn bring(&self, pattern: &str, take: bool) -> Result<usize, String> {
        let pattern = Pattern::new(pattern).map_err(|e| e.to_string())?;
        let mut brought = 0;
        for (redis_key, item) in self.scan(&pattern)? {
            if item.origin == self.node {
                continue;
            }
            let value = match take {
                true => match self.query::<Option<Vec<u8>>>(redis::cmd("GETDEL").arg(&redis_key))? {
                    Some(bytes) => decode(&bytes),
                    None => continue,
                },
                false => item.value,
            };
            let own = self.key(&item.key);
            match value {
                Value::Int(n) if take => self.query::<i64>(redis::cmd("INCRBY").arg(&own).arg(n)).map(drop)?,
                value => self.query::<()>(redis::cmd("SET").arg(&own).arg(encode(&value)))?,
            }
            brought += 1;
        }
        Ok(brought)
    }
}

impl NfState for RedisState {
    fn counter_add(&self, key: &str, delta: i64) -> Result<i64, String> {
        self.query(redis::cmd("INCRBY").arg(self.key(key)).arg(delta))
    }

    fn get(&self, key: &str) -> Option<Value> {
        let bytes: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(self.key(key))).ok()?;
        bytes.map(|b| decode(&b))
    }

    fn set(&self, key: &str, value: Value) -> Result<(), String> {
        self.query(redis::cmd("SET").arg(self.key(key)).arg(encode(&value)))
    }

    fn del(&self, key: &str) -> bool {
        self.query::<i64>(redis::cmd("DEL").arg(self.key(key))).is_ok_and(|n| n > 0)
    }

    fn global(&self, pattern: &str, reducer: &str, _: Duration, _: bool) -> Result<Option<Item>, String> {
        let builtin: Builtin =
            reducer.parse().map_err(|e| format!("{e} (a Redis backend reduces with built-in reducers only)"))?;
        let pattern = Pattern::new(pattern).map_err(|e| e.to_string())?;
        let items = self.counters.timed_global(|| self.scan(&pattern))?;
        let reduced = reduce(builtin, items.into_iter().map(|(_, item)| item).collect()).map_err(|e| e.to_string())?;
        one_item(reduced, reducer)
    }

    fn take(&self, pattern: &str) -> Result<usize, String> {
        self.bring(pattern, true)
    }

    fn metric_add(&self, name: &str, delta: i64) {
        self.counters.metric_add(name, delta);
    }

    fn emit(&self, event: &str) {
        self.counters.emit(event);
    }
}

impl NfEnv for RedisState {
    fn adopt_flow(&self, flow: &str, mode: FlowState) -> Result<usize, String> {
        match mode {
            FlowState::Off => Ok(0),
            mode => self.bring(&estate_guest::pattern::flow_keys(flow), mode == FlowState::Take),
        }
    }
}
