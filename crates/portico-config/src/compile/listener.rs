//! `Listener` resources: address, port and protocol, limits (range-checked, defaults filled
//! in), conflicts between listeners, and the default listener when there is none.

use std::net::IpAddr;
use std::time::Duration;

use super::Ctx;
use super::parse::nonzero_ms;
use crate::defaults;
use crate::model::{ListenerProtocolM, ListenerSpec, Spec};
use crate::resource::{Diags, LISTENER, Resource};
use crate::snapshot::{ListenerConf, ListenerLimits, ListenerProtocol};

/// Smallest HTTP/2 flow-control window (the protocol's initial 65535 octets).
pub(super) const H2_MIN_WINDOW: u64 = 65_535;
/// Largest HTTP/2 flow-control window, 2^31-1 octets (RFC 9113 §6.9.1).
pub(super) const H2_MAX_WINDOW: u64 = (1 << 31) - 1;

/// A Listener's limits, defaults filled in; out-of-range values are errors at their key.
pub(super) fn listener_limits(r: &Resource, d: &mut Diags, l: &ListenerSpec) -> ListenerLimits {
    let def = ListenerLimits::default();
    let mut check = |key: &str, v: Option<u64>, min: u64, max: u64, default: u64| -> u64 {
        match v {
            None => default,
            Some(v) if (min..=max).contains(&v) => v,
            Some(v) => {
                r.error(
                    d,
                    &["spec", key],
                    format!("{key} must be {min}-{max} (got {v})"),
                );
                default
            }
        }
    };
    let kb = check(
        "max_request_headers_kb",
        l.max_request_headers_kb.map(u64::from),
        1,
        1024,
        u64::from(def.max_request_headers_bytes / 1024),
    );
    let count = check(
        "max_headers_count",
        l.max_headers_count.map(u64::from),
        1,
        10_000,
        u64::from(def.max_headers_count),
    );
    let uri = check(
        "max_uri_bytes",
        l.max_uri_bytes.map(u64::from),
        1,
        65_534,
        u64::from(def.max_uri_bytes),
    );
    let streams = check(
        "max_concurrent_streams",
        l.max_concurrent_streams.map(u64::from),
        1,
        65_535,
        u64::from(def.max_concurrent_streams),
    );
    // RFC 9113 §6.5.2 / §6.9.1: a flow-control window is 65535 to 2^31-1 octets.
    let stream_window = check(
        "initial_stream_window_bytes",
        l.initial_stream_window_bytes.map(u64::from),
        H2_MIN_WINDOW,
        H2_MAX_WINDOW,
        u64::from(def.initial_stream_window_bytes),
    );
    let connection_window = check(
        "initial_connection_window_bytes",
        l.initial_connection_window_bytes.map(u64::from),
        H2_MIN_WINDOW,
        H2_MAX_WINDOW,
        u64::from(def.initial_connection_window_bytes),
    );
    let head_ms = check(
        "header_read_timeout_ms",
        l.header_read_timeout_ms,
        1,
        3_600_000,
        def.header_read_timeout.as_millis() as u64,
    );
    let body_ms = check(
        "request_body_idle_timeout_ms",
        l.request_body_idle_timeout_ms,
        0,
        86_400_000,
        defaults::REQUEST_BODY_IDLE_TIMEOUT_MS,
    );
    let keepalive_ms = check(
        "keepalive_timeout_ms",
        l.keepalive_timeout_ms,
        0,
        86_400_000,
        def.keepalive_timeout.map_or(0, |t| t.as_millis() as u64),
    );
    // Every value was range-checked above, so the narrowing casts cannot truncate.
    ListenerLimits {
        max_request_headers_bytes: (kb * 1024) as u32,
        max_headers_count: count as u32,
        max_uri_bytes: uri as u32,
        max_concurrent_streams: streams as u32,
        initial_stream_window_bytes: stream_window as u32,
        initial_connection_window_bytes: connection_window as u32,
        header_read_timeout: Duration::from_millis(head_ms),
        request_body_idle_timeout: nonzero_ms(body_ms),
        keepalive_timeout: nonzero_ms(keepalive_ms),
    }
}

