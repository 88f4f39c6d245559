//! Emissary configs as users really keep them (exports of `kubectl get -o yaml`, Lists,
//! foreign kinds beside them, namespaces) and the Emissary Mapping features Portico
//! implements or warns about: one test per rule.

use http::{HeaderMap, Method};
use portico_config::{ConfigSource, LoadOptions, LoadResult, RequestView, load_with};

const EM: &str = "apiVersion: getambassador.io/v3alpha1";

fn load_opts(text: &str, strict_kinds: bool) -> LoadResult {
    load_with(
        &[ConfigSource::Inline {
            name: "e.yaml".into(),
            text: text.into(),
            base_dir: std::env::temp_dir(),
        }],
        LoadOptions { strict_kinds },
    )
}

fn load(text: &str) -> LoadResult {
    load_opts(text, false)
}

fn messages(r: &LoadResult) -> Vec<String> {
    r.diagnostics.iter().map(|d| d.to_string()).collect()
}

fn has(r: &LoadResult, needle: &str) -> bool {
    messages(r).iter().any(|m| m.contains(needle))
}

/// The route name a request takes (`authority` as sent, e.g. `a.test:8500`).
fn route_for(
    r: &LoadResult,
    method: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<String> {
    let snap = r.snapshot.as_ref().expect("loads");
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .to_ascii_lowercase();
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let view = RequestView {
        host: &host,
        authority,
        path,
        query: None,
        method: &method,
        headers: &map,
    };
    snap.router.lookup(&view).map(|rt| rt.name.clone())
}

const EXPORTED: &str = r#"apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"getambassador.io/v3alpha1","kind":"Mapping"}
  creationTimestamp: "2024-03-01T10:00:00Z"
  generation: 3
  name: quote-backend
  namespace: shop
  resourceVersion: "123456"
  uid: 6f1c2b9e-0000-4000-8000-000000000001
  selfLink: /apis/getambassador.io/v3alpha1/namespaces/shop/mappings/quote-backend
  managedFields:
  - apiVersion: getambassador.io/v3alpha1
    fieldsType: FieldsV1
    fieldsV1: { f:spec: { f:prefix: {} } }
    manager: kubectl-client-side-apply
    operation: Update
    time: "2024-03-01T10:00:00Z"
spec:
  hostname: "*"
  prefix: /backend/
  service: quote
status:
  state: Running
"#;

#[test]
fn kubernetes_bookkeeping_is_accepted_and_ignored() {
    let r = load(EXPORTED);
    assert!(r.diagnostics.is_empty(), "{:?}", messages(&r));
    assert_eq!(
        route_for(&r, "GET", "a.test", "/backend/x", &[]).as_deref(),
        Some("shop/quote-backend")
    );
}

#[test]
fn lists_are_read_item_by_item_and_foreign_kinds_skipped_once_per_kind() {
    let text = format!(
        "apiVersion: v1\nkind: List\nmetadata: {{ resourceVersion: \"\" }}\nitems:\n\
         - {{ apiVersion: apps/v1, kind: Deployment, metadata: {{ name: quote }}, spec: {{ replicas: 1 }} }}\n\
         - {{ apiVersion: v1, kind: Service, metadata: {{ name: quote }}, spec: {{ ports: [{{ port: 80 }}] }} }}\n\
         - {{ {EM_INLINE}, kind: Mapping, metadata: {{ name: a }}, spec: {{ prefix: /a/, service: quote }} }}\n\
         - {{ apiVersion: apps/v1, kind: Deployment, metadata: {{ name: other }}, spec: {{}} }}\n\
         - {{ {EM_INLINE}, kind: Mapping, metadata: {{ name: b }}, spec: {{ prefix: /b/, service: quote }} }}\n\
         ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: cfg }}\ndata: {{ a: b }}\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{ name: r }}\nrules: []\n",
        EM_INLINE = "apiVersion: getambassador.io/v3alpha1"
    );
    let r = load(&text);
    let msgs = messages(&r);
    assert!(r.snapshot.is_some(), "{msgs:?}");
    assert_eq!(r.snapshot.as_ref().map(|s| s.routes.len()), Some(2));
    for kind in ["Deployment", "Service", "ConfigMap", "ClusterRole"] {
        let n = msgs
            .iter()
            .filter(|m| m.contains(&format!("warning: kind `{kind}`")))
            .count();
        assert_eq!(n, 1, "{kind}: {msgs:?}");
    }
    assert_eq!(msgs.len(), 4, "{msgs:?}");
    // --strict-kinds: errors, one per document.
    let r = load_opts(&text, true);
    assert!(r.snapshot.is_none());
    let errors: Vec<_> = r.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 5, "{:?}", messages(&r));
    assert!(has(
        &r,
        "Deployment/other: kind `Deployment` (apps/v1) is not a kind Portico reads"
    ));
}

