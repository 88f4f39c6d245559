"""HTTP/3 test client for crates/portico/tests/e2e/http3.rs, on the third-party `aioquic`.

Reads one JSON job from argv[1] and prints one JSON line per request, then a summary line:

  {"port": 8443, "sni": "a.example", "ca": "/path/ca.pem",
   "connections": 1,                # parallel connections, each running every request
   "requests": [{"method": "GET", "path": "/", "authority": "a.example",
                 "headers": [["x", "y"]], "raw_headers": false,
                 "body_size": 0, "trailers": [["x-sum", "1"]]}],
   "wait_goaway": false,            # keep reading until the server's GOAWAY (drain tests)
   "hold": 0,                       # seconds to keep the connection open, idle, at the end
   "cert": "/path/client.pem", "key": "/path/client.key"}   # a client certificate (mTLS)

A request with "no_read": true never opens its stream's flow-control window beyond the initial
one (the client reads nothing more of that response; slow-reader tests); the connection's
other streams are unaffected.

Per request: {"status", "headers", "body_len", "body_sha256", "body" (first 300 bytes),
"trailers", "reset" (the stream's reset code, if reset)}. The summary: {"summary": true,
"retries": connections that got a Retry, "goaway": GOAWAY seen, "errors": [...],
"certs": the subject of each connection's server certificate, "terminated": the error code of a
connection the server closed, if any}.
"""

import asyncio
import hashlib
import json
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived, StreamReset


