//! Reducer guests: loading, calls by phase, warm instances.

use std::fmt;
use std::sync::{Arc, Mutex};

use estate_guest::Phase;
use estate_guest::abi::{self, export, status};
use estate_guest::codec::{self, Item};
use wasmtime::{InstancePre, TypedFunc};

use super::*;

impl WasmHost {
    /// Compiles and checks a reducer module under the host's default limits.
    pub fn load_reducer(&self, bytes: &[u8]) -> Result<ReducerModule, GuestError> {
        self.load_reducer_with(bytes, self.limits.clone())
    }

    /// Compiles and checks a reducer module that runs under `limits`. It must export
    /// `memory`, `estate_abi_version`, `estate_alloc` and `estate_reduce` with the ABI's
    /// types; `estate_reducer_flags` and `estate_finish` are optional.
    pub fn load_reducer_with(&self, bytes: &[u8], limits: Limits) -> Result<ReducerModule, GuestError> {
        if bytes.len() > limits.module_bytes {
            return Err(GuestError::ModuleSize { size: bytes.len(), limit: limits.module_bytes });
        }
        let module = self.compile(bytes, export::REDUCE)?;
        let pre = self.linker.instantiate_pre(&module).map_err(|e| GuestError::Invalid(format!("{e:#}")))?;
        // Instantiate once now so a bad module fails at load time, not at first use.
        let mut store = self.store(&limits, None);
        let guest = self.instantiate(&mut store, &pre, &limits)?;
        let _: TypedFunc<(i32, i32, i32), i32> = typed(&guest.instance, &mut store, export::REDUCE)?;
        let has_finish = module.get_export(export::FINISH).is_some();
        if has_finish {
            let _: TypedFunc<(i32, i32), i32> = typed(&guest.instance, &mut store, export::FINISH)?;
        }
        let flags = match module.get_export(export::REDUCER_FLAGS) {
            None => abi::flags::NONE,
            Some(_) => {
                let f: TypedFunc<(), i32> = typed(&guest.instance, &mut store, export::REDUCER_FLAGS)?;
                f.call(&mut store, ()).map_err(|e| classify(e, &store, &limits))?
            }
        };
        Ok(ReducerModule {
            pre,
            idle: Arc::default(),
            hash: sha256(bytes),
            combinable: flags & abi::flags::COMBINABLE != 0,
            values_only: flags & abi::flags::VALUES_ONLY != 0,
            ints: flags & abi::flags::INTS != 0,
            has_finish,
            limits,
        })
    }

    /// Runs a reducer over `items` (store items, or its own partials).
    pub fn reduce(&self, reducer: &ReducerModule, items: &[Item], phase: Phase) -> Result<Option<Item>, GuestError> {
        let mut input = Vec::new();
        codec::encode_items(items, &mut input);
        self.reduce_encoded(reducer, &input, phase)
    }

    /// [`WasmHost::reduce`] over an item list already in the guest encoding.
    pub fn reduce_encoded(
        &self,
        reducer: &ReducerModule,
        input: &[u8],
        phase: Phase,
    ) -> Result<Option<Item>, GuestError> {
        self.call_reducer(reducer, export::REDUCE, input, Some(phase.code()))
    }

    /// Runs a reducer that declared [`abi::flags::INTS`] over store items given as their
    /// integer values alone (`abi::INTS_PHASE`; `estate_guest::ints`).
    pub fn reduce_ints(&self, reducer: &ReducerModule, input: &[u8]) -> Result<Option<Item>, GuestError> {
        if !reducer.ints {
            return Err(GuestError::Abi("the reducer did not declare that it takes integer values alone".into()));
        }
        self.call_reducer(reducer, export::REDUCE, input, Some(abi::INTS_PHASE))
    }

    /// Turns a reducer's combined result into its answer (`estate_finish`; without
    /// that export, the result is the answer).
    pub fn finish(&self, reducer: &ReducerModule, partial: Item) -> Result<Option<Item>, GuestError> {
        if !reducer.has_finish {
            return Ok(Some(partial));
        }
        let mut input = Vec::new();
        partial.encode(&mut input);
        self.call_reducer(reducer, export::FINISH, &input, None)
    }

    /// `finish(reduce(items))`: the whole reduction where all items are at hand.
    pub fn reduce_all(&self, reducer: &ReducerModule, items: &[Item]) -> Result<Option<Item>, GuestError> {
        match self.reduce(reducer, items, Phase::Items)? {
            Some(partial) => self.finish(reducer, partial),
            None => Ok(None),
        }
    }

