//! Response compression (`compression` on a Mapping): gzip, brotli or zstd, negotiated from
//! `accept-encoding` with q-values, streamed chunk by chunk (each upstream chunk is
//! compressed and flushed, so the client gets bytes before the upstream finishes).
//!
//! Never for: an upstream that set `content-encoding`, range or partial responses, HEAD,
//! 1xx/204/304, bodies known to be smaller than `min_bytes`, or content types outside the
//! configured patterns (default: text/*, JSON, JavaScript, XML, SVG; never images, video,
//! archives).

use std::io::Write;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use portico_config::snapshot::CompressionConf;

/// A content coding Portico can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Brotli,
    Zstd,
}

impl Coding {
    pub fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// Picks the coding from `accept-encoding`: the highest q-value wins; among equals,
/// br, then zstd, then gzip. `q=0` refuses a coding; `*` stands for any not named.
pub fn negotiate(headers: &HeaderMap) -> Option<Coding> {
    let mut best: Option<(u16, u8, Coding)> = None;
    let mut named = [false; 3];
    let mut star: Option<u16> = None;
    let consider = |q: u16, c: Coding, best: &mut Option<(u16, u8, Coding)>| {
        let rank = match c {
            Coding::Brotli => 3,
            Coding::Zstd => 2,
            Coding::Gzip => 1,
        };
        if q > 0 && best.is_none_or(|(bq, br, _)| (q, rank) > (bq, br)) {
            *best = Some((q, rank, c));
        }
    };
    for v in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(s) = v.to_str() else { continue };
        for item in s.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q: u16 = 1000;
            for p in parts {
                if let Some(val) = p.trim().strip_prefix("q=") {
                    q = (val.trim().parse::<f32>().unwrap_or(0.0).clamp(0.0, 1.0) * 1000.0) as u16;
                }
            }
            let c = match name.as_str() {
                "gzip" | "x-gzip" => Coding::Gzip,
                "br" => Coding::Brotli,
                "zstd" => Coding::Zstd,
                "*" => {
                    star = Some(q);
                    continue;
                }
                _ => continue,
            };
            named[c as usize] = true;
            consider(q, c, &mut best);
        }
    }
    if let Some(q) = star {
        for c in [Coding::Gzip, Coding::Brotli, Coding::Zstd] {
            if !named[c as usize] {
                consider(q, c, &mut best);
            }
        }
    }
    best.map(|(_, _, c)| c)
}

/// The default content types compressed when a Mapping lists none.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-javascript",
    "image/svg+xml",
    "application/*+json",
    "application/*+xml",
];

fn type_matches(pattern: &str, ct: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    if let Some(prefix) = pattern.strip_suffix("/*") {
        return ct.split('/').next() == Some(prefix);
    }
    if let Some((main, rest)) = pattern.split_once("/*+") {
        // application/*+json
        return ct.split('/').next() == Some(main) && ct.ends_with(&format!("+{rest}"));
    }
    pattern == ct
}

/// The request headers compression needs (kept when a route compresses).
pub fn request_headers(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [header::ACCEPT_ENCODING, header::RANGE] {
        for v in h.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

/// Whether this response should be compressed, and with what.
pub fn choose(
    conf: &CompressionConf,
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    resp: &HeaderMap,
) -> Option<Coding> {
    if !conf.enabled
        || method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::PARTIAL_CONTENT
        || req.contains_key(header::RANGE)
        || resp.contains_key(header::CONTENT_ENCODING)
        || resp.contains_key(header::CONTENT_RANGE)
    {
        return None;
    }
    if let Some(len) = resp
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
        && len < conf.min_bytes
    {
        return None;
    }
    let ct = resp.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let listed = if conf.content_types.is_empty() {
        DEFAULT_TYPES.iter().any(|p| type_matches(p, &ct))
    } else {
        conf.content_types.iter().any(|p| type_matches(p, &ct))
    };
    if !listed {
        return None;
    }
    negotiate(req)
}

/// Rewrites the response headers for `coding`.
pub fn mark(h: &mut HeaderMap, coding: Coding) {
    h.remove(header::CONTENT_LENGTH);
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    // A strong validator no longer describes these bytes.
    if let Some(etag) = h.get(header::ETAG).and_then(|v| v.to_str().ok())
        && !etag.starts_with("W/")
        && let Ok(weak) = HeaderValue::from_str(&format!("W/{etag}"))
    {
        h.insert(header::ETAG, weak);
    }
}

/// A streaming encoder: each chunk in, its compressed bytes out (flushed).
pub enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    pub fn new(c: Coding) -> std::io::Result<Encoder> {
        Ok(match c {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(5),
            )),
            // Quality 5, 22-bit window: a good speed/ratio trade-off for on-the-fly use.
            Coding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                5,
                22,
            ))),
            Coding::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3)?),
        })
    }

    /// Compresses `data` and returns what is ready (flushed).
    pub fn push(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => {
                e.write_all(data)?;
                e.flush()?;
                Ok(Bytes::from(std::mem::take(e.get_mut())))
            }
            Encoder::Brotli(e) => {
                e.write_all(data)?;
                e.flush()?;
                Ok(Bytes::from(std::mem::take(e.get_mut())))
            }
            Encoder::Zstd(e) => {
                e.write_all(data)?;
                e.flush()?;
                Ok(Bytes::from(std::mem::take(e.get_mut())))
            }
        }
    }

    /// Ends the stream; returns the last bytes.
    pub fn finish(self) -> std::io::Result<Bytes> {
        Ok(Bytes::from(match self {
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Brotli(e) => e.into_inner(),
            Encoder::Zstd(e) => e.finish()?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ae(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn negotiation_follows_q_values() {
        assert_eq!(negotiate(&ae("gzip, deflate, br")), Some(Coding::Brotli));
        assert_eq!(negotiate(&ae("gzip;q=1.0, br;q=0.5")), Some(Coding::Gzip));
        assert_eq!(negotiate(&ae("zstd")), Some(Coding::Zstd));
        assert_eq!(negotiate(&ae("br;q=0, gzip;q=0")), None);
        assert_eq!(negotiate(&ae("identity")), None);
        assert_eq!(negotiate(&ae("*;q=0.5, br;q=0")), Some(Coding::Zstd));
        assert_eq!(negotiate(&HeaderMap::new()), None);
    }

    #[test]
    fn content_types() {
        assert!(type_matches("text/*", "text/html"));
        assert!(type_matches(
            "application/*+json",
            "application/problem+json"
        ));
        assert!(!type_matches("text/*", "image/png"));
    }

    #[test]
    fn streams_decodable_output() {
        for c in [Coding::Gzip, Coding::Brotli, Coding::Zstd] {
            let mut e = Encoder::new(c).expect("encoder");
            let mut out = Vec::new();
            for _ in 0..10 {
                let chunk = e.push(b"{\"hello\": \"world\"}").expect("push");
                assert!(!chunk.is_empty(), "{c:?} must flush per chunk");
                out.extend_from_slice(&chunk);
            }
            out.extend_from_slice(&e.finish().expect("finish"));
            let plain: Vec<u8> = match c {
                Coding::Gzip => {
                    let mut d = flate2::read::GzDecoder::new(&out[..]);
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut d, &mut v).expect("gunzip");
                    v
                }
                Coding::Brotli => {
                    let mut v = Vec::new();
                    brotli::BrotliDecompress(&mut &out[..], &mut v).expect("unbrotli");
                    v
                }
                Coding::Zstd => zstd::decode_all(&out[..]).expect("unzstd"),
            };
            assert_eq!(plain, b"{\"hello\": \"world\"}".repeat(10));
        }
    }
}
