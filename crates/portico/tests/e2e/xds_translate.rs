//! The translation of Portico's edge features to Envoy (docs/envoy.md, "Translation"), each
//! checked against `portico run` on the same config and the same requests, with the real Envoy
//! fed by `portico xds`: local rate limits (429 after the burst, per key, with the same
//! headers), CORS (preflight answers, allow-origin on simple requests), an HTTP `AuthService`
//! (ext_authz: the check request, allow, deny, bypass) and a `JWTProvider` (jwt_authn: every
//! refusal reason, optional tokens, claims forwarded; tokens made by PyJWT, as `edge_auth`). Where Envoy's
//! answer legitimately differs (extra CORS headers on preflights), the test leaves out exactly
//! what docs/envoy.md lists. Needs `ENVOY_BIN`, like `xds`.

use std::time::Duration;

use http::StatusCode;

use crate::common::envoy::{Proc, Xds, echo, envoy_log, need_envoy, start_envoy};
use crate::common::*;
use crate::xds::{ask, outcome};

/// The same config served by `portico run` and by Envoy through `portico xds`.
struct Pair {
    portico: Portico,
    envoy_port: u16,
    _envoy: Proc,
    _xds: Xds,
    dir: tempfile::TempDir,
}

impl Pair {
    /// Both proxies, each answering `GET /probe/` (a Mapping every test config has), or `None`
    /// (test SKIPPED) without Envoy.
    async fn start(test: &str, docs: &str) -> Option<Pair> {
        let envoy = need_envoy(test)?;
        let dir = tempfile::tempdir().expect("tempdir");
        let envoy_port = free_port();
        let config = dir.path().join("portico.yaml");
        std::fs::write(&config, format!("{}{docs}", cfg::listener(envoy_port))).expect("config");
        let xds = Xds::start(dir.path(), &config).await;
        let envoy_proc = start_envoy(&envoy, dir.path(), &xds).await;
        let portico = Portico::start(docs).await;
        let served = eventually(Duration::from_secs(30), async || {
            http_get(&format!("http://127.0.0.1:{envoy_port}/probe/"), &[])
                .await
                .is_ok_and(|r| r.status == StatusCode::OK)
        })
        .await;
        assert!(
            served,
            "envoy never served the config\n/xds: {}\nenvoy: {}",
            xds.nodes().await,
            envoy_log(dir.path())
        );
        Some(Pair {
            portico,
            envoy_port,
            _envoy: envoy_proc,
            _xds: xds,
            dir,
        })
    }

