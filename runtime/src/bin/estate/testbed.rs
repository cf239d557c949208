//! `estate testbed`: the namespace testbed (docs/testbed.md), built and left up,
//! removed, or checked end to end with real traffic.

use std::process::{Command, ExitCode, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use estate::testbed::{Options, Testbed, Topology};

use crate::cli::TestbedAction;

/// The test HTTP server, run with `python3 -c` in the target.
const HTTP_SERVER: &str = include_str!("../../../../tests/netns/http_server.py");
const HTTP_PORT: u16 = 8080;
const IPERF_PORT: u16 = 5201;

/// `estate testbed …`.
pub(crate) fn run(action: TestbedAction) -> anyhow::Result<ExitCode> {
    match action {
        TestbedAction::Up { nf_hosts, name, kernel_bridge } => {
            let tb = Testbed::paper(nf_hosts, &Options { kernel_bridge, prefix: name, ..Options::default() })?;
            describe(&tb)?;
            let prefix = tb.keep();
            println!("run a command in a host: ip netns exec {prefix}-HOST COMMAND");
            println!("remove it:               estate testbed down --name {prefix}");
            Ok(ExitCode::SUCCESS)
        }
        TestbedAction::Down { name } => {
            let removed = Testbed::down(&name)?;
            if removed.is_empty() {
                println!("no namespace of testbed {name}");
            }
            for ns in removed {
                println!("removed {ns}");
            }
            Ok(ExitCode::SUCCESS)
        }
        TestbedAction::Check => check(),
    }
}

/// Prints the hosts, their interfaces and addresses.
fn describe(tb: &Testbed) -> anyhow::Result<()> {
    let kind = match tb.topology() {
        Topology::Inline => "inline".to_string(),
        Topology::Paper { nf_hosts } => format!("paper, {nf_hosts} NF host(s)"),
    };
    println!("testbed {} ({kind}) is up:", tb.prefix());
    for end in [tb.src(), tb.dst()] {
        println!("  {:<16} {} {}/24 ({})", end.ns, end.iface, end.ip, tb.mac(&end.ns, &end.iface)?);
    }
    if let Some(sw) = tb.switch() {
        let ports: Vec<String> = sw.nf_ports.iter().map(|p| format!("{}/{}", p.a, p.b)).collect();
        println!(
            "  {:<16} {} (to src), {} (to dst), {} (to the NF hosts' a/b)",
            sw.ns,
            sw.input,
            sw.output,
            ports.join(" ")
        );
        println!("  {:<16} management bridge {} {}/24", "", sw.mgmt.iface, sw.mgmt.ip);
    }
    for nf in tb.nfs() {
        let bridge = nf.bridge.as_ref().map(|b| format!(", bridged by {b}")).unwrap_or_default();
        let mgmt = nf.mgmt.as_ref().map(|m| format!("; management {} {}/24", m.iface, m.ip)).unwrap_or_default();
        println!("  {:<16} {} (to src), {} (to dst), no address{bridge}{mgmt}", nf.ns, nf.a, nf.b);
    }
    Ok(())
}

/// `estate testbed check`: HTTP and iperf3 from the source to the target across the
/// inline testbed's kernel bridge; removes the testbed even when interrupted.
fn check() -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let tb = Testbed::inline(&Options { kernel_bridge: true, ..Options::default() })?;
    describe(&tb)?;
    // Dropping `tb` on any error below removes it, with every process in it.
    let http = http(&tb, &stop);
    report("http", &http);
    let iperf = if stop.load(Ordering::Relaxed) { Err(anyhow!("interrupted")) } else { iperf(&tb, &stop) };
    report("iperf3", &iperf);
    let prefix = tb.prefix().to_string();
    tb.teardown()?;
    println!("removed testbed {prefix}");
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(if http.is_ok() && iperf.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn report(what: &str, result: &anyhow::Result<String>) {
    match result {
        Ok(text) => println!("{what}: ok\n{text}"),
        Err(e) => println!("{what}: FAILED: {e:#}"),
    }
}

/// The HTTP server in the target, `curl` in the source: the page it got.
fn http(tb: &Testbed, stop: &AtomicBool) -> anyhow::Result<String> {
    let dst = tb.dst();
    let mut server = tb.command(&dst.ns, "python3");
    server.args(["-c", HTTP_SERVER, &dst.ip.to_string(), &HTTP_PORT.to_string()]).stdout(Stdio::null());
    server.spawn().context("starting the HTTP server (python3) in the target")?;
    tb.wait_listening(&dst.ns, HTTP_PORT, Duration::from_secs(10))?;
    let url = format!("http://{}:{HTTP_PORT}/", dst.ip);
    let mut curl = tb.command(&tb.src().ns, "curl");
    curl.args(["-sS", "--max-time", "5", &url]);
    let out = wait(curl, stop)?;
    let page = String::from_utf8_lossy(&out.stdout);
    let peer = page.split_once("peer=").map(|(_, rest)| rest.split(['<', '\n']).next().unwrap_or(rest));
    match peer {
        Some(peer) => Ok(format!("  GET {url} from {}: the server saw peer={peer}", tb.src().ip)),
        None => bail!("no page from {url}: {}", String::from_utf8_lossy(&out.stderr).trim()),
    }
}

/// iperf3's server in the target, its client in the source for 2 s: the summary.
fn iperf(tb: &Testbed, stop: &AtomicBool) -> anyhow::Result<String> {
    let dst = tb.dst();
    let mut server = tb.command(&dst.ns, "iperf3");
    server.args(["-s", "-1", "-B", &dst.ip.to_string(), "-p", &IPERF_PORT.to_string()]).stdout(Stdio::null());
    server.spawn().context("starting iperf3 in the target")?;
    tb.wait_listening(&dst.ns, IPERF_PORT, Duration::from_secs(10))?;
    let mut client = tb.command(&tb.src().ns, "iperf3");
    client.args(["-c", &dst.ip.to_string(), "-p", &IPERF_PORT.to_string(), "-t", "2", "-f", "m"]);
    let out = wait(client, stop)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = text.lines().filter(|l| l.ends_with("sender") || l.ends_with("receiver")).collect();
    if summary.is_empty() {
        bail!("no summary: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(summary.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"))
}

/// Runs `cmd` to completion unless a signal comes first (then the testbed's removal
/// kills it: it runs in one of its namespaces).
fn wait(mut cmd: Command, stop: &AtomicBool) -> anyhow::Result<Output> {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    loop {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(out) => return Ok(out?),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("lost the command's output"),
        }
    }
}
