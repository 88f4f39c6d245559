//! PROXY protocol v1 (text) and v2 (binary) on `HTTPPROXY`/`HTTPSPROXY` listeners
//! (docs/reference.md §2.1), read before TLS.
//!
//! Written by hand rather than with the `ppp` crate: Portico needs only the source address,
//! the parser is ~150 lines against a short, stable spec (haproxy's proxy-protocol.txt), and
//! it reads exactly the header's bytes and hands any bytes that followed it in the same read
//! back to the caller (`leftover`), which a wrapper then replays ([`Prefixed`]).
//!
//! Rules: the header must be the first bytes of the connection and complete within
//! [`HEADER_TIMEOUT`] (else the connection is closed); v1 lines are at most 107 bytes;
//! `PROXY UNKNOWN` (v1) and the `LOCAL` command or an `UNSPEC`/unix family (v2) keep the TCP
//! peer; v2 TLVs are skipped; a v2 header is at most 16 + 65535 bytes by construction.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The whole header must arrive within this time.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_MAX: usize = 107;

/// A parse failure (the connection is closed).
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

/// Parses a header at the start of `buf`. `Ok(None)`: incomplete, read more.
/// `Ok(Some((source, len)))`: the header is `len` bytes; `source` is `None` when the TCP
/// peer is to be used (LOCAL, UNKNOWN, non-IP families).
pub fn parse(buf: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, Invalid> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match first {
        b'P' => parse_v1(buf),
        b'\r' => parse_v2(buf),
        _ => Err(Invalid("not a PROXY protocol header")),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, Invalid> {
    const PREFIX: &[u8] = b"PROXY ";
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return Err(Invalid("not a PROXY protocol header"));
    }
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(Invalid("v1 header longer than 107 bytes"));
        }
        return Ok(None);
    };
    let line =
        std::str::from_utf8(&buf[PREFIX.len()..end]).map_err(|_| Invalid("v1: not ASCII"))?;
    let mut parts = line.split(' ');
    let proto = parts.next().unwrap_or_default();
    if proto == "UNKNOWN" {
        return Ok(Some((None, end + 2)));
    }
    let (src, _dst, sport, _dport) = match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some(a), Some(b), Some(c), Some(d), None) => (a, b, c, d),
        _ => return Err(Invalid("v1: wrong number of fields")),
    };
    let ip: IpAddr = match proto {
        "TCP4" => IpAddr::V4(
            src.parse::<Ipv4Addr>()
                .map_err(|_| Invalid("v1: bad IPv4"))?,
        ),
        "TCP6" => IpAddr::V6(
            src.parse::<Ipv6Addr>()
                .map_err(|_| Invalid("v1: bad IPv6"))?,
        ),
        _ => return Err(Invalid("v1: unknown protocol")),
    };
    let valid_port =
        |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if !valid_port(sport) || !valid_port(_dport) || !valid_addr(proto, _dst) {
        return Err(Invalid("v1: bad port or destination"));
    }
    let port: u16 = sport.parse().map_err(|_| Invalid("v1: bad port"))?;
    Ok(Some((Some(SocketAddr::new(ip, port)), end + 2)))
}

fn valid_addr(proto: &str, s: &str) -> bool {
    match proto {
        "TCP4" => s.parse::<Ipv4Addr>().is_ok(),
        _ => s.parse::<Ipv6Addr>().is_ok(),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, Invalid> {
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] != V2_SIG[..n] {
        return Err(Invalid("not a PROXY protocol header"));
    }
    if buf.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(Invalid("v2: unsupported version"));
    }
    let fam = buf[13];
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let total = 16 + len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[16..total];
    match ver_cmd & 0x0f {
        0 => return Ok(Some((None, total))), // LOCAL: health checks etc.; the TCP peer counts
        1 => {}
        _ => return Err(Invalid("v2: unknown command")),
    }
    let src = match fam >> 4 {
        // AF_INET
        1 => {
            if body.len() < 12 {
                return Err(Invalid("v2: short IPv4 address block"));
            }
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        // AF_INET6
        2 => {
            if body.len() < 36 {
                return Err(Invalid("v2: short IPv6 address block"));
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(a)),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        // AF_UNSPEC, AF_UNIX: no IP source
        0 | 3 => None,
        _ => return Err(Invalid("v2: unknown address family")),
    };
    Ok(Some((src, total)))
}

/// Reads the header from `io`. Returns the source (`None`: keep the TCP peer) and the bytes
/// read past the header. Not time-bounded itself: wrap it in [`HEADER_TIMEOUT`].
pub async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
) -> io::Result<(Option<SocketAddr>, BytesMut)> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        match parse(&buf) {
            Ok(Some((src, len))) => {
                buf.advance(len);
                return Ok((src, buf));
            }
            Ok(None) => {}
            Err(Invalid(m)) => return Err(io::Error::new(io::ErrorKind::InvalidData, m)),
        }
        if buf.len() >= 16 + 65535 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "header too long",
            ));
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// A stream that first replays `prefix` (bytes read past a PROXY header), then reads `inner`.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(inner: S, prefix: BytesMut) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut v = V2_SIG.to_vec();
        v.push(0x20 | cmd);
        v.push(fam);
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn v1_tcp4_and_tcp6_and_unknown() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
        let (src, len) = parse(h).unwrap().unwrap();
        assert_eq!(src, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(&h[len..], b"GET /");
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        let (src, _) = parse(h).unwrap().unwrap();
        assert_eq!(src, Some("[2001:db8::1]:1".parse().unwrap()));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap(), Some((None, 15)));
    }

    #[test]
    fn v1_incomplete_and_invalid() {
        assert_eq!(parse(b"PROX").unwrap(), None);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4").unwrap(), None);
        assert!(parse(b"GET / HTTP/1.1\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n").is_err());
        assert!(parse(&[b'P', b'R', b'O', b'X', b'Y', b' '].repeat(20)).is_err());
    }

    #[test]
    fn v2_proxy_local_and_families() {
        let body = [10, 0, 0, 1, 10, 0, 0, 2, 0x1f, 0x90, 0x01, 0xbb];
        let h = v2(1, 0x11, &body);
        assert_eq!(
            parse(&h).unwrap(),
            Some((Some("10.0.0.1:8080".parse().unwrap()), 28))
        );
        assert_eq!(parse(&h[..20]).unwrap(), None);
        assert_eq!(parse(&v2(0, 0x00, &[])).unwrap(), Some((None, 16)));
        let mut b6 = vec![0u8; 36];
        b6[15] = 1;
        b6[32] = 0;
        b6[33] = 80;
        assert_eq!(
            parse(&v2(1, 0x21, &b6)).unwrap().unwrap().0,
            Some("[::1]:80".parse().unwrap())
        );
        assert!(parse(&v2(1, 0x11, &[1, 2, 3])).is_err());
        assert!(parse(&v2(5, 0x11, &body)).is_err());
        let mut bad = v2(1, 0x11, &body);
        bad[12] = 0x11;
        assert!(parse(&bad).is_err());
    }
}
