//! The explicit API (`include/estate.h`): nodes as handles, status codes, strings the
//! caller frees with `estate_free_string`. The prototype's API (`compat`) sits on it.

use std::ffi::{CString, c_char, c_void};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use estate_guest::Item;
use estate_runtime::global::GlobalError;
use estate_runtime::node::{Consistency, GlobalOptions, Node, NodeConfig, ServedRead, Timing};
use estate_runtime::reduce::Reduced;
use estate_runtime::text::{parse_value, plain};

use crate::ffi::{Failure, Status, guard, owned, put, text};

/// A running node, as C holds it.
#[derive(Debug)]
pub struct EstateNode {
    pub(crate) node: Node,
    id: CString,
    endpoint: CString,
    /// Threads that call `estate_on_served_read` callbacks; joined at stop.
    notifiers: Mutex<Vec<JoinHandle<()>>>,
}

/// `estate_config`: how to start a node.
#[repr(C)]
#[derive(Debug)]
pub struct EstateConfig {
    /// The node's id; NULL: the listen endpoint without `tcp://` (`127.0.0.1:7001`).
    pub id: *const c_char,
    /// ZeroMQ endpoint to listen on, e.g. `tcp://127.0.0.1:7001` (port `*`: any).
    pub listen: *const c_char,
    /// Seed endpoints to join through (`tcp://ip:port`), `join_len` of them.
    pub join: *const *const c_char,
    pub join_len: usize,
    /// Control endpoint for the `estate` command line; NULL: none.
    pub control: *const c_char,
    /// Heartbeat interval in ms; 0: the default.
    pub heartbeat_ms: u32,
}

/// `estate_read_options`: how a global read runs. NULL means all defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EstateReadOptions {
    /// Deadline in ms; 0: the default (1000).
    pub timeout_ms: u32,
    /// Non-zero: push the reducer down to the members (combinable reducers only).
    pub remote: i32,
    /// Non-zero: fail unless every live member answered (else best effort).
    pub all: i32,
}

/// `estate_read_info`: who answered a global read.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct EstateReadInfo {
    /// Members that answered, this node included.
    pub answered: usize,
    /// Live members that did not answer in time (their items are not in the result).
    pub missing: usize,
}

/// `estate_item`: one item a C reduce function sees. Valid during the call only.
#[repr(C)]
#[derive(Debug)]
pub struct EstateItem {
    pub key: *const c_char,
    /// The value as text (see `estate_get`).
    pub value: *const c_char,
    /// The id of the node that holds the item.
    pub origin: *const c_char,
    /// The version of its last write (a hybrid logical clock timestamp; larger is newer).
    pub version: u64,
}

/// A reduce function written in C: returns the answer as a string it keeps owning (it is
/// copied), or NULL for no answer.
pub type ReduceFn = unsafe extern "C" fn(items: *const EstateItem, n: usize, user: *mut c_void) -> *mut c_char;
/// Told of each read a node serves: its sequence number (from 1) and key pattern.
pub type ServedFn = unsafe extern "C" fn(seq: u64, pattern: *const c_char, user: *mut c_void);

/// A pointer C gave us, to carry to another thread (the C side's promise).
struct UserData(*mut c_void);
// SAFETY: the C caller promises `user` may be used from estate's threads (documented in
// estate.h at `estate_on_served_read`).
unsafe impl Send for UserData {}

impl EstateNode {
    pub(crate) fn start(config: NodeConfig) -> Result<EstateNode, Failure> {
        let node = Node::start(config).map_err(|e| Failure::new(Status::Start, e.to_string()))?;
        let id = CString::new(node.id()).unwrap_or_default();
        let endpoint = CString::new(node.endpoint()).unwrap_or_default();
        Ok(EstateNode { node, id, endpoint, notifiers: Mutex::new(Vec::new()) })
    }

    /// Live members other than this node.
    pub(crate) fn alive_peers(&self) -> usize {
        self.node.members().iter().skip(1).filter(|m| m.state == "alive").count()
    }