    pub(crate) fn call_reducer(
        &self,
        reducer: &ReducerModule,
        export: &str,
        input: &[u8],
        phase: Option<i32>,
    ) -> Result<Option<Item>, GuestError> {
        let limits = &reducer.limits;
        // A warm instance from an earlier call if there is one (no instantiation: the
        // call then costs about what the guest's own work does), else a fresh one.
        let warm = reducer.idle.lock().unwrap().pop();
        let Warm { mut store, guest } = match warm {
            Some(mut warm) => {
                arm(&mut warm.store, limits);
                warm
            }
            None => {
                let mut store = self.store(limits, None);
                let guest = self.instantiate(&mut store, &reducer.pre, limits)?;
                arm(&mut store, limits);
                Warm { store, guest }
            }
        };
        store.data_mut().result = None;
        let ptr = guest.write_input(&mut store, input, limits)?;
        let len = len_i32(input)?;
        let called = match phase {
            Some(phase) => {
                typed::<(i32, i32, i32), i32>(&guest.instance, &mut store, export)?.call(&mut store, (ptr, len, phase))
            }
            None => typed::<(i32, i32), i32>(&guest.instance, &mut store, export)?.call(&mut store, (ptr, len)),
        };
        // A trap leaves the instance in an unknown state: it is dropped, never reused.
        let code = called.map_err(|e| classify(e, &store, limits))?;
        let output = store.data_mut().result.take();
        let answer = match (code, output) {
            (status::ITEM, Some(bytes)) => {
                let mut r = codec::Reader::new(&bytes);
                Item::decode(&mut r)
                    .and_then(|item| r.finish().map(|()| Some(item)))
                    .map_err(|e| GuestError::Abi(format!("reducer returned a malformed item: {e}")))
            }
            (status::ITEM, None) => Err(GuestError::Abi("reducer said ITEM but handed none back".into())),
            (status::NONE, _) => Ok(None),
            (status::ERROR, msg) => Err(GuestError::Guest(message(msg))),
            (status::BAD_INPUT, msg) => Err(GuestError::Abi(format!("reducer rejected its input: {}", message(msg)))),
            (other, _) => Err(GuestError::Abi(format!("unknown reducer status {other}"))),
        };
        // Only an instance that kept to the ABI goes back for reuse.
        if matches!(answer, Ok(_) | Err(GuestError::Guest(_))) {
            let mut idle = reducer.idle.lock().unwrap();
            if idle.len() < MAX_IDLE_INSTANCES {
                idle.push(Warm { store, guest });
            }
        }
        answer
    }
}

/// A compiled, checked reducer module. Cheap to clone; instantiated per call.
#[derive(Clone)]
pub struct ReducerModule {
    pub(crate) pre: InstancePre<GuestData>,
    /// Instances that finished a call cleanly, ready for the next one.
    pub(crate) idle: Arc<Mutex<Vec<Warm>>>,
    pub(crate) hash: [u8; 32],
    pub(crate) combinable: bool,
    pub(crate) values_only: bool,
    pub(crate) ints: bool,
    pub(crate) has_finish: bool,
    pub(crate) limits: Limits,
}

impl fmt::Debug for ReducerModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReducerModule")
            .field("hash", &hex::encode(self.hash))
            .field("combinable", &self.combinable)
            .field("values_only", &self.values_only)
            .field("ints", &self.ints)
            .field("has_finish", &self.has_finish)
            .field("limits", &self.limits)
            .finish()
    }
}

impl ReducerModule {
    /// sha256 of the module's bytes: its identity on the wire and in caches.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// Whether the reducer declared itself combinable (it may be pushed down).
    pub fn combinable(&self) -> bool {
        self.combinable
    }

    /// Whether the reducer declared it reads only values and versions of store items
    /// (`abi::flags::VALUES_ONLY`).
    pub fn values_only(&self) -> bool {
        self.values_only
    }

    /// Whether the reducer declared it also takes store items as their integer values
    /// alone (`abi::flags::INTS`).
    pub fn ints(&self) -> bool {
        self.ints
    }

    /// The limits its calls run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The same compiled module, its calls run under `limits` (its own warm instances
    /// if they differ: an instance's memory cap is set when it is made).
    pub fn with_limits(&self, limits: Limits) -> ReducerModule {
        if limits == self.limits {
            return self.clone();
        }
        ReducerModule { idle: Arc::default(), limits, ..self.clone() }
    }
}
