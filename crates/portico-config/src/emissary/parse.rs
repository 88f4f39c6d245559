//! What `getambassador.io/v3alpha1` and Kubernetes `v1` accept: the [`Schema`] of each, which
//! dispatches a document's `kind` to its type in [`super::schema`] and warns about fields that
//! are accepted but ignored.

use crate::model::{ListenerSpec, Spec};
use crate::node::{self, Deserialized, Node, Pos};
use crate::resource::{AUTH_SERVICE, HOST, LISTENER, MAPPING, Parsed, Schema};

use super::schema::*;

// ---------------------------------------------------------------- schema

/// `getambassador.io/v3alpha1`.
pub(crate) struct EmissaryV3;
/// Kubernetes `v1` (only `Secret`).
pub(crate) struct KubeV1;

pub(super) const EMISSARY_KINDS: &[&str] =
    &[MAPPING, HOST, LISTENER, TLS_CONTEXT, MODULE, AUTH_SERVICE];

pub(super) fn typed<T: serde::de::DeserializeOwned>(
    spec: &mut Node,
    wrap: impl FnOnce(T) -> Parsed,
) -> Deserialized<Parsed> {
    let r = node::deserialize_all::<T>(spec, 64);
    Deserialized {
        value: r.value.map(wrap),
        errors: r.errors,
        removed: r.removed,
    }
}

pub(super) fn em(s: EmSpec) -> Parsed {
    Parsed::Emissary(Box::new(s))
}

/// Positions of fields that are accepted but ignored (for warnings).
pub(super) fn ignored_fields(
    spec: &Node,
    fields: &[&str],
    why: &str,
    warns: &mut Vec<(Pos, String)>,
) {
    ignored_at(spec, &[], fields, why, warns);
}

/// [`ignored_fields`] for fields nested under `under` (e.g. `requestPolicy.insecure`); the
/// warning names the full dotted path of each field.
pub(super) fn ignored_at(
    spec: &Node,
    under: &[&str],
    fields: &[&str],
    why: &str,
    warns: &mut Vec<(Pos, String)>,
) {
    let mut node = spec;
    for k in under {
        match node.get(k) {
            Some(n) => node = n,
            None => return,
        }
    }
    for f in fields {
        if let Some((k, _)) = node.entry(f) {
            let mut path = under.join(".");
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(f);
            warns.push((k.pos, format!("`{path}` is ignored by Portico ({why})")));
        }
    }
}

