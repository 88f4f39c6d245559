//! `Host` resources: hostname globs (unique), TLS files and ALPN, the insecure-request action.

use std::collections::HashMap;

use super::Ctx;
use super::parse::{check_files, check_host_glob, p};
use super::route_match::split_port;
use crate::defaults;
use crate::model::{InsecureActionM, Spec, TlsVersionM};
use crate::resource::{HOST, Resource};
use crate::snapshot::{HostConf, HostGlob, InsecureAction, TlsConf, TlsVersion};

impl Ctx<'_> {
    pub(super) fn hosts(&mut self, resources: &[Resource]) -> Vec<HostConf> {
        let mut out: Vec<HostConf> = Vec::new();
        let mut seen: HashMap<HostGlob, &Resource> = HashMap::new();
        for r in resources.iter().filter(|r| r.kind == HOST) {
            let Some(Spec::Host(h)) = r.spec.as_deref() else {
                continue;
            };
            let hostname = match &h.hostname {
                None => {
                    r.missing(self.d, &["spec", "hostname"], "missing field `hostname`");
                    continue;
                }
                Some(s) => match split_port(s).and_then(|(h, _)| check_host_glob(h)) {
                    Ok(g) => g,
                    Err(m) => {
                        r.error(self.d, &["spec", "hostname"], m);
                        continue;
                    }
                },
            };
            if let Some(first) = seen.get(&hostname) {
                let at = first.loc(&["spec", "hostname"]);
                r.error(
                    self.d,
                    &["spec", "hostname"],
                    format!(
                        "hostname `{hostname}` is already used by Host/{} ({at})",
                        first.name
                    ),
                );
                continue;
            }
            seen.insert(hostname.clone(), r);
            let tls = h.tls.as_ref().and_then(|t| {
                let base = ["spec", "tls"];
                for (f, v) in [
                    ("cert_chain_file", &t.cert_chain_file),
                    ("private_key_file", &t.private_key_file),
                ] {
                    if v.is_none() {
                        r.missing(
                            self.d,
                            &p(&base, &[f]),
                            format!("missing field `{f}` in tls"),
                        );
                    }
                }
                let files = check_files(
                    self.d,
                    r,
                    &base,
                    &[
                        ("cert_chain_file", t.cert_chain_file.as_ref()),
                        ("private_key_file", t.private_key_file.as_ref()),
                        ("ca_file", t.ca_file.as_ref()),
                    ],
                );
                let alpn: Vec<String> = t
                    .alpn_protocols
                    .as_deref()
                    .unwrap_or(defaults::TLS_ALPN_PROTOCOLS)
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                for a in &alpn {
                    if a != "h2" && a != "http/1.1" {
                        r.error(
                            self.d,
                            &p(&base, &["alpn_protocols"]),
                            format!("unsupported ALPN protocol `{a}` (expected h2, http/1.1)"),
                        );
                    }
                }
                let mut it = files.into_iter();
                let (cert, key, ca) = (
                    it.next().flatten(),
                    it.next().flatten(),
                    it.next().flatten(),
                );
                Some(TlsConf {
                    cert_chain_file: cert?,
                    private_key_file: key?,
                    alpn_protocols: alpn,
                    min_tls_version: match t.min_tls_version.unwrap_or(defaults::TLS_MIN_VERSION) {
                        TlsVersionM::V13 => TlsVersion::V1_3,
                        TlsVersionM::V12 => TlsVersion::V1_2,
                    },
                    ca_file: ca,
                })
            });
            let insecure = match h
                .request_policy
                .as_ref()
                .and_then(|p| p.insecure.as_ref())
                .and_then(|i| i.action)
                .unwrap_or(defaults::INSECURE_ACTION)
            {
                InsecureActionM::Redirect => InsecureAction::Redirect,
                InsecureActionM::Route => InsecureAction::Route,
                InsecureActionM::Reject => InsecureAction::Reject,
            };
            out.push(HostConf {
                name: r.name.clone(),
                hostname,
                tls,
                insecure,
            });
        }
        out.sort_by_key(|h| std::cmp::Reverse(h.hostname.specificity()));
        out
    }
}
