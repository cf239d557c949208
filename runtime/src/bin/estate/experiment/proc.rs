//! The processes of an experiment: `estate node` instances and the switch emulator,
//! each stopped when dropped (also when the experiment fails half-way).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use estate::control::client;
use estate::control::{ControlReply, ControlRequest};
use estate_guest::{Item, Value};

const WAIT: Duration = Duration::from_secs(30);

/// One `estate node` process.
pub(crate) struct Instance {
    pub(crate) name: String,
    pub(crate) listen: String,
    pub(crate) control: String,
    /// The steered input's endpoint, for an instance with `--input steer:…`.
    pub(crate) steer: Option<String>,
    /// Its log (stderr).
    pub(crate) log: PathBuf,
    child: Child,
}

/// The first line `child` prints; the rest of its stdout goes to `rest` (so it never
/// writes into a closed pipe).
fn first_line(child: &mut Child, rest: &Path) -> anyhow::Result<String> {
    let mut reader = BufReader::new(child.stdout.take().context("no stdout")?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut file = std::fs::File::create(rest)?;
    std::thread::spawn(move || std::io::copy(&mut reader, &mut file));
    Ok(line)
}

/// A value of `field=VALUE` in the ready line.
fn field(line: &str, name: &str) -> Option<String> {
    line.split_whitespace().find_map(|f| f.strip_prefix(name)).map(String::from)
}

impl Instance {
    /// Starts instance `name` (joining `join` if given) with more `estate node`
    /// arguments; its log goes to `dir/NAME.log`.
    pub(crate) fn start(dir: &Path, name: &str, join: Option<&str>, args: &[String]) -> anyhow::Result<Instance> {
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["--control", "tcp://127.0.0.1:*", "node", "--id", name, "--listen", "tcp://127.0.0.1:*"]);
        if let Some(seed) = join {
            command.args(["--join", seed]);
        }
        command.args(args).env("RUST_LOG", "info");
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(file).spawn()?;
        let line = first_line(&mut child, &dir.join(format!("{name}.out")))?;
        let (Some(listen), Some(control)) = (field(&line, "listen="), field(&line, "control=")) else {
            let _ = child.kill();
            let _ = child.wait();
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("instance {name} did not start: {}", said.trim());
        };
        Ok(Instance { name: name.into(), listen, control, steer: field(&line, "steer="), log, child })
    }

    /// One control request.
    pub(crate) fn call(&self, request: ControlRequest, wait: Duration) -> anyhow::Result<ControlReply> {
        match client::call(&self.control, &request, wait)? {
            ControlReply::Error(e) => bail!("{}: {e}", self.name),
            reply => Ok(reply),
        }
    }

    /// The node's counters.
    pub(crate) fn stats(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        match self.call(ControlRequest::Stats, WAIT)? {
            ControlReply::Stats(rows) => Ok(rows.into_iter().collect()),
            other => bail!("{}: stats answered {other:?}", self.name),
        }
    }

    /// The integer at `key` in the node's own store (0 if absent).
    pub(crate) fn local_int(&self, key: &str) -> anyhow::Result<i64> {
        match self.call(ControlRequest::Get { key: key.into() }, WAIT)? {
            ControlReply::Value(Some((Value::Int(n), _))) => Ok(n),
            ControlReply::Value(None) => Ok(0),
            other => bail!("{}: {key} is {other:?}, not an integer", self.name),
        }
    }

    /// Every item of every member whose key matches `pattern`, with its origin.
    pub(crate) fn list(&self, pattern: &str) -> anyhow::Result<Vec<Item>> {
        let request = ControlRequest::Global {
            pattern: pattern.into(),
            reducer: "list".into(),
            timeout_ms: 5000,
            consistency: estate::global::Consistency::All,
            remote: false,
        };
        match self.call(request, WAIT)? {
            ControlReply::Global(answer) => match answer.result {
                estate::reduce::Reduced::Items(items) => Ok(items),
                estate::reduce::Reduced::Nothing => Ok(Vec::new()),
                other => bail!("{}: list answered {other:?}", self.name),
            },
            other => bail!("{}: global answered {other:?}", self.name),
        }
    }

    /// Loads the NF `module` with `config` onto the held input.
    pub(crate) fn load_nf(&self, module: &Path, config: &str) -> anyhow::Result<()> {
        let bytes = std::fs::read(module)?;
        self.call(ControlRequest::NfLoad { bytes, config: config.into() }, Duration::from_secs(120)).map(drop)
    }

    /// Stops the NF (after its current packet).
    pub(crate) fn unload_nf(&self) -> anyhow::Result<()> {
        self.call(ControlRequest::NfUnload, WAIT).map(drop)
    }

    /// `running`, `finished`, `waiting` or `none`.
    pub(crate) fn nf_status(&self) -> anyhow::Result<String> {
        match self.call(ControlRequest::NfStatus, WAIT)? {
            ControlReply::Nf(status) => Ok(status),
            other => bail!("{}: nf status answered {other:?}", self.name),
        }
    }

    /// Waits until the node sees the `n - 1` other members of an `n`-instance cluster
    /// alive.
    pub(crate) fn wait_members(&self, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let ControlReply::Members(view) = self.call(ControlRequest::Members, WAIT)?
                && view.iter().filter(|m| m.id != self.name && m.state == "alive").count() + 1 >= n
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{}: fewer than {n} members alive after {WAIT:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The switch emulator, `estate traffic switch`, as a process.
pub(crate) struct Switch {
    child: Child,
    /// Its command endpoint.
    pub(crate) commands: String,
    pub(crate) flows_out: PathBuf,
}

impl Switch {
    /// Starts the switch with `args` (plus `--commands` and `--flows-out`).
    pub(crate) fn start(dir: &Path, label: &str, args: &[String]) -> anyhow::Result<Switch> {
        let flows_out = dir.join(format!("{label}-flows.json"));
        let log = dir.join(format!("{label}-switch.log"));
        let mut child = Command::new(std::env::current_exe()?)
            .args(["traffic", "switch", "--commands", "tcp://127.0.0.1:*", "--flows-out"])
            .arg(&flows_out)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let line = first_line(&mut child, &dir.join(format!("{label}-switch.out")))?;
        let Some(commands) = field(&line, "commands=") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the switch did not start: {}", std::fs::read_to_string(&log).unwrap_or_default().trim());
        };
        Ok(Switch { child, commands, flows_out })
    }

    /// Sends one step (`move FRACTION FROM TO`).
    pub(crate) fn command(&self, step: &str) -> anyhow::Result<String> {
        let reply = client::round_trip(&self.commands, step.as_bytes(), WAIT)?;
        let reply = String::from_utf8_lossy(&reply).into_owned();
        match reply.strip_prefix("error: ") {
            Some(why) => bail!("switch: {why}"),
            None => Ok(reply),
        }
    }

    /// Whether the stream has ended (the process exited).
    pub(crate) fn finished(&mut self) -> anyhow::Result<bool> {
        match self.child.try_wait()? {
            Some(status) if status.success() => Ok(true),
            Some(status) => bail!("the switch failed ({status})"),
            None => Ok(false),
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
