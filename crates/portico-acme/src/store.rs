//! The state directory (`portico run --state-dir`): where the ACME account keys, the issued
//! certificates, the challenge answers, the order locks and the per-name order status live.
//! Every file is written atomically (a temporary file in the same directory, then a rename)
//! with mode 0600, so a reader (this process or another sharing the directory) sees either
//! the old or the new content, never half of it.
//!
//! Layout:
//!
//! | path | content |
//! | --- | --- |
//! | `accounts/<digest of the directory URL>.json` | the ACME account (key and URL) |
//! | `certs/<name>.pem` | private key (PKCS#8) then the certificate chain, in one file |
//! | `challenges/http-01/<token>` | an HTTP-01 key authorization |
//! | `challenges/tls-alpn-01/<name>.pem` | a TLS-ALPN-01 challenge key and certificate |
//! | `locks/<name>.lock` | the order lock and its lease (`lock.rs`) |
//! | `status/<name>.json` | the last order's outcome and the next attempt (shared back-off) |

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One state directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// What a certificate file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Lower-case hex, as `openssl x509 -serial` prints it (without leading zeros).
    pub serial: String,
    /// The DNS names of the leaf.
    pub names: Vec<String>,
}

impl CertInfo {
    /// When renewal starts: two thirds of the lifetime after `not_before`.
    pub fn renew_at(&self) -> i64 {
        self.not_before + (self.not_after - self.not_before) * 2 / 3
    }
}

/// The shared outcome of the last order for a name (back-off is shared by every process).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OrderStatus {
    /// Consecutive failures.
    pub failures: u32,
    /// Unix seconds before which no process starts a new order.
    pub next_attempt: i64,
    /// The last failure (with the ACME problem document, when there was one).
    pub last_error: Option<String>,
    /// Unix seconds of the last failure or issuance.
    pub at: i64,
    /// The directory URL the status is about: a Host moved to another CA starts afresh.
    #[serde(default)]
    pub authority: String,
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A file name for a hostname: the name itself when it is plain DNS characters, else hex.
fn file_name(name: &str) -> String {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if plain {
        name.to_string()
    } else {
        name.bytes().map(|b| format!("{b:02x}")).collect()
    }
}

/// An ACME token is base64url (RFC 8555 §8.3): anything else is not looked up.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The combined key + chain file of `name`.
    pub fn cert_path(&self, name: &str) -> PathBuf {
        self.root
            .join("certs")
            .join(format!("{}.pem", file_name(name)))
    }

    pub fn account_path(&self, authority: &str) -> PathBuf {
        let digest = ring::digest::digest(&ring::digest::SHA256, authority.as_bytes());
        let hex: String = digest.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.root.join("accounts").join(format!("{hex}.json"))
    }

    pub fn http01_path(&self, token: &str) -> Option<PathBuf> {
        valid_token(token).then(|| self.root.join("challenges").join("http-01").join(token))
    }

    pub fn tls_alpn01_path(&self, name: &str) -> PathBuf {
        self.root
            .join("challenges")
            .join("tls-alpn-01")
            .join(format!("{}.pem", file_name(name)))
    }

    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.root
            .join("locks")
            .join(format!("{}.lock", file_name(name)))
    }

    pub fn status_path(&self, name: &str) -> PathBuf {
        self.root
            .join("status")
            .join(format!("{}.json", file_name(name)))
    }

    /// Creates the directory tree (mode 0700 on creation).
    pub fn ensure(&self) -> std::io::Result<()> {
        for sub in [
            "accounts",
            "certs",
            "challenges/http-01",
            "challenges/tls-alpn-01",
            "locks",
            "status",
        ] {
            create_dir_private(&self.root.join(sub))?;
        }
        Ok(())
    }

    pub fn read_status(&self, name: &str) -> OrderStatus {
        std::fs::read(self.status_path(name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn write_status(&self, name: &str, s: &OrderStatus) -> std::io::Result<()> {
        let body = serde_json::to_vec(s).map_err(std::io::Error::other)?;
        write_atomic(&self.status_path(name), &body)
    }

    /// The stored certificate of `name`, if it parses, has a key, and covers `name`.
    pub fn read_cert(&self, name: &str) -> Option<CertInfo> {
        let pem = std::fs::read(self.cert_path(name)).ok()?;
        let info = cert_info(&pem)?;
        info.names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
            .then_some(info)
    }
}

/// Parses the first certificate of a PEM bundle (a private key in it is skipped).
pub fn cert_info(pem: &[u8]) -> Option<CertInfo> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let leaf = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).ok()?;
    let validity = cert.validity();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    let serial = cert.tbs_certificate.serial.to_str_radix(16);
    Some(CertInfo {
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        serial,
        names,
    })
}

#[cfg(unix)]
fn create_dir_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_dir_private(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Writes `path` atomically with mode 0600: a uniquely named temporary file in the same
/// directory, flushed to disk, then renamed over `path`.
pub fn write_atomic(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    create_dir_private(dir)?;
    let base = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(
        ".{base}.tmp-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes temporary files left by a process that died between create and rename.
pub fn sweep_temporaries(dir: &Path, older_than: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with('.') && name.contains(".tmp-")) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > older_than);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tokens_cannot_escape_the_directory() {
        let s = Store::new("/state");
        assert_eq!(
            s.cert_path("api.example.com"),
            Path::new("/state/certs/api.example.com.pem")
        );
        assert_eq!(s.cert_path("../x"), Path::new("/state/certs/2e2e2f78.pem"));
        assert!(s.http01_path("../../etc/passwd").is_none());
        assert!(s.http01_path("").is_none());
        assert_eq!(
            s.http01_path("aB-_9").as_deref(),
            Some(Path::new("/state/challenges/http-01/aB-_9"))
        );
    }

    #[test]
    fn atomic_write_is_private_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("f.pem");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn cert_info_and_renewal_point() {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2030, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 4, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = format!("{}{}", key.serialize_pem(), cert.pem());
        let info = cert_info(pem.as_bytes()).unwrap();
        assert_eq!(info.names, vec!["a.test".to_string()]);
        let life = info.not_after - info.not_before;
        assert_eq!(info.renew_at() - info.not_before, life * 2 / 3);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        write_atomic(&store.cert_path("a.test"), pem.as_bytes()).unwrap();
        assert_eq!(store.read_cert("a.test"), Some(info));
        // A certificate that does not cover the name is not that name's.
        write_atomic(&store.cert_path("b.test"), pem.as_bytes()).unwrap();
        assert_eq!(store.read_cert("b.test"), None);
    }
}