    /// Waits until `n` peers are alive; whether they were.
    pub(crate) fn wait_peers(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.alive_peers() < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    pub(crate) fn set(&self, key: &str, value: &str) -> Result<(), Failure> {
        self.node.set(key, parse_value(value)).map(drop).map_err(|e| Failure::new(Status::Store, e.to_string()))
    }

    pub(crate) fn add(&self, key: &str, delta: i64) -> Result<i64, Failure> {
        self.node.add(key, delta).map_err(|e| Failure::new(Status::Store, e.to_string()))
    }

    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.node.get(key).map(|v| plain(&v.value))
    }

    /// A global read's items, for a reduce function of the caller's.
    pub(crate) fn items(&self, pattern: &str, options: GlobalOptions) -> Result<(Vec<Item>, EstateReadInfo), Failure> {
        let (reduced, info) = self.global(pattern, "list", options)?;
        match reduced {
            Reduced::Items(items) => Ok((items, info)),
            Reduced::Nothing => Ok((Vec::new(), info)),
            other => Err(Failure::new(Status::Internal, format!("list answered {other:?}"))),
        }
    }

    /// A global read reduced by `reducer` (a built-in or a loaded Wasm reducer).
    pub(crate) fn global(
        &self,
        pattern: &str,
        reducer: &str,
        options: GlobalOptions,
    ) -> Result<(Reduced, EstateReadInfo), Failure> {
        let answer = self.node.get_global(pattern, reducer, options).map_err(|e| {
            let status = if matches!(e, GlobalError::Shutdown) { Status::Closed } else { Status::Global };
            Failure::new(status, e.to_string())
        })?;
        let info = EstateReadInfo { answered: answer.answered.len(), missing: answer.missing.len() };
        Ok((answer.result, info))
    }

    /// Starts calling `cb` for every read served, from a thread of its own (never the
    /// node's I/O thread, so the callback may take its time and call estate).
    pub(crate) fn observe(&self, cb: Option<ServedFn>, user: *mut c_void) -> Result<(), Failure> {
        let Some(cb) = cb else {
            return self.node.on_served_read(None).map_err(|e| Failure::new(Status::Closed, e.to_string()));
        };
        let (tx, rx) = mpsc::channel::<ServedRead>();
        let user = UserData(user);
        let thread = std::thread::Builder::new()
            .name("estate-served".into())
            .spawn(move || {
                let user = user;
                for (seq, read) in (1u64..).zip(rx) {
                    let pattern = CString::new(read.pattern.replace('\0', " ")).unwrap_or_default();
                    // SAFETY: the caller registered a valid function; the pattern outlives the call.
                    unsafe { cb(seq, pattern.as_ptr(), user.0) };
                }
            })
            .map_err(|e| Failure::new(Status::Internal, format!("spawning a thread: {e}")))?;
        self.notifiers.lock().unwrap().push(thread);
        let hook: estate_runtime::node::ServedHook = Arc::new(move |read: &ServedRead| {
            let _ = tx.send(read.clone());
        });
        self.node.on_served_read(Some(hook)).map_err(|e| Failure::new(Status::Closed, e.to_string()))
    }

    /// Stops the node; returns once no callback of it runs any more.
    pub(crate) fn stop(self) {
        self.node.shutdown();
        for thread in self.notifiers.into_inner().unwrap() {
            let _ = thread.join();
        }
    }
}

/// The answer of a reduction as text: a value in plain text, the latest item's value,
/// or every item (`list`) as a JSON array; `None` when nothing matched.
pub(crate) fn answer_text(reduced: Reduced) -> Option<String> {
    match reduced {
        Reduced::Nothing => None,
        Reduced::Value(v) => Some(plain(&v)),
        Reduced::Item(item) => Some(plain(&item.value)),
        Reduced::Items(items) => {
            let list: Vec<serde_json::Value> = items
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "key": i.key, "value": plain(&i.value), "origin": i.origin, "version": i.version
                    })
                })
                .collect();
            Some(serde_json::Value::Array(list).to_string())
        }
    }
}

