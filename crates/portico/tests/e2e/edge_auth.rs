//! Edge authentication end to end (reference §9): an HTTP auth service written here (allow,
//! deny with its own answer, slow, down, `failure_mode_allow`), `bypass_auth`, Emissary's own
//! `AuthService` example; JWT with RSA and EC keys made by the test and tokens signed by
//! PyJWT on the client side (`scripts/fetch-pyjwt.sh` installs it under target/; the JWT
//! tests fail loudly without it), every failure reason, and key rotation through a
//! `jwks_uri` served here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;

use crate::common::*;

const EM: &str = "apiVersion: getambassador.io/v3alpha1";

/// An HTTP auth service: `/extauth/.../allow...` → 200 with `x-user-id: 42` (and `x-other`,
/// which must not be copied); anything else → 401 with its own body and `www-authenticate`.
pub(crate) async fn auth_server() -> Upstream {
    Upstream::with(
        "auth",
        Arc::new(|s: &Seen| {
            if s.uri.starts_with("/extauth/") && s.uri.contains("/allow") {
                let mut r = Response::new(Full::new(Bytes::new()));
                r.headers_mut()
                    .insert("x-user-id", "42".parse().expect("v"));
                r.headers_mut().insert("x-other", "no".parse().expect("v"));
                return r;
            }
            let mut r = Response::new(Full::new(Bytes::from_static(b"denied by auth")));
            *r.status_mut() = http::StatusCode::UNAUTHORIZED;
            r.headers_mut().insert(
                "www-authenticate",
                "Basic realm=\"auth\"".parse().expect("v"),
            );
            r.headers_mut()
                .insert("x-auth-said", "no".parse().expect("v"));
            r
        }),
    )
    .await
}

pub(crate) fn auth_service(target: &str, extra: &str) -> String {
    format!(
        "{API}\nkind: AuthService\nmetadata: {{ name: auth }}\nspec:\n  auth_service: \"{target}\"\n  path_prefix: /extauth\n{extra}"
    )
}

