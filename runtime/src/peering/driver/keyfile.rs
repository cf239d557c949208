//! A node's key file and roster on disk: reading them (a key file must be private),
//! writing a new key, and noticing when either changes.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::peering::secure::{Entropy, KeyError, KeyPair, PublicKey, Roster};

/// Largest key file read.
const MAX_KEY_FILE: u64 = 64 << 10;
/// Largest roster read.
const MAX_ROSTER_FILE: u64 = 4 << 20;
/// How often the files are checked for changes.
pub(crate) const CHECK_EVERY_MS: u64 = 1000;

/// Random bytes from the operating system.
pub(crate) struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        rand::fill(buf);
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.display().to_string(), source }
}

/// The bytes of `path`, at most `limit` of them; a key file must not be readable by
/// group or others.
fn read_bounded(path: &Path, limit: u64, private: bool) -> Result<Vec<u8>, KeyError> {
    let file = File::open(path).map_err(io_error(path))?;
    let meta = file.metadata().map_err(io_error(path))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: path.display().to_string(), mode });
        }
    }
    let too_large = || KeyError::TooLarge { path: path.display().to_string(), limit };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io_error(path))?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

fn text<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a str, KeyError> {
    std::str::from_utf8(bytes).map_err(|_| KeyError::Parse {
        file: path.display().to_string(),
        line: 0,
        reason: "not UTF-8 text".into(),
    })
}

fn parse_key(bytes: &[u8], path: &Path) -> Result<KeyPair, KeyError> {
    KeyPair::parse(text(bytes, path)?, &path.display().to_string())
}

fn parse_roster(bytes: &[u8], path: &Path) -> Result<Roster, KeyError> {
    Roster::parse(text(bytes, path)?, &path.display().to_string())
}

/// Reads the key file at `path` (refused unless only its owner may read it).
pub fn read_key(path: &Path) -> Result<KeyPair, KeyError> {
    parse_key(&read_bounded(path, MAX_KEY_FILE, true)?, path)
}

/// Reads the roster at `path`.
pub fn read_roster(path: &Path) -> Result<Roster, KeyError> {
    parse_roster(&read_bounded(path, MAX_ROSTER_FILE, false)?, path)
}

/// Writes a new key pair to `path` (created with mode 0600; an existing file is never
/// overwritten) and returns its public key.
pub fn generate_key_file(path: &Path) -> Result<PublicKey, KeyError> {
    let pair = KeyPair::generate(&mut OsEntropy);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => KeyError::Exists { path: path.display().to_string() },
        _ => KeyError::Io { path: path.display().to_string(), source: e },
    })?;
    file.write_all(pair.to_file_text().as_bytes()).and_then(|()| file.sync_all()).map_err(io_error(path))?;
    Ok(pair.public())
}

/// What changed on disk.
pub(crate) enum Change {
    Key(KeyPair),
    Roster(Roster),
    Failed(KeyError),
}

/// The key file and roster of a running node, read again when their bytes change.
pub(crate) struct Watch {
    key: PathBuf,
    roster: PathBuf,
    key_bytes: Vec<u8>,
    roster_bytes: Vec<u8>,
    next_check: u64,
}

/// A node's key and roster, read at start.
pub(crate) struct Loaded {
    pub(crate) key: KeyPair,
    pub(crate) roster: Roster,
    pub(crate) watch: Watch,
}

impl Loaded {
    /// Reads both files; errors say which file and line.
    pub(crate) fn read(key: &Path, roster: &Path) -> Result<Loaded, KeyError> {
        let key_bytes = read_bounded(key, MAX_KEY_FILE, true)?;
        let roster_bytes = read_bounded(roster, MAX_ROSTER_FILE, false)?;
        Ok(Loaded {
            key: parse_key(&key_bytes, key)?,
            roster: parse_roster(&roster_bytes, roster)?,
            watch: Watch {
                key: key.to_path_buf(),
                roster: roster.to_path_buf(),
                key_bytes,
                roster_bytes,
                next_check: 0,
            },
        })
    }
}

impl Watch {
    /// At most once per [`CHECK_EVERY_MS`]: what changed since the last check. A file
    /// that cannot be used is reported once per change of its bytes.
    pub(crate) fn check(&mut self, now: u64) -> Vec<Change> {
        if now < self.next_check {
            return Vec::new();
        }
        self.next_check = now + CHECK_EVERY_MS;
        let mut changes = Vec::new();
        if let Some(read) = changed(&self.key, MAX_KEY_FILE, true, &mut self.key_bytes) {
            changes.push(read.and_then(|b| parse_key(&b, &self.key)).map_or_else(Change::Failed, Change::Key));
        }
        if let Some(read) = changed(&self.roster, MAX_ROSTER_FILE, false, &mut self.roster_bytes) {
            changes.push(read.and_then(|b| parse_roster(&b, &self.roster)).map_or_else(Change::Failed, Change::Roster));
        }
        changes
    }
}

/// The bytes of the file at `path` if they differ from `seen` (which then holds them);
/// an error once when a file that was readable becomes unreadable (then counted once).
fn changed(path: &Path, limit: u64, private: bool, seen: &mut Vec<u8>) -> Option<Result<Vec<u8>, KeyError>> {
    match read_bounded(path, limit, private) {
        Ok(bytes) if bytes != *seen => {
            seen.clone_from(&bytes);
            Some(Ok(bytes))
        }
        Ok(_) => None,
        Err(e) if !seen.is_empty() => {
            seen.clear();
            Some(Err(e))
        }
        Err(_) => None,
    }
}
