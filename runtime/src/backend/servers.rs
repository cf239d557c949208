//! Real Redis servers for experiments and tests: one central server, or a Redis Cluster
//! of cluster-enabled servers, each a `redis-server` process (Debian's package) on
//! loopback with an ephemeral port and a temporary directory. Dropping a server stops
//! it and removes its directory, also when the caller fails half-way.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::StateBackend;

/// How long a server may take to answer after it was started.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// Redis Cluster's smallest size: `redis-cli --cluster create` refuses fewer masters.
pub const MIN_CLUSTER_NODES: usize = 3;

/// Why servers could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `redis-server` or `redis-cli` is not installed.
    #[error("{0} not found: install Debian's redis-server package (bash .ci/setup does)")]
    Missing(&'static str),
    /// Something else went wrong; the message says what.
    #[error("{0}")]
    Failed(String),
}

/// One running `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn free_port() -> Result<u16, ServerError> {
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| ServerError::Failed(e.to_string()))?;
        let port = listener.local_addr().map_err(|e| ServerError::Failed(e.to_string()))?.port();
        if port < 55_000 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    Err(ServerError::Failed("no free loopback port pair found".into()))
}

fn unique_dir(label: &str) -> Result<PathBuf, ServerError> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("estate-{label}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| ServerError::Failed(format!("creating {}: {e}", dir.display())))?;
    Ok(dir)
}

impl RedisServer {
    /// Starts a server (cluster-enabled if `cluster`) and waits until it answers.
    pub fn start(cluster: bool) -> Result<RedisServer, ServerError> {
        let port = free_port()?;
        let dir = unique_dir(&format!("redis-{port}"))?;
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--protected-mode", "no"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        if cluster {
            command.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
        }
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| {
            match e.kind() {
                std::io::ErrorKind::NotFound => ServerError::Missing("redis-server"),
                _ => ServerError::Failed(format!("starting redis-server: {e}")),
            }
        })?;
        let mut server = RedisServer { child, port, dir };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<(), ServerError> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let pong = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                return Err(ServerError::Failed(format!("redis-server exited ({status}): {}", log.trim())));
            }
            if Instant::now() > deadline {
                return Err(ServerError::Failed(format!("redis-server on port {} did not answer", self.port)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's directory (its log is `redis.log` there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The backend that reaches this (central) server.
    pub fn backend(&self) -> StateBackend {
        StateBackend::Redis(self.url())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of cluster-enabled servers, one master each, no replicas.
#[derive(Debug)]
pub struct RedisCluster {
    servers: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `nodes` servers (at least [`MIN_CLUSTER_NODES`]), creates the cluster
    /// with `redis-cli --cluster create`, and waits until every node says it is ok.
    pub fn start(nodes: usize) -> Result<RedisCluster, ServerError> {
        let nodes = nodes.max(MIN_CLUSTER_NODES);
        let servers = (0..nodes).map(|_| RedisServer::start(true)).collect::<Result<Vec<_>, _>>()?;
        let cluster = RedisCluster { servers };
        let addresses: Vec<String> = cluster.servers.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => ServerError::Missing("redis-cli"),
                _ => ServerError::Failed(format!("running redis-cli: {e}")),
            })?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
            return Err(ServerError::Failed(format!("redis-cli --cluster create failed: {}", said.trim())));
        }
        cluster.wait_ok()?;
        Ok(cluster)
    }

    fn wait_ok(&self) -> Result<(), ServerError> {
        let deadline = Instant::now() + READY_WITHIN;
        for server in &self.servers {
            loop {
                let info = redis::Client::open(server.url())
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(ServerError::Failed(format!("cluster node {} never reported ok", server.url())));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The servers, one per node.
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// The backend that reaches this cluster (every node listed as a seed).
    pub fn backend(&self) -> StateBackend {
        StateBackend::RedisCluster(self.servers.iter().map(RedisServer::url).collect())
    }
}
