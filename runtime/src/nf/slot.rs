//! A node's one NF place: load, replace, unload, a held input.

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::nf::counters::NfCounters;
use crate::nf::env::{NfEnv, Unshared};
use crate::nf::input::Input;
use crate::nf::{FlowState, NfRun, NfSettings};
use crate::wasm::{GuestError, WasmHost};

/// Why an NF was not loaded or replaced. Nothing changed: a running NF keeps running.
#[derive(Debug, thiserror::Error)]
pub enum NfLoadError {
    /// The module or its configuration was refused (or its instance failed to start).
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// `replace` asked, and no NF runs.
    #[error("no NF is running on this node to replace (nf load starts one)")]
    NothingToReplace,
    /// `load` asked, and the node has no input for an NF.
    #[error("no NF input on this node: start it with --input")]
    NoInput,
}

/// The NF place of a node: at most one NF, its input, and hot loading, replacement and
/// unloading of the NF while the node runs.
pub struct NfSlot {
    pub(crate) host: Arc<WasmHost>,
    pub(crate) state: Arc<dyn NfEnv>,
    pub(crate) counters: Arc<NfCounters>,
    pub(crate) run: Mutex<Option<NfRun>>,
    /// The state the running NF sees (shared, or unshared for a baseline run).
    pub(crate) run_state: Mutex<Option<Arc<dyn NfEnv>>>,
    /// An input given without an NF, waiting for `load`.
    pub(crate) held: Mutex<Option<(Input, NfSettings)>>,
}

impl fmt::Debug for NfSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NfSlot").field("status", &self.status()).finish_non_exhaustive()
    }
}

impl NfSlot {
    /// An empty slot whose NFs run on `host` with `state`.
    pub fn new(host: Arc<WasmHost>, state: Arc<dyn NfEnv>, counters: Arc<NfCounters>) -> NfSlot {
        NfSlot { host, state, counters, run: Mutex::new(None), run_state: Mutex::new(None), held: Mutex::new(None) }
    }

    /// The counters of the slot's NFs (shared with packet sources that count, e.g. bad
    /// frames of a steered input).
    pub fn counters(&self) -> Arc<NfCounters> {
        self.counters.clone()
    }

    /// Starts the NF `bytes` over `packets` now (replacing any NF and held input).
    pub fn start(
        &self,
        bytes: &[u8],
        config: &str,
        packets: impl Into<Input>,
        settings: NfSettings,
    ) -> Result<(), GuestError> {
        let module = self.host.load_nf(bytes)?;
        let state: Arc<dyn NfEnv> = match settings.flows {
            FlowState::Off => Arc::new(Unshared(self.state.clone())),
            _ => self.state.clone(),
        };
        let run = NfRun::start(
            self.host.clone(),
            module,
            config.to_string(),
            state.clone(),
            packets,
            settings,
            self.counters.clone(),
        )?;
        *self.held.lock().unwrap() = None;
        *self.run_state.lock().unwrap() = Some(state);
        *self.run.lock().unwrap() = Some(run);
        Ok(())
    }

    /// Keeps `packets` until an NF is loaded.
    pub fn hold_input(&self, packets: impl Into<Input>, settings: NfSettings) {
        *self.held.lock().unwrap() = Some((packets.into(), settings));
    }

    /// Loads the NF `bytes`: it replaces the running NF between two packets (the state
    /// in the store stays), or starts on the held input. The new instance is built here,
    /// so a bad module or configuration is an error and changes nothing.
    pub fn load(&self, bytes: &[u8], config: &str) -> Result<&'static str, NfLoadError> {
        self.load_or_replace(bytes, config, false)
    }

    /// Replaces the running NF with `bytes` between two packets (the state in the store
    /// stays); an error, changing nothing, if no NF is running or the module is bad.
    pub fn replace(&self, bytes: &[u8], config: &str) -> Result<&'static str, NfLoadError> {
        self.load_or_replace(bytes, config, true)
    }

    pub(crate) fn load_or_replace(
        &self,
        bytes: &[u8],
        config: &str,
        replace_only: bool,
    ) -> Result<&'static str, NfLoadError> {
        let module = self.host.load_nf(bytes)?;
        let running = self.run.lock().unwrap();
        if let Some(run) = running.as_ref().filter(|r| !r.is_finished()) {
            let state = self.run_state.lock().unwrap().clone().unwrap_or_else(|| self.state.clone());
            let instance = self.host.start_nf(&module, state, config)?;
            run.replace(module, config.to_string(), instance);
            return Ok("replaced");
        }
        drop(running);
        if replace_only {
            return Err(NfLoadError::NothingToReplace);
        }
        let Some((packets, settings)) = self.held.lock().unwrap().take() else {
            return Err(NfLoadError::NoInput);
        };
        self.start(bytes, config, packets, settings)?;
        Ok("started")
    }

    /// Stops the NF; the rest of its input is not processed. Returns whether one ran.
    pub fn unload(&self) -> bool {
        self.run.lock().unwrap().take().is_some()
    }

    /// `running`, `finished` (input exhausted), `waiting` (input held, no NF) or `none`.
    pub fn status(&self) -> &'static str {
        match self.run.lock().unwrap().as_ref() {
            Some(run) if !run.is_finished() => "running",
            Some(_) => "finished",
            None if self.held.lock().unwrap().is_some() => "waiting",
            None => "none",
        }
    }

    /// Whether no NF is processing packets.
    pub fn finished(&self) -> bool {
        self.run.lock().unwrap().as_ref().is_none_or(NfRun::is_finished)
    }
}
