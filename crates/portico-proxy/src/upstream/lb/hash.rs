//! Hashing for consistent-hash balancing (`ring_hash`, `maglev`): stable 64-bit hashes (the
//! same on every host and run, so several Portico instances agree) and the request's key.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use portico_config::snapshot::{HashOn, LbConf, LbPolicy};

/// MurmurHash3's 64-bit finalizer: a strong, stable bit mixer.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// A stable 64-bit hash (FNV-1a, then mixed): the same on every host and every run, so that
/// several Portico instances map a key to the same endpoint.
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

/// The hash of a request's key for `ring_hash`/`maglev`, and a `Set-Cookie` value to put on
/// the response when the policy hashes on a cookie the request did not carry (a fresh random
/// value is generated, hashed on, and handed to the client). `(None, None)` for other
/// policies, or when the header is absent (the pick is then random).
pub fn hash_key(
    conf: &LbConf,
    headers: &HeaderMap,
    client: IpAddr,
) -> (Option<u64>, Option<HeaderValue>) {
    if !matches!(conf.policy, LbPolicy::RingHash | LbPolicy::Maglev) {
        return (None, None);
    }
    match &conf.hash_on {
        None => (None, None),
        Some(HashOn::Header(name)) => {
            let mut values = headers.get_all(name).iter();
            let Some(first) = values.next() else {
                return (None, None);
            };
            let mut h = hash_bytes(first.as_bytes());
            for v in values {
                h = fmix64(h ^ hash_bytes(v.as_bytes()));
            }
            (Some(h), None)
        }
        Some(HashOn::SourceIp) => {
            let h = match client {
                IpAddr::V4(a) => hash_bytes(&a.octets()),
                IpAddr::V6(a) => match a.to_ipv4_mapped() {
                    Some(v4) => hash_bytes(&v4.octets()),
                    None => hash_bytes(&a.octets()),
                },
            };
            (Some(h), None)
        }
        Some(HashOn::Cookie { name, ttl }) => {
            if let Some(v) = find_cookie(headers, name) {
                return (Some(hash_bytes(v.as_bytes())), None);
            }
            let value = format!("{:016x}", fastrand::u64(..));
            let hash = hash_bytes(value.as_bytes());
            let mut cookie = format!("{name}={value}; Path=/; HttpOnly");
            if let Some(ttl) = ttl {
                cookie.push_str(&format!("; Max-Age={}", ttl.as_secs().max(1)));
            }
            (Some(hash), HeaderValue::from_str(&cookie).ok())
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
}
