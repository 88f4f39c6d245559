//! CORS at the edge (reference §2.3.1 `cors`): Portico answers preflights itself and decorates
//! responses to allowed origins. A preflight from an allowed origin gets 204 with the allow
//! headers; from a disallowed origin, 403 without CORS headers; neither reaches the upstream.
//! Responses to allowed origins carry the exact origin (never `*` with credentials) and
//! `vary: origin`.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use portico_config::snapshot::{CorsConf, OriginMatch};

use crate::body::RespBody;

/// The request's `Origin`, if it is allowed by `conf`.
pub fn allowed_origin<'a>(conf: &CorsConf, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let s = origin.to_str().ok()?;
    let lower = s.trim_end_matches('/').to_ascii_lowercase();
    conf.origins
        .iter()
        .any(|m| match m {
            OriginMatch::Any => true,
            OriginMatch::Exact(o) => *o == lower,
            OriginMatch::Glob(r) => r.is_match(s),
        })
        .then_some(origin)
}

/// Is this a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method)?
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The method a preflight asks about (routes are matched with it).
pub fn requested_method(headers: &HeaderMap) -> Option<Method> {
    let v = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(v.as_bytes()).ok()
}

fn join(items: &[String]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    HeaderValue::from_str(&items.join(", ")).ok()
}

/// Portico's answer to a preflight.
pub fn preflight(conf: &CorsConf, headers: &HeaderMap) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::empty());
    let Some(origin) = allowed_origin(conf, headers) else {
        *resp.status_mut() = StatusCode::FORBIDDEN;
        return resp;
    };
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    let methods =
        join(&conf.methods).or_else(|| headers.get(header::ACCESS_CONTROL_REQUEST_METHOD).cloned());
    if let Some(m) = methods {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
    }
    let allow_headers = join(&conf.headers)
        .or_else(|| headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned());
    if let Some(v) = allow_headers {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if let Some(age) = conf.max_age {
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age));
    }
    if conf.credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    h.append(header::VARY, HeaderValue::from_static("origin"));
    resp
}

/// Adds the CORS headers of an actual response for an allowed `origin`.
pub fn decorate(conf: &CorsConf, origin: HeaderValue, h: &mut HeaderMap) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if conf.credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(v) = join(&conf.exposed_headers) {
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
    h.append(header::VARY, HeaderValue::from_static("origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> CorsConf {
        CorsConf {
            origins: vec![
                OriginMatch::Exact("https://app.example.com".into()),
                OriginMatch::Glob(
                    regex::Regex::new("(?i)^https://[^/]*\\.example\\.org$").expect("re"),
                ),
            ],
            methods: vec!["GET".into(), "POST".into()],
            headers: vec!["content-type".into()],
            exposed_headers: vec![],
            credentials: true,
            max_age: Some(600),
        }
    }

    fn req(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).expect("v"));
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        h
    }

    #[test]
    fn preflights() {
        let r = preflight(&conf(), &req("https://app.example.com"));
        assert_eq!(r.status(), 204);
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(r.headers()["access-control-allow-methods"], "GET, POST");
        assert_eq!(r.headers()["access-control-allow-credentials"], "true");
        assert_eq!(r.headers()["access-control-max-age"], "600");
        let r = preflight(&conf(), &req("https://a.b.example.org"));
        assert_eq!(r.status(), 204);
        let r = preflight(&conf(), &req("https://evil.com"));
        assert_eq!(r.status(), 403);
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }
}
