//! Emissary-ingress compatibility (docs/reference.md §2.6): the `getambassador.io/v3alpha1` schema and
//! Kubernetes `v1` `Secret`s, translated into the `portico.dev/v1` model.
//!
//! Two steps. [`EmissaryV3::parse_spec`] deserializes each document with Emissary's field
//! names (unknown fields are errors naming the field) into [`EmSpec`]. After every file is
//! read, [`resolve`] translates them with the whole config in view: the `ambassador`
//! `Module`'s defaults, then Emissary's own defaults (`rewrite: "/"`, `timeout_ms: 3000`,
//! `hostname: "*"`), `shadow: true` Mappings folded into the Mapping they mirror, `Host`
//! TLS from `tlsSecret`/`tlsContext`, and `TLSContext.hosts` without a `Host` turned into
//! Hosts. What stays an [`EmSpec`] (Module, TLSContext, Secret, tuning kinds) compiles to
//! nothing.
//!
//! Choices where Emissary's behaviour cannot be reproduced exactly are listed in
//! `docs/migrating-from-emissary.md`. Notably: a bare `service: name` (no port, no scheme)
//! means `name:80` as in Emissary, unless a `portico.dev/v1` `Upstream` has that name;
//! `Secret` PEM data is written to a private directory (`$TMPDIR/portico-secrets-UID`, 0700,
//! files 0600, named by a hash of their content) because the TLS layer reads files.
//!
//! Files: [`schema`] (the Emissary resource types), `parse` (the [`Schema`](crate::resource::Schema)
//! of each `apiVersion`), `translate` (Emissary documents to `portico.dev/v1`), `secrets`
//! (Secret data to private files, TLS from Secrets).

mod parse;
pub mod schema;
mod secrets;
mod translate;

