//! The chunked decoder and encoder: validation, limits, trailers, and split invariance (the
//! same body fed whole, split at every point, one byte at a time, and in random pieces).

use bytes::BytesMut;
use portico_h1::{
    BodyDecoder, ChunkedDecoder, Framing, H1Error, Limits, Step, encode_chunk_header,
    encode_last_chunk,
};

/// What a decoder made of a body: data, trailer lines (with the forbidden flag), bytes
/// consumed when it ended, or the error; fed as `parts`.
#[derive(Debug, PartialEq, Eq)]
struct Out {
    data: Vec<u8>,
    trailers: Vec<(Vec<u8>, Vec<u8>, bool)>,
    end: Option<usize>,
    error: Option<H1Error>,
}

fn feed(parts: &[&[u8]], framing: Framing, limits: &Limits) -> Out {
    let mut d = BodyDecoder::new(framing, limits);
    let mut out = Out {
        data: vec![],
        trailers: vec![],
        end: None,
        error: None,
    };
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            match d.decode(&buf) {
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
                Ok((n, step)) => {
                    match step {
                        Step::Data(r) => out.data.extend_from_slice(&buf[r]),
                        Step::Trailer(t) => out.trailers.push((
                            buf[t.name].to_vec(),
                            buf[t.value].to_vec(),
                            t.forbidden,
                        )),
                        Step::End => {
                            out.end = Some(consumed + n);
                            return out;
                        }
                        Step::NeedMore => {
                            let _ = buf.split_to(n);
                            consumed += n;
                            break;
                        }
                    }
                    let _ = buf.split_to(n);
                    consumed += n;
                }
            }
        }
    }
    out
}

fn every_way(input: &[u8], framing: Framing, limits: &Limits) -> Out {
    let whole = feed(&[input], framing, limits);
    for i in 0..=input.len() {
        assert_eq!(
            feed(&[&input[..i], &input[i..]], framing, limits),
            whole,
            "split at {i}"
        );
    }
    let ones: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(feed(&ones, framing, limits), whole, "one byte at a time");
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..50 {
        let mut parts = vec![];
        let mut rest = input;
        while !rest.is_empty() {
            let n = rng.usize(1..=rest.len().min(9));
            parts.push(&rest[..n]);
            rest = &rest[n..];
        }
        assert_eq!(feed(&parts, framing, limits), whole, "random split");
    }
    whole
}

fn chunked(input: &[u8]) -> Out {
    every_way(input, Framing::Chunked, &Limits::default())
}

#[test]
fn decodes_data_and_trailers() {
    let input = b"5\r\nhello\r\n1;ext=1;q=\"a\\\"b\"\r\n \r\n0\r\nX-Sum: 12 \r\nContent-Length: 5\r\n\r\nNEXT";
    let out = chunked(input);
    assert_eq!(out.error, None);
    assert_eq!(out.data, b"hello ");
    assert_eq!(
        out.trailers,
        vec![
            (b"X-Sum".to_vec(), b"12".to_vec(), false),
            (b"Content-Length".to_vec(), b"5".to_vec(), true)
        ]
    );
    assert_eq!(out.end, Some(input.len() - 4));
}

