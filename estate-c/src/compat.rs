//! The prototype's API (`include/estatepp.h`): one node per process behind `es_*`
//! functions, strings in and out, `"ES_NONE"` for nothing.
//!
//! Where estate is deliberately safer than the prototype (each also in `estatepp.h`):
//! - Returned strings are estate's, valid until the same thread's next call of the same
//!   function: nothing leaks and nothing dangles, and callers never free them.
//! - Every function may be called from any thread; `es_close` waits for calls in flight.
//! - Misuse (no `es_init`, NULL, bad UTF-8, a refused write) is no assertion: the call
//!   does nothing (or answers `"ES_NONE"`) and `estate_last_error()` says why.
//! - A global read answers what the members that replied in time hold (best effort,
//!   1 s); it never waits forever on a dead peer.

use std::cell::RefCell;
use std::ffi::{CString, c_char, c_int, c_ulong};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use estate_runtime::node::{GlobalOptions, NodeConfig};

use crate::api::{EstateNode, answer_text, reduce_in_c};
use crate::ffi::{Failure, Status, guard, set_last_error, text};

/// What `es_get` and the global reads answer when there is nothing.
const NONE: &std::ffi::CStr = c"ES_NONE";
/// How long `es_init_with_peers` waits to reach a peer.
const JOIN_WAIT: Duration = Duration::from_secs(5);
/// How long `es_close` lets the members take this node's state.
const LEAVE_WAIT: Duration = Duration::from_secs(5);

/// `state_item_t`, as the prototype's reduce functions take it.
#[repr(C)]
#[derive(Debug)]
pub struct StateItem {
    /// The item's version (a hybrid logical clock timestamp; larger is newer).
    pub timestamp: c_ulong,
    /// The id of the node holding the item (`ip:port`).
    pub node_identifier: *const c_char,
    /// The value as text.
    pub data: *const c_char,
}

/// The prototype's reduce function: items and their number in, the answer out.
pub type ReduceFn = unsafe extern "C" fn(items: *mut StateItem, n: c_int) -> *mut c_char;
/// Called for each global read this node serves.
pub type CallbackFn = unsafe extern "C" fn(id: c_ulong, key: *const c_char);

static NODE: RwLock<Option<EstateNode>> = RwLock::new(None);
/// A callback registered before `es_init` waits here.
static CALLBACK: Mutex<Option<CallbackFn>> = Mutex::new(None);

thread_local! {
    static GET: RefCell<CString> = RefCell::new(CString::default());
    static GLOBAL: RefCell<CString> = RefCell::new(CString::default());
    static PREDEFINED: RefCell<CString> = RefCell::new(CString::default());
}

/// Runs `f` with the process's node.
fn with_node<T>(f: impl FnOnce(&EstateNode) -> Result<T, Failure>) -> Result<T, Failure> {
    let guard = NODE.read().unwrap_or_else(|e| e.into_inner());
    let node = guard.as_ref().ok_or_else(|| Failure::new(Status::Closed, "es_init was not called"))?;
    f(node)
}

/// Keeps `answer` in `slot` (this thread's buffer of one function) and points to it;
/// `"ES_NONE"` for nothing or a failure (recorded for `estate_last_error`).
fn answer(
    slot: &'static std::thread::LocalKey<RefCell<CString>>,
    answer: Result<Option<String>, Failure>,
) -> *const c_char {
    let text = match answer {
        Ok(Some(text)) => text,
        Ok(None) => return NONE.as_ptr(),
        Err(failure) => {
            set_last_error(&failure.message);
            return NONE.as_ptr();
        }
    };
    let text = CString::new(text.replace('\0', " ")).unwrap_or_default();
    slot.with(|s| {
        *s.borrow_mut() = text;
        s.borrow().as_ptr()
    })
}

/// Peers as the prototype lists them: `ip:port` separated by spaces, `;` or `,`
/// (`tcp://` optional); this node's own address is skipped.
fn peers(list: &str, me: &str) -> Vec<String> {
    list.split(|c: char| c.is_whitespace() || c == ';' || c == ',')
        .map(|p| p.trim_start_matches("tcp://"))
        .filter(|p| !p.is_empty() && *p != me)
        .map(|p| format!("tcp://{p}"))
        .collect()
}

