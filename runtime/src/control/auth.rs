//! Who may do what on a node's control socket.
//!
//! Principals are `admin` and `tenant:NAME`. A client proves one with a secret: its
//! credential file holds one line `PRINCIPAL SECRET` (mode 0600; `estate credential`
//! makes one). The node's credentials file holds what it checks against, one line per
//! credential: `PRINCIPAL sha256:HEX`, the sha256 of the secret, so the node never
//! stores a secret. A principal may have several lines (a new secret rolled out before
//! the old one is removed). The node reads the file again whenever it changes, so
//! removing a line revokes that credential from the next request on, also on a
//! connection that is already open: every request carries its credential.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::tenancy;
use crate::wasm::sha256;
pub use crate::wire::Credential;

/// Longest secret accepted.
pub const MAX_SECRET_LEN: usize = 256;

/// Who a control request acts as.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Principal {
    /// The node's operator: every request, any tenant.
    Admin,
    /// A tenant: requests within its own tenant only.
    Tenant(String),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Admin => f.write_str("admin"),
            Principal::Tenant(t) => write!(f, "tenant:{t}"),
        }
    }
}

impl std::str::FromStr for Principal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("tenant:") {
            _ if s == "admin" => Ok(Principal::Admin),
            Some(t) if tenancy::valid_name(t) => Ok(Principal::Tenant(t.to_string())),
            _ => Err(format!("invalid principal {s:?}: admin or tenant:NAME")),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential").field("principal", &self.principal).finish_non_exhaustive()
    }
}

/// A credential or credentials file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path}: {message}")]
    Invalid {
        /// The file (or the variable).
        path: String,
        /// What is wrong, with the line.
        message: String,
    },
}

impl Credential {
    /// A random new secret for `principal`.
    pub fn generate(principal: &Principal) -> Credential {
        Credential { principal: principal.to_string(), secret: hex::encode(rand::random::<[u8; 32]>()) }
    }

    /// Parses a credential (`PRINCIPAL SECRET`); `source` names where it came from.
    pub fn parse(text: &str, source: &str) -> Result<Credential, CredentialError> {
        let invalid = |message: &str| CredentialError::Invalid { path: source.to_string(), message: message.into() };
        let mut words = text.split_whitespace();
        let (Some(principal), Some(secret), None) = (words.next(), words.next(), words.next()) else {
            return Err(invalid("expected one line: PRINCIPAL SECRET"));
        };
        principal.parse::<Principal>().map_err(|e| invalid(&e))?;
        if secret.len() > MAX_SECRET_LEN {
            return Err(invalid("the secret is too long"));
        }
        Ok(Credential { principal: principal.to_string(), secret: secret.to_string() })
    }

    /// Reads a credential file.
    pub fn load(path: &Path) -> Result<Credential, CredentialError> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| CredentialError::Read { path: shown.clone(), source })?;
        Credential::parse(&text, &shown)
    }

    /// The line for a node's credentials file that accepts this credential.
    pub fn accept_line(&self) -> String {
        format!("{} sha256:{}", self.principal, hex::encode(sha256(self.secret.as_bytes())))
    }
}

/// Why a request's credential was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential came with the request.
    Missing,
    /// The credential is not (or no longer) in the node's file.
    Wrong,
}

/// The node's side: the credentials it accepts, read again when the file changes.
#[derive(Debug)]
pub struct Credentials {
    path: PathBuf,
    /// The file's text when it was last parsed.
    text: Option<String>,
    accepted: BTreeMap<Principal, Vec<[u8; 32]>>,
}