#[test]
fn security_kinds_are_errors_and_tuning_kinds_warnings() {
    let r = load(&format!(
        "{EM}\nkind: Filter\nmetadata: {{ name: f }}\nspec: {{ OAuth2: {{}} }}\n---\n\
         {EM}\nkind: FilterPolicy\nmetadata: {{ name: fp }}\nspec: {{ rules: [] }}\n---\n\
         {EM}\nkind: KubernetesEndpointResolver\nmetadata: {{ name: endpoint }}\n---\n\
         {EM}\nkind: ConsulResolver\nmetadata: {{ name: consul }}\nspec: {{ address: c:8500 }}\n---\n\
         {EM}\nkind: LogService\nmetadata: {{ name: logs }}\nspec: {{ service: l:1 }}\n---\n\
         {EM}\nkind: TracingService\nmetadata: {{ name: zipkin }}\nspec: {{ service: z:1 }}\n---\n\
         {EM}\nkind: DevPortal\nmetadata: {{ name: portal }}\nspec: {{}}\n"
    ));
    for e in [
        "Filter/f: Filter is not supported",
        "FilterPolicy/fp: FilterPolicy is not supported",
    ] {
        assert!(has(&r, e), "{e}: {:?}", messages(&r));
    }
    for w in [
        "KubernetesEndpointResolver",
        "ConsulResolver",
        "LogService",
        "TracingService",
        "DevPortal",
    ] {
        assert!(
            has(&r, &format!("{w}/")) && has(&r, &format!("warning: {w} only tunes Emissary")),
            "{w}: {:?}",
            messages(&r)
        );
    }
}

#[test]
fn identity_is_namespace_kind_name() {
    let m = |name: &str, ns: Option<&str>, prefix: &str| {
        let ns = ns.map_or(String::new(), |n| format!(", namespace: {n}"));
        format!(
            "{EM}\nkind: Mapping\nmetadata: {{ name: {name}{ns} }}\nspec: {{ prefix: {prefix}, service: quote }}\n---\n"
        )
    };
    let r = load(&format!(
        "{}{}",
        m("quote", Some("a"), "/a/"),
        m("quote", Some("b"), "/b/")
    ));
    assert!(r.diagnostics.is_empty(), "{:?}", messages(&r));
    assert_eq!(
        route_for(&r, "GET", "x", "/a/1", &[]).as_deref(),
        Some("a/quote")
    );
    assert_eq!(
        route_for(&r, "GET", "x", "/b/1", &[]).as_deref(),
        Some("b/quote")
    );
    // One namespace: a duplicate, named KIND/NAMESPACE/NAME.
    let r = load(&format!(
        "{}{}",
        m("quote", Some("a"), "/a/"),
        m("quote", Some("a"), "/b/")
    ));
    assert!(
        has(&r, "Mapping/a/quote: duplicate Mapping name `a/quote`"),
        "{:?}",
        messages(&r)
    );
    // No namespace is `default`.
    let r = load(&format!(
        "{}{}",
        m("quote", None, "/a/"),
        m("quote", Some("default"), "/b/")
    ));
    assert!(
        has(&r, "duplicate Mapping name `quote`"),
        "{:?}",
        messages(&r)
    );
}

#[test]
fn host_without_hostname_is_any() {
    let r = load(&format!(
        "{EM}\nkind: Host\nmetadata: {{ name: h }}\nspec: {{ requestPolicy: {{ insecure: {{ action: Route }} }} }}\n"
    ));
    // Neither tlsSecret nor acmeProvider.authority: cleartext-only, said once (reference §13).
    let msgs = messages(&r);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].contains("warning: this Host has neither tlsSecret nor acmeProvider.authority"),
        "{msgs:?}"
    );
    let snap = r.snapshot.expect("loads");
    assert_eq!(snap.hosts[0].hostname.to_string(), "*");
}

