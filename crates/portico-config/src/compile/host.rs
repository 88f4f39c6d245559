//! `Host` resources: hostname globs (unique), TLS files and ALPN, the insecure-request action,
//! and `acmeProvider` (automatic certificates, §13).

use std::collections::HashMap;

use super::Ctx;
use super::parse::{check_files, check_host_glob, p};
use super::route_match::split_port;
use crate::defaults;
use crate::model::{AcmeChallengeM, AcmeM, HostSpec, InsecureActionM, Spec, TlsVersionM};
use crate::resource::{HOST, Resource};
use crate::snapshot::{
    AcmeChallenge, AcmeConf, HostConf, HostGlob, InsecureAction, TlsConf, TlsVersion,
};

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
            let acme = self.acme(r, h, &hostname);
            let acme_given = h.acme_provider.is_some();
            let tls = h.tls.as_ref().and_then(|t| {
                let base = ["spec", "tls"];
                for (f, v) in [
                    ("cert_chain_file", &t.cert_chain_file),
                    ("private_key_file", &t.private_key_file),
                ] {
                    if acme_given {
                        if v.is_some() {
                            r.error(
                                self.d,
                                &p(&base, &[f]),
                                format!("`{f}` and acmeProvider exclude each other: ACME provides the certificate"),
                            );
                        }
                    } else if v.is_none() {
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
                let (cert, key) = if acme_given {
                    (Some(Default::default()), Some(Default::default()))
                } else {
                    (cert, key)
                };
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
            // An ACME Host without a `tls` block still terminates TLS, with the defaults.
            let tls = match (&tls, &acme) {
                (None, Some(_)) if h.tls.is_none() => Some(TlsConf {
                    cert_chain_file: Default::default(),
                    private_key_file: Default::default(),
                    alpn_protocols: defaults::TLS_ALPN_PROTOCOLS
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .collect(),
                    min_tls_version: match defaults::TLS_MIN_VERSION {
                        TlsVersionM::V13 => TlsVersion::V1_3,
                        TlsVersionM::V12 => TlsVersion::V1_2,
                    },
                    ca_file: None,
                }),
                _ => tls,
            };
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
                acme,
            });
        }
        out.sort_by_key(|h| std::cmp::Reverse(h.hostname.specificity()));
        out
    }

    /// `acmeProvider`: an exact hostname, an http(s) directory URL, a usable `ca_file`.
    fn acme(&mut self, r: &Resource, h: &HostSpec, hostname: &HostGlob) -> Option<AcmeConf> {
        let a: &AcmeM = h.acme_provider.as_deref()?;
        let base = ["spec", "acmeProvider"];
        let mut ok = true;
        if !matches!(hostname, HostGlob::Exact(_)) {
            r.error(
                self.d,
                &["spec", "hostname"],
                format!("acmeProvider needs an exact hostname, not the glob `{hostname}`"),
            );
            ok = false;
        }
        let authority = match a.authority.as_deref().map(str::trim) {
            None | Some("") => {
                r.missing(
                    self.d,
                    &p(&base, &["authority"]),
                    "missing field `authority` in acmeProvider (the ACME directory URL)",
                );
                ok = false;
                String::new()
            }
            Some(u) => {
                let rest = u
                    .strip_prefix("https://")
                    .or_else(|| u.strip_prefix("http://"));
                let good = rest.is_some_and(|r| {
                    !r.is_empty()
                        && !r.starts_with('/')
                        && !r.chars().any(|c| c.is_whitespace() || c.is_control())
                });
                if !good {
                    r.error(
                        self.d,
                        &p(&base, &["authority"]),
                        format!("authority `{u}` is not an http(s) URL of an ACME directory"),
                    );
                    ok = false;
                }
                u.to_string()
            }
        };
        if let Some(e) = &a.email
            && (!e.contains('@') || e.chars().any(|c| c.is_whitespace() || c == ','))
        {
            r.error(
                self.d,
                &p(&base, &["email"]),
                format!("email `{e}` is not an email address"),
            );
            ok = false;
        }
        let ca = check_files(self.d, r, &base, &[("ca_file", a.ca_file.as_ref())])
            .into_iter()
            .next()
            .flatten();
        let challenge = match a.challenge.unwrap_or(AcmeChallengeM::Http01) {
            AcmeChallengeM::Http01 => AcmeChallenge::Http01,
            AcmeChallengeM::TlsAlpn01 => AcmeChallenge::TlsAlpn01,
        };
        ok.then(|| AcmeConf {
            authority,
            email: a.email.clone(),
            ca_file: ca,
            challenge,
        })
    }
}
