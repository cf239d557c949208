//! Packet sources of an NF: synthetic, pcap files, steered by the switch.

pub mod pcap;
pub mod steer;
pub mod synth;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::nf::counters::NfCounters;
use crate::nf::input::steer::{SteerError, SteerSource};
use crate::nf::input::synth::{OwnedPacket, SynthConfig};

/// An input as an operator names it (`--input`): `synth:SPEC`, `pcap:FILE` or
/// `steer:ENDPOINT`.
#[derive(Clone, Debug, PartialEq)]
pub enum InputSpec {
    /// The seeded synthetic generator.
    Synth(SynthConfig),
    /// A pcap file.
    Pcap(PathBuf),
    /// Frames pushed by the switch emulator to a PULL socket bound here.
    Steer(String),
}

impl FromStr for InputSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<InputSpec, String> {
        match spec.split_once(':') {
            Some(("synth", config)) => Ok(InputSpec::Synth(config.parse()?)),
            Some(("pcap", path)) if !path.is_empty() => Ok(InputSpec::Pcap(PathBuf::from(path))),
            Some(("steer", endpoint)) if !endpoint.is_empty() => Ok(InputSpec::Steer(endpoint.to_string())),
            _ => Err(format!("unsupported input {spec:?}: expected synth:SPEC, pcap:FILE or steer:ENDPOINT")),
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
        }
    }
}

/// A packet source.
pub type Packets = Box<dyn Iterator<Item = OwnedPacket> + Send>;

/// An NF's input: its packets and the flag that stops them. The running NF raises the
/// flag when it is stopped (unloaded, replaced by another input, its node shut down); a
/// source that waits for packets polls it between bounded waits and then ends.
pub struct Input {
    pub(crate) packets: Packets,
    pub(crate) stop: Arc<AtomicBool>,
}

impl Input {
    /// An input whose source ends once `stop` is raised.
    pub fn stoppable(packets: Packets, stop: Arc<AtomicBool>) -> Input {
        Input { packets, stop }
    }
}

impl From<Packets> for Input {
    /// An input whose source never waits (a generator, a file): it needs no stop flag of
    /// its own, the NF thread checks one between packets.
    fn from(packets: Packets) -> Input {
        Input { packets, stop: Arc::default() }
    }
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Input").field("stopped", &self.stop.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}
