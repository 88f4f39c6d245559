//! `include_body` (reference §9.1): the request body read before the check, up to
//! `max_bytes`. What was read is handed back so the upstream still gets the whole body (it is
//! sent first, then the rest of the client's stream).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use portico_config::snapshot::IncludeBody;

/// Why the body could not be read for the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProblem {
    /// Over `max_bytes` without `allow_partial` (413).
    TooLarge,
    /// The client's body failed or stalled past the auth timeout.
    Failed,
}

/// What `include_body` read.
#[derive(Debug, Default)]
pub struct ReadBody {
    /// Sent to the auth service (at most `max_bytes`).
    pub check: Bytes,
    /// Everything read from the client, to be sent upstream before the rest.
    pub read: Bytes,
}

/// Reads `body` for the check: until it ends or passes `max_bytes`. `declared` is the
/// request's `Content-Length`, which refuses an oversized body without reading it.
pub async fn read<B>(
    conf: &IncludeBody,
    body: &mut B,
    declared: Option<u64>,
    timeout: Duration,
) -> Result<ReadBody, BodyProblem>
where
    B: Body<Data = Bytes> + Unpin,
{
    if !conf.allow_partial && declared.is_some_and(|n| n > conf.max_bytes) {
        return Err(BodyProblem::TooLarge);
    }
    if body.is_end_stream() {
        return Ok(ReadBody::default());
    }
    let max = usize::try_from(conf.max_bytes).unwrap_or(usize::MAX);
    let mut buf = BytesMut::new();
    let reading = async {
        while buf.len() <= max {
            match body.frame().await {
                None => break,
                Some(Err(_)) => return Err(BodyProblem::Failed),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, reading).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(BodyProblem::Failed),
    }
    let read = buf.freeze();
    if read.len() > max && !conf.allow_partial {
        return Err(BodyProblem::TooLarge);
    }
    Ok(ReadBody {
        check: read.slice(..read.len().min(max)),
        read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn conf(max: u64, partial: bool) -> IncludeBody {
        IncludeBody {
            max_bytes: max,
            allow_partial: partial,
        }
    }

    #[tokio::test]
    async fn fits_partial_and_too_large() {
        let t = Duration::from_secs(1);
        let mut b = Full::new(Bytes::from_static(b"hello"));
        let r = read(&conf(10, false), &mut b, Some(5), t)
            .await
            .expect("fits");
        assert_eq!((&r.check[..], &r.read[..]), (&b"hello"[..], &b"hello"[..]));

        let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"abcd"))),
            Ok(http_body::Frame::data(Bytes::from_static(b"efgh"))),
            Ok(http_body::Frame::data(Bytes::from_static(b"ijkl"))),
        ];
        let mut s = StreamBody::new(futures_util::stream::iter(chunks));
        let r = read(&conf(6, true), &mut s, None, t)
            .await
            .expect("partial");
        assert_eq!(&r.check[..], b"abcdef");
        assert_eq!(&r.read[..], b"abcdefgh");

        let mut b = Full::new(Bytes::from_static(b"0123456789"));
        assert_eq!(
            read(&conf(4, false), &mut b, Some(10), t).await.err(),
            Some(BodyProblem::TooLarge)
        );
        let mut b = Full::new(Bytes::from_static(b"0123456789"));
        assert_eq!(
            read(&conf(4, false), &mut b, None, t).await.err(),
            Some(BodyProblem::TooLarge)
        );
    }
}
