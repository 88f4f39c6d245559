//! Edge authentication (docs/reference.md §9): the `AuthService` resource (at most one),
//! `JWTProvider` resources, and what a Mapping asks of them (`bypass_auth`,
//! `auth_context_extensions`, `jwt`).

use std::collections::HashMap;

use http::HeaderName;

use super::Ctx;
use super::parse::{check_files, header_name, header_value, ms};
use crate::defaults;
use crate::model::{AuthProtoM, MappingSpec, Spec};
use crate::resource::{AUTH_SERVICE, JWT_PROVIDER, Resource};
use crate::snapshot::{
    AUTH_DEFAULT_HEADERS, AuthProto, AuthServiceConf, IncludeBody, JwksSource, JwtProviderConf,
    RouteAuth, RouteJwt, TokenHeader,
};

impl Ctx<'_> {
    /// The one `AuthService`; several are an error on each, naming them all.
    pub(super) fn auth_service(&mut self, resources: &[Resource]) -> Option<AuthServiceConf> {
        let all: Vec<&Resource> = resources
            .iter()
            .filter(|r| r.kind == AUTH_SERVICE)
            .collect();
        if all.len() > 1 {
            let names: Vec<String> = all
                .iter()
                .map(|r| format!("AuthService/{} at {}", r.name, r.loc(&[])))
                .collect();
            for r in &all {
                r.error_key(
                    self.d,
                    &["kind"],
                    format!(
                        "only one AuthService may be configured; found {}: {}",
                        all.len(),
                        names.join(", ")
                    ),
                );
            }
            return None;
        }
        let r = all.first()?;
        let Some(Spec::AuthService(s)) = r.spec.as_deref() else {
            return None;
        };
        let Some(service) = &s.auth_service else {
            r.missing(
                self.d,
                &["spec", "auth_service"],
                "missing field `auth_service`",
            );
            return None;
        };
        let proto = match s.proto {
            Some(AuthProtoM::Grpc) => AuthProto::Grpc,
            Some(AuthProtoM::Http) | None => AuthProto::Http,
        };
        let upstream = self.service_upstream(
            r,
            &["spec", "auth_service"],
            service,
            proto == AuthProto::Grpc,
        )?;
        let timeout = s.timeout_ms.unwrap_or(defaults::AUTH_TIMEOUT_MS);
        if timeout == 0 {
            r.error(
                self.d,
                &["spec", "timeout_ms"],
                "timeout_ms must be greater than 0",
            );
        }
        let path_prefix = s.path_prefix.clone().unwrap_or_default();
        if !path_prefix.is_empty() && !path_prefix.starts_with('/') {
            r.error(
                self.d,
                &["spec", "path_prefix"],
                format!("path_prefix `{path_prefix}` must start with `/`"),
            );
        }
        let path_prefix = path_prefix.trim_end_matches('/').to_string();
        let mut request_headers: Vec<HeaderName> = AUTH_DEFAULT_HEADERS
            .iter()
            .map(|h| HeaderName::from_static(h))
            .collect();
        let extra = s.allowed_request_headers.as_ref().map(|l| &l.0[..]);
        for (i, h) in extra.unwrap_or_default().iter().enumerate() {
            let at = i.to_string();
            match header_name(h) {
                Ok(n) if !request_headers.contains(&n) => request_headers.push(n),
                Ok(_) => {}
                Err(e) => r.error(self.d, &["spec", "allowed_request_headers", &at], e),
            }
        }
        let mut authorization_headers = Vec::new();
        let allowed = s.allowed_authorization_headers.as_ref().map(|l| &l.0[..]);
        for (i, h) in allowed.unwrap_or_default().iter().enumerate() {
            let at = i.to_string();
            match header_name(h) {
                Ok(n) if !authorization_headers.contains(&n) => authorization_headers.push(n),
                Ok(_) => {}
                Err(e) => r.error(self.d, &["spec", "allowed_authorization_headers", &at], e),
            }
        }
        let include_body = s.include_body.as_ref().map(|b| IncludeBody {
            max_bytes: b.max_bytes.unwrap_or(0),
            allow_partial: b
                .allow_partial
                .unwrap_or(defaults::AUTH_INCLUDE_BODY_ALLOW_PARTIAL),
        });
        if let Some(b) = &s.include_body
            && b.max_bytes.is_none_or(|m| m == 0)
        {
            r.error(
                self.d,
                &["spec", "include_body", "max_bytes"],
                "include_body needs max_bytes greater than 0",
            );
        }
        let status_on_error = s
            .status_on_error
            .as_ref()
            .and_then(|e| e.code)
            .unwrap_or(defaults::AUTH_STATUS_ON_ERROR);
        if !(200..=599).contains(&status_on_error) {
            r.error(
                self.d,
                &["spec", "status_on_error", "code"],
                format!("status_on_error.code {status_on_error} is not an HTTP status (200-599)"),
            );
        }
        let mut add_headers = Vec::new();
        for (k, v) in s.add_auth_headers.as_ref().map_or(&[][..], |p| &p.0[..]) {
            match (header_name(k), header_value(v)) {
                (Ok(n), Ok(v)) => add_headers.push((n, v)),
                (Err(e), _) | (_, Err(e)) => r.error(self.d, &["spec", "add_auth_headers", k], e),
            }
        }
        Some(AuthServiceConf {
            name: r.name.clone(),
            upstream,
            proto,
            path_prefix,
            timeout: ms(timeout.max(1)),
            request_headers,
            authorization_headers,
            include_body,
            failure_mode_allow: s
                .failure_mode_allow
                .unwrap_or(defaults::AUTH_FAILURE_MODE_ALLOW),
            status_on_error,
            add_headers,
        })
    }

    /// Every `JWTProvider`, in config order, and their indices by name.
    pub(super) fn jwt_providers(
        &mut self,
        resources: &[Resource],
    ) -> (Vec<JwtProviderConf>, HashMap<String, usize>) {
        let mut out = Vec::new();
        let mut names = HashMap::new();
        for r in resources.iter().filter(|r| r.kind == JWT_PROVIDER) {
            let Some(Spec::JWTProvider(s)) = r.spec.as_deref() else {
                continue;
            };
            let d_before = self.d.list.len();
            let issuer = match &s.issuer {
                Some(i) if !i.trim().is_empty() => i.clone(),
                Some(_) => {
                    r.error(self.d, &["spec", "issuer"], "issuer must not be empty");
                    String::new()
                }
                None => {
                    r.missing(self.d, &["spec", "issuer"], "missing field `issuer`");
                    String::new()
                }
            };
            let keys = match (&s.jwks_file, &s.jwks_uri) {
                (Some(_), Some(_)) => {
                    r.error_key(
                        self.d,
                        &["spec", "jwks_uri"],
                        "set jwks_file or jwks_uri, not both",
                    );
                    None
                }
                (None, None) => {
                    r.missing(
                        self.d,
                        &["spec"],
                        "a JWTProvider needs `jwks_file` or `jwks_uri`",
                    );
                    None
                }
                (Some(f), None) => check_files(self.d, r, &["spec"], &[("jwks_file", Some(f))])
                    .pop()
                    .flatten()
                    .map(JwksSource::File),
                (None, Some(u)) => self.jwks_uri(r, u),
            };
            let refresh = s.jwks_refresh_ms.unwrap_or(defaults::JWKS_REFRESH_MS);
            if refresh == 0 {
                r.error(
                    self.d,
                    &["spec", "jwks_refresh_ms"],
                    "jwks_refresh_ms must be greater than 0",
                );
            }
            let mut from_headers = Vec::new();
            for (i, h) in s
                .from_headers
                .as_deref()
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let at = i.to_string();
                let Some(name) = &h.name else {
                    r.missing(
                        self.d,
                        &["spec", "from_headers", &at, "name"],
                        "missing field `name`",
                    );
                    continue;
                };
                match header_name(name) {
                    Ok(n) => from_headers.push(TokenHeader {
                        name: n,
                        prefix: h.prefix.clone().unwrap_or_default(),
                    }),
                    Err(e) => r.error(self.d, &["spec", "from_headers", &at, "name"], e),
                }
            }
            let from_params = s
                .from_params
                .as_ref()
                .map(|l| l.0.clone())
                .unwrap_or_default();
            if from_headers.is_empty() && s.from_headers.is_none() {
                from_headers.push(TokenHeader {
                    name: HeaderName::from_static(defaults::JWT_FROM_HEADER),
                    prefix: defaults::JWT_FROM_HEADER_PREFIX.to_string(),
                });
            }
            if from_headers.is_empty() && from_params.is_empty() {
                r.error(
                    self.d,
                    &["spec", "from_headers"],
                    "no place to find a token: give from_headers or from_params",
                );
            }
            let mut forward_claims = Vec::new();
            for (claim, h) in s.forward_claims.as_ref().map_or(&[][..], |p| &p.0[..]) {
                match header_name(h) {
                    Ok(n) => forward_claims.push((claim.clone(), n)),
                    Err(e) => r.error(self.d, &["spec", "forward_claims", claim], e),
                }
            }
            let audiences = s
                .audiences
                .as_ref()
                .map(|l| l.0.clone())
                .unwrap_or_default();
            let ok = self.d.list[d_before..].iter().all(|d| !d.is_error());
            let Some(keys) = keys.filter(|_| ok) else {
                continue;
            };
            names.insert(r.name.clone(), out.len());
            out.push(JwtProviderConf {
                name: r.name.clone(),
                issuer,
                audiences,
                keys,
                refresh: ms(refresh.max(1)),
                from_headers,
                from_params,
                forward_claims,
                clock_skew: ms(s.clock_skew_ms.unwrap_or(defaults::JWT_CLOCK_SKEW_MS)),
            });
        }
        (out, names)
    }

    /// `jwks_uri`: an absolute http(s) URL; its host becomes an implicit upstream.
    fn jwks_uri(&mut self, r: &Resource, u: &str) -> Option<JwksSource> {
        let at = ["spec", "jwks_uri"];
        let parsed: Option<http::Uri> = u.parse().ok();
        let Some((scheme, authority, path)) = parsed.as_ref().and_then(|uri| {
            let scheme = uri.scheme_str()?.to_ascii_lowercase();
            let authority = uri.authority()?.as_str().to_string();
            let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            (scheme == "http" || scheme == "https").then_some((scheme, authority, path))
        }) else {
            r.error(
                self.d,
                &at,
                format!("jwks_uri `{u}` must be an absolute http:// or https:// URL"),
            );
            return None;
        };
        let upstream = self.service_upstream(r, &at, &format!("{scheme}://{authority}"), false)?;
        Some(JwksSource::Uri {
            url: u.to_string(),
            upstream,
            authority,
            path,
        })
    }

    /// What a Mapping asks of edge authentication.
    pub(super) fn route_auth(&mut self, r: &Resource, m: &MappingSpec) -> RouteAuth {
        let jwt = m.jwt.as_ref().and_then(|j| {
            let Some(name) = &j.provider else {
                r.missing(
                    self.d,
                    &["spec", "jwt", "provider"],
                    "missing field `provider`",
                );
                return None;
            };
            let provider = self.jwt_names.get(name).copied();
            if provider.is_none() && !self.jwt_declared.contains(name) {
                r.error(
                    self.d,
                    &["spec", "jwt", "provider"],
                    format!("no JWTProvider named `{name}`"),
                );
            }
            Some(RouteJwt {
                provider: provider?,
                required: j.required.unwrap_or(defaults::JWT_REQUIRED),
            })
        });
        RouteAuth {
            bypass: m.bypass_auth.unwrap_or(false),
            context_extensions: m
                .auth_context_extensions
                .as_ref()
                .map(|p| p.0.clone())
                .unwrap_or_default(),
            jwt,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::snapshot::{AuthProto, JwksSource};

    fn load(text: &str) -> crate::LoadResult {
        crate::load(&[crate::ConfigSource::Inline {
            name: "a.yaml".into(),
            text: text.into(),
            base_dir: std::env::temp_dir(),
        }])
    }

    fn messages(r: &crate::LoadResult) -> Vec<String> {
        r.diagnostics.iter().map(|d| d.to_string()).collect()
    }

    const V1: &str = "apiVersion: portico.dev/v1";
    const EM: &str = "apiVersion: getambassador.io/v3alpha1";

    #[test]
    fn auth_service_compiles_with_defaults_and_mapping_settings() {
        let r = load(&format!(
            "{V1}\nkind: AuthService\nmetadata: {{ name: auth }}\nspec: {{ auth_service: \"127.0.0.1:3000\", allowed_request_headers: [X-Tenant], allowed_authorization_headers: [x-user-id] }}\n---\n\
             {V1}\nkind: Mapping\nmetadata: {{ name: m }}\nspec: {{ prefix: /, service: \"127.0.0.1:8000\", bypass_auth: true, auth_context_extensions: {{ tier: gold }} }}\n"
        ));
        assert!(r.diagnostics.is_empty(), "{:?}", messages(&r));
        let snap = r.snapshot.expect("loads");
        let a = snap.auth_service.as_ref().expect("auth");
        assert_eq!(a.proto, AuthProto::Http);
        assert_eq!(a.status_on_error, 403);
        assert_eq!(a.timeout, std::time::Duration::from_millis(5000));
        assert!(!a.failure_mode_allow);
        assert!(a.request_headers.iter().any(|h| h == "x-tenant"));
        assert!(a.request_headers.iter().any(|h| h == "x-request-id"));
        assert_eq!(snap.upstreams[a.upstream].name, "127.0.0.1:3000");
        let m = &snap.routes[0];
        assert!(m.auth.bypass);
        assert_eq!(m.auth.context_extensions, [("tier".into(), "gold".into())]);
    }

    #[test]
    fn several_auth_services_are_an_error_naming_each() {
        let r = load(&format!(
            "{V1}\nkind: AuthService\nmetadata: {{ name: one }}\nspec: {{ auth_service: \"a:1\" }}\n---\n\
             {EM}\nkind: AuthService\nmetadata: {{ name: two }}\nspec: {{ auth_service: b }}\n"
        ));
        let msgs = messages(&r);
        assert!(r.snapshot.is_none());
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        for m in &msgs {
            assert!(
                m.contains("only one AuthService")
                    && m.contains("AuthService/one at a.yaml:1")
                    && m.contains("AuthService/two at a.yaml:6"),
                "{m}"
            );
        }
        assert!(msgs[0].starts_with("a.yaml:2:1:"), "{msgs:?}");
    }

    #[test]
    fn emissary_auth_service_without_port_means_80() {
        let r = load(&format!(
            "{EM}\nkind: AuthService\nmetadata: {{ name: authentication }}\nspec:\n  auth_service: example-auth\n  proto: grpc\n  protocol_version: v3\n  stats_name: auth\n"
        ));
        let msgs = messages(&r);
        let snap = r.snapshot.expect("loads");
        let a = snap.auth_service.as_ref().expect("auth");
        assert_eq!(a.proto, AuthProto::Grpc);
        assert_eq!(snap.upstreams[a.upstream].name, "example-auth:80");
        assert!(
            msgs.iter()
                .any(|m| m.contains("warning: `stats_name` is ignored")),
            "{msgs:?}"
        );
        let r = load(&format!(
            "{EM}\nkind: AuthService\nmetadata: {{ name: a }}\nspec: {{ auth_service: ex, tls: true }}\n"
        ));
        let snap = r.snapshot.expect("loads");
        let a = snap.auth_service.as_ref().expect("auth");
        assert_eq!(snap.upstreams[a.upstream].name, "ex:443");
    }

    #[test]
    fn jwt_providers_and_their_errors_have_positions() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("jwks.json"), "{\"keys\": []}").expect("write");
        let r = crate::load(&[crate::ConfigSource::Inline {
            name: "j.yaml".into(),
            text: format!(
                "{V1}\nkind: JWTProvider\nmetadata: {{ name: main }}\nspec: {{ issuer: \"https://i\", jwks_file: jwks.json, forward_claims: {{ sub: x-user }} }}\n---\n\
                 {V1}\nkind: JWTProvider\nmetadata: {{ name: remote }}\nspec: {{ issuer: \"https://i\", jwks_uri: \"https://keys.example.com/jwks\" }}\n---\n\
                 {V1}\nkind: Mapping\nmetadata: {{ name: m }}\nspec: {{ prefix: /, service: \"127.0.0.1:8000\", jwt: {{ provider: remote, required: false }} }}\n"
            ),
            base_dir: dir.path().to_path_buf(),
        }]);
        assert!(r.diagnostics.is_empty(), "{:?}", messages(&r));
        let snap = r.snapshot.expect("loads");
        assert_eq!(snap.jwt_providers.len(), 2);
        assert!(matches!(snap.jwt_providers[0].keys, JwksSource::File(_)));
        match &snap.jwt_providers[1].keys {
            JwksSource::Uri {
                upstream,
                path,
                authority,
                ..
            } => {
                assert_eq!(snap.upstreams[*upstream].name, "keys.example.com:443");
                assert_eq!(
                    (path.as_str(), authority.as_str()),
                    ("/jwks", "keys.example.com")
                );
            }
            other => panic!("{other:?}"),
        }
        let j = snap.routes[0].auth.jwt.as_ref().expect("jwt");
        assert_eq!((j.provider, j.required), (1, false));
        assert_eq!(snap.jwt_providers[0].from_headers[0].prefix, "Bearer ");

        let r = load(&format!(
            "{V1}\nkind: JWTProvider\nmetadata: {{ name: p }}\nspec: {{ issuer: i, jwks_uri: \"ftp://x/k\" }}\n---\n\
             {V1}\nkind: JWTProvider\nmetadata: {{ name: q }}\nspec: {{ jwks_file: nope.json }}\n---\n\
             {V1}\nkind: Mapping\nmetadata: {{ name: m }}\nspec: {{ prefix: /, service: \"127.0.0.1:8000\", jwt: {{ provider: ghost }} }}\n"
        ));
        let msgs = messages(&r);
        let has = |s: &str| msgs.iter().any(|m| m.contains(s));
        assert!(has("a.yaml:4:"), "{msgs:?}");
        assert!(
            has("must be an absolute http:// or https:// URL"),
            "{msgs:?}"
        );
        assert!(has("JWTProvider/q: missing field `issuer`"), "{msgs:?}");
        assert!(has("jwks_file `nope.json` does not exist"), "{msgs:?}");
        assert!(has("Mapping/m: no JWTProvider named `ghost`"), "{msgs:?}");
    }
}
