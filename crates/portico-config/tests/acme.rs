//! `Host.acmeProvider` (docs/reference.md §13) in both apiVersions: what compiles, and every
//! rule with its exact position.

mod common;

use common::*;
use portico_config::snapshot::{AcmeChallenge, HostGlob};

fn host(spec: &str) -> String {
    format!("apiVersion: portico.dev/v1\nkind: Host\nmetadata: {{name: h}}\nspec:\n{spec}")
}

const EM: &str = "apiVersion: getambassador.io/v3alpha1";

#[test]
fn an_acme_host_compiles_with_defaults() {
    let s = clean(&host(
        "  hostname: api.example.com\n  acmeProvider:\n    authority: https://acme.example/directory\n    email: ops@example.com\n",
    ));
    let h = &s.hosts[0];
    assert_eq!(h.hostname, HostGlob::Exact("api.example.com".into()));
    let a = h.acme.as_ref().expect("acme");
    assert_eq!(a.authority, "https://acme.example/directory");
    assert_eq!(a.email.as_deref(), Some("ops@example.com"));
    assert_eq!(a.challenge, AcmeChallenge::Http01);
    assert!(a.ca_file.is_none());
    // It terminates TLS (certificate from the state directory), with the tls defaults.
    let tls = h.tls.as_ref().expect("tls");
    assert_eq!(tls.alpn_protocols, vec!["h2", "http/1.1"]);
    assert!(tls.cert_chain_file.as_os_str().is_empty());
}

#[test]
fn tls_settings_other_than_the_files_still_apply() {
    let s = clean(&host(
        "  hostname: api.example.com\n  acmeProvider: {authority: \"https://acme.example/dir\", challenge: tls-alpn-01}\n  tls: {alpn_protocols: \"http/1.1\", min_tls_version: v1.3}\n",
    ));
    let h = &s.hosts[0];
    assert_eq!(
        h.acme.as_ref().map(|a| a.challenge),
        Some(AcmeChallenge::TlsAlpn01)
    );
    assert_eq!(
        h.tls.as_ref().map(|t| t.alpn_protocols.clone()),
        Some(vec!["http/1.1".to_string()])
    );
}

#[test]
fn acme_needs_an_exact_hostname() {
    one_error(
        &host(
            "  hostname: \"*.example.com\"\n  acmeProvider: {authority: \"https://a.example/dir\"}\n",
        ),
        5,
        13,
        "acmeProvider needs an exact hostname",
    );
}

#[test]
fn authority_is_required_and_must_be_a_url() {
    one_error(
        &host("  hostname: a.example\n  acmeProvider:\n    email: ops@example.com\n"),
        6,
        3,
        "missing field `authority`",
    );
    one_error(
        &host("  hostname: a.example\n  acmeProvider:\n    authority: letsencrypt\n"),
        7,
        16,
        "is not an http(s) URL",
    );
}

#[test]
fn bad_fields_are_errors_with_positions() {
    one_error(
        &host(
            "  hostname: a.example\n  acmeProvider:\n    authority: https://a.example/dir\n    challenge: dns-01\n",
        ),
        8,
        16,
        "dns-01",
    );
    one_error(
        &host(
            "  hostname: a.example\n  acmeProvider:\n    authority: https://a.example/dir\n    email: not-an-address\n",
        ),
        8,
        12,
        "is not an email address",
    );
    one_error(
        &host(
            "  hostname: a.example\n  acmeProvider:\n    authority: https://a.example/dir\n    ca_file: nowhere/ca.pem\n",
        ),
        8,
        14,
        "ca_file `nowhere/ca.pem` does not exist",
    );
    one_error(
        &host(
            "  hostname: a.example\n  acmeProvider:\n    authority: https://a.example/dir\n    directory: x\n",
        ),
        8,
        5,
        "directory",
    );
}

#[test]
fn certificate_files_and_acme_exclude_each_other() {
    let dir = tmp_dir("acme-files");
    std::fs::write(dir.join("c.pem"), "x").expect("write");
    let text = host(&format!(
        "  hostname: a.example\n  acmeProvider: {{authority: \"https://a.example/dir\"}}\n  tls:\n    cert_chain_file: {}\n",
        dir.join("c.pem").display()
    ));
    one_error(&text, 8, 22, "exclude each other");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn emissary_acme_provider_maps_to_acme() {
    let text = format!(
        "{EM}\nkind: Host\nmetadata: {{name: h}}\nspec:\n  hostname: shop.example.com\n  acmeProvider:\n    authority: https://acme-v02.api.letsencrypt.org/directory\n    email: ops@example.com\n    privateKeySecret: {{name: acme-key}}\n"
    );
    let r = load_text(&text);
    let msgs: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        msgs,
        vec![
            "t.yaml:9:5: Host/h: warning: `acmeProvider.privateKeySecret` is ignored by Portico (Portico keeps its ACME account in --state-dir)".to_string()
        ]
    );
    let s = r.snapshot.expect("snapshot");
    let a = s.hosts[0].acme.as_ref().expect("acme");
    assert_eq!(
        a.authority,
        "https://acme-v02.api.letsencrypt.org/directory"
    );
    assert_eq!(a.email.as_deref(), Some("ops@example.com"));
    assert!(s.hosts[0].tls.is_some());
}

#[test]
fn an_emissary_host_without_certificate_or_authority_is_cleartext_with_a_warning() {
    let text =
        format!("{EM}\nkind: Host\nmetadata: {{name: h}}\nspec:\n  hostname: plain.example.com\n");
    let r = load_text(&text);
    let msgs: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].contains("Host/h: warning: this Host has neither tlsSecret nor acmeProvider.authority: it is cleartext-only"),
        "{msgs:?}"
    );
    let s = r.snapshot.expect("snapshot");
    assert!(s.hosts[0].acme.is_none());
    assert!(s.hosts[0].tls.is_none());
    // `authority: none` says so explicitly: no warning.
    let text = format!(
        "{EM}\nkind: Host\nmetadata: {{name: h}}\nspec:\n  hostname: plain.example.com\n  acmeProvider: {{authority: none}}\n"
    );
    let s = clean(&text);
    assert!(s.hosts[0].acme.is_none());
}

#[test]
fn portico_diff_sees_the_acme_settings_not_state_directory_paths() {
    let s = clean(&host(
        "  hostname: api.example.com\n  acmeProvider: {authority: \"https://a.example/dir\", email: ops@example.com}\n",
    ));
    let fields = portico_config::describe::host(&s.hosts[0]);
    assert_eq!(
        fields.get("acme.authority").map(String::as_str),
        Some("https://a.example/dir")
    );
    assert_eq!(
        fields.get("acme.challenge").map(String::as_str),
        Some("http-01")
    );
    assert_eq!(
        fields.get("acme.email").map(String::as_str),
        Some("ops@example.com")
    );
    assert!(!fields.contains_key("tls.cert_chain_file"), "{fields:?}");
}
