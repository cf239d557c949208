//! What every exported function shares: status codes, the calling thread's last error,
//! C strings in and out, and a guard that turns a panic into a status instead of
//! unwinding into C.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Status codes of the explicit API (`estate.h`); `0` is success.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// An argument was NULL, not UTF-8, or out of range.
    Invalid = 1,
    /// The node could not start (socket, id, peers).
    Start = 2,
    /// No such key, or no item matched a global read.
    NotFound = 3,
    /// The store refused a write (key or value too large, a quota).
    Store = 4,
    /// A global read failed (invalid pattern, unknown reducer, reducer error).
    Global = 5,
    /// The node is not running (never started, or closed).
    Closed = 6,
    /// A bug in estate: an internal panic was caught at the boundary.
    Internal = 7,
    /// A leave could not hand the node's state over; the node keeps it and stays.
    Leave = 8,
}

impl Status {
    /// The code's name, as `estate_status_name` returns it.
    pub fn name(code: i32) -> &'static CStr {
        match code {
            0 => c"ESTATE_OK",
            1 => c"ESTATE_ERR_INVALID",
            2 => c"ESTATE_ERR_START",
            3 => c"ESTATE_ERR_NOT_FOUND",
            4 => c"ESTATE_ERR_STORE",
            5 => c"ESTATE_ERR_GLOBAL",
            6 => c"ESTATE_ERR_CLOSED",
            7 => c"ESTATE_ERR_INTERNAL",
            8 => c"ESTATE_ERR_LEAVE",
            _ => c"ESTATE_ERR_UNKNOWN",
        }
    }
}

/// A failed call: its status and a message for `estate_last_error`.
#[derive(Debug)]
pub struct Failure {
    pub status: Status,
    pub message: String,
}

impl Failure {
    pub fn new(status: Status, message: impl Into<String>) -> Failure {
        Failure { status, message: message.into() }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error (interior NULs become spaces).
pub fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// This thread's last error message; valid until this thread's next failing call.
pub fn last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Runs `f` at the C boundary: its failure is recorded and returned as a status code,
/// and a panic is caught (never unwinds into C) and reported as [`Status::Internal`].
pub fn guard(f: impl FnOnce() -> Result<(), Failure>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Status::Ok as i32,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.status as i32
        }
        Err(_) => {
            set_last_error("internal error (a panic was caught at the C boundary)");
            Status::Internal as i32
        }
    }
}

/// Borrows a C string argument as UTF-8; `what` names it in the error.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives the call.
pub unsafe fn text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::new(Status::Invalid, format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes.to_str().map_err(|_| Failure::new(Status::Invalid, format!("{what} is not UTF-8")))
}

/// A string handed to C, to be freed with `estate_free_string`. Interior NULs (possible
/// in text values) become spaces, as a C string cannot hold them.
pub fn owned(text: String) -> *mut c_char {
    let text = CString::new(text).unwrap_or_else(|e| {
        let mut bytes = e.into_vec();
        bytes.iter_mut().filter(|b| **b == 0).for_each(|b| *b = b' ');
        CString::new(bytes).unwrap_or_default()
    });
    text.into_raw()
}

/// Writes `value` through `out` unless `out` is NULL.
///
/// # Safety
/// `out` is NULL or valid for a write of `T`.
pub unsafe fn put<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { out.write(value) };
    }
}