    /// (name, port) of both proxies.
    fn both(&self) -> [(&'static str, u16); 2] {
        [("portico", self.portico.port), ("envoy", self.envoy_port)]
    }

    /// Fails the test with every difference seen and Envoy's log.
    fn assert_same(&self, diffs: &[String]) {
        assert!(
            diffs.is_empty(),
            "Envoy differs from portico run:\n{}\nenvoy log: {}",
            diffs.join("\n"),
            self.envoy_log()
        );
    }

    fn envoy_log(&self) -> String {
        envoy_log(self.dir.path())
    }
}

fn mapping(name: &str, spec: &str) -> String {
    format!("---\n{API}\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec:\n{spec}\n")
}

/// A header's value as an integer (the leading digits: `x-ratelimit-limit` may carry a
/// policy after them).
fn int_header(g: &Got, name: &str) -> Option<u64> {
    let v = g.header(name)?;
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// What a rate-limited sequence looked like through one proxy.
#[derive(Debug, PartialEq, Eq)]
struct LimitSeen {
    /// Statuses of the burst on `/rl/` (one client).
    burst: Vec<u16>,
    /// Statuses without the `x-user` key header (never limited) and with two users.
    no_key: Vec<u16>,
    user1: Vec<u16>,
    user2: Vec<u16>,
    /// The refusal's headers: retry-after ≥ 1, x-ratelimit-limit (the burst),
    /// x-ratelimit-remaining, and whether x-ratelimit-reset is an integer.
    retry_after_at_least_1: bool,
    limit: Option<u64>,
    remaining: Option<u64>,
    reset_is_integer: bool,
    /// The refused request never reached the upstream.
    refusal_from_upstream: bool,
}

#[tokio::test]
async fn local_rate_limits_refuse_after_the_burst_like_portico_run() {
    let a = echo("a").await;
    let docs = [
        mapping("probe", &format!("  prefix: /probe/\n  service: {}", a.addr)),
        mapping(
            "rl",
            &format!(
                "  prefix: /rl/\n  service: {}\n  rate_limits: [{{ key: [remote_address], requests_per_unit: 1, unit: minute, burst: 3 }}]",
                a.addr
            ),
        ),
        mapping(
            "rlh",
            &format!(
                "  prefix: /rlh/\n  service: {}\n  rate_limits: [{{ key: [\"header:x-user\"], requests_per_unit: 1, unit: hour, burst: 2 }}]",
                a.addr
            ),
        ),
    ]
    .concat();
    let Some(pair) = Pair::start(
        "local_rate_limits_refuse_after_the_burst_like_portico_run",
        &docs,
    )
    .await
    else {
        return;
    };
    let mut seen = Vec::new();
    for (who, port) in pair.both() {
        let mut burst = Vec::new();
        let mut last = None;
        for _ in 0..4 {
            let g = ask(port, "GET", "/rl/x", &[]).await;
            burst.push(g.status.as_u16());
            last = Some(g);
        }
        let refusal = last.expect("four requests");
        eprintln!(
            "{who}: refusal {} headers {:?}",
            refusal.status, refusal.headers
        );
        let statuses = async |headers: &[(&str, &str)], n: usize| {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(ask(port, "GET", "/rlh/x", headers).await.status.as_u16());
            }
            out
        };
        let no_key = statuses(&[], 4).await;
        let user1 = statuses(&[("x-user", "u1")], 3).await;
        let user2 = statuses(&[("x-user", "u2")], 1).await;
        seen.push((
            who,
            LimitSeen {
                burst,
                no_key,
                user1,
                user2,
                retry_after_at_least_1: int_header(&refusal, "retry-after").is_some_and(|s| s >= 1),
                limit: int_header(&refusal, "x-ratelimit-limit"),
                remaining: int_header(&refusal, "x-ratelimit-remaining"),
                reset_is_integer: int_header(&refusal, "x-ratelimit-reset").is_some(),
                refusal_from_upstream: refusal.header("x-upstream").is_some(),
            },
        ));
    }
    let want = LimitSeen {
        burst: vec![200, 200, 200, 429],
        no_key: vec![200; 4],
        user1: vec![200, 200, 429],
        user2: vec![200],
        retry_after_at_least_1: true,
        limit: Some(3),
        remaining: Some(0),
        reset_is_integer: true,
        refusal_from_upstream: false,
    };
    for (who, s) in &seen {
        assert_eq!(s, &want, "{who}\nenvoy log: {}", pair.envoy_log());
    }
}

/// What one CORS request produced: status, whether the upstream answered, and the CORS
/// response headers.
#[derive(Debug, PartialEq, Eq)]
struct CorsSeen {
    status: u16,
    upstream: bool,
    headers: Vec<(String, String)>,
}

const CORS_HEADERS: &[&str] = &[
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
    "access-control-allow-credentials",
];

fn cors_seen(g: &Got) -> CorsSeen {
    CorsSeen {
        status: g.status.as_u16(),
        upstream: g.header("x-upstream").is_some(),
        headers: CORS_HEADERS
            .iter()
            .filter_map(|h| g.header(h).map(|v| (h.to_string(), v.to_string())))
            .collect(),
    }
}

/// CORS requests: (method, origin, access-control-request-method).
const CORS_TABLE: &[(&str, &str, Option<&str>)] = &[
    ("OPTIONS", "https://app.example", Some("POST")),
    ("OPTIONS", "https://x.apps.example", Some("GET")),
    ("OPTIONS", "https://evil.example", Some("POST")),
    ("GET", "https://app.example", None),
    ("GET", "https://APP.example", None),
    ("GET", "https://evil.example", None),
    ("GET", "", None),
];

#[tokio::test]
async fn cors_preflights_and_simple_requests_match_portico_run() {
    let a = echo("a").await;
    let docs = [
        mapping("probe", &format!("  prefix: /probe/\n  service: {}", a.addr)),
        mapping(
            "cors",
            &format!(
                "  prefix: /c/\n  service: {}\n  cors: {{ origins: [\"https://app.example\", \"https://*.apps.example\"], methods: [GET, POST], headers: [content-type, x-a], exposed_headers: [x-b], credentials: true, max_age: 600 }}",
                a.addr
            ),
        ),
    ]
    .concat();
    let Some(pair) = Pair::start(
        "cors_preflights_and_simple_requests_match_portico_run",
        &docs,
    )
    .await
    else {
        return;
    };
    let mut diffs = Vec::new();
    for (method, origin, acrm) in CORS_TABLE {
        let mut headers = vec![("access-control-request-headers", "content-type")];
        if !origin.is_empty() {
            headers.push(("origin", origin));
        }
        if let Some(m) = acrm {
            headers.push(("access-control-request-method", m));
        }
        let [p, e] = [pair.portico.port, pair.envoy_port];
        let via_portico = cors_seen(&ask(p, method, "/c/x", &headers).await);
        let mut via_envoy = cors_seen(&ask(e, method, "/c/x", &headers).await);
        // docs/envoy.md, "What differs": Envoy's preflight answers also carry
        // access-control-expose-headers, and a refused preflight gets the method and header
        // lists without access-control-allow-origin (a browser refuses it all the same;
        // Portico sends no CORS header). Everything else must agree.
        // Envoy answers every preflight 200: Portico 204 (allowed) or 403 (refused).
        if acrm.is_some() {
            via_envoy
                .headers
                .retain(|(k, _)| k != "access-control-expose-headers");
            let allowed = via_envoy
                .headers
                .iter()
                .any(|(k, _)| k == "access-control-allow-origin");
            if !allowed {
                via_envoy.headers.clear();
            }
            if via_envoy.status == 200 && !via_envoy.upstream {
                via_envoy.status = if allowed { 204 } else { 403 };
            }
        }
        if via_portico != via_envoy {
            diffs.push(format!(
                "{method} origin {origin:?}\n  portico: {via_portico:?}\n  envoy:   {via_envoy:?}"
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "Envoy differs from portico run on CORS:\n{}\nenvoy log: {}",
        diffs.join("\n"),
        pair.envoy_log()
    );
    // The allowed preflight carried the full policy (not just equal on both sides).
    let pre = cors_seen(
        &ask(
            pair.envoy_port,
            "OPTIONS",
            "/c/x",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await,
    );
    assert!(!pre.upstream, "{pre:?}");
    for h in [
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-max-age",
        "access-control-allow-credentials",
    ] {
        assert!(pre.headers.iter().any(|(k, _)| k == h), "{h}: {pre:?}");
    }
}

/// What the HTTP auth service saw of one check: method, path and query, and which of the
/// interesting headers it got.
fn check_seen(s: &Seen) -> (String, String, Vec<&'static str>) {
    let names = ["authorization", "x-tenant", "x-secret", "x-user-id"]
        .into_iter()
        .filter(|h| s.headers.contains_key(*h))
        .collect();
    (s.method.to_string(), s.uri.to_string(), names)
}

/// An HTTP `AuthService` through Envoy's ext_authz: the check request (path prefix, header
/// allow-list), the allowing answer's header on the upstream request, a denial returned as the
/// auth service sent it, and `bypass_auth` — as `portico run` does.
#[tokio::test]
async fn http_auth_service_through_ext_authz_matches_portico_run() {
    use crate::edge_auth::{auth_server, auth_service};
    let auth = auth_server().await;
    let a = echo("a").await;
    let docs = [
        format!(
            "---\n{}",
            auth_service(
                &auth.addr.to_string(),
                "  timeout_ms: 5000\n  allowed_request_headers: [x-tenant]\n  allowed_authorization_headers: [x-user-id]\n"
            )
        ),
        mapping(
            "probe",
            &format!("  prefix: /probe/\n  service: {}\n  bypass_auth: true", a.addr),
        ),
        mapping("app", &format!("  prefix: /\n  service: {}", a.addr)),
        mapping(
            "open",
            &format!("  prefix: /open/\n  service: {}\n  bypass_auth: true", a.addr),
        ),
    ]
    .concat();
    let Some(pair) = Pair::start(
        "http_auth_service_through_ext_authz_matches_portico_run",
        &docs,
    )
    .await
    else {
        return;
    };
    let allow: &[(&str, &str)] = &[
        ("authorization", "Bearer abc"),
        ("x-tenant", "acme"),
        ("x-secret", "s"),
        ("x-user-id", "spoofed"),
    ];
    let mut diffs = Vec::new();
    let mut seen_by = |what: String, p: String, e: String| {
        if p != e {
            diffs.push(format!("{what}\n  portico: {p}\n  envoy:   {e}"));
        }
    };
    let [pp, ep] = [pair.portico.port, pair.envoy_port];

    // Allowed: the check and the upstream request.
    let rp = ask(pp, "GET", "/allow/x?q=1", allow).await;
    let check_p = check_seen(&auth.last());
    let re = ask(ep, "GET", "/allow/x?q=1", allow).await;
    let check_e = check_seen(&auth.last());
    seen_by(
        "allowed request".into(),
        format!("{:?}", outcome(&rp)),
        format!("{:?}", outcome(&re)),
    );
    seen_by(
        "its check request".into(),
        format!("{check_p:?}"),
        format!("{check_e:?}"),
    );
    assert_eq!(rp.header("x-seen-h-x-user-id"), Some("42"), "{rp:?}");
    assert_eq!(check_p.1, "/extauth/allow/x?q=1");

    // Denied: the auth service's answer as it is; the upstream never sees it.
    let before = a.count();
    let deny = |g: &Got| {
        format!(
            "{} {:?} {:?} {:?} {:?}",
            g.status,
            g.text(),
            g.header("www-authenticate"),
            g.header("x-auth-said"),
            g.header("x-upstream")
        )
    };
    let dp = deny(&ask(pp, "GET", "/deny/me", &[]).await);
    let de = deny(&ask(ep, "GET", "/deny/me", &[]).await);
    seen_by("denied request".into(), dp.clone(), de);
    assert!(
        dp.starts_with("401 Unauthorized \"denied by auth\""),
        "{dp}"
    );
    assert_eq!(a.count(), before, "denied requests reached the upstream");

    // bypass_auth: the auth service is not asked.
    let checks = auth.count();
    let op = ask(pp, "GET", "/open/deny", &[]).await.status;
    let oe = ask(ep, "GET", "/open/deny", &[]).await.status;
    seen_by("bypass_auth".into(), op.to_string(), oe.to_string());
    assert_eq!(op, StatusCode::OK);
    assert_eq!(auth.count(), checks, "bypass_auth asked the auth service");
    pair.assert_same(&diffs);
}

/// `JWTProvider` through Envoy's jwt_authn (keys from a JWKS file, tokens made by PyJWT):
/// the same requests are let through or refused with 401 by both, and the forwarded claim
/// reaches the upstream.
#[tokio::test]
async fn jwt_provider_through_jwt_authn_matches_portico_run() {
    jwt_parity("jwt_provider_through_jwt_authn_matches_portico_run", false).await;
}

/// The same with the keys fetched from `jwks_uri` (an HTTP server serving the JWKS): Envoy's
/// `remote_jwks` on the URL host's cluster.
#[tokio::test]
async fn jwt_provider_with_jwks_uri_matches_portico_run() {
    jwt_parity("jwt_provider_with_jwks_uri_matches_portico_run", true).await;
}

async fn jwt_parity(test: &str, remote: bool) {
    use crate::edge_auth::{ISS, Tokens, provider};
    if need_envoy(test).is_none() {
        return;
    }
    let tk = Tokens::make(ISS);
    let a = echo("a").await;
    let jwks = std::fs::read(tk.jwks(1)).expect("jwks");
    let keys_server = Upstream::with(
        "jwks",
        std::sync::Arc::new(move |_s: &Seen| {
            let mut r =
                http::Response::new(http_body_util::Full::new(bytes::Bytes::from(jwks.clone())));
            r.headers_mut()
                .insert("content-type", "application/json".parse().expect("ct"));
            r
        }),
    )
    .await;
    let keys = if remote {
        format!("jwks_uri: http://{}/keys.json", keys_server.addr)
    } else {
        format!("jwks_file: {}", tk.jwks(1).display())
    };
    let docs = [
        format!(
            "---\n{}",
            provider("main", &keys, "  from_params: [access_token]\n")
        ),
        mapping(
            "probe",
            &format!("  prefix: /probe/\n  service: {}", a.addr),
        ),
        mapping(
            "api",
            &format!(
                "  prefix: /api/\n  service: {}\n  jwt: {{ provider: main }}",
                a.addr
            ),
        ),
        mapping(
            "opt",
            &format!(
                "  prefix: /opt/\n  service: {}\n  jwt: {{ provider: main, required: false }}",
                a.addr
            ),
        ),
    ]
    .concat();
    let Some(pair) = Pair::start(test, &docs).await else {
        return;
    };
    // (path, token name or "" for none, in the header or the query).
    let rows: &[(&str, &str, bool)] = &[
        ("/api/x", "rsa", false),
        ("/api/x", "ps", false),
        ("/api/x", "ec", false),
        ("/api/x", "rsa", true),
        ("/api/x", "", false),
        ("/api/x", "expired", false),
        ("/api/x", "future", false),
        ("/api/x", "issuer", false),
        ("/api/x", "audience", false),
        ("/api/x", "badsig", false),
        ("/api/x", "hmac", false),
        ("/api/x", "none", false),
        ("/api/x", "malformed", false),
        ("/api/x", "stranger", false),
        ("/opt/x", "", false),
        ("/opt/x", "rsa", false),
        ("/opt/x", "expired", false),
    ];
    let mut diffs = Vec::new();
    for (path, name, in_query) in rows {
        let token = if name.is_empty() {
            String::new()
        } else {
            tk.get(name)
        };
        let bearer = format!("Bearer {token}");
        let (path, headers): (String, Vec<(&str, &str)>) = if token.is_empty() {
            (path.to_string(), vec![])
        } else if *in_query {
            (format!("{path}?access_token={token}"), vec![])
        } else {
            (path.to_string(), vec![("authorization", bearer.as_str())])
        };
        let facts = |g: &Got| {
            (
                g.status.as_u16(),
                g.header("x-upstream").map(str::to_string),
                g.header("x-seen-h-x-user-id").map(str::to_string),
                g.header("x-seen-h-authorization").is_some(),
            )
        };
        let p = facts(&ask(pair.portico.port, "GET", &path, &headers).await);
        let mut e = facts(&ask(pair.envoy_port, "GET", &path, &headers).await);
        // docs/envoy.md, "What differs": Envoy refuses a token for another audience with 403,
        // Portico (like every other refusal) with 401.
        if *name == "audience" && e.0 == 403 {
            e.0 = 401;
        }
        if p != e {
            diffs.push(format!(
                "{path} token {name:?}\n  portico: {p:?}\n  envoy:   {e:?}"
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "Envoy differs from portico run on {} JWT requests:\n{}\nenvoy log: {}",
        diffs.len(),
        diffs.join("\n"),
        pair.envoy_log()
    );
}

/// Global rate limits through Envoy's ratelimit filter: Portico and Envoy ask the same
/// `portico ratelimit` server (its counters in a real Redis) with the same descriptors, each
/// under its own key value, and refuse the same request of the sequence with 429 and the
/// server's `x-ratelimit-*` figures.
#[tokio::test]
async fn global_rate_limits_through_the_ratelimit_filter_match_portico_run() {
    use crate::ratelimit::{Redis, RlServer, fresh_window, rls_doc};
    if need_envoy("global_rate_limits_through_the_ratelimit_filter_match_portico_run").is_none() {
        return;
    }
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "domain: portico\ndescriptors:\n  - key: x-who\n    rate_limit: { unit: minute, requests_per_unit: 3 }\n",
    )
    .expect("rules");
    let server = RlServer::start(&redis, &rules);
    let a = echo("a").await;
    let docs = [
        format!("---\n{}", rls_doc(server.port, 2000, false)),
        mapping("probe", &format!("  prefix: /probe/\n  service: {}", a.addr)),
        mapping(
            "g",
            &format!(
                "  prefix: /g/\n  service: {}\n  rate_limits: [{{ key: [\"header:x-who\"], scope: global }}]",
                a.addr
            ),
        ),
    ]
    .concat();
    let Some(pair) = Pair::start(
        "global_rate_limits_through_the_ratelimit_filter_match_portico_run",
        &docs,
    )
    .await
    else {
        return;
    };
    // Fixed one-minute windows: start with enough of this one left.
    fresh_window(20).await;
    let run = std::process::id();
    let mut seen = Vec::new();
    for (who, port) in pair.both() {
        let key = format!("{who}-{run}");
        let mut statuses = Vec::new();
        let mut last = None;
        for _ in 0..4 {
            let g = ask(port, "GET", "/g/x", &[("x-who", &key)]).await;
            statuses.push(g.status.as_u16());
            last = Some(g);
        }
        let refusal = last.expect("four requests");
        eprintln!("{who}: refusal {} {:?}", refusal.status, refusal.headers);
        let mut unkeyed = Vec::new();
        for _ in 0..4 {
            unkeyed.push(ask(port, "GET", "/g/x", &[]).await.status.as_u16());
        }
        seen.push((
            who,
            (
                statuses,
                unkeyed,
                int_header(&refusal, "x-ratelimit-limit"),
                int_header(&refusal, "x-ratelimit-remaining"),
                int_header(&refusal, "x-ratelimit-reset").is_some_and(|r| (1..=60).contains(&r)),
                refusal.header("x-upstream").is_some(),
            ),
        ));
    }
    let want = (
        vec![200, 200, 200, 429],
        vec![200; 4],
        Some(3),
        Some(0),
        true,
        false,
    );
    for (who, s) in &seen {
        assert_eq!(s, &want, "{who}\nenvoy log: {}", pair.envoy_log());
    }
}

/// `compression` (gzip) through Envoy's compressor filter and `max_request_body_bytes`
/// through its buffer filter: the same requests get the same encoding, the same decoded body
/// and the same 413.
#[tokio::test]
async fn compression_and_body_limits_match_portico_run() {
    use std::io::Read as _;
    let text = "portico and envoy compress the same text. ".repeat(100);
    let body = text.clone();
    let big = Upstream::with(
        "big",
        std::sync::Arc::new(move |_s: &Seen| {
            let mut r =
                http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body.clone())));
            r.headers_mut().insert(
                "content-type",
                "text/plain; charset=utf-8".parse().expect("ct"),
            );
            r.headers_mut()
                .insert("x-upstream", "big".parse().expect("name"));
            r
        }),
    )
    .await;
    let docs = [
        mapping("probe", &format!("  prefix: /probe/\n  service: {}", big.addr)),
        mapping(
            "gz",
            &format!(
                "  prefix: /gz/\n  service: {}\n  compression: {{ enabled: true, min_bytes: 256, content_types: [text/*] }}\n  max_request_body_bytes: 1000",
                big.addr
            ),
        ),
        mapping("plain", &format!("  prefix: /plain/\n  service: {}", big.addr)),
    ]
    .concat();
    let Some(pair) = Pair::start("compression_and_body_limits_match_portico_run", &docs).await
    else {
        return;
    };
    let gz: &[(&str, &str)] = &[("accept-encoding", "gzip")];
    let mut diffs = Vec::new();
    for (method, path, headers, body_len) in [
        ("GET", "/gz/x", gz, 0),
        ("GET", "/gz/x", &[][..], 0),
        ("GET", "/plain/x", gz, 0),
        ("POST", "/gz/small", gz, 500),
        ("POST", "/gz/big", gz, 2000),
    ] {
        let mut facts = Vec::new();
        for (_, port) in pair.both() {
            let g = send(
                request(
                    method,
                    &format!("http://127.0.0.1:{port}{path}"),
                    headers,
                    bytes::Bytes::from(vec![b'x'; body_len]),
                ),
                false,
            )
            .await
            .expect("request");
            let encoding = g.header("content-encoding").map(str::to_string);
            let decoded = if encoding.as_deref() == Some("gzip") {
                let mut s = String::new();
                flate2::read::GzDecoder::new(&g.body[..])
                    .read_to_string(&mut s)
                    .expect("gzip body");
                s
            } else {
                g.text()
            };
            facts.push((
                g.status.as_u16(),
                encoding,
                g.header("x-upstream").is_some(),
                g.status == StatusCode::OK && decoded == text,
            ));
        }
        if facts[0] != facts[1] {
            diffs.push(format!(
                "{method} {path} {headers:?} body {body_len}\n  portico: {:?}\n  envoy:   {:?}",
                facts[0], facts[1]
            ));
        }
        if (method, path, headers) == ("GET", "/gz/x", gz) {
            assert_eq!(facts[0].1.as_deref(), Some("gzip"), "{facts:?}");
        }
        if path == "/gz/big" {
            assert_eq!(facts[0].0, 413, "{facts:?}");
        }
    }
    pair.assert_same(&diffs);
}

/// `requestPolicy.insecure` on a cleartext listener: a Host that redirects answers 301 to
/// https (also for a more specific route hostname it covers), one that rejects answers 403,
/// `Route` and hosts without a Host are routed — the same through Envoy.
#[tokio::test]
async fn insecure_policies_on_cleartext_listeners_match_portico_run() {
    use crate::tls::{Pki, host_doc};
    let pki = Pki::new();
    let leaf = pki.leaf("w", "x.test", &["*.x.test", "open.test", "no.test"], false);
    let a = echo("a").await;
    let docs = [
        format!(
            "---\n{}",
            host_doc("red", "*.x.test", &leaf, "", "Redirect")
        ),
        format!("---\n{}", host_doc("ok", "open.test", &leaf, "", "Route")),
        format!("---\n{}", host_doc("no", "no.test", &leaf, "", "Reject")),
        mapping(
            "probe",
            &format!("  prefix: /probe/\n  service: {}", a.addr),
        ),
        mapping(
            "api",
            &format!("  hostname: api.x.test\n  prefix: /\n  service: {}", a.addr),
        ),
        mapping("any", &format!("  prefix: /\n  service: {}", a.addr)),
    ]
    .concat();
    let Some(pair) = Pair::start(
        "insecure_policies_on_cleartext_listeners_match_portico_run",
        &docs,
    )
    .await
    else {
        return;
    };
    let mut diffs = Vec::new();
    for host in [
        "api.x.test",
        "www.x.test:8080",
        "open.test",
        "no.test",
        "other.test",
    ] {
        let facts = |g: &Got| {
            (
                g.status.as_u16(),
                g.header("location").map(str::to_string),
                g.header("x-upstream").is_some(),
            )
        };
        let p = facts(&ask(pair.portico.port, "GET", "/p?q=1", &[("host", host)]).await);
        let e = facts(&ask(pair.envoy_port, "GET", "/p?q=1", &[("host", host)]).await);
        if host == "api.x.test" {
            assert_eq!(
                p,
                (301, Some("https://api.x.test/p?q=1".to_string()), false)
            );
        }
        if p != e {
            diffs.push(format!("host {host}\n  portico: {p:?}\n  envoy:   {e:?}"));
        }
    }
    pair.assert_same(&diffs);
}

/// A certificate rotated on disk reaches Envoy: `portico xds` follows the Host's files, sends
/// a new secret, and Envoy serves the new certificate (no config edit, no signal).
/// (Multi-threaded: curl blocks its worker while the in-process upstream answers on the other.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_reaches_envoy_as_a_new_secret() {
    use crate::tls::{Pki, curl, write_atomic};
    let Some(envoy) = need_envoy("a_rotated_certificate_reaches_envoy_as_a_new_secret") else {
        return;
    };
    let pki = Pki::new();
    let first = pki.leaf("first", "first.r.test", &["r.test"], false);
    let second = pki.leaf("second", "second.r.test", &["r.test"], false);
    let up = echo("u").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("r.pem"), dir.path().join("r.key"));
    let copy = |leaf: &crate::tls::Leaf| {
        write_atomic(&cert, &std::fs::read(&leaf.cert).expect("cert"));
        write_atomic(&key, &std::fs::read(&leaf.key).expect("key"));
    };
    copy(&first);
    let tls_port = free_port();
    let config = dir.path().join("portico.yaml");
    std::fs::write(
        &config,
        [
            listener_doc("tls", tls_port, "HTTPS", ""),
            format!(
                "{API}\nkind: Host\nmetadata: {{ name: r }}\nspec: {{ hostname: r.test, tls: {{ cert_chain_file: {}, private_key_file: {} }} }}\n",
                cert.display(),
                key.display()
            ),
            format!(
                "{API}\nkind: Mapping\nmetadata: {{ name: m }}\nspec: {{ prefix: /, service: {} }}\n",
                up.addr
            ),
        ]
        .join("---\n"),
    )
    .expect("config");
    let xds = Xds::start(dir.path(), &config).await;
    let _envoy = start_envoy(&envoy, dir.path(), &xds).await;
    let ca = pki.path("ca.pem");
    let ca = ca.to_str().expect("path");
    let served_cn = || {
        let resolve = format!("r.test:{tls_port}:127.0.0.1");
        let url = format!("https://r.test:{tls_port}/x");
        let (ok, out, _) = curl(&[
            "--resolve",
            &resolve,
            "--cacert",
            ca,
            "-w",
            "\n%{certs}",
            &url,
        ]);
        if !ok {
            return None;
        }
        ["first.r.test", "second.r.test"]
            .into_iter()
            .find(|cn| out.contains(&format!("CN = {cn}")) || out.contains(&format!("CN={cn}")))
    };
    let serving = eventually(Duration::from_secs(30), async || {
        served_cn() == Some("first.r.test")
    })
    .await;
    assert!(
        serving,
        "envoy never served the first certificate\n/xds: {}\nenvoy: {}",
        xds.nodes().await,
        envoy_log(dir.path())
    );

    copy(&second);
    let started = std::time::Instant::now();
    let rotated = eventually(Duration::from_secs(20), async || {
        served_cn() == Some("second.r.test")
    })
    .await;
    eprintln!(
        "the rotated certificate was served by Envoy after {:?}",
        started.elapsed()
    );
    assert!(
        rotated,
        "envoy still serves the old certificate\n/xds: {}\nxds log: {}",
        xds.nodes().await,
        std::fs::read_to_string(dir.path().join("xds.log")).unwrap_or_default()
    );
    let nodes = xds.nodes().await;
    let secret = &nodes["nodes"][0]["resources"]["type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"];
    assert_ne!(
        secret["version_acked"], "1",
        "a new secret version: {nodes}"
    );
}

/// `portico check --target envoy` names the fields whose Envoy translation differs, on the
/// resource that has them.
#[tokio::test]
async fn check_target_envoy_names_the_translated_fields_that_differ() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = [
        format!("{API}\nkind: Mapping\nmetadata: {{ name: c }}\nspec: {{ prefix: /c/, service: 127.0.0.1:9, cors: {{ origins: [\"*\"] }} }}\n"),
        format!("{API}\nkind: Mapping\nmetadata: {{ name: z }}\nspec: {{ prefix: /z/, service: 127.0.0.1:9, compression: {{ enabled: true }}, max_request_body_bytes: 10 }}\n"),
        format!("{API}\nkind: Mapping\nmetadata: {{ name: p }}\nspec: {{ prefix: /p/, service: 127.0.0.1:9, rate_limits: [{{ key: [path], requests_per_unit: 1 }}] }}\n"),
    ]
    .join("---\n");
    std::fs::write(dir.path().join("c.yaml"), cfg).expect("write");
    let (code, out, err) = portico_cmd(dir.path(), &["check", "--target", "envoy", "c.yaml"]);
    assert_eq!(code, 0, "warnings only: {out} {err}");
    for (who, field) in [
        ("Mapping/c", "spec.cors.methods"),
        ("Mapping/c", "spec.cors.headers"),
        ("Mapping/z", "spec.compression"),
        ("Mapping/z", "spec.max_request_body_bytes"),
        ("Mapping/p", "spec.rate_limits.key"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(&format!("{who}: warning: envoy cannot express {field}:"))),
            "no warning naming {field} on {who}: {out}"
        );
    }
    assert!(!out.contains("spec.cors:"), "CORS is translated: {out}");
}