impl Credentials {
    /// Reads the credentials file at `path`.
    pub fn load(path: &Path) -> Result<Credentials, CredentialError> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| CredentialError::Read { path: shown.clone(), source })?;
        let accepted = parse_accepted(&text, &shown)?;
        Ok(Credentials { path: path.to_path_buf(), text: Some(text), accepted })
    }

    /// Reads the file again (it is small: every request does, so a revocation holds
    /// from the next request on, whatever the file system's timestamps) and parses it
    /// if it changed. A file that became unreadable or invalid accepts nothing until
    /// it is fixed (deny by default).
    pub fn refresh(&mut self) {
        let text = std::fs::read_to_string(&self.path).ok();
        if text.is_some() && text == self.text {
            return;
        }
        let shown = self.path.display().to_string();
        match text.as_deref().map(|t| parse_accepted(t, &shown)) {
            Some(Ok(accepted)) => self.accepted = accepted,
            Some(Err(e)) => {
                tracing::error!("credentials file: {e}; no control request is accepted until it is fixed");
                self.accepted.clear();
            }
            None => {
                tracing::error!(path = %shown, "credentials file unreadable; no control request is accepted");
                self.accepted.clear();
            }
        }
        self.text = text;
    }

    /// The principal `credential` proves, if the node accepts it.
    pub fn check(&self, credential: Option<&Credential>) -> Result<Principal, AuthFailure> {
        let credential = credential.ok_or(AuthFailure::Missing)?;
        let principal: Principal = credential.principal.parse().map_err(|_| AuthFailure::Wrong)?;
        let digest = sha256(credential.secret.as_bytes());
        let known = self.accepted.get(&principal).ok_or(AuthFailure::Wrong)?;
        // Compare every accepted digest in full, whatever matches first.
        let matched = known.iter().fold(false, |m, d| m | digests_equal(d, &digest));
        matched.then_some(principal).ok_or(AuthFailure::Wrong)
    }
}

fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn parse_accepted(text: &str, path: &str) -> Result<BTreeMap<Principal, Vec<[u8; 32]>>, CredentialError> {
    let mut accepted: BTreeMap<Principal, Vec<[u8; 32]>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let invalid =
            |m: String| CredentialError::Invalid { path: path.to_string(), message: format!("line {}: {m}", n + 1) };
        let mut words = line.split_whitespace();
        let (Some(principal), Some(digest), None) = (words.next(), words.next(), words.next()) else {
            return Err(invalid("expected PRINCIPAL sha256:HEX".into()));
        };
        let principal: Principal = principal.parse().map_err(invalid)?;
        let digest = digest
            .strip_prefix("sha256:")
            .and_then(|h| hex::decode(h).ok())
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
            .ok_or_else(|| invalid("expected sha256: and 64 hex digits".into()))?;
        accepted.entry(principal).or_default().push(digest);
    }
    Ok(accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_listed_credentials_and_follows_the_file() {
        let dir = std::env::temp_dir().join(format!("estate-auth-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credentials");
        let a = Credential::generate(&Principal::Tenant("a".into()));
        let admin = Credential::generate(&Principal::Admin);
        std::fs::write(&path, format!("# node credentials\n{}\n{}\n", a.accept_line(), admin.accept_line())).unwrap();
        let mut c = Credentials::load(&path).unwrap();
        assert_eq!(c.check(Some(&a)), Ok(Principal::Tenant("a".into())));
        assert_eq!(c.check(Some(&admin)), Ok(Principal::Admin));
        assert_eq!(c.check(None), Err(AuthFailure::Missing));
        let forged = Credential { principal: "tenant:b".into(), secret: a.secret.clone() };
        assert_eq!(c.check(Some(&forged)), Err(AuthFailure::Wrong), "a's secret does not make b");
        let wrong = Credential { secret: "x".into(), ..a.clone() };
        assert_eq!(c.check(Some(&wrong)), Err(AuthFailure::Wrong));
        // Revoked: the next check no longer accepts it.
        std::fs::write(&path, format!("{}\n", admin.accept_line())).unwrap();
        c.refresh();
        assert_eq!(c.check(Some(&a)), Err(AuthFailure::Wrong));
        assert_eq!(c.check(Some(&admin)), Ok(Principal::Admin));
        std::fs::write(&path, "garbage\n").unwrap();
        c.refresh();
        assert_eq!(c.check(Some(&admin)), Err(AuthFailure::Wrong), "a broken file accepts nothing");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parsing_names_the_line_and_never_shows_secrets() {
        let e = parse_accepted("admin sha256:00\n", "creds").unwrap_err().to_string();
        assert!(e.contains("creds") && e.contains("line 1"), "{e}");
        let e = parse_accepted("\n\nroot sha256:00\n", "creds").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("invalid principal"), "{e}");
        let c = Credential::parse("tenant:a s3cret\n", "file").unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(Credential::parse("tenant:a", "file").is_err());
    }
}