/// Runs a reduce function written in C over `items`; `None` if it returned NULL.
///
/// # Safety
/// `call` must be sound to call with a pointer to `items.len()` valid `EstateItem`s.
pub(crate) unsafe fn reduce_in_c(
    items: &[Item],
    call: impl FnOnce(*const EstateItem, usize) -> *const c_char,
) -> Option<String> {
    let texts: Vec<[CString; 3]> = items
        .iter()
        .map(|i| {
            let c = |s: &str| CString::new(s.replace('\0', " ")).unwrap_or_default();
            [c(&i.key), c(&plain(&i.value)), c(&i.origin)]
        })
        .collect();
    let c_items: Vec<EstateItem> = items
        .iter()
        .zip(&texts)
        .map(|(i, [key, value, origin])| EstateItem {
            key: key.as_ptr(),
            value: value.as_ptr(),
            origin: origin.as_ptr(),
            version: i.version,
        })
        .collect();
    let result = call(c_items.as_ptr(), c_items.len());
    if result.is_null() {
        return None;
    }
    // SAFETY: a non-NULL result is a NUL-terminated string the reduce function owns.
    Some(unsafe { std::ffi::CStr::from_ptr(result) }.to_string_lossy().into_owned())
}

/// Read options from C (NULL: defaults).
///
/// # Safety
/// `options` is NULL or points to a valid `estate_read_options`.
pub(crate) unsafe fn read_options(options: *const EstateReadOptions) -> GlobalOptions {
    let mut out = GlobalOptions::default();
    // SAFETY: NULL or valid, by the caller's contract.
    if let Some(o) = unsafe { options.as_ref() } {
        if o.timeout_ms > 0 {
            out.timeout = Duration::from_millis(o.timeout_ms.into());
        }
        out.remote = o.remote != 0;
        if o.all != 0 {
            out.consistency = Consistency::All;
        }
    }
    out
}

/// # Safety
/// `node` is NULL or a live handle from `estate_node_start`.
unsafe fn node_ref<'a>(node: *const EstateNode) -> Result<&'a EstateNode, Failure> {
    // SAFETY: NULL or a live handle, by the caller's contract.
    unsafe { node.as_ref() }.ok_or_else(|| Failure::new(Status::Invalid, "node is NULL"))
}

/// # Safety
/// `config` is NULL or valid, with valid strings.
unsafe fn node_config(config: *const EstateConfig) -> Result<NodeConfig, Failure> {
    // SAFETY: NULL or valid, by the caller's contract.
    let c = unsafe { config.as_ref() }.ok_or_else(|| Failure::new(Status::Invalid, "config is NULL"))?;
    // SAFETY: the strings are valid by the caller's contract (each is checked for NULL).
    let listen = unsafe { text(c.listen, "config.listen") }?;
    let id = match c.id.is_null() {
        // SAFETY: as above.
        false => unsafe { text(c.id, "config.id") }?.to_string(),
        true if listen.ends_with(":*") => {
            return Err(Failure::new(Status::Invalid, "config.id is needed when the listen port is `*`"));
        }
        true => listen.trim_start_matches("tcp://").to_string(),
    };
    let mut config = NodeConfig::new(&id, listen);
    if c.join_len > 0 && c.join.is_null() {
        return Err(Failure::new(Status::Invalid, "config.join is NULL but config.join_len is not 0"));
    }
    for i in 0..c.join_len {
        // SAFETY: `join` holds `join_len` string pointers by the caller's contract.
        let seed = unsafe { text(*c.join.add(i), "config.join[i]") }?;
        config.join.push(seed.to_string());
    }
    if !c.control.is_null() {
        // SAFETY: as above.
        config.control = Some(unsafe { text(c.control, "config.control") }?.to_string());
    }
    if c.heartbeat_ms > 0 {
        let heartbeat_ms = u64::from(c.heartbeat_ms);
        config.timing = Timing { heartbeat_ms, ..Timing::default() };
    }
    Ok(config)
}

/// Starts a node; `*out` receives its handle.
///
/// # Safety
/// See `estate.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn estate_node_start(config: *const EstateConfig, out: *mut *mut EstateNode) -> i32 {
    guard(|| {
        if out.is_null() {
            return Err(Failure::new(Status::Invalid, "out is NULL"));
        }
        // SAFETY: by the caller's contract.
        let node = EstateNode::start(unsafe { node_config(config) }?)?;
        // SAFETY: checked non-NULL above.
        unsafe { out.write(Box::into_raw(Box::new(node))) };
        Ok(())
    })
}