/// Starts this process's node at `ip:port`; see `es_init_with_peers`.
///
/// # Safety
/// See `estatepp.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn es_init(ip: *const c_char, port: c_int) {
    // SAFETY: by the caller's contract.
    unsafe { es_init_with_peers(ip, port, std::ptr::null()) }
}

/// Starts this process's node, listening on `tcp://ip:port` with the id `ip:port`, and
/// joins the cluster through `peers` (NULL for none). Returns once a peer is reached,
/// or after 5 s.
///
/// # Safety
/// See `estatepp.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn es_init_with_peers(ip: *const c_char, port: c_int, peers_list: *const c_char) {
    guard(|| {
        // SAFETY: by the caller's contract.
        let ip = unsafe { text(ip, "ip") }?;
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| Failure::new(Status::Invalid, format!("port {port} is not 1 to 65535")))?;
        let id = format!("{ip}:{port}");
        let mut config = NodeConfig::new(&id, &format!("tcp://{id}"));
        if !peers_list.is_null() {
            // SAFETY: by the caller's contract.
            config.join = peers(unsafe { text(peers_list, "peers") }?, &id);
        }
        let mut slot = NODE.write().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Err(Failure::new(Status::Invalid, "es_init: this process's node is running; es_close it first"));
        }
        let joining = !config.join.is_empty();
        let node = EstateNode::start(config)?;
        if let Some(cb) = *CALLBACK.lock().unwrap_or_else(|e| e.into_inner()) {
            register(&node, cb)?;
        }
        if joining {
            node.wait_peers(1, JOIN_WAIT);
        }
        *slot = Some(node);
        Ok(())
    });
}

/// Hands this node's state to the other members (graceful scale-in), then stops it.
/// A node alone keeps nothing: its state goes with it.
#[unsafe(no_mangle)]
pub extern "C" fn es_close() {
    guard(|| {
        let node = NODE.write().unwrap_or_else(|e| e.into_inner()).take();
        let node = node.ok_or_else(|| Failure::new(Status::Closed, "es_close: es_init was not called"))?;
        if node.alive_peers() > 0
            && let Err(e) = node.node.leave(LEAVE_WAIT)
        {
            set_last_error(&format!("es_close: the state was not handed over: {e}"));
        }
        node.stop();
        Ok(())
    });
}

/// Sets `k` to `v` (an integer or float when `v` reads as one, else text).
///
/// # Safety
/// See `estatepp.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn es_set(k: *const c_char, v: *const c_char) {
    // SAFETY: by the caller's contract.
    guard(|| with_node(|node| unsafe { node.set(text(k, "key")?, text(v, "value")?) }));
}

/// The value at `k` as text, or `"ES_NONE"`.
///
/// # Safety
/// See `estatepp.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn es_get(k: *const c_char) -> *const c_char {
    // SAFETY: by the caller's contract.
    let found = with_node(|node| Ok(node.get(unsafe { text(k, "key") }?)));
    answer(&GET, found)
}

/// Deletes `k`.
///
/// # Safety
/// See `estatepp.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn es_del(k: *const c_char) {
    // SAFETY: by the caller's contract.
    guard(|| {
        with_node(|node| {
            unsafe { node.node.del(text(k, "key")?) }
                .then_some(())
                .ok_or_else(|| Failure::new(Status::NotFound, "es_del: no such key"))
        })
    });
}

