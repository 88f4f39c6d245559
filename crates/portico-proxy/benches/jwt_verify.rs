//! JWT validation cost (reference §9.2; docs/benchmarks.md "Edge authentication"): one
//! uncached RS256 verification with a 2048-bit key, as the request path does it (key chosen
//! by kid, signature, exp/nbf, issuer and audience checked, claims parsed). Target: ≤ 30 µs.
//!
//! The key pair and the token were made once with PyJWT + cryptography (the token expires in
//! 2100); only the public key is here.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderName;
use portico_config::snapshot::{JwksSource, JwtProviderConf, TokenHeader};
use portico_proxy::auth::jwks::KeySet;
use portico_proxy::auth::jwt::Verifier;

const JWKS: &str = r#"{"keys": [{"kty": "RSA", "key_ops": ["verify"], "n": "kzkYuyv1qu2dtCnSIRgMCaaLJKlKb5NyQMc_linrXEyN2Qv3ErrAQO6mWnxv7NwAzGganL-PDzZTTTS6whWH05J1rNZAm1Wdm8TQK8tkLNHIFifYnLbm7qPDbol-wl9VjX1kll337q0fZwbMLIp2PC-pKRxbMdtXh4loYsSOrzdtDD7uSwyeCDaUxB6NU5MKbQvF9AV1QpPLe3O1s7oYr0odyh3sxUxI54JRmnrsdIz00m9hHfqBpaxqvp8tQxFlkzrQv1-IkPByAAlxhqOIkni6GJLkN-mzPnGXnKIBqjz0uoJZF5Gkskx-es7pUVAM71UOm0aSiuMHALR0n385WQ", "e": "AQAB", "kid": "bench"}]}"#;
const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJlbmNoIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2lzc3Vlci5iZW5jaCIsImF1ZCI6ImFwaSIsInN1YiI6ImFsaWNlIiwiZXhwIjo0MTAyNDQ0ODAwfQ.i6MLq1NiFvkdGTxcywa3c96r7eFECDjwvfGZANeA0L4TMaOBropswfBw4Fmb__FG0HriCI3Ohhii1Jibmu0lhVg5x0jWIrnykWKW2d2hYZWKarqUNhzEdQ_3Hs-yJ_BnpkNbX8nGYDmHieTxqVEvmQCTp2CpuK2m2oJsm1muM5dagrrDzYCqp22-U8d8IDlXjj6Nmegzp-ao0aiMF9sVJTz3jVCRvpvfYcdkE3koyaQVeYOx2pqbtwyBomb7qPOU-122OK2NHFovSGWnVsz43MDpJnlG5V33ACXPQUfnx72BemT8IX62TTP_DSFrZCsMcsdgL7UOqO2cZ8pAH9vMvg";

fn bench(c: &mut Criterion) {
    let conf = JwtProviderConf {
        name: "bench".into(),
        issuer: "https://issuer.bench".into(),
        audiences: vec!["api".into()],
        keys: JwksSource::File("jwks.json".into()),
        refresh: Duration::from_secs(300),
        from_headers: vec![TokenHeader {
            name: HeaderName::from_static("authorization"),
            prefix: "Bearer ".into(),
        }],
        from_params: Vec::new(),
        forward_claims: Vec::new(),
        clock_skew: Duration::from_secs(60),
    };
    let keys = KeySet::parse(JWKS.as_bytes()).expect("jwks");
    let verifier = Verifier::new(&conf);
    assert!(verifier.verify(TOKEN, &keys).is_ok());
    c.bench_function("jwt_verify_rs256_2048_uncached", |b| {
        b.iter(|| black_box(verifier.verify(black_box(TOKEN), &keys)))
    });
    // On a shared machine wall time includes waiting for a core; this thread's on-CPU time
    // (`/proc/thread-self/schedstat`, nanoseconds) does not.
    if let Some(before) = on_cpu_ns() {
        const N: u64 = 20_000;
        for _ in 0..N {
            black_box(verifier.verify(black_box(TOKEN), &keys)).ok();
        }
        if let Some(after) = on_cpu_ns() {
            println!(
                "jwt_verify_rs256_2048_uncached: {:.1} µs on-CPU per verification ({N} runs)",
                (after - before) as f64 / N as f64 / 1000.0
            );
        }
    }
}

/// This thread's time on a CPU so far (Linux), in nanoseconds.
fn on_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

criterion_group!(benches, bench);
criterion_main!(benches);