/// A gRPC `AuthService` through ext_authz (Envoy's `Authorization/Check`, the tonic server the
/// `edge_auth` tests use): the allowed request's header and query mutations, the response
/// header, the denial, and the route's context extensions — as `portico run` does.
#[tokio::test]
async fn grpc_auth_service_through_ext_authz_matches_portico_run() {
    use crate::edge_auth::grpc_auth;
    let (addr, server) = grpc_auth::start().await;
    let a = echo("a").await;
    let docs = [
        format!(
            "---\n{API}\nkind: AuthService\nmetadata: {{ name: auth }}\nspec: {{ auth_service: \"{addr}\", proto: grpc, timeout_ms: 5000 }}\n"
        ),
        mapping(
            "probe",
            &format!("  prefix: /probe/\n  service: {}\n  bypass_auth: true", a.addr),
        ),
        mapping(
            "app",
            &format!(
                "  prefix: /\n  service: {}\n  auth_context_extensions: {{ tier: gold, team: blue }}",
                a.addr
            ),
        ),
    ]
    .concat();
    let Some(pair) = Pair::start(
        "grpc_auth_service_through_ext_authz_matches_portico_run",
        &docs,
    )
    .await
    else {
        return;
    };
    let mut diffs = Vec::new();
    for (path, headers) in [
        ("/allow/x?q=1", &[("x-tier", "bronze"), ("x-drop", "1")][..]),
        ("/allow/y", &[][..]),
        ("/nope", &[][..]),
    ] {
        let mut facts = Vec::new();
        for (_, port) in pair.both() {
            let g = ask(port, "GET", path, headers).await;
            let check = server.seen.lock().expect("lock").last().cloned();
            let ext = check.as_ref().and_then(|c| c.attributes.as_ref()).map(|a| {
                let mut v: Vec<_> = a.context_extensions.clone().into_iter().collect();
                v.sort();
                v
            });
            let checked_path = check
                .as_ref()
                .and_then(|c| c.attributes.as_ref())
                .and_then(|a| a.request.as_ref())
                .and_then(|r| r.http.as_ref())
                .map(|h| h.path.clone());
            facts.push(format!(
                "{} {:?} upstream path {:?} x-user {:?} x-tier {:?} x-drop {:?} x-auth-by {:?} x-why {:?} body {:?} | checked {:?} {:?}",
                g.status,
                g.header("x-upstream"),
                g.header("x-seen-path"),
                g.header("x-seen-h-x-user"),
                g.header("x-seen-h-x-tier"),
                g.header("x-seen-h-x-drop"),
                g.header("x-auth-by"),
                g.header("x-why"),
                g.header("x-upstream").is_none().then(|| g.text()),
                checked_path,
                ext,
            ));
        }
        // docs/envoy.md, "What differs": Envoy sets the answer's query parameters without
        // encoding them; this server's `tenant=t 1` makes the request invalid (400), where
        // Portico forwards `tenant=t+1`.
        if path.contains("q=") {
            assert!(facts[0].starts_with("200 OK"), "{}", facts[0]);
            assert!(facts[1].starts_with("400 Bad Request"), "{}", facts[1]);
            continue;
        }
        if facts[0] != facts[1] {
            diffs.push(format!(
                "{path}\n  portico: {}\n  envoy:   {}",
                facts[0], facts[1]
            ));
        }
    }
    pair.assert_same(&diffs);
}

