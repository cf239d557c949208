//! Building the topologies, step by step, each namespace owned from the moment it
//! exists: an error half-way drops what was built.

use std::net::Ipv4Addr;
use std::process::Command;

use super::cmd::{self, Error, ip, ip_in};
use super::{EndHost, MAX_NF_HOSTS, Mgmt, NfHost, NfPorts, Options, SwitchHost, Testbed, Topology};

/// Turns IPv6 and the veths' offloads off in a testbed's namespaces (see the script).
const QUIET: &str = include_str!("quiet.py");

/// The end hosts' addresses; the switch's on the management network, where NF host i
/// has 10.99.0.(MGMT_FIRST + i); all /24.
const SRC_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const DST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const MGMT_SW: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const MGMT_FIRST: u8 = 10;
const PREFIX_LEN: &str = "/24";

/// The namespaces of a testbed, removed (with their links and processes) on drop.
#[derive(Debug)]
pub(crate) struct Namespaces {
    pub(crate) prefix: String,
    pub(crate) names: Vec<String>,
    armed: bool,
}

impl Namespaces {
    /// For `opts.prefix`, or a fresh prefix; refuses a prefix already in use.
    fn new(opts: &Options) -> Result<Namespaces, Error> {
        let prefix = match &opts.prefix {
            Some(p) => {
                cmd::check_prefix(p)?;
                if !cmd::netns_of(p)?.is_empty() {
                    return Err(Error::Exists(p.clone()));
                }
                p.clone()
            }
            None => cmd::fresh_prefix()?,
        };
        Ok(Namespaces { prefix, names: Vec::new(), armed: true })
    }

    /// Makes namespace `PREFIX-HOST` (with its loopback up) and returns its name.
    fn add(&mut self, host: &str) -> Result<String, Error> {
        let ns = format!("{}-{host}", self.prefix);
        cmd::netns_add(&ns)?;
        self.names.push(ns.clone());
        ip_in(&ns, &["link", "set", "dev", "lo", "up"])?;
        Ok(ns)
    }

    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }

    /// Deletes every namespace, newest first; the first error is returned after all
    /// were tried.
    pub(crate) fn teardown(&mut self) -> Result<(), Error> {
        self.armed = false;
        let mut first = Ok(());
        while let Some(ns) = self.names.pop() {
            if let Err(e) = cmd::netns_del(&ns)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = self.teardown()
        {
            tracing::warn!(prefix = %self.prefix, "removing a testbed failed: {e}");
        }
    }
}

/// Links `a` in `ns_a` and `b` in `ns_b` by a veth pair (both down).
fn veth(ns_a: &str, a: &str, ns_b: &str, b: &str) -> Result<(), Error> {
    ip(&["link", "add", "name", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b]).map(drop)
}

/// One namespace's interfaces, all down until [`quiet_up`] brings them up: `ifaces`
/// (veths and bridges), of which `veths` are the veths.
struct Host {
    ns: String,
    ifaces: Vec<String>,
    veths: Vec<String>,
}

impl Host {
    fn new(ns: &str, veths: &[&str]) -> Host {
        let veths: Vec<String> = veths.iter().map(|v| v.to_string()).collect();
        Host { ns: ns.into(), ifaces: veths.clone(), veths }
    }

    /// A bridge `name` over `ports` (down, like them).
    fn bridge(&mut self, name: &str, ports: &[&str]) -> Result<(), Error> {
        ip_in(&self.ns, &["link", "add", "name", name, "type", "bridge"])?;
        for port in ports {
            ip_in(&self.ns, &["link", "set", "dev", port, "master", name])?;
        }
        self.ifaces.push(name.into());
        Ok(())
    }
}

/// Turns IPv6 off in every host's namespace and on its interfaces, and the offloads of
/// its veths (one `python3` for all: its start is slow where it is a pyenv shim); then
/// brings the interfaces up. Done while they are down, so none sends an IPv6 frame.
fn quiet_up(hosts: &[Host]) -> Result<(), Error> {
    let mut python = Command::new("python3");
    python.args(["-c", QUIET]);
    python.args(hosts.iter().map(|h| format!("{}|{}|{}", h.ns, h.ifaces.join(","), h.veths.join(","))));
    cmd::run(&mut python)?;
    for host in hosts {
        for iface in &host.ifaces {
            ip_in(&host.ns, &["link", "set", "dev", iface, "up"])?;
        }
    }
    Ok(())
}

fn addr(ns: &str, iface: &str, ip: Ipv4Addr) -> Result<(), Error> {
    ip_in(ns, &["addr", "add", &format!("{ip}{PREFIX_LEN}"), "dev", iface]).map(drop)
}

/// The MAC address of `iface` in `ns`.
pub(crate) fn mac(ns: &str, iface: &str) -> Result<String, Error> {
    let out = ip_in(ns, &["-o", "link", "show", "dev", iface])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "link/ether").and_then(|_| words.next()).map(String::from).ok_or_else(|| Error::Parse {
        command: format!("ip -n {ns} -o link show dev {iface}"),
        what: "no link/ether address".into(),
    })
}

/// A permanent neighbour entry in `ns`: `ip` on `iface` is `mac`.
pub(crate) fn neighbour(ns: &str, iface: &str, ip: Ipv4Addr, mac: &str) -> Result<(), Error> {
    let ip = ip.to_string();
    ip_in(ns, &["neigh", "replace", &ip, "lladdr", mac, "dev", iface, "nud", "permanent"]).map(drop)
}