fn flags_of(p: &Portico, path_prefix: &str) -> Vec<String> {
    p.access_log()
        .iter()
        .filter(|l| {
            l["path"]
                .as_str()
                .is_some_and(|x| x.starts_with(path_prefix))
        })
        .map(|l| l["flags"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn http_auth_allows_denies_and_bypasses() {
    let auth = auth_server().await;
    let app = Upstream::start("app").await;
    let p = Portico::start(&format!(
        "{}---\n{}---\n{}",
        auth_service(
            &auth.addr.to_string(),
            "  timeout_ms: 5000\n  allowed_request_headers: [x-tenant]\n  allowed_authorization_headers: [x-user-id]\n"
        ),
        cfg::mapping("app").prefix("/").service(&app).build(),
        cfg::mapping("open")
            .prefix("/open/")
            .service(&app)
            .set("bypass_auth", true)
            .build(),
    ))
    .await;

    // Allowed: the check carries the allow-list, the upstream gets the answer's header.
    let r = get(
        &p.url("/allow/x?q=1"),
        &[
            ("authorization", "Bearer abc"),
            ("x-tenant", "acme"),
            ("x-secret", "s"),
            ("x-user-id", "spoofed"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let check = auth.last();
    assert_eq!(check.method, "GET");
    assert_eq!(check.uri, "/extauth/allow/x?q=1");
    assert_eq!(check.headers["authorization"], "Bearer abc");
    assert_eq!(check.headers["x-tenant"], "acme");
    assert!(
        check.headers.get("x-secret").is_none(),
        "{:?}",
        check.headers
    );
    assert_eq!(check.headers["x-forwarded-proto"], "http");
    assert!(check.body.is_empty());
    let seen = app.last();
    assert_eq!(seen.headers["x-user-id"], "42");
    assert_eq!(seen.headers.get_all("x-user-id").iter().count(), 1);
    assert!(seen.headers.get("x-other").is_none());
    assert_eq!(
        seen.headers["x-request-id"], check.headers["x-request-id"],
        "auth and upstream see the same request id"
    );

    // Over HTTP/2 (h2c) too: the check carries the :authority as host.
    let r = send(request("GET", &p.url("/allow/h2"), &[], ""), true)
        .await
        .expect("h2 request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(auth.last().uri, "/extauth/allow/h2");
    assert_eq!(
        auth.last().headers["host"].to_str().ok(),
        Some(format!("127.0.0.1:{}", p.port).as_str())
    );
    assert_eq!(app.last().headers["x-user-id"], "42");

    // Denied: the auth service's answer as it is; the upstream never sees the request.
    let before = app.count();
    let r = get(&p.url("/deny/me"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "denied by auth");
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"auth\""));
    assert_eq!(r.header("x-auth-said"), Some("no"));
    assert_eq!(app.count(), before);

    // bypass_auth: the auth service is not asked.
    let checks = auth.count();
    let r = get(&p.url("/open/deny"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(auth.count(), checks);

    p.wait_log_lines(4).await;
    assert_eq!(flags_of(&p, "/deny"), ["UAEX"]);
    assert_eq!(flags_of(&p, "/allow"), ["-", "-"]);
    assert_eq!(
        metric(&p, "portico_auth_checks_total{result=\"allowed\"}").await,
        Some(2.0)
    );
    assert_eq!(
        metric(&p, "portico_auth_checks_total{result=\"denied\"}").await,
        Some(1.0)
    );
}

/// Phase order (reference §9): a CORS preflight is answered before auth; JWT comes before
/// the auth service; local answers (`direct_response`) and rate limits come after it.
#[tokio::test]
async fn phase_order_cors_jwt_auth_then_local_answers_and_rate_limits() {
    let auth = auth_server().await;
    let dir = tempfile::tempdir().expect("dir");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, "{\"keys\": []}").expect("jwks");
    let p = Portico::start(&format!(
        "{}---\n{}---\n{}---\n{}---\n{}",
        auth_service(&auth.addr.to_string(), ""),
        provider("main", &format!("jwks_file: {}", jwks.display()), ""),
        cfg::mapping("api")
            .prefix("/api/")
            .raw("direct_response", "{ status: 200, body: ok }")
            .raw(
                "cors",
                "{ origins: [\"https://app.example.com\"], methods: [GET] }"
            )
            .build(),
        cfg::mapping("tok")
            .prefix("/tok/")
            .raw("direct_response", "{ status: 200, body: ok }")
            .raw("jwt", "{ provider: main }")
            .build(),
        cfg::mapping("lim")
            .prefix("/lim/")
            .raw("direct_response", "{ status: 200, body: ok }")
            .raw(
                "rate_limits",
                "[{ key: [remote_address], requests_per_unit: 1, unit: minute }]"
            )
            .build(),
    ))
    .await;
    // The preflight never reaches auth.
    let pre = request(
        "OPTIONS",
        &p.url("/api/x"),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
        ],
        "",
    );
    let r = send(pre, false).await.expect("preflight");
    assert_eq!(r.status, 204);
    assert_eq!(auth.count(), 0);
    // A direct_response Mapping is checked like any other: denied here.
    let r = get(&p.url("/api/x"), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (401, "denied by auth")
    );
    assert_eq!(auth.count(), 1);
    // JWT first: a missing token never reaches the auth service.
    let r = get(&p.url("/tok/x"), &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (401, "missing\n"));
    assert_eq!(auth.count(), 1);
    // Rate limits after auth: a denied request does not spend the bucket (one a minute).
    assert_eq!(get(&p.url("/lim/deny"), &[]).await.status, 401);
    assert_eq!(get(&p.url("/lim/allow"), &[]).await.status, 200);
    assert_eq!(get(&p.url("/lim/allow"), &[]).await.status, 429);
    assert_eq!(auth.count(), 4);
}

#[tokio::test]
async fn http_auth_failures_give_status_on_error_unless_failure_mode_allow() {
    let app = Upstream::start("app").await;
    // Slow: the check times out.
    let slow = Controlled::start("slow-auth", Duration::from_secs(5)).await;
    let p = Portico::start(&format!(
        "{}---\n{}",
        auth_service(&slow.addr.to_string(), "  timeout_ms: 200\n"),
        cfg::mapping("app").prefix("/").service(&app).build(),
    ))
    .await;
    let r = get(&p.url("/x"), &[]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(app.count(), 0);
    p.wait_log_lines(1).await;
    assert_eq!(flags_of(&p, "/x"), ["UAEX"]);
    assert_eq!(
        metric(&p, "portico_auth_checks_total{result=\"error\"}").await,
        Some(1.0)
    );
    drop(p);

    // Down: nothing listens; status_on_error chooses the status.
    let down = format!("127.0.0.1:{}", free_port());
    let p = Portico::start(&format!(
        "{}---\n{}",
        auth_service(&down, "  status_on_error: { code: 503 }\n"),
        cfg::mapping("app").prefix("/").service(&app).build(),
    ))
    .await;
    let r = get(&p.url("/x"), &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(app.count(), 0);
    drop(p);

    // failure_mode_allow: the request passes, still flagged.
    let p = Portico::start(&format!(
        "{}---\n{}",
        auth_service(&down, "  failure_mode_allow: true\n"),
        cfg::mapping("app").prefix("/").service(&app).build(),
    ))
    .await;
    let r = get(&p.url("/x"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(app.count(), 1);
    p.wait_log_lines(1).await;
    assert_eq!(flags_of(&p, "/x"), ["UAEX"]);
}

#[tokio::test]
async fn include_body_sends_the_body_and_refuses_oversized_ones() {
    let auth = auth_server().await;
    let app = Upstream::start("app").await;
    let start = async |partial: bool| {
        Portico::start(&format!(
            "{}---\n{}",
            auth_service(
                &auth.addr.to_string(),
                &format!("  include_body: {{ max_bytes: 8, allow_partial: {partial} }}\n")
            ),
            cfg::mapping("app").prefix("/").service(&app).build(),
        ))
        .await
    };
    let p = start(false).await;
    let r = post(&p.url("/allow/small"), "hello").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(&auth.last().body[..], b"hello");
    assert_eq!(&app.last().body[..], b"hello");
    // Over max_bytes without allow_partial: 413, the auth service is not asked.
    let checks = auth.count();
    let r = post(&p.url("/allow/big"), "0123456789abcdefghij").await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(auth.count(), checks);
    drop(p);

    // allow_partial: the first max_bytes go to auth, the whole body upstream.
    let p = start(true).await;
    let r = post(&p.url("/allow/big"), "0123456789abcdefghij").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(&auth.last().body[..], b"01234567");
    assert_eq!(&app.last().body[..], b"0123456789abcdefghij");
    p.wait_log_lines(1).await;
    let line = &p.access_log()[0];
    assert_eq!(line["bytes_received"], 20, "{line}");
}

/// Emissary's documented HTTP `AuthService` example (its field names and values; the
/// service address points at the test's server), with a Mapping that bypasses it.
#[tokio::test]
async fn emissary_http_auth_service_example() {
    let auth = auth_server().await;
    let app = Upstream::start("app").await;
    let p = Portico::start(&format!(
        "{EM}\nkind: AuthService\nmetadata:\n  name: authentication\nspec:\n  auth_service: \"{}\"\n  proto: http\n  timeout_ms: 5000\n  path_prefix: \"/extauth\"\n  status_on_error:\n    code: 403\n  failure_mode_allow: false\n  allowed_request_headers:\n  - \"x-example-header\"\n  allowed_authorization_headers:\n  - \"x-qotm-session\"\n  add_auth_headers:\n    x-added-auth: auth-added\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: backend }}\nspec:\n  prefix: /backend/\n  service: {}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: public }}\nspec:\n  prefix: /public/\n  service: {}\n  bypass_auth: true\n",
        auth.addr, app.addr, app.addr
    ))
    .await;
    let r = get(&p.url("/backend/allow"), &[("x-example-header", "ex")]).await;
    // Emissary's default rewrite `/`: the check still sees the client's path.
    assert_eq!(r.status, 200);
    let check = auth.last();
    assert_eq!(check.uri, "/extauth/backend/allow");
    assert_eq!(check.headers["x-example-header"], "ex");
    assert_eq!(check.headers["x-added-auth"], "auth-added");
    let r = get(&p.url("/backend/nope"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "denied by auth");
    let checks = auth.count();
    assert_eq!(get(&p.url("/public/x"), &[]).await.status, 200);
    assert_eq!(auth.count(), checks);
}

// ---------------------------------------------------------------- JWT

/// PyJWT's directory (`PYJWT_DIR`, else target/pyjwt, installed by scripts/fetch-pyjwt.sh).
fn pyjwt_dir() -> std::path::PathBuf {
    match std::env::var_os("PYJWT_DIR") {
        Some(d) => d.into(),
        None => target_dir().join("pyjwt"),
    }
}

/// Keys and tokens made by PyJWT + cryptography: `jwks1.json` (rsa1, ec1) and `jwks2.json`
/// (rsa1, ec1, rsa2) in `dir`, and a JSON object of named tokens.
const MAKE_TOKENS: &str = r#"
import json, sys, time, jwt
from cryptography.hazmat.primitives.asymmetric import rsa, ec
out, iss = sys.argv[1], sys.argv[2]
rsa1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rsa2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec1 = ec.generate_private_key(ec.SECP256R1())
def jwk(key, kid):
    d = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()) if kid.startswith("rsa")
                   else jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    d["kid"] = kid
    return d
json.dump({"keys": [jwk(rsa1, "rsa1"), jwk(ec1, "ec1")]}, open(out + "/jwks1.json", "w"))
json.dump({"keys": [jwk(rsa1, "rsa1"), jwk(ec1, "ec1"), jwk(rsa2, "rsa2")]}, open(out + "/jwks2.json", "w"))
now = int(time.time())
base = {"iss": iss, "aud": "api", "sub": "alice", "exp": now + 600}
def tok(claims, key, alg, kid):
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)
good = tok(base, rsa1, "RS256", "rsa1")
head, body, sig = good.split(".")
other = tok(base, rsa2, "RS256", "rsa1").split(".")[2]
print(json.dumps({
    "rsa": good,
    "ps": tok(base, rsa1, "PS256", "rsa1"),
    "ec": tok(dict(base, sub="bob"), ec1, "ES256", "ec1"),
    "nokid": tok(base, rsa1, "RS256", None),
    "expired": tok(dict(base, exp=now - 3600), rsa1, "RS256", "rsa1"),
    "future": tok(dict(base, nbf=now + 3600), rsa1, "RS256", "rsa1"),
    "issuer": tok(dict(base, iss="https://evil.example"), rsa1, "RS256", "rsa1"),
    "audience": tok(dict(base, aud="other"), rsa1, "RS256", "rsa1"),
    "badsig": head + "." + body + "." + other,
    "hmac": jwt.encode(base, "secret-secret-secret-secret-1234", algorithm="HS256"),
    "none": jwt.encode(base, None, algorithm="none"),
    "malformed": "not-a.jwt",
    "rotated": tok(base, rsa2, "RS256", "rsa2"),
    "stranger": tok(base, rsa2, "RS256", "rsa9"),
    "short": tok(dict(base, exp=now + 8), rsa1, "RS256", "rsa1"),
}))
"#;

pub(crate) struct Tokens {
    dir: tempfile::TempDir,
    t: serde_json::Value,
}

impl Tokens {
    pub(crate) fn make(iss: &str) -> Tokens {
        let dir = tempfile::tempdir().expect("tempdir");
        let py = pyjwt_dir();
        let out = std::process::Command::new("python3")
            .env("PYTHONPATH", &py)
            .args(["-c", MAKE_TOKENS])
            .arg(dir.path())
            .arg(iss)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "PyJWT is needed (run scripts/fetch-pyjwt.sh; looked in {}): {}",
            py.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let t = serde_json::from_slice(&out.stdout).expect("tokens JSON");
        Tokens { dir, t }
    }
    pub(crate) fn get(&self, name: &str) -> String {
        self.t[name].as_str().expect("token").to_string()
    }
    pub(crate) fn jwks(&self, n: u8) -> std::path::PathBuf {
        self.dir.path().join(format!("jwks{n}.json"))
    }
}

pub(crate) const ISS: &str = "https://issuer.test";

pub(crate) fn provider(name: &str, keys: &str, extra: &str) -> String {
    format!(
        "{API}\nkind: JWTProvider\nmetadata: {{ name: {name} }}\nspec:\n  issuer: {ISS}\n  audiences: [api]\n  {keys}\n  forward_claims: {{ sub: x-user-id }}\n{extra}"
    )
}

#[tokio::test]
async fn jwt_every_reason_and_both_key_types() {
    let tk = Tokens::make(ISS);
    let app = Upstream::start("app").await;
    let p = Portico::start(&format!(
        "{}---\n{}---\n{}---\n{}---\n{}",
        provider(
            "main",
            &format!("jwks_file: {}", tk.jwks(1).display()),
            "  from_params: [access_token]\n"
        ),
        cfg::mapping("api")
            .prefix("/api/")
            .service(&app)
            .raw("jwt", "{ provider: main }")
            .build(),
        cfg::mapping("opt")
            .prefix("/opt/")
            .service(&app)
            .raw("jwt", "{ provider: main, required: false }")
            .build(),
        provider(
            "strict",
            &format!("jwks_file: {}", tk.jwks(1).display()),
            "  clock_skew_ms: 0\n"
        ),
        cfg::mapping("strict")
            .prefix("/strict/")
            .service(&app)
            .raw("jwt", "{ provider: strict }")
            .build(),
    ))
    .await;
    let bearer = |t: &str| format!("Bearer {t}");

    for (name, sub) in [
        ("rsa", "alice"),
        ("ps", "alice"),
        ("ec", "bob"),
        ("nokid", "alice"),
    ] {
        let r = get(
            &p.url("/api/x"),
            &[
                ("authorization", &bearer(&tk.get(name))),
                ("x-user-id", "spoofed"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(app.last().headers["x-user-id"], sub, "{name}");
    }
    // From a query parameter.
    let r = get(
        &p.url(&format!("/api/q?access_token={}", tk.get("ec"))),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let before = app.count();
    let r = get(&p.url("/api/x"), &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (401, "missing\n"));
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"portico\"")
    );
    for (name, reason) in [
        ("expired", "expired"),
        ("future", "not yet valid"),
        ("issuer", "wrong issuer"),
        ("audience", "wrong audience"),
        ("badsig", "bad signature"),
        ("hmac", "bad signature"),
        ("none", "bad signature"),
        ("malformed", "malformed"),
        ("stranger", "unknown key"),
    ] {
        let r = get(
            &p.url("/api/x"),
            &[("authorization", &bearer(&tk.get(name)))],
        )
        .await;
        assert_eq!(r.status, 401, "{name}");
        assert_eq!(r.text(), format!("{reason}\n"), "{name}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"portico\", error=\"invalid_token\""),
            "{name}"
        );
    }
    assert_eq!(
        app.count(),
        before,
        "no refused request reached the upstream"
    );

    // required: false: no token passes, a bad one does not.
    assert_eq!(get(&p.url("/opt/x"), &[]).await.status, 200);
    let r = get(
        &p.url("/opt/x"),
        &[("authorization", &bearer(&tk.get("expired")))],
    )
    .await;
    assert_eq!(r.status, 401);

    let lines = p.wait_log_lines(17).await;
    let jwt_flagged = lines
        .iter()
        .filter(|l| l["flags"].as_str() == Some("JWT"))
        .count();
    assert_eq!(jwt_flagged, 11, "{lines:?}");
    assert_eq!(
        metric(&p, "portico_jwt_validations_total{result=\"valid\"}").await,
        Some(5.0)
    );
    assert_eq!(
        metric(&p, "portico_jwt_validations_total{result=\"missing\"}").await,
        Some(2.0)
    );

    // A verified token is cached per worker, but never past its exp (no skew on `strict`).
    let short = bearer(&tk.get("short"));
    let r = get(&p.url("/strict/x"), &[("authorization", &short)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until(
        Duration::from_secs(30),
        "the short token expires",
        async || {
            let r = get(&p.url("/strict/x"), &[("authorization", &short)]).await;
            r.status == 401 && r.text() == "expired\n"
        },
    )
    .await;

    // The file is re-read when it changes: the rotated key is accepted then.
    std::fs::copy(tk.jwks(2), tk.jwks(1)).expect("rotate");
    let rotated = bearer(&tk.get("rotated"));
    wait_until(
        Duration::from_secs(20),
        "the rotated key file is loaded",
        async || {
            get(&p.url("/api/x"), &[("authorization", &rotated)])
                .await
                .status
                == 200
        },
    )
    .await;
}

#[tokio::test]
async fn jwt_key_rotation_through_jwks_uri() {
    let tk = Tokens::make(ISS);
    let doc = Arc::new(Mutex::new(
        std::fs::read_to_string(tk.jwks(1)).expect("jwks1"),
    ));
    let served = doc.clone();
    let jwks = Upstream::with(
        "jwks",
        Arc::new(move |_s: &Seen| {
            let body = served.lock().expect("lock").clone();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert("content-type", "application/json".parse().expect("v"));
            r
        }),
    )
    .await;
    let app = Upstream::start("app").await;
    let p = Portico::start(&format!(
        "{}---\n{}",
        provider(
            "remote",
            &format!("jwks_uri: http://{}/.well-known/jwks.json", jwks.addr),
            "  jwks_refresh_ms: 600000\n"
        ),
        cfg::mapping("api")
            .prefix("/api/")
            .service(&app)
            .raw("jwt", "{ provider: remote }")
            .build(),
    ))
    .await;
    let good = format!("Bearer {}", tk.get("rsa"));
    wait_until(Duration::from_secs(20), "the JWKS is fetched", async || {
        get(&p.url("/api/x"), &[("authorization", &good)])
            .await
            .status
            == 200
    })
    .await;
    assert_eq!(jwks.last().uri, "/.well-known/jwks.json");

    // The issuer rotates: a token with the new kid makes Portico fetch the keys again.
    *doc.lock().expect("lock") = std::fs::read_to_string(tk.jwks(2)).expect("jwks2");
    let rotated = format!("Bearer {}", tk.get("rotated"));
    wait_until(
        Duration::from_secs(20),
        "the rotated key is fetched",
        async || {
            get(&p.url("/api/x"), &[("authorization", &rotated)])
                .await
                .status
                == 200
        },
    )
    .await;
    // Unknown kids do not make Portico fetch again within 30 s.
    let fetches = jwks.count();
    let stranger = format!("Bearer {}", tk.get("stranger"));
    for _ in 0..20 {
        let r = get(&p.url("/api/x"), &[("authorization", &stranger)]).await;
        assert_eq!(r.text(), "unknown key\n");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        jwks.count(),
        fetches,
        "refetches are limited to one per 30 s"
    );
}

// ---------------------------------------------------------------- gRPC AuthService

pub(crate) mod grpc_auth {
    use envoy_types::ext_authz::v3::pb::{
        Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
        HttpResponse, OkHttpResponse,
    };
    use envoy_types::pb::envoy::config::core::v3::{
        HeaderValue, HeaderValueOption, QueryParameter,
    };
    use envoy_types::pb::envoy::r#type::v3::HttpStatus;
    use envoy_types::pb::google::rpc::Status;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    /// Envoy's `Authorization` service, built from the published protos: a request whose
    /// path contains `/allow` is OK (adds `x-user: alice`, replaces `x-tier`, removes
    /// `x-drop`, adds `x-auth-by: ext` to the response; with a `q=` query it removes `q` and
    /// sets `tenant`); any other is denied with 418, `x-why: no` and body `no tea for you`.
    #[derive(Clone, Default)]
    pub struct Server {
        pub seen: Arc<Mutex<Vec<CheckRequest>>>,
    }

    fn header(k: &str, v: &str) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(HeaderValue {
                key: k.into(),
                value: v.into(),
                raw_value: Vec::new(),
            }),
            ..HeaderValueOption::default()
        }
    }

    #[tonic::async_trait]
    impl Authorization for Server {
        async fn check(
            &self,
            request: tonic::Request<CheckRequest>,
        ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
            let req = request.into_inner();
            let path = req
                .attributes
                .as_ref()
                .and_then(|a| a.request.as_ref())
                .and_then(|r| r.http.as_ref())
                .map(|h| h.path.clone())
                .unwrap_or_default();
            self.seen.lock().expect("lock").push(req);
            let resp = if path.contains("/allow") {
                CheckResponse {
                    status: Some(Status::default()),
                    http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                        headers: vec![header("x-user", "alice"), header("x-tier", "gold")],
                        headers_to_remove: vec!["x-drop".into()],
                        response_headers_to_add: vec![header("x-auth-by", "ext")],
                        // A query with `q`: `q` removed, `tenant=t 1` set.
                        query_parameters_to_set: if path.contains("q=") {
                            vec![QueryParameter {
                                key: "tenant".into(),
                                value: "t 1".into(),
                            }]
                        } else {
                            Vec::new()
                        },
                        query_parameters_to_remove: if path.contains("q=") {
                            vec!["q".into()]
                        } else {
                            Vec::new()
                        },
                        ..OkHttpResponse::default()
                    })),
                    ..CheckResponse::default()
                }
            } else {
                CheckResponse {
                    status: Some(Status {
                        code: 7,
                        ..Status::default()
                    }),
                    http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                        status: Some(HttpStatus { code: 418 }),
                        headers: vec![header("x-why", "no")],
                        body: "no tea for you".into(),
                    })),
                    ..CheckResponse::default()
                }
            };
            Ok(tonic::Response::new(resp))
        }
    }

    pub async fn start() -> (SocketAddr, Server) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = Server::default();
        let svc = AuthorizationServer::new(server.clone());
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(svc, incoming)
                .await;
        });
        (addr, server)
    }
}

#[tokio::test]
async fn grpc_auth_service_mutates_headers_and_denies() {
    let (addr, server) = grpc_auth::start().await;
    let app = Upstream::start("app").await;
    let p = Portico::start(&format!(
        "{API}\nkind: AuthService\nmetadata: {{ name: auth }}\nspec: {{ auth_service: \"{addr}\", proto: grpc, timeout_ms: 5000 }}\n---\n{}",
        cfg::mapping("app")
            .prefix("/")
            .service(&app)
            .raw("auth_context_extensions", "{ tier: gold, team: blue }")
            .build(),
    ))
    .await;
    let r = get(
        &p.url("/allow/x?q=1"),
        &[
            ("x-tier", "bronze"),
            ("x-drop", "1"),
            ("x-request-id", "rid-1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-auth-by"), Some("ext"));
    let seen = app.last();
    assert_eq!(seen.uri, "/allow/x?tenant=t+1");
    assert_eq!(seen.headers["x-user"], "alice");
    assert_eq!(seen.headers["x-tier"], "gold");
    assert_eq!(seen.headers.get_all("x-tier").iter().count(), 1);
    assert!(seen.headers.get("x-drop").is_none());
    {
        let checks = server.seen.lock().expect("lock");
        let a = checks[0].attributes.as_ref().expect("attributes");
        let http = a
            .request
            .as_ref()
            .and_then(|r| r.http.as_ref())
            .expect("http");
        assert_eq!(http.method, "GET");
        assert_eq!(http.path, "/allow/x?q=1");
        assert_eq!(http.scheme, "http");
        assert_eq!(http.protocol, "HTTP/1.1");
        assert_eq!(http.id, "rid-1");
        assert!(http.host.starts_with("127.0.0.1:"), "{}", http.host);
        assert_eq!(http.headers["x-tier"], "bronze");
        assert_eq!(a.context_extensions["tier"], "gold");
        assert_eq!(a.context_extensions["team"], "blue");
        assert!(a.source.is_some());
    }

    let before = app.count();
    let r = get(&p.url("/nope"), &[]).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.text(), "no tea for you");
    assert_eq!(r.header("x-why"), Some("no"));
    assert_eq!(app.count(), before);
    p.wait_log_lines(2).await;
    assert_eq!(flags_of(&p, "/nope"), ["UAEX"]);
}

/// Emissary's documented gRPC `AuthService` example (`proto: grpc`, `protocol_version: v3`).
#[tokio::test]
async fn emissary_grpc_auth_service_example() {
    let (addr, server) = grpc_auth::start().await;
    let app = Upstream::start("app").await;
    let p = Portico::start(&format!(
        "{EM}\nkind: AuthService\nmetadata:\n  name: authentication\nspec:\n  auth_service: \"{addr}\"\n  proto: grpc\n  protocol_version: v3\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: backend }}\nspec:\n  prefix: /backend/\n  service: {}\n  auth_context_extensions:\n    route: backend\n",
        app.addr
    ))
    .await;
    let r = get(&p.url("/backend/allow"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(app.last().headers["x-user"], "alice");
    assert_eq!(app.last().uri, "/allow");
    let r = get(&p.url("/backend/other"), &[]).await;
    assert_eq!(r.status, 418);
    let checks = server.seen.lock().expect("lock");
    let ext = &checks[0]
        .attributes
        .as_ref()
        .expect("attrs")
        .context_extensions;
    assert_eq!(ext["route"], "backend");
}