/// Host mTLS through SDS: Envoy requires a client certificate signed by the Host's `ca_file`
/// (the validation context secret), and forwards the verified identity as
/// `x-forwarded-client-cert` in Portico's form, replacing a client's forged one (the same
/// expectations `tls::` checks of `portico run`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_mtls_through_sds_requires_and_forwards_the_client_certificate() {
    use crate::tls::{Pki, curl, host_doc};
    let Some(envoy) =
        need_envoy("host_mtls_through_sds_requires_and_forwards_the_client_certificate")
    else {
        return;
    };
    let pki = Pki::new();
    let server = pki.leaf("m", "mtls.test", &["mtls.test"], false);
    let client = pki.leaf("c", "client-one", &["client-one.test"], true);
    let up = echo("u").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let tls_port = free_port();
    let config = dir.path().join("portico.yaml");
    let ca = pki.path("ca.pem");
    let ca = ca.to_str().expect("path");
    std::fs::write(
        &config,
        [
            listener_doc("tls", tls_port, "HTTPS", ""),
            host_doc("m", "mtls.test", &server, &format!(", ca_file: {ca}"), ""),
            format!(
                "{API}\nkind: Mapping\nmetadata: {{ name: m }}\nspec: {{ prefix: /, service: {} }}\n",
                up.addr
            ),
        ]
        .join("---\n"),
    )
    .expect("config");
    let xds = Xds::start(dir.path(), &config).await;
    let _envoy = start_envoy(&envoy, dir.path(), &xds).await;
    let resolve = format!("mtls.test:{tls_port}:127.0.0.1");
    let url = format!("https://mtls.test:{tls_port}/m");
    let cert = client.cert.to_str().expect("path");
    let key = client.key.to_str().expect("path");
    let with_cert = || {
        curl(&[
            "--resolve",
            &resolve,
            "--cacert",
            ca,
            "--cert",
            cert,
            "--key",
            key,
            "-H",
            "x-forwarded-client-cert: Subject=\"CN=forged\"",
            "-D",
            "-",
            &url,
        ])
    };
    let served = eventually(Duration::from_secs(30), async || with_cert().0).await;
    assert!(
        served,
        "envoy never served mTLS: {:?}\n/xds: {}\nenvoy: {}",
        with_cert(),
        xds.nodes().await,
        envoy_log(dir.path())
    );
    let (_, out, _) = with_cert();
    let xfcc = out
        .lines()
        .find_map(|l| l.strip_prefix("x-seen-h-x-forwarded-client-cert: "))
        .unwrap_or_else(|| panic!("no x-forwarded-client-cert upstream: {out}"))
        .trim()
        .to_string();
    assert!(xfcc.starts_with("Hash="), "{xfcc}");
    assert!(xfcc.contains("Subject=\"CN=client-one\""), "{xfcc}");
    assert!(xfcc.contains("DNS=client-one.test"), "{xfcc}");
    assert!(!xfcc.contains("forged"), "{xfcc}");
    // Without a client certificate: the handshake fails.
    let (ok, out, _) = curl(&["--resolve", &resolve, "--cacert", ca, &url]);
    assert!(!ok, "no client certificate must fail: {out}");
}