impl Ctx<'_> {
    pub(super) fn listeners(&mut self, resources: &[Resource]) -> Vec<ListenerConf> {
        let mut out: Vec<(ListenerConf, &Resource)> = Vec::new();
        for r in resources.iter().filter(|r| r.kind == LISTENER) {
            let Some(Spec::Listener(l)) = r.spec.as_deref() else {
                continue;
            };
            let address = match l.address.as_deref().map(str::trim) {
                None | Some("") => Some(IpAddr::from(defaults::LISTENER_ADDRESS)),
                Some(a) => match a
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        r.error(
                            self.d,
                            &["spec", "address"],
                            format!("invalid address `{a}` (expected an IP address)"),
                        );
                        None
                    }
                },
            };
            let port = match l.port {
                Some(0) => {
                    r.error(self.d, &["spec", "port"], "port must be 1-65535");
                    continue;
                }
                Some(p) => p,
                None => {
                    r.missing(self.d, &["spec", "port"], "missing field `port`");
                    continue;
                }
            };
            let Some(address) = address else { continue };
            let conf = ListenerConf {
                name: r.name.clone(),
                address,
                port,
                protocol: match l.protocol.unwrap_or(defaults::LISTENER_PROTOCOL) {
                    ListenerProtocolM::Http => ListenerProtocol::Http,
                    ListenerProtocolM::Https => ListenerProtocol::Https,
                    ListenerProtocolM::HttpProxy => ListenerProtocol::HttpProxy,
                    ListenerProtocolM::HttpsProxy => ListenerProtocol::HttpsProxy,
                },
                http2: l.http2.unwrap_or(defaults::LISTENER_HTTP2),
                http3: l.http3.unwrap_or(defaults::LISTENER_HTTP3),
                http3_max_handshakes: l
                    .http3_max_handshakes
                    .unwrap_or(defaults::LISTENER_HTTP3_MAX_HANDSHAKES),
                max_connections: l
                    .max_connections
                    .unwrap_or(defaults::LISTENER_MAX_CONNECTIONS),
                trust_forwarded: l
                    .trust_forwarded
                    .unwrap_or(defaults::LISTENER_TRUST_FORWARDED),
                limits: listener_limits(r, self.d, l),
            };
            if conf.http3 && conf.protocol != ListenerProtocol::Https {
                r.error(self.d, &["spec", "http3"], "http3 needs protocol: HTTPS");
            }
            if conf.http3_max_handshakes == 0 {
                r.error(
                    self.d,
                    &["spec", "http3_max_handshakes"],
                    "http3_max_handshakes must be at least 1",
                );
            }
            if conf.max_connections == 0 {
                r.error(
                    self.d,
                    &["spec", "max_connections"],
                    "max_connections must be at least 1",
                );
            }
            let clash = out.iter().find(|(o, _)| {
                o.port == port
                    && (o.address == address
                        || (o.address.is_ipv4() == address.is_ipv4()
                            && (o.address.is_unspecified() || address.is_unspecified())))
            });
            if let Some((o, first)) = clash {
                let at = first.loc(&["spec", "port"]);
                r.error(
                    self.d,
                    &["spec", "port"],
                    format!(
                        "address {address}:{port} conflicts with Listener/{} ({}:{}, {at})",
                        first.name, o.address, o.port
                    ),
                );
                continue;
            }
            out.push((conf, r));
        }
        let mut listeners: Vec<ListenerConf> = out.into_iter().map(|(l, _)| l).collect();
        if listeners.is_empty() {
            listeners.push(ListenerConf {
                name: defaults::LISTENER_NAME.to_string(),
                address: IpAddr::from(defaults::LISTENER_ADDRESS),
                port: defaults::LISTENER_PORT,
                protocol: ListenerProtocol::Http,
                http2: defaults::LISTENER_HTTP2,
                http3: defaults::LISTENER_HTTP3,
                http3_max_handshakes: defaults::LISTENER_HTTP3_MAX_HANDSHAKES,
                max_connections: defaults::LISTENER_MAX_CONNECTIONS,
                trust_forwarded: defaults::LISTENER_TRUST_FORWARDED,
                limits: ListenerLimits::default(),
            });
        }
        listeners
    }
}