pub(crate) use parse::{EmissaryV3, KubeV1};
pub use schema::*;
pub use secrets::base64_decode;
pub(crate) use translate::resolve;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::schema::*;
    use super::secrets::*;
    use super::translate::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("0.5s"), Ok(500));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("1m"), Ok(60_000));
        assert_eq!(parse_duration_ms("2"), Ok(2000));
        assert!(parse_duration_ms("fast").is_err());
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("aGVs\nbG8").as_deref(), Some(&b"hello"[..]));
        assert!(base64_decode("a*b").is_none());
    }

    #[test]
    fn services() {
        let none = HashSet::new();
        assert_eq!(service("quote", &none), "quote:80");
        assert_eq!(service("quote:8080", &none), "quote:8080");
        assert_eq!(service("https://quote", &none), "https://quote");
        let ups: HashSet<String> = ["quote".to_string()].into();
        assert_eq!(service("quote", &ups), "quote");
    }

    fn load(text: &str) -> crate::LoadResult {
        crate::load(&[crate::ConfigSource::Inline {
            name: "e.yaml".into(),
            text: text.into(),
            base_dir: std::env::temp_dir(),
        }])
    }

    const EM: &str = "apiVersion: getambassador.io/v3alpha1";

    #[test]
    fn emissary_and_module_defaults() {
        let r = load(&format!(
            "{EM}\nkind: Module\nmetadata: {{ name: ambassador }}\nspec: {{ config: {{ retry_policy: {{ retry_on: 5xx, num_retries: 4 }} }} }}\n---\n\
             {EM}\nkind: Mapping\nmetadata: {{ name: a }}\nspec: {{ prefix: /a/, service: quote, host: x.example.com }}\n---\n\
             {EM}\nkind: Mapping\nmetadata: {{ name: b }}\nspec: {{ prefix: /b/, service: quote, timeout_ms: 0, rewrite: /v2/, retry_policy: {{ num_retries: 1 }} }}\n---\n\
             {EM}\nkind: Mapping\nmetadata: {{ name: s }}\nspec: {{ prefix: /a/, service: other:81, shadow: true, weight: 10, host: x.example.com }}\n"
        ));
        let snap = r.snapshot.expect("loads");
        let a = snap.routes.iter().find(|r| r.name == "a").expect("a");
        let b = snap.routes.iter().find(|r| r.name == "b").expect("b");
        assert_eq!(snap.routes.len(), 2, "the shadow Mapping is folded");
        assert_eq!(a.timeout, Some(std::time::Duration::from_millis(3000)));
        assert!(matches!(&a.rewrite, crate::snapshot::Rewrite::Prefix(p) if p == "/"));
        assert_eq!(a.hostname.to_string(), "x.example.com");
        assert_eq!(a.retry.as_ref().map(|r| r.num_retries), Some(4));
        assert_eq!(b.retry.as_ref().map(|r| r.num_retries), Some(1));
        assert_eq!(b.timeout, None);
        let sh = a.shadow.as_ref().expect("shadow");
        assert_eq!(snap.upstreams[sh.upstream].name, "other:81");
        assert_eq!(sh.percent, 10.0);
        assert_eq!(snap.upstreams[a.upstream().expect("fwd")].name, "quote:80");
    }

    #[test]
    fn redirects_and_errors() {
        let r = load(&format!(
            "{EM}\nkind: Mapping\nmetadata: {{ name: r }}\nspec: {{ prefix: /r/, host_redirect: true, service: https://new.example.com, redirect_response_code: 308 }}\n"
        ));
        let snap = r.snapshot.expect("loads");
        match &snap.routes[0].action {
            crate::snapshot::RouteAction::Redirect(rd) => {
                assert!(rd.https);
                assert_eq!(rd.host.as_deref(), Some("new.example.com"));
                assert_eq!(rd.code, 308);
            }
            other => panic!("{other:?}"),
        }
        let r = load(&format!(
            "{EM}\nkind: Filter\nmetadata: {{ name: f }}\nspec: {{}}\n---\n\
             {EM}\nkind: Mapping\nmetadata: {{ name: m }}\nspec: {{ prefix: /, service: a, retry_policy: {{ per_try_timeout: soon }} }}\n---\n\
             {EM}\nkind: Host\nmetadata: {{ name: h }}\nspec: {{ hostname: a.example.com, tlsSecret: {{ name: missing }} }}\n"
        ));
        let msgs: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("Filter/f: Filter is not supported")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("invalid duration `soon`")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("no Secret named `missing`")),
            "{msgs:?}"
        );
    }

    /// A kubernetes.io/tls Secret `name` in clear (`stringData`): cert text `crt`.
    fn secret(name: &str, crt: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name} }}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: \"{crt}\"\n  tls.key: \"key of {name}\"\n"
        )
    }

    fn messages(r: &crate::LoadResult) -> Vec<String> {
        r.diagnostics.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn tls_context_applies_to_the_hosts_it_names() {
        let r = load(&format!(
            "{EM}\nkind: TLSContext\nmetadata: {{ name: ctx }}\nspec:\n  hosts: [a.test, b.test]\n  secret: site\n  min_tls_version: v1.3\n  alpn_protocols: http/1.1\n  ca_secret: clients\n  cert_required: true\n---\n\
             {EM}\nkind: Host\nmetadata: {{ name: ha }}\nspec: {{ hostname: a.test }}\n---\n\
             {EM}\nkind: Host\nmetadata: {{ name: other }}\nspec: {{ hostname: c.test, tlsSecret: {{ name: own }} }}\n---\n\
             {}---\n{}---\n{}",
            secret("site", "SITE"),
            secret("clients", "CLIENT CA"),
            secret("own", "OWN"),
        ));
        assert!(r.diagnostics.is_empty(), "{:?}", messages(&r));
        let snap = r.snapshot.expect("loads");
        let host = |name: &str| {
            snap.hosts
                .iter()
                .find(|h| h.name == name)
                .unwrap_or_else(|| panic!("no Host {name}: {:?}", snap.hosts))
        };
        let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("secret file");
        // The Host listed in hosts, and a Host made for the name no Host covers.
        for (name, hostname) in [("ha", "a.test"), ("ctx", "b.test")] {
            let h = host(name);
            assert_eq!(h.hostname.to_string(), hostname);
            let t = h.tls.as_ref().expect("tls");
            assert_eq!(read(&t.cert_chain_file), "SITE");
            assert_eq!(read(&t.private_key_file), "key of site");
            assert_eq!(t.alpn_protocols, ["http/1.1"]);
            assert_eq!(t.min_tls_version, crate::snapshot::TlsVersion::V1_3);
            assert_eq!(t.ca_file.as_deref().map(read).as_deref(), Some("CLIENT CA"));
        }
        // A Host the context does not name keeps its own defaults.
        let t = host("other").tls.as_ref().expect("tls");
        assert_eq!(read(&t.cert_chain_file), "OWN");
        assert_eq!(t.min_tls_version, crate::snapshot::TlsVersion::V1_2);
        assert_eq!(t.alpn_protocols, ["h2", "http/1.1"]);
        assert!(t.ca_file.is_none());
        assert_eq!(snap.hosts.len(), 3);
    }

    #[test]
    fn tls_context_unsupported_settings_are_errors_naming_the_field() {
        let ctx = |name: &str, extra: &str| {
            format!(
                "{EM}\nkind: TLSContext\nmetadata: {{ name: {name} }}\nspec:\n  hosts: [{name}.test]\n  secret: site\n{extra}---\n"
            )
        };
        let r = load(&format!(
            "{}{}{}{}{}---\n{}",
            ctx("maxv", "  max_tls_version: v1.3\n"),
            ctx("optional", "  ca_secret: clients\n  cert_required: false\n"),
            ctx("noca", "  cert_required: true\n"),
            ctx("implicit", "  ca_secret: clients\n"),
            secret("site", "SITE"),
            secret("clients", "CA"),
        ));
        let msgs = messages(&r);
        let has = |needle: &str| msgs.iter().any(|m| m.contains(needle));
        assert!(
            has("TLSContext/maxv: unknown field `max_tls_version`"),
            "{msgs:?}"
        );
        assert!(
            has(
                "TLSContext/optional: `cert_required: false` (optional client certificates) is not supported"
            ),
            "{msgs:?}"
        );
        assert!(
            has("TLSContext/noca: `cert_required: true` needs a `ca_secret`"),
            "{msgs:?}"
        );
        assert!(
            has("TLSContext/implicit: warning: client certificates are required"),
            "{msgs:?}"
        );
        assert!(r.snapshot.is_none(), "errors reject the config");
        // A context used for several hosts reports its problem once.
        let r = load(&format!(
            "{EM}\nkind: TLSContext\nmetadata: {{ name: two }}\nspec: {{ hosts: [a.test, b.test], secret: site, ca_secret: clients }}\n---\n\
             {EM}\nkind: Host\nmetadata: {{ name: a }}\nspec: {{ hostname: a.test }}\n---\n{}---\n{}",
            secret("site", "SITE"),
            secret("clients", "CA"),
        ));
        let msgs = messages(&r);
        assert_eq!(
            msgs.iter()
                .filter(|m| m.contains("client certificates are required"))
                .count(),
            1,
            "{msgs:?}"
        );
        // The same on a Host's own tls block.
        let r = load(&format!(
            "{EM}\nkind: Host\nmetadata: {{ name: h }}\nspec: {{ hostname: h.test, tlsSecret: {{ name: site }}, tls: {{ ca_secret: clients, cert_required: false }} }}\n---\n{}---\n{}",
            secret("site", "SITE"),
            secret("clients", "CA"),
        ));
        let msgs = messages(&r);
        assert!(
            msgs.iter()
                .any(|m| m.contains("Host/h: `cert_required: false`")),
            "{msgs:?}"
        );
    }

    #[test]
    fn dropped_fields_are_warnings_naming_them() {
        let r = load(&format!(
            "{EM}\nkind: Mapping\nmetadata: {{ name: m }}\nspec:\n  prefix: /m/\n  service: quote\n  docs: {{ path: /docs/openapi.json }}\n---\n\
             {EM}\nkind: Host\nmetadata: {{ name: h }}\nspec:\n  hostname: h.test\n  acmeProvider: {{ authority: none, email: ops@example.com, privateKeySecret: {{ name: acme-key }}, registration: x }}\n  requestPolicy: {{ insecure: {{ action: Route, additionalPort: 8080 }} }}\n"
        ));
        let msgs = messages(&r);
        assert!(r.snapshot.is_some(), "{msgs:?}");
        let want = [
            "e.yaml:7:3: Mapping/m: warning: `docs` is ignored by Portico",
            "Host/h: warning: `acmeProvider.privateKeySecret` is ignored by Portico",
            "Host/h: warning: `acmeProvider.registration` is ignored by Portico",
            "Host/h: warning: `requestPolicy.insecure.additionalPort` is ignored by Portico (declare a Listener",
        ];
        for w in want {
            assert!(msgs.iter().any(|m| m.contains(w)), "{w}: {msgs:?}");
        }
        assert_eq!(msgs.len(), want.len(), "{msgs:?}");
    }
}