/// PROXY protocol listeners (`HTTPPROXY`): through Envoy's `proxy_protocol` listener filter
/// the upstream sees the client address the PROXY header names, as with `portico run`; a
/// connection without the header gets no answer from either.
#[tokio::test]
async fn proxy_protocol_listeners_match_portico_run() {
    let Some(envoy) = need_envoy("proxy_protocol_listeners_match_portico_run") else {
        return;
    };
    let a = echo("a").await;
    let route = mapping("any", &format!("  prefix: /\n  service: {}", a.addr));
    let (envoy_pp, portico_pp) = (free_port(), free_port());
    // Portico binds its port before Envoy opens connections of its own: an outgoing
    // connection's local port could otherwise take the port picked for Portico.
    let portico =
        Portico::start_with_listeners(&listener_doc("pp", portico_pp, "HTTPPROXY", ""), &route)
            .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("portico.yaml");
    std::fs::write(
        &config,
        format!("{}{route}", listener_doc("pp", envoy_pp, "HTTPPROXY", "")),
    )
    .expect("config");
    let xds = Xds::start(dir.path(), &config).await;
    let _envoy = start_envoy(&envoy, dir.path(), &xds).await;
    let header = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n";
    let served = eventually(Duration::from_secs(30), async || {
        // raw_exchange panics on a refused connection: wait for the listener first.
        tokio::net::TcpStream::connect(("127.0.0.1", envoy_pp))
            .await
            .is_ok()
            && raw_exchange(envoy_pp, header, "/probe")
                .await
                .starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(
        served,
        "envoy never served the PROXY listener\n/xds: {}\nenvoy: {}",
        xds.nodes().await,
        envoy_log(dir.path())
    );
    let xff = |r: &str| {
        r.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-seen-h-x-forwarded-for: ")
                .map(|v| v.trim().to_string())
        })
    };
    for (who, port) in [("portico", portico_pp), ("envoy", envoy_pp)] {
        let r = raw_exchange(port, header, "/v1").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{who}: {r}");
        assert_eq!(xff(&r).as_deref(), Some("203.0.113.7"), "{who}: {r}");
        let r = raw_exchange(port, b"", "/none").await;
        assert!(
            !r.contains("x-upstream"),
            "{who}: answered without a PROXY header: {r}"
        );
    }
    drop(portico);
}
