//! JWT validation (reference §9.2) with the `jsonwebtoken` crate: the token is taken from
//! the provider's headers (`authorization: Bearer` by default) or query parameters, its key
//! chosen by `kid` (or, without one, every key of a fitting type is tried), and its
//! signature, `exp`/`nbf` (with `clock_skew_ms`), issuer and audience checked. Accepted
//! algorithms: RS256/384/512, PS256/384/512, ES256/384, EdDSA; `none` and HMAC never.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use portico_config::snapshot::JwtProviderConf;

use super::jwks::KeySet;

/// Why a token was refused (the one-line body of the 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Missing,
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    UnknownKey,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::BadSignature => "bad signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not yet valid",
            Reason::WrongIssuer => "wrong issuer",
            Reason::WrongAudience => "wrong audience",
            Reason::UnknownKey => "unknown key",
        }
    }
}

/// The algorithms Portico accepts.
const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A provider's validation rules, one `Validation` per accepted algorithm, made once.
pub struct Verifier {
    rules: Vec<(Algorithm, Validation)>,
}

impl Verifier {
    pub fn new(conf: &JwtProviderConf) -> Verifier {
        let leeway = conf.clock_skew.as_millis().div_ceil(1000) as u64;
        let rules = ACCEPTED
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.leeway = leeway;
                v.validate_exp = true;
                v.validate_nbf = true;
                v.required_spec_claims.clear();
                v.required_spec_claims.insert("iss".to_string());
                v.set_issuer(&[&conf.issuer]);
                if conf.audiences.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.required_spec_claims.insert("aud".to_string());
                    v.set_audience(&conf.audiences);
                }
                (alg, v)
            })
            .collect();
        Verifier { rules }
    }

    /// Verifies `token` against `keys`; the claims on success.
    pub fn verify(
        &self,
        token: &str,
        keys: &KeySet,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Reason> {
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            // `alg: none` (and anything else jsonwebtoken does not know) fails here.
            Err(_) if names_none(token) => return Err(Reason::BadSignature),
            Err(_) => return Err(Reason::Malformed),
        };
        let Some((_, validation)) = self.rules.iter().find(|(a, _)| *a == header.alg) else {
            // HMAC: a shared secret is never accepted at the edge.
            return Err(Reason::BadSignature);
        };
        let candidates: Vec<&super::jwks::Key> = match &header.kid {
            Some(kid) => match keys.by_kid.get(kid).and_then(|&i| keys.keys.get(i)) {
                Some(k) => vec![k],
                None => return Err(Reason::UnknownKey),
            },
            None => keys.keys.iter().collect(),
        };
        let mut last = Reason::UnknownKey;
        for k in candidates {
            if k.alg.is_some_and(|a| a != header.alg) {
                last = Reason::BadSignature;
                continue;
            }
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token, &k.key, validation,
            ) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    last = match e.kind() {
                        // The key's type does not fit the token's algorithm: another may.
                        ErrorKind::InvalidAlgorithm => Reason::BadSignature,
                        ErrorKind::InvalidSignature
                        | ErrorKind::InvalidEcdsaKey
                        | ErrorKind::InvalidRsaKey(_)
                        | ErrorKind::Crypto(_) => Reason::BadSignature,
                        ErrorKind::ExpiredSignature => return Err(Reason::Expired),
                        ErrorKind::ImmatureSignature => return Err(Reason::NotYetValid),
                        ErrorKind::InvalidIssuer => return Err(Reason::WrongIssuer),
                        ErrorKind::InvalidAudience => return Err(Reason::WrongAudience),
                        ErrorKind::MissingRequiredClaim(c) if c == "iss" => {
                            return Err(Reason::WrongIssuer);
                        }
                        ErrorKind::MissingRequiredClaim(c) if c == "aud" => {
                            return Err(Reason::WrongAudience);
                        }
                        _ => return Err(Reason::Malformed),
                    };
                }
            }
        }
        Err(last)
    }
}

/// Whether a token's header says `alg: none` (which jsonwebtoken refuses to parse).
fn names_none(token: &str) -> bool {
    use base64::Engine as _;
    let Some(head) = token.split('.').next() else {
        return false;
    };
    let Ok(raw) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head.trim_end_matches('='))
    else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&raw)
        .ok()
        .and_then(|v| {
            v.get("alg")
                .and_then(|a| a.as_str())
                .map(|a| a.eq_ignore_ascii_case("none"))
        })
        .unwrap_or(false)
}

/// The token of a request: the first of the provider's headers that carries one (prefix
/// stripped, case-insensitively), else the first of its query parameters. `Err` when a
/// header is there but does not carry the prefix.
pub fn token_of<'a>(
    conf: &JwtProviderConf,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Result<Option<std::borrow::Cow<'a, str>>, Reason> {
    for h in &conf.from_headers {
        let Some(v) = headers.get(&h.name) else {
            continue;
        };
        let s = v.to_str().map_err(|_| Reason::Malformed)?.trim();
        let p = h.prefix.as_str();
        if p.is_empty() {
            return Ok(Some(s.into()));
        }
        match s.get(..p.len()) {
            Some(head) if head.eq_ignore_ascii_case(p) => {
                return Ok(Some(s[p.len()..].trim().into()));
            }
            _ => return Err(Reason::Malformed),
        }
    }
    if !conf.from_params.is_empty()
        && let Some(q) = query
    {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            if conf.from_params.iter().any(|p| *p == k) {
                return Ok(Some(v));
            }
        }
    }
    Ok(None)
}

/// The `forward_claims` headers of a verified token (strings as they are, other values as
/// JSON text; claims that are absent or cannot be a header value are left out).
pub fn forwarded(
    conf: &JwtProviderConf,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(conf.forward_claims.len());
    for (claim, header) in &conf.forward_claims {
        let v = match claims.get(claim) {
            Some(serde_json::Value::String(s)) => HeaderValue::from_str(s),
            Some(serde_json::Value::Null) | None => continue,
            Some(other) => HeaderValue::from_str(&other.to_string()),
        };
        if let Ok(v) = v {
            out.push((header.clone(), v));
        }
    }
    out
}

/// Verifiers by provider index, made once per configuration.
pub type Verifiers = HashMap<usize, Verifier>;