impl Schema for EmissaryV3 {
    fn kinds(&self) -> &'static [&'static str] {
        EMISSARY_KINDS
    }

    fn parse_spec(
        &self,
        kind: &str,
        spec: &mut Node,
        warns: &mut Vec<(Pos, String)>,
    ) -> Option<(&'static str, Deserialized<Parsed>)> {
        ignored_fields(
            spec,
            &["ambassador_id"],
            "one Portico serves one config",
            warns,
        );
        Some(match kind {
            MAPPING => {
                ignored_fields(
                    spec,
                    &["labels"],
                    "rate-limit descriptors; use portico.dev/v1 rate_limits",
                    warns,
                );
                ignored_fields(
                    spec,
                    &["docs"],
                    "developer-portal metadata; Portico has no developer portal",
                    warns,
                );
                ignored_fields(
                    spec,
                    &["resolver"],
                    "it only tunes service discovery; Portico resolves `service` by DNS",
                    warns,
                );
                ignored_fields(
                    spec,
                    &["stats_name"],
                    "metrics are labelled with the Mapping's name",
                    warns,
                );
                ignored_fields(
                    spec,
                    &["enable_ipv4", "enable_ipv6"],
                    "every A and AAAA record of a service is used",
                    warns,
                );
                ignored_fields(
                    spec,
                    &["add_linkerd_headers"],
                    "add `l5d-dst-override` with add_request_headers if the mesh needs it",
                    warns,
                );
                ignored_fields(
                    spec,
                    &["error_response_overrides"],
                    "not applied: upstream error bodies reach the client unchanged",
                    warns,
                );
                if spec.get("auto_host_rewrite").and_then(|v| match &v.value {
                    node::Value::Bool(b) => Some(*b),
                    _ => None,
                }) == Some(false)
                {
                    ignored_fields(
                        spec,
                        &["auto_host_rewrite"],
                        "false is the default: the client's Host is forwarded",
                        warns,
                    );
                }
                (
                    MAPPING,
                    typed::<EmMapping>(spec, |m| em(EmSpec::Mapping(Box::new(m)))),
                )
            }
            HOST => {
                ignored_fields(
                    spec,
                    &["mappingSelector", "selector"],
                    "every Mapping is served on every Host",
                    warns,
                );
                ignored_at(
                    spec,
                    &["requestPolicy", "insecure"],
                    &["additionalPort"],
                    "declare a Listener on that port; Host requestPolicy applies on every Listener",
                    warns,
                );
                ignored_at(
                    spec,
                    &["acmeProvider"],
                    &["privateKeySecret", "registration"],
                    "Portico keeps its ACME account in --state-dir",
                    warns,
                );
                (
                    HOST,
                    typed::<EmHost>(spec, |h| em(EmSpec::Host(Box::new(h)))),
                )
            }
            LISTENER => {
                ignored_fields(
                    spec,
                    &["hostBinding", "statsPrefix", "securityModel"],
                    "every Host is bound to every Listener; x-forwarded-proto is set by Portico",
                    warns,
                );
                (
                    LISTENER,
                    typed::<EmListener>(spec, |l| {
                        let _ = (
                            l.security_model,
                            l.host_binding,
                            l.stats_prefix,
                            l.ambassador_id,
                        );
                        Parsed::Spec(Spec::Listener(ListenerSpec {
                            address: None,
                            port: l.port,
                            protocol: l.protocol,
                            http2: None,
                            max_connections: None,
                            trust_forwarded: l.l7_depth.map(|d| d > 0),
                            ..ListenerSpec::default()
                        }))
                    }),
                )
            }
            AUTH_SERVICE => {
                ignored_fields(
                    spec,
                    &[
                        "stats_name",
                        "v3StatsName",
                        "circuit_breakers",
                        "add_linkerd_headers",
                    ],
                    "it only tunes Envoy's cluster for the auth service",
                    warns,
                );
                if spec.get("tls").is_some_and(
                    |v| matches!(&v.value, node::Value::Str(s) if s != "true" && s != "false"),
                ) {
                    ignored_fields(
                        spec,
                        &["tls"],
                        "a TLSContext name: the auth service is reached over TLS verified \
                         against the built-in roots",
                        warns,
                    );
                }
                (
                    AUTH_SERVICE,
                    typed::<EmAuthService>(spec, |a| {
                        Parsed::Spec(Spec::AuthService(Box::new(a.into_spec())))
                    }),
                )
            }
            TLS_CONTEXT => {
                ignored_fields(
                    spec,
                    &["secret_namespacing", "redirect_cleartext_from"],
                    "see the Host's requestPolicy",
                    warns,
                );
                (
                    TLS_CONTEXT,
                    typed::<EmTlsContext>(spec, |t| em(EmSpec::TlsContext(t))),
                )
            }
            MODULE => {
                if let Some(cfg) = spec.get("config") {
                    ignored_fields(cfg, MODULE_IGNORED, "it tunes Envoy itself", warns);
                    ignored_at(cfg, &["gzip"], GZIP_IGNORED, "it tunes zlib", warns);
                    if let Some((k, _)) = cfg.entry("gzip") {
                        warns.push((
                            k.pos,
                            "`gzip` is applied as `compression` (gzip, br or zstd by \
                             accept-encoding) on every Mapping that sets none"
                                .to_string(),
                        ));
                    }
                }
                (
                    MODULE,
                    typed::<EmModule>(spec, |m| {
                        let _ = m.ambassador_id;
                        em(EmSpec::Module(Box::new(m.config.unwrap_or_default())))
                    }),
                )
            }
            k if TUNING_KINDS.contains(&k) => {
                let kind = TUNING_KINDS.iter().copied().find(|t| *t == k)?;
                warns.push((
                    spec.pos,
                    format!("{kind} only tunes Emissary; Portico accepts and ignores it"),
                ));
                (
                    kind,
                    Deserialized {
                        value: Some(em(EmSpec::Ignored)),
                        errors: Vec::new(),
                        removed: Vec::new(),
                    },
                )
            }
            k if SECURITY_KINDS.contains(&k) => {
                let kind = SECURITY_KINDS.iter().copied().find(|t| *t == k)?;
                (
                    kind,
                    Deserialized {
                        value: None,
                        errors: vec![(
                            spec.pos,
                            format!(
                                "{kind} is not supported: ignoring it would serve traffic \
                                 without the authentication/filtering it asks for"
                            ),
                        )],
                        removed: Vec::new(),
                    },
                )
            }
            _ => return None,
        })
    }
}

impl Schema for KubeV1 {
    fn kinds(&self) -> &'static [&'static str] {
        &[SECRET]
    }

    fn parse_spec(
        &self,
        kind: &str,
        spec: &mut Node,
        _warns: &mut Vec<(Pos, String)>,
    ) -> Option<(&'static str, Deserialized<Parsed>)> {
        (kind == SECRET).then(|| (SECRET, typed::<EmSecret>(spec, |s| em(EmSpec::Secret(s)))))
    }
}
