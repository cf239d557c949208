//! The command line's grammar (clap).

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use estate::node::Timing;
use estate::switch::{self};
use estate::wasm::Limits;

#[derive(Parser, Debug)]
#[command(name = "estate", version, about = "State management for elastic network functions")]
pub(crate) struct Cli {
    /// Control endpoint of the node to talk to (for every command but `node`).
    #[arg(long, global = true, value_name = "ENDPOINT")]
    pub(crate) control: Option<String>,
    /// File with the credential to send with control requests (`PRINCIPAL SECRET`, as
    /// `estate credential` writes it). Also from $ESTATE_CREDENTIAL_FILE, or the
    /// credential itself from $ESTATE_CREDENTIAL; never as an argument.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) credential: Option<std::path::PathBuf>,
    /// The tenant to act in (a tenant's credential acts in its own; the admin's in
    /// `default` without this).
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) tenant: Option<String>,
    /// Log lines as text (for people) or JSON (one object a line, for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Runs the self-contained demo: three nodes on loopback, a write on each, global
    /// reads with built-in and Wasm reducers.
    Demo,
    /// Runs a node until SIGINT or SIGTERM, then leaves the cluster cleanly.
    // A flag given twice takes the later value: `--config`'s flags come first.
    #[command(args_override_self = true)]
    Node {
        /// A TOML file of these flags: each key a flag's long name (`listen =
        /// "tcp://…"`, `heartbeat-ms = 200`, `join = ["…"]`, `insecure = true`); flags
        /// given here override it (see examples/node.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        /// Node id, unique in the cluster.
        #[arg(long)]
        id: String,
        /// Endpoint to listen on for peers, e.g. tcp://127.0.0.1:7001.
        #[arg(long, value_name = "ENDPOINT")]
        listen: String,
        /// Seed endpoint to join through (repeatable).
        #[arg(long, value_name = "ENDPOINT")]
        join: Vec<String>,
        /// Interval between heartbeats.
        #[arg(long, default_value_t = Timing::default().heartbeat_ms)]
        heartbeat_ms: u64,
        /// Silence after which a member is suspect.
        #[arg(long, default_value_t = Timing::default().suspect_ms)]
        suspect_ms: u64,
        /// Silence after which a member is removed.
        #[arg(long, default_value_t = Timing::default().remove_ms)]
        remove_ms: u64,
        /// Serve the node's metrics (Prometheus text format) on http://ADDR/metrics,
        /// e.g. 127.0.0.1:9100; port 0 picks a free port, printed as `metrics=` at the
        /// end of the ready line. A non-loopback address needs --insecure.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        // Boxed: keeps the variants of `Command` close in size.
        #[command(flatten)]
        limits: Box<NodeLimits>,
        #[command(flatten)]
        nf: NfArgs,
        #[command(flatten)]
        security: Box<NodeSecurity>,
    },
    /// Writes a new X25519 key pair to FILE (mode 0600; an existing file is never
    /// overwritten) and prints its public key (64 hex digits) as the first line.
    Keygen {
        /// The key file to write.
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
    },
    /// Makes a control credential for PRINCIPAL (`admin` or `tenant:NAME`): writes it
    /// to FILE (mode 0600) for the client, and prints the line that the node's
    /// credentials file needs to accept it (the secret's sha256, never the secret).
    Credential {
        /// `admin` or `tenant:NAME`.
        principal: String,
        /// The client's credential file to write.
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
    },
    /// Prints the security log: what the node refused, by reason, principal and
    /// object, with counts and times (admin only).
    SecurityLog {
        #[arg(long)]
        json: bool,
    },
    /// Sets KEY to VALUE (an integer if it parses as i64, a float if f64, else text).
    Set { key: String, value: String },
    /// Prints the value at KEY.
    Get {
        key: String,
        /// Print the value with its version as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deletes KEY.
    Del { key: String },
    /// Reduces the items of every live member whose key matches PATTERN.
    Global {
        /// A regular expression matched against whole keys, or an exact key.
        pattern: String,
        /// Reducer: latest, sum, avg, min, max, count, list.
        #[arg(long = "reduce", value_name = "NAME")]
        reducer: String,
        /// Deadline of the read.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// `best-effort` reduces what answered in time; `all` fails unless every live
        /// member answered.
        #[arg(long, value_enum, default_value_t = ConsistencyArg::BestEffort)]
        consistency: ConsistencyArg,
        /// Push the reducer down: each member reduces its own items and sends one
        /// partial result (combinable reducers only).
        #[arg(long)]
        remote: bool,
        /// Print the answer, who answered and who is missing as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Traffic tools: `pcap` writes a synthetic stream to a pcap file; `switch` sends a
    /// stream to nodes' steered inputs and moves flows between them.
    Traffic {
        #[command(subcommand)]
        action: TrafficAction,
    },
    /// The paper's experiments, re-run with real processes and Redis servers: `fig4`
    /// (scale-out and scale-in of an IDS) and `fig5` (2–16 instances on baseline,
    /// centralmem, clustermem and estate); CSV and PNG into `--out`.
    Experiment {
        #[command(subcommand)]
        action: crate::experiment::ExperimentAction,
    },
    /// The namespace testbed (docs/testbed.md, needs root): `up` builds the paper's
    /// topology and leaves it up, `down` removes it, `check` sends HTTP and iperf3
    /// traffic across a kernel-bridged NF host.
    Testbed {
        #[command(subcommand)]
        action: TestbedAction,
    },
    /// Guest crates: `new` writes a reducer or NF crate ready to build and test, `build`
    /// compiles one to a Wasm module.
    Guest {
        #[command(subcommand)]
        action: GuestAction,
    },
    /// Loads (or hot-replaces), unloads and shows the node's NF.
    Nf {
        #[command(subcommand)]
        action: NfAction,
    },
    /// Loads, lists and unloads Wasm reducers in the running node.
    Reducer {
        #[command(subcommand)]
        action: ReducerAction,
    },
    /// Lists the members as the node sees them.
    Members {
        #[arg(long)]
        json: bool,
    },
    /// Prints the node's counters (frames received, malformed, rejected, …).
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Graceful scale-in: the node stops its NF, hands all its state to the other
    /// members, leaves the cluster and exits. If the hand-off fails, it keeps its
    /// state and stays, and this command fails saying why.
    Leave {
        /// How long the members may take to acknowledge the state.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TrafficAction {
    /// Writes the synthetic stream SPEC (see `--input synth:`) to a pcap file: Ethernet,
    /// IPv4, TCP/UDP; moved flows carry a VLAN tag, as the paper's fabric marks them.
    Pcap {
        /// The pcap file to write.
        #[arg(long)]
        out: std::path::PathBuf,
        /// The synthetic stream, e.g. `seed=1,flows=100,packets=10000,share=0.1`.
        #[arg(long)]
        synth: String,
    },
    /// Emulates the fabric of a scale-out or scale-in: sends each packet of a stream as an
    /// Ethernet frame to its flow's node (the node's `--input steer:` endpoint), moves
    /// flows between nodes on a schedule and tags moved flows' packets with a VLAN id
    /// that changes with every move. Prints a summary at the end.
    Switch(SwitchArgs),
    /// Asks a running switch (`traffic switch --commands`) to take a step now:
    /// `move FRACTION FROM TO` or `drain FROM TO`.
    Command {
        /// The switch's command endpoint.
        #[arg(long, value_name = "ENDPOINT")]
        switch: String,
        /// The step, e.g. `move 0.5 A B`.
        #[arg(required = true, num_args = 1..)]
        step: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TestbedAction {
    /// Builds the paper topology (source, switch, NF hosts, target) and leaves it up;
    /// prints its namespaces, interfaces and addresses.
    Up {
        /// How many NF hosts (1 to 64).
        #[arg(long, default_value_t = 1)]
        nf_hosts: usize,
        /// The namespaces' prefix (default: a fresh one, printed).
        #[arg(long, value_name = "PREFIX")]
        name: Option<String>,
        /// Bridge each NF host's two sides in the kernel.
        #[arg(long)]
        kernel_bridge: bool,
    },
    /// Removes every namespace of the testbed PREFIX, and the processes in them.
    Down {
        #[arg(long, value_name = "PREFIX")]
        name: String,
    },
    /// Builds the inline topology with a kernel bridge in the NF host, runs HTTP
    /// (python3, curl) and iperf3 (2 s) from the source to the target across it,
    /// prints what got through and removes it, even on failure or Ctrl-C.
    Check,
}

#[derive(Subcommand, Debug)]
pub(crate) enum GuestAction {
    /// Writes a new guest crate at PARENT/NAME: Cargo.toml, src/lib.rs (an example with
    /// its unit tests) and README.md. Refuses if PARENT/NAME exists.
    New {
        /// `reducer` (a combinable sum) or `nf` (a per-flow packet counter).
        #[arg(value_enum)]
        kind: crate::guest::GuestKind,
        /// The crate's name: ASCII letters, digits, `-` and `_`, starting with a letter.
        name: String,
        /// The directory to make the crate in.
        #[arg(long, value_name = "PARENT", default_value = ".")]
        dir: std::path::PathBuf,
        /// Depend on this version of estate-guest from crates.io, instead of on the
        /// guest-sdk/ of the checkout this estate was built from (by path).
        #[arg(long, value_name = "VERSION")]
        sdk_version: Option<String>,
    },
    /// Builds the guest crate in DIR for wasm32-unknown-unknown (release), with the
    /// compiler the repository's own guests are built with; prints `built PATH` last.
    Build {
        /// The crate's directory.
        #[arg(default_value = ".")]
        dir: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum NfAction {
    /// Loads FILE as the node's NF: it replaces a running NF between two packets (the
    /// state in the store stays), or starts on the node's held input.
    Load {
        file: std::path::PathBuf,
        /// The NF's configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
    },
    /// Replaces the running NF with FILE between two packets (the state in the store
    /// stays); fails, changing nothing, if no NF runs or FILE is not a valid NF.
    Replace {
        file: std::path::PathBuf,
        /// The NF's configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
    },
    /// Stops the NF (the rest of its input is not processed).
    Unload,
    /// Prints running, finished, waiting (input held) or none.
    Status,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ReducerAction {
    /// Loads FILE (a wasm32 reducer module) under NAME, replacing any reducer of that
    /// name; reads already running finish on the old one.
    Load {
        name: String,
        file: std::path::PathBuf,
        /// Fuel per call (default: the node's).
        #[arg(long)]
        fuel: Option<u64>,
        /// Wall-time limit per call in ms (default: the node's).
        #[arg(long)]
        wall_ms: Option<u64>,
        /// Memory limit in MiB (default: the node's).
        #[arg(long)]
        memory_mb: Option<u64>,
        /// Output limit in KiB (default: the node's).
        #[arg(long)]
        output_kb: Option<u64>,
    },
    /// Lists built-in and loaded reducers.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Unloads the reducer NAME.
    Unload { name: String },
}

/// An NF to run in the node, and its packet source.
#[derive(clap::Args, Debug)]
#[group(id = "nf_args")]
#[command(group = clap::ArgGroup::new("source").args(["input", "inline"]))]
pub(crate) struct NfArgs {
    /// NF module (wasm32) to run over the input.
    #[arg(long, value_name = "FILE.wasm", requires = "source")]
    pub(crate) nf: Option<std::path::PathBuf>,
    /// The NF's configuration file (its format is the NF's own).
    #[arg(long, value_name = "FILE", requires = "nf")]
    pub(crate) nf_config: Option<std::path::PathBuf>,
    /// Packet source: `synth:seed=1,flows=100,packets=10000,share=0.1,patterns=a|b`
    /// (also `first=N`, `moved=1`), `pcap:FILE`, or `steer:ENDPOINT` (frames pushed by
    /// `estate traffic switch`; the bound endpoint is printed as `steer=` in the ready
    /// line), `live:IFACE` (every frame captured on a network interface; nothing is
    /// sent) or `inline:A,B` (as `--inline`). Without `--nf` the input waits for `nf
    /// load`.
    #[arg(long, value_name = "SPEC")]
    pub(crate) input: Option<String>,
    /// Bump in the wire between two interfaces (docs/live.md): a frame in on one goes
    /// out of the other if the NF forwards it (rewritten if the NF asks).
    #[arg(long, value_name = "IFACE_A,IFACE_B", conflicts_with = "input")]
    pub(crate) inline: Option<String>,
    /// What an inline input does with frames the NF cannot see (not IPv4 TCP/UDP, or
    /// fragments): `drop` them or `pass` them across unchanged. ARP always passes;
    /// malformed frames are always dropped.
    #[arg(long, value_parser = ["drop", "pass"], default_value = "drop")]
    pub(crate) unparsed: String,
    /// What a packet gets when the NF faults on it.
    #[arg(long, value_parser = ["open", "closed"], default_value = "open")]
    pub(crate) fail: String,
    /// State of a moved flow: `take` moves it here (no double counting), `copy` fetches
    /// the newest values (the paper's way), `off` shares nothing (baseline).
    #[arg(long, value_parser = ["take", "copy", "off"], default_value = "take")]
    pub(crate) flow_state: String,
    /// Where the NF's state lives: `estate` (this node's store, shared through estate),
    /// `none` (this node's store, shared with nobody), `redis://HOST:PORT` (one central
    /// Redis server), `redis-cluster://HOST:PORT[,HOST:PORT…]` (a Redis Cluster).
    #[arg(long, value_name = "BACKEND", default_value = "estate")]
    pub(crate) state_backend: estate::backend::StateBackend,
}

/// Tenants, who may use the control socket, and peer authentication and encryption
/// (docs/security.md).
#[derive(clap::Args, Debug)]
pub(crate) struct NodeSecurity {
    /// Tenants file (TOML: `[tenants.NAME]` tables with quotas). Only these tenants
    /// exist; without it, the one tenant `default`.
    #[arg(long, value_name = "FILE")]
    pub(crate) tenants: Option<std::path::PathBuf>,
    /// The tenant owning the node's NF place (default: `default`, else the first).
    #[arg(long, value_name = "NAME")]
    pub(crate) nf_tenant: Option<String>,
    /// Control credentials the node accepts (`PRINCIPAL sha256:HEX` lines); read again
    /// on every request. Without it every control request acts as the admin, so the
    /// control endpoint must be local unless --insecure.
    #[arg(long, value_name = "FILE")]
    pub(crate) credentials: Option<std::path::PathBuf>,
    /// The node's key file (`estate keygen`); peers are then authenticated against the
    /// roster and every peer frame is encrypted. Re-read once a second when it changes.
    #[arg(long, value_name = "FILE", requires = "roster")]
    pub(crate) key: Option<std::path::PathBuf>,
    /// The keys this node accepts: `ID PUBLIC_KEY` lines. Re-read once a second when it
    /// changes.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) roster: Option<std::path::PathBuf>,
    /// Allow what is unsafe on a shared network: listening on a non-loopback address
    /// without a key and a roster (any process that reaches the port can then join and
    /// read or write all state), or a non-local control endpoint without credentials.
    #[arg(long)]
    pub(crate) insecure: bool,
}

/// Default budgets of Wasm reducer calls on a node.
#[derive(clap::Args, Debug)]
pub(crate) struct NodeLimits {
    /// Fuel per reducer call.
    #[arg(long, default_value_t = Limits::default().fuel)]
    pub(crate) reducer_fuel: u64,
    /// Wall-time limit per reducer call, in ms.
    #[arg(long, default_value_t = Limits::default().wall_time.as_millis() as u64)]
    pub(crate) reducer_wall_ms: u64,
    /// Memory limit of a reducer instance, in MiB.
    #[arg(long, default_value_t = (Limits::default().memory_bytes >> 20) as u64)]
    pub(crate) reducer_memory_mb: u64,
    /// Largest reducer output, in KiB.
    #[arg(long, default_value_t = (Limits::default().output_bytes >> 10) as u64)]
    pub(crate) reducer_output_kb: u64,
    /// Largest module accepted, in KiB.
    #[arg(long, default_value_t = (Limits::default().module_bytes >> 10) as u64)]
    pub(crate) max_module_kb: u64,
}

impl NodeLimits {
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            fuel: self.reducer_fuel,
            wall_time: Duration::from_millis(self.reducer_wall_ms),
            memory_bytes: (self.reducer_memory_mb as usize) << 20,
            output_bytes: (self.reducer_output_kb as usize) << 10,
            module_bytes: (self.max_module_kb as usize) << 10,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum ConsistencyArg {
    BestEffort,
    All,
}

/// `estate traffic switch`'s arguments.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("stream").required(true).args(["pcap", "synth", "live"])))]
pub(crate) struct SwitchArgs {
    /// A pcap file to send.
    #[arg(long, value_name = "FILE")]
    pub(crate) pcap: Option<std::path::PathBuf>,
    /// A synthetic stream to send (as `--input synth:`), e.g. `seed=1,flows=40,packets=6000`.
    #[arg(long, value_name = "SPEC")]
    pub(crate) synth: Option<String>,
    /// Live: switch real traffic between the host ports IN (towards the clients) and
    /// OUT (towards the servers), through NF instances running `--inline`; each
    /// `--node` is then `NAME=PORT_A,PORT_B`, the switch's ports wired to the
    /// instance's two sides (docs/live.md). Runs until interrupted.
    #[arg(long, value_name = "IN,OUT")]
    pub(crate) live: Option<String>,
    /// A node: its name and the `steer=` endpoint of its ready line, or with `--live`
    /// its two ports (repeatable; the order is the nodes' order).
    #[arg(long = "node", value_name = "NAME=ENDPOINT", required = true)]
    pub(crate) nodes: Vec<String>,
    /// A node's control endpoint (repeatable): before flows move away from the node,
    /// the switch waits until its NF has handled every packet sent to it, so no
    /// packet of a moved flow is still queued at the old node.
    #[arg(long = "node-control", value_name = "NAME=ENDPOINT")]
    pub(crate) controls: Vec<String>,
    /// The nodes new flows are spread over, by a hash of the flow key (default: the
    /// first node).
    #[arg(long, value_name = "NAME,NAME", value_delimiter = ',')]
    pub(crate) start: Vec<String>,
    /// A step (repeatable): `N:move:FRACTION:FROM:TO` moves FRACTION (0..1] of the
    /// flows FROM has after N packets to TO; `N:drain:FROM:TO` moves all of them and
    /// ends FROM's input.
    #[arg(long = "at", value_name = "SPEC")]
    pub(crate) at: Vec<String>,
    /// Send at most this many packets per second.
    #[arg(long, value_name = "PPS", value_parser = clap::value_parser!(u32).range(1..=i64::from(switch::MAX_RATE)))]
    pub(crate) rate: Option<u32>,
    /// How long a frame may wait for a node to take it before it counts as
    /// undeliverable (and the node as down until it takes one again).
    #[arg(long, default_value_t = 2000)]
    pub(crate) send_timeout_ms: u64,
    /// How long to wait for a node (`--node-control`) to handle its packets before a
    /// move; the move goes ahead after that.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) settle_timeout_ms: u64,
    /// Writes every flow (key, packets, final node, path over the nodes) and the
    /// summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) flows_out: Option<std::path::PathBuf>,
    /// Also takes steps on command while the stream runs (`estate traffic command`),
    /// on a ZeroMQ REP socket bound here; the bound endpoint is printed first.
    #[arg(long, value_name = "ENDPOINT")]
    pub(crate) commands: Option<String>,
}
