//! Packet sources of an NF: synthetic, pcap files, steered by the switch, live
//! interfaces (observing, or inline with a sink that sends forwarded frames on).

pub mod frame;
pub mod live;
pub mod pcap;
pub mod steer;
pub mod synth;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use estate_guest::Verdict;
use estate_guest::nf::Rewrite;

use crate::nf::counters::NfCounters;
use crate::nf::input::live::{LiveError, Unparsed};
use crate::nf::input::steer::{SteerError, SteerSource};
use crate::nf::input::synth::{OwnedPacket, SynthConfig};

/// An input as an operator names it (`--input`): `synth:SPEC`, `pcap:FILE`,
/// `steer:ENDPOINT`, `live:IFACE` or `inline:A,B`.
#[derive(Clone, Debug, PartialEq)]
pub enum InputSpec {
    /// The seeded synthetic generator.
    Synth(SynthConfig),
    /// A pcap file.
    Pcap(PathBuf),
    /// Frames pushed by the switch emulator to a PULL socket bound here.
    Steer(String),
    /// Every frame captured on a network interface; nothing is sent.
    Live(String),
    /// A bump in the wire between two interfaces: a frame in on one side goes out of
    /// the other if the NF forwards it.
    Inline {
        /// The first side.
        a: String,
        /// The second side.
        b: String,
        /// What happens to frames the NF cannot see.
        unparsed: Unparsed,
    },
}

impl FromStr for InputSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<InputSpec, String> {
        match spec.split_once(':') {
            Some(("synth", config)) => Ok(InputSpec::Synth(config.parse()?)),
            Some(("pcap", path)) if !path.is_empty() => Ok(InputSpec::Pcap(PathBuf::from(path))),
            Some(("steer", endpoint)) if !endpoint.is_empty() => Ok(InputSpec::Steer(endpoint.to_string())),
            Some(("live", iface)) if !iface.is_empty() => Ok(InputSpec::Live(iface.to_string())),
            Some(("inline", sides)) => match live::interface_pair(sides) {
                Some([a, b]) if a != b => Ok(InputSpec::Inline { a, b, unparsed: Unparsed::default() }),
                _ => Err(format!("input {spec:?}: expected inline:IFACE_A,IFACE_B (two different interfaces)")),
            },
            _ => Err(format!(
                "unsupported input {spec:?}: expected synth:SPEC, pcap:FILE, steer:ENDPOINT, live:IFACE or inline:A,B"
            )),
        }
    }
}

/// Why an input could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The pcap file could not be read.
    #[error(transparent)]
    Pcap(#[from] pcap::PcapError),
    /// The steered input's socket could not be bound.
    #[error(transparent)]
    Steer(#[from] SteerError),
    /// A live interface could not be opened.
    #[error(transparent)]
    Live(#[from] LiveError),
}

impl InputSpec {
    /// Opens the input; a steered input counts its bad frames in `counters` and also
    /// returns the endpoint it bound.
    pub fn open(&self, counters: Arc<NfCounters>) -> Result<(Input, Option<String>), InputError> {
        match self {
            InputSpec::Synth(config) => {
                let packets: Packets = Box::new(synth::synthetic(config));
                Ok((packets.into(), None))
            }
            InputSpec::Pcap(path) => {
                let packets: Packets = Box::new(pcap::read(path)?);
                Ok((packets.into(), None))
            }
            InputSpec::Steer(endpoint) => {
                let source = SteerSource::bind(endpoint, counters)?;
                let bound = source.endpoint().to_string();
                Ok((source.into_input(), Some(bound)))
            }
            InputSpec::Live(iface) => Ok((live::observe(iface, counters)?, None)),
            InputSpec::Inline { a, b, unparsed } => Ok((live::inline(a, b, *unparsed, counters)?, None)),
        }
    }
}

/// Logs the 1st, 1000th, 2000th… occurrence (`n`) of something an input skipped at
/// warn, the others at debug: a flood of bad frames is counted, not logged frame by frame.
pub(crate) fn rare_warn(n: u64, what: fmt::Arguments<'_>) {
    if n == 1 || n.is_multiple_of(1000) {
        tracing::warn!(occurrences = n, "{what}");
    } else {
        tracing::debug!("{what}");
    }
}

/// A packet source.
pub type Packets = Box<dyn Iterator<Item = OwnedPacket> + Send>;

/// Where decided packets go: an inline input sends forwarded ones out of the other
/// side. Called on the NF thread once per packet, in the order the NF decided them.
pub trait Sink: Send {
    /// `packet` got `verdict`; `rewrite` is the rewrite the NF asked for, if any.
    fn decided(&mut self, packet: &OwnedPacket, verdict: Verdict, rewrite: Option<&Rewrite>);
}

/// An NF's input: its packets, the flag that stops them, and where decided packets go
/// (nowhere, but for an inline input). The running NF raises the flag when it is
/// stopped (unloaded, replaced by another input, its node shut down); a source that
/// waits for packets polls it between bounded waits and then ends.
///
/// The NF thread hands the NF several packets in one call when they are there already:
/// from a source that never waits, as many as it takes; from one that waits, as many as
/// the lower bound of its `size_hint` says it holds (frames received, not yet handed
/// out), so no packet waits for another to arrive.
pub struct Input {
    pub(crate) packets: Packets,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) sink: Option<Box<dyn Sink>>,
    /// Whether the source may wait for packets.
    pub(crate) waits: bool,
}

impl Input {
    /// An input whose source waits for packets and ends once `stop` is raised.
    pub fn stoppable(packets: Packets, stop: Arc<AtomicBool>) -> Input {
        Input { packets, stop, sink: None, waits: true }
    }

    /// This input, with its decided packets handed to `sink`.
    pub fn with_sink(self, sink: Box<dyn Sink>) -> Input {
        Input { sink: Some(sink), ..self }
    }
}

impl From<Packets> for Input {
    /// An input whose source never waits (a generator, a file): it needs no stop flag of
    /// its own, the NF thread checks one between packets.
    fn from(packets: Packets) -> Input {
        Input { packets, stop: Arc::default(), sink: None, waits: false }
    }
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Input").field("stopped", &self.stop.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}