/// Stops a node at once, without handing its state over (a crash, seen from the
/// cluster, minus the timeouts: the members are told it left). Frees the handle.
///
/// # Safety
/// See `estate.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn estate_node_stop(node: *mut EstateNode) {
    if !node.is_null() {
        // SAFETY: a live handle from `estate_node_start`, given up by the caller.
        let node = unsafe { Box::from_raw(node) };
        guard(|| {
            node.stop();
            Ok(())
        });
    }
}

/// Graceful scale-in: hands every item to the other members, leaves and frees the
/// handle. On failure the node keeps its state and runs on (the handle stays valid).
///
/// # Safety
/// See `estate.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn estate_node_leave(node: *mut EstateNode, timeout_ms: u32) -> i32 {
    guard(|| {
        // SAFETY: by the caller's contract.
        let handle = unsafe { node_ref(node) }?;
        handle
            .node
            .leave(Duration::from_millis(timeout_ms.into()))
            .map_err(|e| Failure::new(Status::Leave, e.to_string()))?;
        // SAFETY: a live handle from `estate_node_start`; the leave succeeded, so it is ours.
        unsafe { Box::from_raw(node) }.stop();
        Ok(())
    })
}

/// The node's id; valid while the node runs.
///
/// # Safety
/// See `estate.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn estate_node_id(node: *const EstateNode) -> *const c_char {
    // SAFETY: by the caller's contract.
    unsafe { node.as_ref() }.map_or(std::ptr::null(), |n| n.id.as_ptr())
}

/// The endpoint the node listens on (the port bound for `*`); valid while it runs.
///
/// # Safety
/// See `estate.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn estate_node_endpoint(node: *const EstateNode) -> *const c_char {
    // SAFETY: by the caller's contract.
    unsafe { node.as_ref() }.map_or(std::ptr::null(), |n| n.endpoint.as_ptr())
}

/// Waits until `n` other members are alive.
///
/// # Safety
/// See `estate.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn estate_node_wait_members(node: *const EstateNode, n: usize, timeout_ms: u32) -> i32 {
    guard(|| {
        // SAFETY: by the caller's contract.
        let node = unsafe { node_ref(node) }?;
        match node.wait_peers(n, Duration::from_millis(timeout_ms.into())) {
            true => Ok(()),
            false => Err(Failure::new(
                Status::NotFound,
                format!("{} of {n} members alive after {timeout_ms} ms", node.alive_peers()),
            )),
        }
    })
}

/// Sets `key` to `value` (an integer if it parses as one, a float if it parses as one,
/// else text).
///
/// # Safety
/// See `estate.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn estate_set(node: *const EstateNode, key: *const c_char, value: *const c_char) -> i32 {
    // SAFETY: by the caller's contract.
    guard(|| unsafe { node_ref(node)?.set(text(key, "key")?, text(value, "value")?) })
}

/// The value at `key` as text, in `*value` (free it with `estate_free_string`).
///
/// # Safety
/// See `estate.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn estate_get(node: *const EstateNode, key: *const c_char, value: *mut *mut c_char) -> i32 {
    guard(|| {
        // SAFETY: by the caller's contract.
        let (node, key) = unsafe { (node_ref(node)?, text(key, "key")?) };
        let found = node.get(key).ok_or_else(|| Failure::new(Status::NotFound, format!("no key {key:?}")))?;
        // SAFETY: NULL or writable, by the caller's contract.
        unsafe { put(value, owned(found)) };
        Ok(())
    })
}

/// Adds `delta` to the integer counter at `key` (missing: 0); `*value` (if not NULL)
/// gets the new value. Counters add up when state moves between nodes (a leave, a
/// take), so a cluster-wide sum survives scale-in.
///
/// # Safety
/// See `estate.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn estate_add(node: *const EstateNode, key: *const c_char, delta: i64, value: *mut i64) -> i32 {
    guard(|| {
        // SAFETY: by the caller's contract.
        let (node, key) = unsafe { (node_ref(node)?, text(key, "key")?) };
        let now = node.add(key, delta)?;
        // SAFETY: NULL or writable, by the caller's contract.
        unsafe { put(value, now) };
        Ok(())
    })
}