def varint(buf, pos):
    first = buf[pos]
    n = 1 << (first >> 6)
    if pos + n > len(buf):
        return None, pos
    v = first & 0x3F
    for b in buf[pos + 1 : pos + n]:
        v = (v << 8) | b
    return v, pos + n


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiters = {}
        self.results = {}
        self.control = {}  # server uni stream id -> bytes
        self.goaway = asyncio.Event()
        self.terminated = None
        # Streams whose receive window is never raised ("no_read").
        self.frozen = set()
        raise_limits = self._quic._write_stream_limits

        def limits(builder, space, stream):
            if stream.stream_id not in self.frozen:
                raise_limits(builder, space, stream)

        self._quic._write_stream_limits = limits

    def watch_control(self, ev):
        # aioquic drops GOAWAY's payload: read the server's control stream ourselves.
        if ev.stream_id % 4 != 3:
            return
        buf = self.control.get(ev.stream_id, b"") + ev.data
        self.control[ev.stream_id] = buf
        if not buf or buf[0] != 0x00:
            return
        pos = 1
        while pos < len(buf):
            ty, p = varint(buf, pos)
            if ty is None or p >= len(buf):
                return
            ln, p = varint(buf, p)
            if ln is None or p + ln > len(buf):
                return
            if ty == 0x07:
                self.goaway.set()
            pos = p + ln

    def quic_event_received(self, ev):
        if isinstance(ev, ConnectionTerminated):
            self.terminated = ev.error_code
            for sid in list(self.waiters):
                self.finish(sid)
        if isinstance(ev, StreamDataReceived):
            self.watch_control(ev)
        if isinstance(ev, StreamReset) and ev.stream_id in self.results:
            self.results[ev.stream_id]["reset"] = ev.error_code
            self.finish(ev.stream_id)
        for h3ev in self.h3.handle_event(ev):
            sid = getattr(h3ev, "stream_id", None)
            r = self.results.get(sid)
            if r is None:
                continue
            if isinstance(h3ev, HeadersReceived):
                hdrs = [[k.decode(), v.decode()] for k, v in h3ev.headers]
                if r["status"] is None:
                    r["status"] = int(dict(hdrs).get(":status", "0"))
                    r["headers"] = hdrs
                else:
                    r["trailers"] = hdrs
                if h3ev.stream_ended:
                    self.finish(sid)
            elif isinstance(h3ev, DataReceived):
                r["_body"].update(h3ev.data)
                r["body_len"] += len(h3ev.data)
                if len(r["body"]) < 300:
                    r["body"] += h3ev.data[: 300 - len(r["body"])].decode("latin-1")
                if h3ev.stream_ended:
                    self.finish(sid)

    def finish(self, sid):
        w = self.waiters.pop(sid, None)
        if w and not w.done():
            w.set_result(None)

    async def request(self, spec):
        sid = self._quic.get_next_available_stream_id()
        authority = spec.get("authority", "localhost")
        hdrs = [
            (b":method", spec.get("method", "GET").encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", spec.get("path", "/").encode()),
        ]
        for k, v in spec.get("headers", []):
            hdrs.append((k.encode(), v.encode()))
        size = spec.get("body_size", 0)
        trailers = spec.get("trailers")
        if size and not any(k.lower() == "content-length" for k, _ in spec.get("headers", [])) and not trailers:
            hdrs.append((b"content-length", str(size).encode()))
        self.results[sid] = {
            "status": None, "headers": [], "body_len": 0, "body": "", "trailers": [],
            "reset": None, "_body": hashlib.sha256(),
        }
        if spec.get("no_read"):
            self.frozen.add(sid)
        fut = asyncio.get_running_loop().create_future()
        self.waiters[sid] = fut
        no_body = size == 0 and not trailers
        self.h3.send_headers(sid, hdrs, end_stream=no_body)
        self.transmit()
        chunk = b"x" * 65536
        sent = 0
        while sent < size:
            n = min(len(chunk), size - sent)
            sent += n
            last = sent >= size and not trailers
            self.h3.send_data(sid, chunk[:n], end_stream=last)
            self.transmit()
            # aioquic buffers what flow control holds back; let the event loop run.
            await asyncio.sleep(0)
        if trailers:
            self.h3.send_headers(sid, [(k.encode(), v.encode()) for k, v in trailers], end_stream=True)
            self.transmit()
        await fut
        r = self.results.pop(sid)
        r["body_sha256"] = r.pop("_body").hexdigest()
        return r


async def one_connection(job, cfg, out, summary):
    try:
        async with connect(
            "127.0.0.1", job["port"], configuration=cfg, create_protocol=Client,
            wait_connected=True,
        ) as client:
            if client._quic._retry_count:
                summary["retries"] += 1
            cert = getattr(client._quic.tls, "_peer_certificate", None)
            if cert is not None:
                summary["certs"].append(cert.subject.rfc4514_string())
            if job.get("parallel"):
                rs = await asyncio.gather(*(client.request(s) for s in job["requests"]))
                out.extend(rs)
            else:
                for spec in job["requests"]:
                    out.append(await client.request(spec))
            if job.get("hold"):
                # Keep the connection without traffic (idle timeout tests).
                await asyncio.sleep(job["hold"])
            if job.get("wait_goaway"):
                await asyncio.wait_for(client.goaway.wait(), job.get("goaway_timeout", 30))
            summary["goaway"] = summary["goaway"] or client.goaway.is_set()
            if client.terminated is not None:
                summary["terminated"] = client.terminated
    except Exception as e:  # reported, the test decides
        summary["errors"].append(f"{type(e).__name__}: {e}")


async def main():
    job = json.loads(sys.argv[1])
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    cfg.server_name = job.get("sni")
    cfg.idle_timeout = job.get("idle_timeout", 60.0)
    if job.get("ca"):
        cfg.load_verify_locations(job["ca"])
    else:
        cfg.verify_mode = ssl.CERT_NONE
    if job.get("cert"):
        cfg.load_cert_chain(job["cert"], job["key"])
    out = []
    summary = {"summary": True, "retries": 0, "goaway": False, "errors": [], "certs": [], "terminated": None}
    await asyncio.wait_for(
        asyncio.gather(*(one_connection(job, cfg, out, summary) for _ in range(job.get("connections", 1)))),
        job.get("timeout", 120),
    )
    for r in out:
        print(json.dumps(r))
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
