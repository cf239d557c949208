//! [`Error`]: why a call on the node's state failed.

use alloc::string::String;
use core::fmt;

use crate::codec::DecodeError;

/// Why a call on the node's state ([`crate::State`]) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The node refused the call or could not complete it, and said why (the message is
    /// the node's): a write the store refused (it is full, or the node is leaving), a
    /// global read or a take that failed (a member did not answer, consistency `all` not
    /// met, no state sharing), a counter that holds no integer or would overflow. A
    /// refused write or counter update changed nothing.
    Refused(String),
    /// The node's answer to `call` did not decode: a host bug, or a host of another ABI
    /// version. Nothing of the answer was used; the call itself may have taken effect.
    Malformed {
        /// The host call (an [`crate::abi::import`] name).
        call: &'static str,
        /// What was wrong with the answer.
        error: DecodeError,
    },
    /// The node answered `call` with a code the ABI does not define: a host bug, or a
    /// host of another ABI version. The call itself may have taken effect.
    UnknownCode {
        /// The host call (an [`crate::abi::import`] name).
        call: &'static str,
        /// The code it answered.
        code: i64,
    },
    /// A typed value (feature `typed`): the value at the key is not of the type asked
    /// for, or the value could not be encoded (then nothing was written).
    Typed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Refused(message) | Error::Typed(message) => f.write_str(message),
            Error::Malformed { call, error } => write!(f, "malformed answer to {call}: {error}"),
            Error::UnknownCode { call, code } => {
                write!(f, "{call} answered {code}, a code ABI version {} does not define", crate::abi::VERSION)
            }
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Error::Malformed { error, .. } => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn messages_say_what_failed() {
        assert_eq!(Error::Refused("store full".into()).to_string(), "store full");
        let e = Error::Malformed { call: "state_get", error: DecodeError::BadTag(9) };
        assert_eq!(e.to_string(), "malformed answer to state_get: unknown value tag 9");
        assert!(core::error::Error::source(&e).is_some());
        let e = Error::UnknownCode { call: "state_del", code: 7 };
        assert_eq!(e.to_string(), "state_del answered 7, a code ABI version 3 does not define");
    }
}