/// Deletes `key`; `*deleted` (if not NULL) says whether it was there.
///
/// # Safety
/// See `estate.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn estate_del(node: *const EstateNode, key: *const c_char, deleted: *mut i32) -> i32 {
    guard(|| {
        // SAFETY: by the caller's contract.
        let was = unsafe { node_ref(node)?.node.del(text(key, "key")?) };
        // SAFETY: NULL or writable, by the caller's contract.
        unsafe { put(deleted, i32::from(was)) };
        Ok(())
    })
}

/// Reduces every live member's items matching `pattern` with `reducer`.
///
/// # Safety
/// See `estate.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn estate_get_global(
    node: *const EstateNode,
    pattern: *const c_char,
    reducer: *const c_char,
    options: *const EstateReadOptions,
    result: *mut *mut c_char,
    info: *mut EstateReadInfo,
) -> i32 {
    guard(|| {
        // SAFETY: by the caller's contract.
        let (node, pattern, reducer, options) =
            unsafe { (node_ref(node)?, text(pattern, "pattern")?, text(reducer, "reducer")?, read_options(options)) };
        let (reduced, read) = node.global(pattern, reducer, options)?;
        // SAFETY: NULL or writable, by the caller's contract.
        unsafe { put(info, read) };
        let answer = answer_text(reduced)
            .ok_or_else(|| Failure::new(Status::NotFound, format!("no item matches {pattern:?}")))?;
        // SAFETY: as above.
        unsafe { put(result, owned(answer)) };
        Ok(())
    })
}

/// Gathers every live member's items matching `pattern` and reduces them with `reduce`,
/// a function of the caller's, on the calling thread.
///
/// # Safety
/// See `estate.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn estate_get_global_with(
    node: *const EstateNode,
    pattern: *const c_char,
    options: *const EstateReadOptions,
    reduce: Option<ReduceFn>,
    user: *mut c_void,
    result: *mut *mut c_char,
    info: *mut EstateReadInfo,
) -> i32 {
    guard(|| {
        let reduce = reduce.ok_or_else(|| Failure::new(Status::Invalid, "reduce is NULL"))?;
        // SAFETY: by the caller's contract.
        let (node, pattern, options) = unsafe { (node_ref(node)?, text(pattern, "pattern")?, read_options(options)) };
        let (items, read) = node.items(pattern, options)?;
        // SAFETY: NULL or writable, by the caller's contract.
        unsafe { put(info, read) };
        // SAFETY: `reduce` is a valid function by the caller's contract.
        let answer = unsafe { reduce_in_c(&items, |ptr, n| reduce(ptr, n, user)) }
            .ok_or_else(|| Failure::new(Status::NotFound, "the reduce function returned NULL"))?;
        // SAFETY: as above.
        unsafe { put(result, owned(answer)) };
        Ok(())
    })
}

/// Calls `cb` for every global read the node serves (its own included), on a thread of
/// estate's; NULL stops the calls.
///
/// # Safety
/// See `estate.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn estate_on_served_read(
    node: *const EstateNode,
    cb: Option<ServedFn>,
    user: *mut c_void,
) -> i32 {
    // SAFETY: by the caller's contract.
    guard(|| unsafe { node_ref(node) }?.observe(cb, user))
}

/// Frees a string estate returned. NULL is ignored.
///
/// # Safety
/// See `estate.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn estate_free_string(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: `s` came from `CString::into_raw` in this library, by the contract.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// The calling thread's last error message ("" if none); valid until its next failing
/// call.
#[unsafe(no_mangle)]
pub extern "C" fn estate_last_error() -> *const c_char {
    crate::ffi::last_error()
}

/// A status code's name (`ESTATE_ERR_NOT_FOUND`), a static string.
#[unsafe(no_mangle)]
pub extern "C" fn estate_status_name(status: i32) -> *const c_char {
    Status::name(status).as_ptr()
}