#[test]
fn chunk_size_lines() {
    let ok: &[&[u8]] = &[
        b"5\r\nhello\r\n0\r\n\r\n",
        b"05\r\nhello\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"5;a\r\nhello\r\n0\r\n\r\n",
        b"5 ; a = b\r\nhello\r\n0\r\n\r\n",
        b"5;a=\"\"\r\nhello\r\n0\r\n\r\n",
        b"5;a;b=c\r\nhello\r\n0;x\r\n\r\n",
        b"00000000000005\r\nhello\r\n000\r\n\r\n",
        b"A\r\n0123456789\r\n0\r\n\r\n",
    ];
    for input in ok {
        let out = chunked(input);
        assert_eq!(out.error, None, "{:?}", String::from_utf8_lossy(input));
        assert_eq!(out.end, Some(input.len()));
    }
    let bad: &[(&[u8], H1Error)] = &[
        (b"\r\n", H1Error::BadChunk),
        (b"g\r\n", H1Error::BadChunk),
        (b"0x5\r\n", H1Error::BadChunk),
        (b"+5\r\n", H1Error::BadChunk),
        (b" 5\r\n", H1Error::BadChunk),
        (b"5_0\r\n", H1Error::BadChunk),
        (b"1000000000000000\r\n", H1Error::BadChunk),
        (b"5;\r\n", H1Error::BadChunk),
        (b"5;=a\r\n", H1Error::BadChunk),
        (b"5;a=\r\n", H1Error::BadChunk),
        (b"5;a=\"x\r\n", H1Error::BadChunk),
        (b"5;a b\r\n", H1Error::BadChunk),
        (b"5;a=b c\r\n", H1Error::BadChunk),
        (b"5\n", H1Error::BareLineFeed),
        (b"5\r5\r\n", H1Error::BareCarriageReturn),
        (b"5\r\nhello\n", H1Error::BareLineFeed),
        (b"5\r\nhello\rx", H1Error::BareCarriageReturn),
        (b"5\r\nhelloX\r\n", H1Error::BadChunk),
        (b"0\r\nX: 1\n", H1Error::BareLineFeed),
        (b"0\r\n\tX: 1\r\n", H1Error::ObsFold),
        (b"0\r\nX 1\r\n", H1Error::BadTrailer),
        (b"0\r\nX : 1\r\n", H1Error::BadTrailer),
        (b"0\r\n: 1\r\n", H1Error::BadTrailer),
        (b"0\r\nX: a\x00b\r\n", H1Error::BadTrailer),
        (b"0\r\nX: a\x7fb\r\n", H1Error::BadTrailer),
    ];
    for (input, want) in bad {
        assert_eq!(
            chunked(input).error,
            Some(*want),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn line_and_trailer_limits() {
    let limits = Limits {
        max_chunk_line: 8,
        max_trailers: 16,
        ..Limits::default()
    };
    // "5;a=bc\r\n" is 8 bytes: fits; one more byte does not.
    let out = every_way(b"5;a=bc\r\nhello\r\n0\r\n\r\n", Framing::Chunked, &limits);
    assert_eq!(out.error, None);
    let out = every_way(b"5;a=bcd\r\nhello\r\n0\r\n\r\n", Framing::Chunked, &limits);
    assert_eq!(out.error, Some(H1Error::BadChunk));
    // A line that never ends is refused at the limit, not held.
    let out = every_way(b"5;aaaaaaaaaaaaaaaa", Framing::Chunked, &limits);
    assert_eq!(out.error, Some(H1Error::BadChunk));
    // Trailers: 14 bytes of lines plus the final CRLF = 16 fit; 17 do not.
    let out = every_way(b"0\r\nA: 1\r\nB: 223\r\n\r\n", Framing::Chunked, &limits);
    assert_eq!(out.error, None);
    let out = every_way(b"0\r\nA: 1\r\nB: 2234\r\n\r\n", Framing::Chunked, &limits);
    assert_eq!(out.error, Some(H1Error::TrailersTooLarge));
}

#[test]
fn length_and_close_bodies() {
    let out = every_way(b"hello world", Framing::Length(5), &Limits::default());
    assert_eq!((out.data.as_slice(), out.end), (&b"hello"[..], Some(5)));
    let out = every_way(b"abc", Framing::None, &Limits::default());
    assert_eq!((out.data.as_slice(), out.end), (&b""[..], Some(0)));
    let out = every_way(b"abc", Framing::CloseDelimited, &Limits::default());
    assert_eq!((out.data.as_slice(), out.end), (&b"abc"[..], None));
    assert!(
        BodyDecoder::new(Framing::CloseDelimited, &Limits::default())
            .finish()
            .is_ok()
    );
    assert_eq!(
        BodyDecoder::new(Framing::Length(1), &Limits::default()).finish(),
        Err(H1Error::IncompleteBody)
    );
    assert_eq!(
        BodyDecoder::new(Framing::Chunked, &Limits::default()).finish(),
        Err(H1Error::IncompleteBody)
    );
    assert!(
        BodyDecoder::new(Framing::None, &Limits::default())
            .finish()
            .is_ok()
    );
}

#[test]
fn encoder_round_trips() {
    let mut out = BytesMut::new();
    encode_chunk_header(255, &mut out);
    encode_chunk_header(1, &mut out);
    encode_chunk_header(u64::MAX >> 4, &mut out);
    assert_eq!(&out[..], b"ff\r\n1\r\nfffffffffffffff\r\n");
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..50 {
        let mut enc = BytesMut::new();
        let mut want = Vec::new();
        for _ in 0..rng.usize(0..6) {
            let chunk: Vec<u8> = (0..rng.usize(1..300)).map(|_| rng.u8(..)).collect();
            encode_chunk_header(chunk.len() as u64, &mut enc);
            enc.extend_from_slice(&chunk);
            enc.extend_from_slice(b"\r\n");
            want.extend_from_slice(&chunk);
        }
        encode_last_chunk(&[(b"grpc-status", b"0")], &mut enc);
        let out = feed(&[&enc], Framing::Chunked, &Limits::default());
        assert_eq!(out.data, want);
        assert_eq!(out.end, Some(enc.len()));
        assert_eq!(
            out.trailers,
            vec![(b"grpc-status".to_vec(), b"0".to_vec(), false)]
        );
    }
}

#[test]
fn decoder_state_is_reported() {
    let mut d = ChunkedDecoder::new(&Limits::default());
    assert!(!d.is_done());
    assert_eq!(d.decode(b"0\r\n\r\n"), Ok((5, Step::End)));
    assert!(d.is_done());
    assert_eq!(d.decode(b"more"), Ok((0, Step::End)));
}
