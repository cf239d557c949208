//! Node keys and the roster: their text formats, parsed and written without touching
//! the filesystem (the driver reads the files; `estate keygen` writes one).
//!
//! Keys are X25519, written as 64 lowercase hex digits. A key file holds one key pair:
//!
//! ```text
//! # estate node key (X25519, hex). Keep it private: mode 0600.
//! private 5f3c…(64 hex digits)
//! public 9a07…(64 hex digits)
//! ```
//!
//! A roster lists the keys a node accepts, one `ID PUBLIC_KEY` per line; `#` starts a
//! comment line, blank lines are skipped. An id may have several keys (a key roll); a
//! key belongs to one id.

use std::collections::HashMap;
use std::fmt;

use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};

use super::Entropy;

/// Length of an X25519 key, private or public.
pub const KEY_LEN: usize = 32;
/// Longest id a roster may name (as node ids).
const MAX_ROSTER_ID: usize = 64;

/// An X25519 public key: a node's identity on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<PublicKey> {
        let mut key = [0; KEY_LEN];
        hex::decode_to_slice(text, &mut key).ok()?;
        Some(PublicKey(key))
    }

    /// The key from raw bytes (as Noise hands a remote static key over).
    pub fn from_slice(bytes: &[u8]) -> Option<PublicKey> {
        bytes.try_into().ok().map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A node's static key pair. Its `Debug` shows the public half only.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    private: [u8; KEY_LEN],
    public: PublicKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair").field("public", &self.public).finish_non_exhaustive()
    }
}

fn curve25519() -> Box<dyn snow::types::Dh> {
    DefaultResolver.resolve_dh(&DHChoice::Curve25519).expect("snow is built with curve25519")
}

impl KeyPair {
    /// The key pair of a private key (the public key is derived by X25519).
    pub fn from_private(private: [u8; KEY_LEN]) -> KeyPair {
        let mut dh = curve25519();
        dh.set(&private);
        let public = PublicKey::from_slice(dh.pubkey()).expect("an X25519 public key is 32 bytes");
        KeyPair { private, public }
    }

    /// A new key pair from 32 bytes of `entropy`.
    pub fn generate(entropy: &mut dyn Entropy) -> KeyPair {
        let mut private = [0; KEY_LEN];
        entropy.fill(&mut private);
        KeyPair::from_private(private)
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    pub(crate) fn private(&self) -> &[u8; KEY_LEN] {
        &self.private
    }

    /// The key file's text.
    pub fn to_file_text(&self) -> String {
        format!(
            "# estate node key (X25519, hex). Keep it private: mode 0600.\nprivate {}\npublic {}\n",
            hex::encode(self.private),
            self.public
        )
    }

    /// Parses a key file's text; errors name `file` and the line.
    pub fn parse(text: &str, file: &str) -> Result<KeyPair, KeyError> {
        let mut private = None;
        let mut public = None;
        for (n, line) in lines(text) {
            let err = |reason: String| KeyError::Parse { file: file.into(), line: n, reason };
            let (name, value) = two_fields(line).ok_or_else(|| err("expected `private HEX` or `public HEX`".into()))?;
            let slot = match name {
                "private" => &mut private,
                "public" => &mut public,
                other => return Err(err(format!("unknown field {other:?}"))),
            };
            if slot.is_some() {
                return Err(err(format!("{name} given twice")));
            }
            let key =
                PublicKey::from_hex(value).ok_or_else(|| err(format!("{name} is not {} hex digits", 2 * KEY_LEN)))?;
            *slot = Some((key, n));
        }
        let Some((private, _)) = private else {
            return Err(KeyError::Parse { file: file.into(), line: 0, reason: "no `private` line".into() });
        };
        let pair = KeyPair::from_private(private.0);
        if let Some((public, n)) = public
            && public != pair.public
        {
            let reason = "the public key does not belong to the private key".into();
            return Err(KeyError::Parse { file: file.into(), line: n, reason });
        }
        Ok(pair)
    }
}

/// The keys a node accepts, each with the id it authenticates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roster {
    ids: HashMap<PublicKey, String>,
}

impl Roster {
    /// A roster of `(id, key)` pairs; a key given to two ids is an error.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, PublicKey)>) -> Result<Roster, KeyError> {
        let text: String = pairs.into_iter().map(|(id, key)| format!("{id} {key}\n")).collect();
        Roster::parse(&text, "roster")
    }

    /// Parses a roster's text; errors name `file` and the line.
    pub fn parse(text: &str, file: &str) -> Result<Roster, KeyError> {
        let mut ids: HashMap<PublicKey, String> = HashMap::new();
        for (n, line) in lines(text) {
            let err = |reason: String| KeyError::Parse { file: file.into(), line: n, reason };
            let (id, key) = two_fields(line).ok_or_else(|| err("expected `ID PUBLIC_KEY`".into()))?;
            if id.len() > MAX_ROSTER_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(err(format!("invalid id: 1 to {MAX_ROSTER_ID} printable ASCII characters")));
            }
            let key =
                PublicKey::from_hex(key).ok_or_else(|| err(format!("the key is not {} hex digits", 2 * KEY_LEN)))?;
            match ids.get(&key) {
                Some(other) if other != id => return Err(err(format!("this key is {other:?}'s already"))),
                _ => {
                    ids.insert(key, id.to_string());
                }
            }
        }
        if ids.is_empty() {
            return Err(KeyError::Parse { file: file.into(), line: 0, reason: "the roster lists no keys".into() });
        }
        Ok(Roster { ids })
    }

    /// The id `key` authenticates, if the roster lists it.
    pub fn id_of(&self, key: &PublicKey) -> Option<&str> {
        self.ids.get(key).map(String::as_str)
    }

    /// How many keys the roster lists.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the roster lists no key.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Numbered lines that are neither blank nor comments, trimmed.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

fn two_fields(line: &str) -> Option<(&str, &str)> {
    let mut fields = line.split_whitespace();
    match (fields.next(), fields.next(), fields.next()) {
        (Some(a), Some(b), None) => Some((a, b)),
        _ => None,
    }
}

/// Why a key file or roster could not be used. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// A key file that others than its owner may read is refused.
    #[error("{path} is readable by group or others (mode {mode:o}); make it private with `chmod 600 {path}`")]
    Permissions {
        /// The key file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is larger than any key file or roster should be.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// The file exists; a key is never overwritten.
    #[error("{path} exists; not overwriting a key (write the new key to another file, then rename it)")]
    Exists {
        /// The file.
        path: String,
    },
    /// The text is not a key file or roster.
    #[error("{file}, line {line}: {reason}")]
    Parse {
        /// The file.
        file: String,
        /// The line (1-based; 0 for the file as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}