/// Gathers every live member's items whose key matches `k` (a regular expression over
/// whole keys, or an exact key) and answers what `reduce` makes of them; `"ES_NONE"`
/// when nothing matched (`reduce` is then not called) or `reduce` returned NULL.
///
/// # Safety
/// See `estatepp.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn es_get_global(k: *const c_char, reduce: Option<ReduceFn>) -> *const c_char {
    let result = with_node(|node| {
        let reduce = reduce.ok_or_else(|| Failure::new(Status::Invalid, "es_get_global: reduce is NULL"))?;
        // SAFETY: by the caller's contract.
        let (items, _) = node.items(unsafe { text(k, "key") }?, GlobalOptions::default())?;
        if items.is_empty() {
            return Ok(None);
        }
        // Kept alive until `reduce` returns; the layout of `state_item_t`.
        let reduced = unsafe {
            // SAFETY: `reduce` is valid by the caller's contract, and each item is.
            reduce_in_c(&items, |ptr, n| {
                let mut c: Vec<StateItem> = (0..n)
                    .map(|i| {
                        // SAFETY: `ptr` holds `n` items.
                        let item = &*ptr.add(i);
                        StateItem { timestamp: item.version as c_ulong, node_identifier: item.origin, data: item.value }
                    })
                    .collect();
                let n = c_int::try_from(n).unwrap_or(c_int::MAX);
                reduce(c.as_mut_ptr(), n)
            })
        };
        Ok(reduced)
    });
    answer(&GLOBAL, result)
}

/// The prototype's predefined reducers by number: 0 latest, 1 sum, 2 avg; estate adds
/// 3 min, 4 max, 5 count.
fn predefined(id: c_int) -> Option<&'static str> {
    ["latest", "sum", "avg", "min", "max", "count"].get(usize::try_from(id).ok()?).copied()
}

/// [`es_get_global`] with a built-in reducer chosen by number (see [`predefined`]).
///
/// # Safety
/// See `estatepp.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn es_get_global_predefined_reduce(k: *const c_char, reduce_id: c_int) -> *const c_char {
    let result = with_node(|node| {
        let reducer = predefined(reduce_id)
            .ok_or_else(|| Failure::new(Status::Invalid, format!("no predefined reducer {reduce_id} (0 to 5)")))?;
        // SAFETY: by the caller's contract.
        let (reduced, _) = node.global(unsafe { text(k, "key") }?, reducer, GlobalOptions::default())?;
        Ok(answer_text(reduced))
    });
    answer(&PREDEFINED, result)
}

fn register(node: &EstateNode, cb: CallbackFn) -> Result<(), Failure> {
    unsafe extern "C" fn forward(seq: u64, pattern: *const c_char, user: *mut std::ffi::c_void) {
        // SAFETY: `user` is the `CallbackFn` registered below, passed through unchanged.
        let cb: CallbackFn = unsafe { std::mem::transmute::<*mut std::ffi::c_void, CallbackFn>(user) };
        // SAFETY: the callback is valid by its registrant's contract.
        unsafe { cb(seq as c_ulong, pattern) };
    }
    node.observe(Some(forward), cb as *mut std::ffi::c_void)
}

/// Calls `cb(id, key)` for every global read this node serves, its own included: `id`
/// counts from 1, `key` is the read's pattern. It runs on a thread of estate's, so it
/// may call `es_*` functions. May be called before `es_init`.
///
/// # Safety
/// See `estatepp.h`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn es_register_get_global_callback(cb: Option<CallbackFn>) {
    guard(|| {
        *CALLBACK.lock().unwrap_or_else(|e| e.into_inner()) = cb;
        let node = NODE.read().unwrap_or_else(|e| e.into_inner());
        match (node.as_ref(), cb) {
            (Some(node), Some(cb)) => register(node, cb),
            (Some(node), None) => node.observe(None, std::ptr::null_mut()),
            (None, _) => Ok(()),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_split_on_spaces_semicolons_and_commas_without_this_node() {
        let list = peers(" 127.0.0.1:1;127.0.0.1:2 tcp://127.0.0.1:3,127.0.0.1:9 ", "127.0.0.1:9");
        assert_eq!(list, ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3"]);
    }

    #[test]
    fn predefined_reducers_keep_the_prototypes_numbers() {
        assert_eq!(predefined(0), Some("latest"));
        assert_eq!(predefined(1), Some("sum"));
        assert_eq!(predefined(2), Some("avg"));
        assert_eq!(predefined(6), None);
        assert_eq!(predefined(-1), None);
    }
}