/// The end host in `ns`, its `eth0` linked and up, given address `ip`.
fn end_host(ns: String, ip: Ipv4Addr) -> Result<EndHost, Error> {
    addr(&ns, "eth0", ip)?;
    Ok(EndHost { ns, iface: "eth0".into(), ip })
}

/// The NF host in `ns`, whose sides (and `m`) are linked, bridged with `kernel_bridge`.
fn nf_host(ns: &str, kernel_bridge: bool, mgmt: Option<Ipv4Addr>) -> NfHost {
    NfHost {
        ns: ns.into(),
        a: "a".into(),
        b: "b".into(),
        bridge: kernel_bridge.then(|| "br0".into()),
        mgmt: mgmt.map(|ip| Mgmt { iface: "m".into(), ip }),
    }
}

/// Adds `opts`' neighbour entries.
fn neighbours(tb: &Testbed, opts: &Options) -> Result<(), Error> {
    for n in &opts.neighbours {
        let mac = tb.mac_of(n.mac_of)?;
        let on = tb.end(n.on);
        neighbour(&on.ns, &on.iface, n.ip, &mac)?;
    }
    Ok(())
}

pub(crate) fn inline(opts: &Options) -> Result<Testbed, Error> {
    let mut namespaces = Namespaces::new(opts)?;
    let src = namespaces.add("src")?;
    let nf = namespaces.add("nf")?;
    let dst = namespaces.add("dst")?;
    veth(&src, "eth0", &nf, "a")?;
    veth(&nf, "b", &dst, "eth0")?;
    let mut nf_links = Host::new(&nf, &["a", "b"]);
    if opts.kernel_bridge {
        nf_links.bridge("br0", &["a", "b"])?;
    }
    quiet_up(&[Host::new(&src, &["eth0"]), nf_links, Host::new(&dst, &["eth0"])])?;
    let nf = nf_host(&nf, opts.kernel_bridge, None);
    let (src, dst) = (end_host(src, SRC_IP)?, end_host(dst, DST_IP)?);
    let tb = Testbed { topology: Topology::Inline, src, dst, nfs: vec![nf], switch: None, namespaces };
    neighbours(&tb, opts)?;
    Ok(tb)
}

pub(crate) fn paper(nf_hosts: usize, opts: &Options) -> Result<Testbed, Error> {
    if !(1..=MAX_NF_HOSTS).contains(&nf_hosts) {
        return Err(Error::Invalid(format!("{nf_hosts} NF hosts: 1 to {MAX_NF_HOSTS} wanted")));
    }
    let mut namespaces = Namespaces::new(opts)?;
    let src = namespaces.add("src")?;
    let sw = namespaces.add("sw")?;
    let dst = namespaces.add("dst")?;
    veth(&src, "eth0", &sw, "in")?;
    veth(&sw, "out", &dst, "eth0")?;
    let mut sw_links = Host::new(&sw, &["in", "out"]);
    let mut hosts = vec![Host::new(&src, &["eth0"]), Host::new(&dst, &["eth0"])];
    let (mut nfs, mut nf_ports, mut mgmt_ports) = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..=nf_hosts {
        let ns = namespaces.add(&format!("nf{i}"))?;
        let ports = NfPorts { a: format!("i{i}a"), b: format!("i{i}b") };
        let m = format!("m{i}");
        veth(&sw, &ports.a, &ns, "a")?;
        veth(&sw, &ports.b, &ns, "b")?;
        veth(&sw, &m, &ns, "m")?;
        let mut links = Host::new(&ns, &["a", "b", "m"]);
        if opts.kernel_bridge {
            links.bridge("br0", &["a", "b"])?;
        }
        sw_links.veths.extend([ports.a.clone(), ports.b.clone(), m.clone()]);
        sw_links.ifaces.extend([ports.a.clone(), ports.b.clone(), m.clone()]);
        let mgmt_ip = Ipv4Addr::new(10, 99, 0, MGMT_FIRST + i as u8);
        nfs.push(nf_host(&ns, opts.kernel_bridge, Some(mgmt_ip)));
        hosts.push(links);
        nf_ports.push(ports);
        mgmt_ports.push(m);
    }
    let mgmt_refs: Vec<&str> = mgmt_ports.iter().map(String::as_str).collect();
    sw_links.bridge("mgmt", &mgmt_refs)?;
    hosts.push(sw_links);
    quiet_up(&hosts)?;
    addr(&sw, "mgmt", MGMT_SW)?;
    for nf in &nfs {
        let m = nf.mgmt.as_ref().expect("paper NF hosts have one");
        addr(&nf.ns, &m.iface, m.ip)?;
    }
    let mgmt = Mgmt { iface: "mgmt".into(), ip: MGMT_SW };
    let switch = SwitchHost { ns: sw, input: "in".into(), output: "out".into(), nf_ports, mgmt };
    let (src, dst) = (end_host(src, SRC_IP)?, end_host(dst, DST_IP)?);
    let topology = Topology::Paper { nf_hosts };
    let tb = Testbed { topology, src, dst, nfs, switch: Some(switch), namespaces };
    neighbours(&tb, opts)?;
    Ok(tb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_prefix_or_size_is_refused_before_anything_is_made() {
        let opts = Options { prefix: Some("no/slash".into()), ..Options::default() };
        assert!(matches!(inline(&opts), Err(Error::Invalid(_))));
        assert!(matches!(paper(0, &Options::default()), Err(Error::Invalid(_))));
        assert!(matches!(paper(MAX_NF_HOSTS + 1, &Options::default()), Err(Error::Invalid(_))));
    }
}