#[test]
fn hostname_with_a_port_matches_only_that_port() {
    let r = load(&format!(
        "{EM}\nkind: Mapping\nmetadata: {{ name: p }}\nspec: {{ hostname: \"quote.local:8500\", prefix: /, service: a:1 }}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: any }}\nspec: {{ prefix: /, service: b:1 }}\n---\n\
         {EM}\nkind: Host\nmetadata: {{ name: h }}\nspec: {{ hostname: \"quote.local:8500\", acmeProvider: {{ authority: none }} }}\n"
    ));
    assert!(r.diagnostics.is_empty(), "{:?}", messages(&r));
    assert_eq!(
        route_for(&r, "GET", "quote.local:8500", "/", &[]).as_deref(),
        Some("p")
    );
    assert_eq!(
        route_for(&r, "GET", "QUOTE.local:8500", "/", &[]).as_deref(),
        Some("p")
    );
    assert_eq!(
        route_for(&r, "GET", "quote.local", "/", &[]).as_deref(),
        Some("any")
    );
    assert_eq!(
        route_for(&r, "GET", "quote.local:8501", "/", &[]).as_deref(),
        Some("any")
    );
}

#[test]
fn authority_header_matches_the_authority() {
    let r = load(&format!(
        "{EM}\nkind: Mapping\nmetadata: {{ name: auth }}\nspec: {{ prefix: /, service: a:1, headers: {{ \":authority\": api.example.com }} }}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: rx }}\nspec: {{ prefix: /, service: a:1, regex_headers: {{ \":authority\": \"v[0-9]+\\\\.example\\\\.com(:[0-9]+)?\" }} }}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: any }}\nspec: {{ prefix: /, service: b:1 }}\n"
    ));
    assert!(r.diagnostics.is_empty(), "{:?}", messages(&r));
    assert_eq!(
        route_for(&r, "GET", "api.example.com", "/", &[]).as_deref(),
        Some("auth")
    );
    assert_eq!(
        route_for(&r, "GET", "other.example.com", "/", &[]).as_deref(),
        Some("any")
    );
    assert_eq!(
        route_for(&r, "GET", "v2.example.com:8443", "/", &[]).as_deref(),
        Some("rx")
    );
}

#[test]
fn host_regex_method_regex_and_use_websocket() {
    let r = load(&format!(
        "{EM}\nkind: Mapping\nmetadata: {{ name: hr }}\nspec: {{ hostname: \"^[a-z]+\\\\.shop\\\\.test$\", host_regex: true, prefix: /, service: a:1 }}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: mr }}\nspec: {{ method: \"GET|HEAD\", method_regex: true, prefix: /m/, service: a:1 }}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: ws }}\nspec: {{ prefix: /ws/, service: a:1, use_websocket: true }}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: any }}\nspec: {{ prefix: /, service: b:1 }}\n"
    ));
    assert!(r.diagnostics.is_empty(), "{:?}", messages(&r));
    assert_eq!(
        route_for(&r, "GET", "books.shop.test", "/", &[]).as_deref(),
        Some("hr")
    );
    assert_eq!(
        route_for(&r, "GET", "books.shop.test.evil", "/", &[]).as_deref(),
        Some("any")
    );
    assert_eq!(
        route_for(&r, "GET", "x", "/m/1", &[]).as_deref(),
        Some("mr")
    );
    assert_eq!(
        route_for(&r, "HEAD", "x", "/m/1", &[]).as_deref(),
        Some("mr")
    );
    assert_eq!(
        route_for(&r, "POST", "x", "/m/1", &[]).as_deref(),
        Some("any")
    );
    let snap = r.snapshot.as_ref().expect("loads");
    let ws = snap.routes.iter().find(|r| r.name == "ws").expect("ws");
    assert_eq!(ws.allow_upgrade, ["websocket"]);
    let bad = load(&format!(
        "{EM}\nkind: Mapping\nmetadata: {{ name: b }}\nspec: {{ method: \"(GET\", method_regex: true, prefix: /, service: a:1 }}\n"
    ));
    assert!(
        has(&bad, "Mapping/b: invalid regex `(GET`"),
        "{:?}",
        messages(&bad)
    );
}

