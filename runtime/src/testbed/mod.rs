//! A real-traffic testbed of network namespaces and veth pairs, as the E-State paper's:
//! a source host, a switch, NF hosts, a target host (docs/testbed.md).
//!
//! [`Testbed::inline`] puts one NF host between the source and the target;
//! [`Testbed::paper`] connects the source, the target and N NF hosts to a switch host,
//! with a management network for the NF nodes' peering. The hosts' own traffic is only
//! what runs in them: IPv6 is off (no router solicitations), and so are the veths'
//! offloads, so every frame is at most one MTU and carries a valid checksum (an NF that
//! rewrites a frame must fix its checksums; a TSO superframe could not be re-injected).
//!
//! Every testbed has a prefix unique to its process and call, its namespaces are named
//! `PREFIX-HOST`, and all of it is removed on drop, or when its building fails half-way;
//! [`Testbed::down`] removes what a killed process left. Needs root (or
//! CAP_NET_ADMIN), `ip` (iproute2) and `python3` (which turns the offloads off).
//!
//! ```no_run
//! use estate::testbed::{Options, Testbed};
//!
//! let tb = Testbed::inline(&Options { kernel_bridge: true, ..Options::default() }).unwrap();
//! let out = tb.exec(&tb.src().ns, ["ping", "-c", "1", "10.0.0.2"]).unwrap();
//! println!("{}", String::from_utf8_lossy(&out.stdout));
//! ```

mod build;
mod cmd;

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use cmd::{Error, in_ns};

/// The most NF hosts of a paper testbed (their management addresses are
/// 10.99.0.(10+i)).
pub const MAX_NF_HOSTS: usize = 64;

/// How a testbed is built.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A Linux bridge in every NF host joining its `a` and `b` sides: the kernel
    /// forwards the traffic (the baseline), instead of an NF.
    pub kernel_bridge: bool,
    /// Static neighbour entries to add (for addresses nobody answers ARP for).
    pub neighbours: Vec<Neighbour>,
    /// The namespaces' prefix; default: one unique to the process and call.
    pub prefix: Option<String>,
}

/// One of the two end hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The source host (10.0.0.1).
    Src,
    /// The target host (10.0.0.2).
    Dst,
}

/// A static neighbour entry: on host `on`, `ip` resolves to the MAC address of host
/// `mac_of`'s interface. E.g. on the target, a NAT's external address → the source's
/// MAC, so the target's replies to the translated address go out on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The host whose neighbour table gets the entry.
    pub on: End,
    /// The address.
    pub ip: Ipv4Addr,
    /// The host whose MAC address the address resolves to.
    pub mac_of: End,
}

/// Which topology a testbed is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// src ↔ nf ↔ dst.
    Inline,
    /// src ↔ sw ↔ dst, with `nf_hosts` NF hosts on the switch.
    Paper {
        /// How many NF hosts.
        nf_hosts: usize,
    },
}

/// An end host: a namespace with one interface and an address.
#[derive(Clone, Debug)]
pub struct EndHost {
    /// The namespace.
    pub ns: String,
    /// Its interface (`eth0`).
    pub iface: String,
    /// Its address, in 10.0.0.0/24.
    pub ip: Ipv4Addr,
}

/// An interface with an address on the management network (10.99.0.0/24).
#[derive(Clone, Debug)]
pub struct Mgmt {
    /// The interface.
    pub iface: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// An NF host: two inline sides, up and without addresses.
#[derive(Clone, Debug)]
pub struct NfHost {
    /// The namespace.
    pub ns: String,
    /// The side towards the source (`a`).
    pub a: String,
    /// The side towards the target (`b`).
    pub b: String,
    /// The bridge joining `a` and `b`, with [`Options::kernel_bridge`].
    pub bridge: Option<String>,
    /// Its management interface (`m`), in the paper topology.
    pub mgmt: Option<Mgmt>,
}

/// The switch host's interfaces towards one NF host.
#[derive(Clone, Debug)]
pub struct NfPorts {
    /// Linked to the NF host's `a` (`iNa`).
    pub a: String,
    /// Linked to the NF host's `b` (`iNb`).
    pub b: String,
}

/// The switch host of the paper topology. It forwards nothing by itself.
#[derive(Clone, Debug)]
pub struct SwitchHost {
    /// The namespace.
    pub ns: String,
    /// Linked to the source (`in`).
    pub input: String,
    /// Linked to the target (`out`).
    pub output: String,
    /// Towards NF host i + 1, at index i.
    pub nf_ports: Vec<NfPorts>,
    /// The management bridge (`mgmt`, 10.99.0.1) joining one veth per NF host.
    pub mgmt: Mgmt,
}

/// A built testbed; dropping it removes its namespaces, links and the processes in
/// them.
#[derive(Debug)]
pub struct Testbed {
    topology: Topology,
    src: EndHost,
    dst: EndHost,
    nfs: Vec<NfHost>,
    switch: Option<SwitchHost>,
    // Last: dropped after the fields above, it tears everything down.
    namespaces: build::Namespaces,
}

impl Testbed {
    /// Builds the inline topology: `src` (eth0 10.0.0.1/24) ↔ `nf` (a, b) ↔ `dst`
    /// (eth0 10.0.0.2/24).
    pub fn inline(opts: &Options) -> Result<Testbed, Error> {
        build::inline(opts)
    }

