//! Running `ip` and friends: the testbed's errors, its names, and the namespace
//! primitives (add, delete, list, the processes inside).

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// What went wrong building, using or removing a testbed. Every command error names
/// the command line and carries its stderr.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command ran and exited with a failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// What it wrote to stderr (trimmed).
        stderr: String,
    },
    /// A command could not be started (not installed, not on PATH).
    #[error("`{command}` could not be started: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// `ip netns add` was refused: making namespaces needs privileges.
    #[error("`{command}` was refused: network namespaces need root or CAP_NET_ADMIN ({stderr})")]
    Privilege {
        /// The command line.
        command: String,
        /// What it wrote to stderr (trimmed).
        stderr: String,
    },
    /// A testbed with this prefix already has namespaces.
    #[error("testbed `{0}` already exists: remove it with `estate testbed down --name {0}`")]
    Exists(String),
    /// The topology or a name asked for is not possible.
    #[error("invalid testbed: {0}")]
    Invalid(String),
    /// An answer of `ip` could not be understood.
    #[error("cannot read `{command}`'s output: {what}")]
    Parse {
        /// The command line.
        command: String,
        /// What was missing.
        what: String,
    },
    /// Nothing listened on a TCP port in a namespace in time.
    #[error("nothing listens on TCP port {port} in namespace {ns} after {waited_ms} ms")]
    NotListening {
        /// The namespace.
        ns: String,
        /// The port.
        port: u16,
        /// How long it was waited for.
        waited_ms: u64,
    },
}

/// The command line of `cmd`, for error messages (a script argument as `<script>`).
pub(crate) fn line(cmd: &Command) -> String {
    let word = |w: &OsStr| match w.to_string_lossy() {
        w if w.contains('\n') => "<script>".to_string(),
        w => w.into_owned(),
    };
    let mut words = vec![word(cmd.get_program())];
    words.extend(cmd.get_args().map(word));
    words.join(" ")
}

/// Runs `cmd` to completion (stdin closed), failing with its stderr unless it succeeds.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, Error> {
    let output = cmd.stdin(Stdio::null()).output().map_err(|source| Error::Spawn { command: line(cmd), source })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::Command {
            command: line(cmd),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Runs `ip ARGS…`.
pub(crate) fn ip<S: AsRef<OsStr>>(args: &[S]) -> Result<Output, Error> {
    run(Command::new("ip").args(args))
}

/// Runs `ip -n NS ARGS…` (an `ip` command inside namespace `ns`).
pub(crate) fn ip_in(ns: &str, args: &[&str]) -> Result<Output, Error> {
    run(Command::new("ip").args(["-n", ns]).args(args))
}

/// A command running `program` inside namespace `ns` (`ip netns exec NS PROGRAM`).
pub fn in_ns(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

/// Serializes this process' `ip netns add`/`del`: the first one in a fresh
/// /run/netns makes it a shared mount point, which concurrent calls would stack.
static NETNS: Mutex<()> = Mutex::new(());

/// Makes namespace `ns`.
pub(crate) fn netns_add(ns: &str) -> Result<(), Error> {
    let _serial = NETNS.lock().unwrap_or_else(|e| e.into_inner());
    match ip(&["netns", "add", ns]) {
        Err(Error::Command { command, stderr, .. })
            if stderr.contains("Operation not permitted") || stderr.contains("Permission denied") =>
        {
            Err(Error::Privilege { command, stderr })
        }
        other => other.map(drop),
    }
}

/// Kills every process inside namespace `ns` (they would keep it alive), then deletes it.
pub(crate) fn netns_del(ns: &str) -> Result<(), Error> {
    let pids = ip(&["netns", "pids", ns])?;
    let pids: Vec<String> = String::from_utf8_lossy(&pids.stdout).split_whitespace().map(String::from).collect();
    if !pids.is_empty() {
        // A process may exit between the listing and the kill: not an error.
        let _ = Command::new("kill").arg("-KILL").args(&pids).stderr(Stdio::null()).status();
    }
    let _serial = NETNS.lock().unwrap_or_else(|e| e.into_inner());
    ip(&["netns", "del", ns]).map(drop)
}

/// Every named namespace (`ip netns list`, without the ids).
pub(crate) fn netns_list() -> Result<Vec<String>, Error> {
    let out = ip(&["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect())
}

/// Namespaces of the testbed `prefix` (named `PREFIX-HOST`).
pub(crate) fn netns_of(prefix: &str) -> Result<Vec<String>, Error> {
    let start = format!("{prefix}-");
    Ok(netns_list()?.into_iter().filter(|n| n.starts_with(&start)).collect())
}

/// Checks a prefix given by the caller: 1–32 ASCII letters, digits, `_` and `-`.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), Error> {
    let fine = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if prefix.is_empty() || prefix.len() > 32 || !prefix.chars().all(fine) {
        return Err(Error::Invalid(format!("prefix {prefix:?}: 1 to 32 ASCII letters, digits, `_` and `-` wanted")));
    }
    Ok(())
}

/// A prefix unique to this process and call (`es` + pid + `t` + counter), skipping any
/// whose namespaces are left over from an earlier process of the same pid.
pub(crate) fn fresh_prefix() -> Result<String, Error> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let existing = netns_list()?;
    loop {
        let prefix = format!("es{}t{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let start = format!("{prefix}-");
        if !existing.iter().any(|n| n.starts_with(&start)) {
            return Ok(prefix);
        }
    }
}