#[test]
fn tuning_mapping_fields_warn_and_module_gzip_is_compression() {
    let r = load(&format!(
        "{EM}\nkind: Module\nmetadata: {{ name: ambassador, namespace: ambassador }}\nspec: {{ config: {{ gzip: {{ min_content_length: 64, content_type: [application/json], memory_level: 5 }} }} }}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: m }}\nspec:\n  prefix: /m/\n  service: quote.shop:8080\n  resolver: endpoint\n  stats_name: quote\n  enable_ipv4: true\n  enable_ipv6: false\n  add_linkerd_headers: true\n  auto_host_rewrite: false\n  error_response_overrides: [{{ on_status_code: 404, body: {{ text_format: nope }} }}]\n"
    ));
    let msgs = messages(&r);
    assert!(r.snapshot.is_some(), "{msgs:?}");
    for f in [
        "resolver",
        "stats_name",
        "enable_ipv4",
        "enable_ipv6",
        "add_linkerd_headers",
        "auto_host_rewrite",
        "error_response_overrides",
    ] {
        assert!(
            has(
                &r,
                &format!("Mapping/m: warning: `{f}` is ignored by Portico")
            ),
            "{f}: {msgs:?}"
        );
    }
    assert!(
        has(&r, "warning: `gzip` is applied as `compression`"),
        "{msgs:?}"
    );
    assert!(
        has(&r, "warning: `gzip.memory_level` is ignored"),
        "{msgs:?}"
    );
    let snap = r.snapshot.expect("loads");
    let c = snap.routes[0]
        .compression
        .as_ref()
        .expect("compression from gzip");
    assert!(c.enabled);
    assert_eq!(c.min_bytes, 64);
    assert_eq!(c.content_types, ["application/json"]);
}

/// A kubernetes.io/tls Secret with text data.
fn secret(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name} }}\ntype: kubernetes.io/tls\nstringData: {{ tls.crt: CRT, tls.key: KEY }}\n"
    )
}

#[test]
fn unused_tls_context_is_validated() {
    let r = load(&format!(
        "{EM}\nkind: TLSContext\nmetadata: {{ name: lonely }}\nspec: {{ secret: nowhere }}\n"
    ));
    assert!(
        has(&r, "TLSContext/lonely: no Secret named `nowhere`"),
        "{:?}",
        messages(&r)
    );
    assert!(r.snapshot.is_none());
    // With the Secret it loads.
    let r = load(&format!(
        "{EM}\nkind: TLSContext\nmetadata: {{ name: lonely }}\nspec: {{ secret: there }}\n---\n{}",
        secret("there")
    ));
    assert!(r.snapshot.is_some(), "{:?}", messages(&r));
}

#[test]
fn missing_tls_secret_is_one_precise_message() {
    let r = load(&format!(
        "{EM}\nkind: Host\nmetadata: {{ name: h }}\nspec: {{ hostname: h.test, tlsSecret: {{ name: gone }}, tls: {{ min_tls_version: v1.3 }} }}\n"
    ));
    let msgs = messages(&r);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].contains("Host/h: no Secret named `gone`"),
        "{msgs:?}"
    );
    // Namespaced: the Secret is looked up in the Host's namespace.
    let r = load(&format!(
        "{EM}\nkind: Host\nmetadata: {{ name: h, namespace: shop }}\nspec: {{ hostname: h.test, tlsSecret: {{ name: site }} }}\n---\n{}",
        secret("site")
    ));
    assert!(
        has(
            &r,
            "Host/shop/h: no Secret named `site` in namespace `shop`"
        ),
        "{:?}",
        messages(&r)
    );
}

#[test]
fn older_emissary_api_versions_name_the_supported_ones() {
    let r = load(
        "apiVersion: getambassador.io/v2\nkind: Mapping\nmetadata: { name: old }\nspec: { prefix: /, service: a }\n",
    );
    let msgs = messages(&r);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].contains("apiVersion `getambassador.io/v2` is not supported: Portico reads portico.dev/v1 and getambassador.io/v3alpha1"),
        "{msgs:?}"
    );
}
