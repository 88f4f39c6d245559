//! Kubernetes `Secret` data turned into files the TLS layer can read: base64 decoding, a
//! private directory (`$TMPDIR/portico-secrets-UID`, 0700, files 0600, named by a hash of
//! their content), and the TLS settings (`TLSContext`, client CA) built from Secrets.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::model::*;
use crate::resource::{Diags, Resource};

use super::schema::*;

/// The Emissary document of a resource, if it is one.
pub(super) fn spec_of(r: &Resource) -> Option<&EmSpec> {
    r.emissary.as_deref()
}

/// A namespaced resource's identity, `NAMESPACE/NAME`.
pub(super) fn ident(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Where Secrets are looked up: every resource of the load, and the Secrets among them by
/// `namespace/name` (an index into `resources`).
#[derive(Clone, Copy)]
pub(super) struct SecretStore<'a> {
    pub resources: &'a [Resource],
    pub index: &'a HashMap<String, usize>,
}

/// Decodes a Secret's `tls.crt`/`tls.key` (or another key) to a private file.
pub(super) fn secret_file(
    r: &Resource,
    d: &mut Diags,
    field: &[&str],
    store: SecretStore<'_>,
    name: &str,
    key: &str,
) -> Option<String> {
    secret_file_in(r, d, field, store, None, name, key)
}

/// [`secret_file`] with the Secret's namespace given (`None`: the referring resource's; a
/// `name.namespace` reference, Emissary's spelling, is also understood).
pub(super) fn secret_file_in(
    r: &Resource,
    d: &mut Diags,
    field: &[&str],
    store: SecretStore<'_>,
    namespace: Option<&str>,
    name: &str,
    key: &str,
) -> Option<String> {
    let ns = namespace.unwrap_or(r.namespace_or_default());
    let found = store.index.get(&ident(ns, name)).or_else(|| {
        name.rsplit_once('.')
            .filter(|_| namespace.is_none())
            .and_then(|(n, sns)| store.index.get(&ident(sns, n)))
    });
    let Some(&si) = found else {
        if namespace.is_some() || r.namespace.is_some() {
            r.error(
                d,
                field,
                format!("no Secret named `{name}` in namespace `{ns}`"),
            );
        } else {
            r.error(d, field, format!("no Secret named `{name}`"));
        }
        return None;
    };
    let sr = &store.resources[si];
    let Some(EmSpec::Secret(s)) = spec_of(sr) else {
        return None;
    };
    if let Some(t) = &s.kind
        && t != "kubernetes.io/tls"
        && t != "Opaque"
    {
        sr.error(
            d,
            &["spec", "type"],
            format!("Secret type `{t}` is not supported (expected kubernetes.io/tls)"),
        );
        return None;
    }
    let find = |p: &Option<Pairs<String>>| {
        p.as_ref()
            .and_then(|p| p.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    };
    let bytes = if let Some(b64) = find(&s.data) {
        match base64_decode(&b64) {
            Some(b) => b,
            None => {
                sr.error(
                    d,
                    &["spec", "data", key],
                    format!("`{key}` is not valid base64"),
                );
                return None;
            }
        }
    } else if let Some(text) = find(&s.string_data) {
        text.into_bytes()
    } else {
        sr.error_key(
            d,
            &["spec", "data"],
            format!("Secret `{name}` has no `{key}`"),
        );
        return None;
    };
    match write_private(&bytes, key) {
        Ok(p) => Some(p.display().to_string()),
        Err(e) => {
            sr.error(
                d,
                &["metadata", "name"],
                format!("cannot write the decoded secret: {e}"),
            );
            None
        }
    }
}

/// Writes `bytes` to `$TMPDIR/portico-secrets-UID/HASH-KEY` (dir 0700, file 0600); the
/// same content always gives the same file.
pub(super) fn write_private(bytes: &[u8], key: &str) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("portico-secrets-{uid}"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    // FNV-1a: a stable name per content.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let path = dir.join(format!("{h:016x}-{}", key.replace('/', "_")));
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(path);
    }
    // Unique per call: two loads in one process (a reload racing `/explain`, parallel tests)
    // may write the same content at once, and must not rename each other's temp file away.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{h:016x}.{}.{seq}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Standard or URL-safe base64 (whitespace ignored, padding optional), as Kubernetes tools
/// write `Secret` data.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD
        .decode(&compact)
        .or_else(|_| URL_SAFE.decode(&compact))
        .ok()
}

/// The client-CA file of `ca_secret` (mTLS), under Portico's rule that a CA means client
/// certificates are required. Emissary's `cert_required: false` (verify a certificate only if
/// one is presented) has no equivalent: written explicitly it is an error, left unset a
/// warning; `cert_required: true` without a `ca_secret` is an error. `at` is the object
/// holding the two fields (`["spec"]` or `["spec", "tls"]`).
pub(super) fn client_ca(
    r: &Resource,
    d: &mut Diags,
    at: &[&str],
    ca_secret: Option<&String>,
    cert_required: Option<bool>,
    store: SecretStore<'_>,
) -> Option<String> {
    let path = |f: &'static str| {
        let mut p = at.to_vec();
        p.push(f);
        p
    };
    let Some(ca) = ca_secret else {
        if cert_required == Some(true) {
            r.error_key(
                d,
                &path("cert_required"),
                "`cert_required: true` needs a `ca_secret` to verify client certificates against",
            );
        }
        return None;
    };
    match cert_required {
        Some(false) => {
            r.error_key(
                d,
                &path("cert_required"),
                "`cert_required: false` (optional client certificates) is not supported: with a \
                 ca_secret Portico requires a client certificate; set `cert_required: true`",
            );
            return None;
        }
        None => r.warn(
            d,
            &path("ca_secret"),
            "client certificates are required (Portico does not verify optional ones); \
             set `cert_required: true` to say so",
        ),
        Some(true) => {}
    }
    secret_file(r, d, &path("ca_secret"), store, ca, "tls.crt")
}

pub(super) fn context_tls(
    r: &Resource,
    d: &mut Diags,
    t: &EmTlsContext,
    store: SecretStore<'_>,
) -> Option<HostTlsM> {
    let Some(secret) = &t.secret else {
        r.missing(d, &["spec", "secret"], "a TLSContext needs a secret");
        return None;
    };
    let at = ["spec", "secret"];
    let cert = secret_file(r, d, &at, store, secret, "tls.crt")?;
    let key = secret_file(r, d, &at, store, secret, "tls.key")?;
    let ca = client_ca(
        r,
        d,
        &["spec"],
        t.ca_secret.as_ref(),
        t.cert_required,
        store,
    );
    Some(HostTlsM {
        cert_chain_file: Some(cert),
        private_key_file: Some(key),
        alpn_protocols: t.alpn_protocols.clone(),
        min_tls_version: t.min_tls_version,
        ca_file: ca,
    })
}
