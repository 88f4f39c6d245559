//! Portico's control plane for Envoy fleets (reference §11): the translation of one compiled
//! config snapshot (the very `portico_config::snapshot::Snapshot` that `portico run` serves) to
//! Envoy v3 xDS resources, built from the `envoy-types` protos (never hand-written protobuf).
//!
//! [`translate`] is pure apart from reading the TLS files the config names (their contents go
//! into SDS secrets, so Envoys on other machines need no copies). Settings Envoy cannot express
//! are reported as [`Warning`]s naming the resource and field (`portico check --target envoy`).
//!
//! Modules: [`routes`] (RouteConfiguration, Portico's match order), [`filters`] (the HTTP
//! filter chain and per-route filter settings: CORS, rate limits), [`auth`] (ext_authz and
//! jwt_authn), [`cluster`] (Cluster and
//! ClusterLoadAssignment), [`listener`] (Listener with SNI filter chains, and Secret), [`server`]
//! (the ADS gRPC server, ACK/NACK tracking, `/xds` and metrics) with its two stream kinds,
//! `sotw` (State-of-the-World) and `delta` (incremental), and their shared `state`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bootstrap;
pub mod cluster;
pub mod filters;
pub mod listener;
pub mod routes;
pub mod server;

mod common;
mod delta;
mod sotw;
mod state;

use common::named;
pub use common::{Named, Resources, Translation, Warning, Warnings, cluster_name, type_url};
use portico_config::snapshot::Snapshot;

/// Translates a snapshot to Envoy resources.
pub fn translate(snap: &Snapshot) -> Translation {
    let mut w = Warnings::default();
    let mut res = Resources::default();
    for u in &snap.upstreams {
        let (mut c, cla) = cluster::cluster(u, &mut w);
        if let Some(b) = cluster::retry_budget(snap, u, &mut w)
            && let Some(t) = c
                .circuit_breakers
                .as_mut()
                .and_then(|cb| cb.thresholds.first_mut())
        {
            t.retry_budget = Some(b);
        }
        if let Some(cla) = cla {
            res.endpoints.push(named(cla.cluster_name.clone(), cla));
        }
        res.clusters.push(named(c.name.clone(), c));
    }
    for rc in routes::route_configurations(snap, &mut w) {
        res.routes.push(named(rc.name.clone(), rc));
    }
    if let Some(r) = snap.routes.iter().find(|r| r.timeout.is_some()) {
        w.push(
            &r.name,
            "spec.timeout_ms",
            "Envoy sends x-envoy-expected-rq-timeout-ms, not x-portico-expected-timeout-ms",
        );
    }
    auth::warn(snap, &mut w);
    filters::warn(snap, &mut w);
    let secrets = listener::secrets(snap, &mut w);
    for l in &snap.listeners {
        let el = listener::listener(l, snap, &secrets, &mut w);
        res.listeners.push(named(el.name.clone(), el));
    }
    for s in secrets {
        res.secrets.push(named(s.name.clone(), s));
    }
    Translation {
        resources: res,
        warnings: w.0,
    }
}

/// The files whose contents the translation sends inline (Host certificates, keys and client
/// CAs, upstream TLS files, JWKS files): `portico xds` reloads when one changes, so a
/// certificate rotated on disk reaches Envoys as a new secret.
pub fn inlined_files(snap: &Snapshot) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for h in &snap.hosts {
        if let Some(t) = &h.tls {
            out.push(t.cert_chain_file.clone());
            out.push(t.private_key_file.clone());
            out.extend(t.ca_file.clone());
        }
    }
    for u in &snap.upstreams {
        if let Some(t) = &u.tls {
            out.extend(t.ca_file.clone());
            out.extend(t.cert_chain_file.clone());
            out.extend(t.private_key_file.clone());
        }
    }
    for p in &snap.jwt_providers {
        if let portico_config::snapshot::JwksSource::File(f) = &p.keys {
            out.push(f.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Test helpers: a snapshot from YAML text, and unpacking of the produced resources.
#[cfg(test)]
pub(crate) mod test_util {
    use portico_config::{ConfigSource, Snapshot, load};

    /// Compiles `yaml` (relative files resolve against `dir`), panicking on errors.
    pub fn snap_in(yaml: &str, dir: &std::path::Path) -> Snapshot {
        let r = load(&[ConfigSource::Inline {
            name: "t.yaml".into(),
            text: yaml.into(),
            base_dir: dir.to_path_buf(),
        }]);
        let errs: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
        r.snapshot
            .unwrap_or_else(|| panic!("config rejected: {errs:?}"))
    }

    pub fn snap(yaml: &str) -> Snapshot {
        snap_in(yaml, &std::env::temp_dir())
    }

    pub fn unpack<T: prost::Message + Default>(n: &crate::Named) -> T {
        T::decode(n.resource.value.as_slice()).expect("decodes")
    }
}