    /// Builds the paper topology with `nf_hosts` NF hosts (1 to [`MAX_NF_HOSTS`]):
    /// `src` ↔ `sw` (in); `sw` (out) ↔ `dst`; `sw` (iNa, iNb) ↔ `nfN` (a, b); and the
    /// management network, `sw`'s bridge 10.99.0.1 and each `nfN`'s `m` 10.99.0.(10+N).
    pub fn paper(nf_hosts: usize, opts: &Options) -> Result<Testbed, Error> {
        build::paper(nf_hosts, opts)
    }

    /// Removes every namespace of the testbed `prefix` (and the processes in them),
    /// e.g. left by a killed process; returns their names.
    pub fn down(prefix: &str) -> Result<Vec<String>, Error> {
        cmd::check_prefix(prefix)?;
        let found = cmd::netns_of(prefix)?;
        for ns in &found {
            cmd::netns_del(ns)?;
        }
        Ok(found)
    }

    /// Removes the testbed now, saying what failed (dropping it does the same silently).
    pub fn teardown(mut self) -> Result<(), Error> {
        self.namespaces.teardown()
    }

    /// Leaves the testbed up after this value is gone; returns its prefix, for
    /// [`Testbed::down`].
    pub fn keep(mut self) -> String {
        self.namespaces.disarm();
        self.namespaces.prefix.clone()
    }

    /// The prefix of the namespaces' names.
    pub fn prefix(&self) -> &str {
        &self.namespaces.prefix
    }

    /// Which topology this is.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Every namespace, in the order they were made.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces.names
    }

    /// The source host.
    pub fn src(&self) -> &EndHost {
        &self.src
    }

    /// The target host.
    pub fn dst(&self) -> &EndHost {
        &self.dst
    }

    /// The NF hosts (one in the inline topology).
    pub fn nfs(&self) -> &[NfHost] {
        &self.nfs
    }

    /// NF host `i`, counted from 1 as in its namespace's name (`nf` is 1 when inline).
    pub fn nf(&self, i: usize) -> &NfHost {
        &self.nfs[i - 1]
    }

    /// The switch host (paper topology only).
    pub fn switch(&self) -> Option<&SwitchHost> {
        self.switch.as_ref()
    }

    /// The MAC address of `iface` in namespace `ns` (`aa:bb:cc:dd:ee:ff`).
    pub fn mac(&self, ns: &str, iface: &str) -> Result<String, Error> {
        build::mac(ns, iface)
    }

    /// The MAC address of an end host's interface.
    pub fn mac_of(&self, end: End) -> Result<String, Error> {
        let host = self.end(end);
        build::mac(&host.ns, &host.iface)
    }

    /// An end host.
    pub fn end(&self, end: End) -> &EndHost {
        match end {
            End::Src => &self.src,
            End::Dst => &self.dst,
        }
    }

    /// Adds (or replaces) a permanent neighbour entry: in `ns`, `ip` on `iface` is `mac`.
    pub fn add_neighbour(&self, ns: &str, iface: &str, ip: Ipv4Addr, mac: &str) -> Result<(), Error> {
        build::neighbour(ns, iface, ip, mac)
    }

    /// A command running `program` in namespace `ns`, to add arguments and stdio to.
    pub fn command(&self, ns: &str, program: impl AsRef<OsStr>) -> Command {
        in_ns(ns, program)
    }

    /// Runs `args` (program first) in namespace `ns` to completion; fails with its
    /// stderr unless it exits successfully.
    pub fn exec<I, S>(&self, ns: &str, args: I) -> Result<Output, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (program, rest) = split(args)?;
        cmd::run(in_ns(ns, program).args(rest))
    }

    /// Starts `args` (program first) in namespace `ns`, stdin closed, stdout piped,
    /// stderr inherited; for servers and nodes. It is killed when the returned value
    /// is dropped, or else with the testbed.
    pub fn spawn<I, S>(&self, ns: &str, args: I) -> Result<Process, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (program, rest) = split(args)?;
        let mut cmd = in_ns(ns, program);
        cmd.args(rest).stdin(Stdio::null()).stdout(Stdio::piped());
        let child = cmd.spawn().map_err(|source| Error::Spawn { command: cmd::line(&cmd), source })?;
        Ok(Process { child: Some(child) })
    }

    /// Waits until something listens on TCP `port` in namespace `ns`.
    pub fn wait_listening(&self, ns: &str, port: u16, timeout: Duration) -> Result<(), Error> {
        wait_listening(ns, port, timeout)
    }
}

/// A process started by [`Testbed::spawn`]: a [`Child`] that is killed and reaped
/// when dropped.
#[derive(Debug)]
pub struct Process {
    // Some until `into_child` takes it.
    child: Option<Child>,
}

impl Process {
    /// The child, no longer killed on drop.
    pub fn into_child(mut self) -> Child {
        self.child.take().expect("present until taken")
    }
}

impl std::ops::Deref for Process {
    type Target = Child;

    fn deref(&self) -> &Child {
        self.child.as_ref().expect("present until taken")
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("present until taken")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // It may have exited already (or been killed with its namespace).
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until something listens on TCP `port` in namespace `ns` (polls `ss`).
pub fn wait_listening(ns: &str, port: u16, timeout: Duration) -> Result<(), Error> {
    let start = Instant::now();
    let filter = format!("sport = :{port}");
    loop {
        let out = cmd::run(Command::new("ss").args(["-N", ns, "-Hltn", &filter]))?;
        if !out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(Error::NotListening { ns: ns.into(), port, waited_ms: timeout.as_millis() as u64 });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The program and its arguments.
fn split<I, S>(args: I) -> Result<(S, Vec<S>), Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut args = args.into_iter();
    let program = args.next().ok_or_else(|| Error::Invalid("no program to run".into()))?;
    Ok((program, args.collect()))
}
