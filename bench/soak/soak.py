#!/usr/bin/env python3
"""Fault-injection soak test for Portico (issue 9).

Runs a release-built Portico in front of two local upstream processes (an aiohttp HTTP/1.1 +
WebSocket origin, and a grpcio h2c origin) and drives steady mixed load through it (HTTP/1.1,
h2c, gRPC unary, WebSocket echo sessions, 256 KiB uploads) while a chaos loop kills and restarts
the upstreams, makes them slow (past the route timeout), makes them reset connections, and
rewrites the config every second (watched file -> reload).

Every request must end in a correct response or a reference §5 local reply (502/503/504
with Portico's plain-text body; gRPC status 14 UNAVAILABLE or 4 DEADLINE_EXCEEDED). A WebSocket
session whose upstream is killed under it may be closed by Portico (counted as `ws_cut`). A
request with no answer at all, or a wrong one, is `lost`/`wrong` and fails the run. Afterwards:
no panic in Portico's stderr, RSS back within 10% of the warmed-up baseline, and no file
descriptor leak. Prints a summary and exits non-zero on failure.

Usage: bench/soak/run [--duration SECS] (default 300). Only loopback addresses are used.
"""

import argparse
import asyncio
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCAL_REPLY_STATUSES = {502, 503, 504}
UPLOAD = os.urandom(256 * 1024)
UPLOAD_SHA = hashlib.sha256(UPLOAD).hexdigest()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ upstream processes


def serve_http(port, mode_file):
    """HTTP/1.1 + WebSocket origin. `mode_file` holds normal|slow|reset."""
    from aiohttp import web, WSMsgType

    def mode():
        try:
            return Path(mode_file).read_text().strip()
        except OSError:
            return "normal"

    async def faults(request):
        m = mode()
        if m == "slow":
            await asyncio.sleep(3)
        elif m == "reset":
            request.transport.abort() if request.transport else None
            raise ConnectionResetError("reset by soak")

    async def hello(request):
        await faults(request)
        return web.Response(text="ok " + request.path)

    async def upload(request):
        await faults(request)
        body = await request.read()
        return web.Response(text=f"{len(body)} {hashlib.sha256(body).hexdigest()}")

    async def ws(request):
        await faults(request)
        w = web.WebSocketResponse()
        await w.prepare(request)
        async for msg in w:
            if msg.type == WSMsgType.TEXT:
                await w.send_str("echo " + msg.data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        return w

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_get("/ws", ws)
    app.router.add_post("/upload", upload)
    app.router.add_route("*", "/{tail:.*}", hello)
    web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True)


def serve_grpc(port, mode_file):
    """gRPC origin (h2c): /soak.Echo/Say echoes the request bytes."""
    import grpc
    from concurrent import futures

    def say(req, ctx):
        try:
            m = Path(mode_file).read_text().strip()
        except OSError:
            m = "normal"
        if m == "slow":
            time.sleep(3)
        elif m == "reset":
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "reset by soak")
        return req

    handler = grpc.method_handlers_generic_handler(
        "soak.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()


class Upstream:
    def __init__(self, kind, work):
        self.kind = kind
        self.port = free_port()
        self.mode_file = work / f"{kind}.mode"
        self.mode_file.write_text("normal")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, f"--serve-{self.kind}", str(self.port), str(self.mode_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} upstream did not start")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def set_mode(self, m):
        self.mode_file.write_text(m)


# ------------------------------------------------------------------ Portico


def config(http_port, grpc_port, listen, gen):
    api = "apiVersion: portico.dev/v1"
    return f"""{api}
kind: Listener
metadata: {{ name: main }}
spec: {{ address: 127.0.0.1, port: {listen} }}
---
{api}
kind: Mapping
metadata: {{ name: ws }}
spec: {{ prefix: /ws, service: 127.0.0.1:{http_port}, allow_upgrade: [websocket], timeout_ms: 2000 }}
---
{api}
kind: Mapping
metadata: {{ name: grpc }}
spec: {{ prefix: /soak.Echo/, service: 127.0.0.1:{grpc_port}, grpc: true, timeout_ms: 1000 }}
---
{api}
kind: Mapping
metadata: {{ name: all }}
spec:
  prefix: /
  service: 127.0.0.1:{http_port}
  timeout_ms: 1000
  add_response_headers: {{ x-soak-generation: "{gen}" }}
"""


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_breakdown(pid, listen, upstream_ports):
    """Portico's fds by kind: listening sockets, accepted (downstream) connections, pooled
    upstream connections, other sockets, and non-socket fds."""
    inodes = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            lport = int(f[1].split(":")[1], 16)
            rport = int(f[2].split(":")[1], 16)
            if f[3] == "0A":
                kind = "listen"
            elif rport in upstream_ports:
                kind = "upstream"
            elif lport == listen:
                kind = "downstream"
            else:
                kind = "other_socket"
            inodes[f[9]] = kind
    out = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out[inodes.get(target[8:-1], "other_socket")] += 1
        else:
            out["non_socket"] += 1
    return dict(out)


# ------------------------------------------------------------------ clients


class Stats:
    def __init__(self):
        self.c = Counter()
        self.examples = {}

    def add(self, kind, outcome, detail=""):
        self.c[(kind, outcome)] += 1
        if outcome in ("lost", "wrong") and (kind, outcome) not in self.examples:
            self.examples[(kind, outcome)] = detail


def is_local_reply(status, body):
    # reference §5: one short line of plain text naming the cause.
    return status in LOCAL_REPLY_STATUSES and body.count("\n") <= 1 and len(body) < 200


async def h1_worker(base, stats, stop):
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        i = 0
        while not stop.is_set():
            i += 1
            path = f"/h1/{i}"
            try:
                async with s.get(base + path) as r:
                    body = await r.text()
                    if r.status == 200 and body == "ok " + path:
                        stats.add("http1", "ok")
                    elif is_local_reply(r.status, body):
                        stats.add("http1", f"local_{r.status}")
                    else:
                        stats.add("http1", "wrong", f"{r.status} {body[:80]!r}")
            except Exception as e:  # noqa: BLE001
                stats.add("http1", "lost", repr(e))


async def upload_worker(base, stats, stop):
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        while not stop.is_set():
            counted = False
            try:
                async with s.post(base + "/upload", data=UPLOAD) as r:
                    body = await r.text()
                    counted = True
                    if r.status == 200 and body == f"{len(UPLOAD)} {UPLOAD_SHA}":
                        stats.add("upload", "ok")
                    elif is_local_reply(r.status, body):
                        stats.add("upload", f"local_{r.status}")
                    else:
                        stats.add("upload", "wrong", f"{r.status} {body[:80]!r}")
            except Exception as e:  # noqa: BLE001
                # aiohttp raises "Can not write request body" on leaving the block when
                # Portico answered early (503 before the body was read) and closed: the answer
                # was read and counted above, so this is not a second request.
                if not counted:
                    stats.add("upload", "lost", repr(e))


async def h2_worker(base, stats, stop):
    import httpx

    async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as c:
        i = 0
        while not stop.is_set():
            i += 1
            path = f"/h2/{i}"
            try:
                # Several streams at once on the one connection.
                rs = await asyncio.gather(
                    *(c.get(base + path) for _ in range(4)), return_exceptions=True
                )
                for r in rs:
                    if isinstance(r, Exception):
                        stats.add("h2", "lost", repr(r))
                    elif r.http_version != "HTTP/2":
                        stats.add("h2", "wrong", r.http_version)
                    elif r.status_code == 200 and r.text == "ok " + path:
                        stats.add("h2", "ok")
                    elif is_local_reply(r.status_code, r.text):
                        stats.add("h2", f"local_{r.status_code}")
                    else:
                        stats.add("h2", "wrong", f"{r.status_code} {r.text[:80]!r}")
            except Exception as e:  # noqa: BLE001
                stats.add("h2", "lost", repr(e))


def grpc_worker(target, stats, stop):
    import grpc

    with grpc.insecure_channel(target) as ch:
        say = ch.unary_unary("/soak.Echo/Say")
        i = 0
        while not stop.is_set():
            i += 1
            msg = f"hello {i}".encode()
            try:
                got = say(msg, timeout=10)
                stats.add("grpc", "ok" if got == msg else "wrong", repr(got))
            except grpc.RpcError as e:
                code = e.code()
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    stats.add("grpc", f"status_{code.value[0]}")
                else:
                    stats.add("grpc", "wrong", f"{code} {e.details()}")


async def ws_worker(base, stats, stop):
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        while not stop.is_set():
            try:
                async with s.ws_connect(base.replace("http", "ws") + "/ws") as w:
                    ok = True
                    for k in range(3):
                        await w.send_str(f"m{k}")
                        msg = await w.receive(timeout=10)
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            ok = False
                            stats.add("websocket", "ws_cut")
                            break
                        if msg.data != f"echo m{k}":
                            ok = False
                            stats.add("websocket", "wrong", msg.data)
                            break
                    if ok:
                        stats.add("websocket", "ok")
            except aiohttp.WSServerHandshakeError as e:
                if e.status in LOCAL_REPLY_STATUSES:
                    stats.add("websocket", f"local_{e.status}")
                else:
                    stats.add("websocket", "wrong", repr(e))
            except (aiohttp.ClientConnectionError, ConnectionResetError) as e:
                # The tunnel's upstream was killed or reset mid-session.
                stats.add("websocket", "ws_cut", repr(e))
            except Exception as e:  # noqa: BLE001
                stats.add("websocket", "lost", repr(e))


# ------------------------------------------------------------------ chaos


async def chaos(ups, cfg_path, http_up, grpc_up, listen, stop, log):
    gen = 0
    faults = Counter()
    next_fault = time.time() + 3
    while not stop.is_set():
        await asyncio.sleep(1)
        gen += 1
        cfg_path.write_text(config(http_up.port, grpc_up.port, listen, gen))
        faults["config_rewrite"] += 1
        if time.time() < next_fault:
            continue
        up = random.choice(ups)
        fault = random.choice(["kill", "slow", "reset"])
        faults[f"{up.kind}_{fault}"] += 1
        log.append(f"{time.strftime('%H:%M:%S')} {up.kind} {fault}")
        if fault == "kill":
            up.kill()
            await asyncio.sleep(random.uniform(0.5, 2.0))
            await asyncio.to_thread(up.start)
        else:
            up.set_mode(fault)
            await asyncio.sleep(random.uniform(1.0, 3.0))
            up.set_mode("normal")
        next_fault = time.time() + random.uniform(1.0, 4.0)
    return faults, gen


# ------------------------------------------------------------------ main


async def warm_up(base, grpc_target):
    """A few requests of every kind, so the baseline includes the pools and buffers."""
    import threading

    stats = Stats()
    stop = asyncio.Event()
    t_stop = threading.Event()
    th = threading.Thread(target=grpc_worker, args=(grpc_target, stats, t_stop))
    th.start()
    tasks = [
        asyncio.create_task(f(base, stats, stop))
        for f in (h1_worker, h2_worker, upload_worker, ws_worker)
    ]
    await asyncio.sleep(3)
    stop.set()
    t_stop.set()
    await asyncio.gather(*tasks)
    th.join()


async def run(args):
    import threading

    work = Path(tempfile.mkdtemp(prefix="portico-soak-"))
    http_up = Upstream("http", work)
    grpc_up = Upstream("grpc", work)
    http_up.start()
    grpc_up.start()
    listen, admin = free_port(), free_port()
    cfg = work / "portico.yaml"
    cfg.write_text(config(http_up.port, grpc_up.port, listen, 0))
    stderr_path = work / "stderr.log"
    portico = subprocess.Popen(
        [args.portico_bin, "run", "-c", str(cfg), "--admin", f"127.0.0.1:{admin}",
         "--access-log", str(work / "access.log")],
        stdout=subprocess.DEVNULL,
        stderr=open(stderr_path, "w"),
    )
    base = f"http://127.0.0.1:{listen}"
    grpc_target = f"127.0.0.1:{listen}"
    try:
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline or portico.poll() is not None:
                    raise RuntimeError("portico did not start: " + stderr_path.read_text())
                time.sleep(0.05)

        await warm_up(base, grpc_target)
        await asyncio.sleep(2)
        base_rss, base_fds = rss_kb(portico.pid), fd_count(portico.pid)
        ups_ports = {http_up.port, grpc_up.port}
        base_kinds = fd_breakdown(portico.pid, listen, ups_ports)

        stats = Stats()
        stop = asyncio.Event()
        t_stop = threading.Event()
        peak = [base_rss]

        async def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kb(portico.pid))
                await asyncio.sleep(0.5)

        log = []
        workers = [asyncio.create_task(h1_worker(base, stats, stop)) for _ in range(4)]
        workers += [asyncio.create_task(h2_worker(base, stats, stop)) for _ in range(2)]
        workers += [asyncio.create_task(upload_worker(base, stats, stop)) for _ in range(2)]
        workers += [asyncio.create_task(ws_worker(base, stats, stop)) for _ in range(2)]
        threads = [
            threading.Thread(target=grpc_worker, args=(grpc_target, stats, t_stop))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        sampler = asyncio.create_task(sample())
        chaos_task = asyncio.create_task(
            chaos([http_up, grpc_up], cfg, http_up, grpc_up, listen, stop, log)
        )
        start = time.time()
        while time.time() - start < args.duration:
            await asyncio.sleep(1)
            if portico.poll() is not None:
                break
        stop.set()
        t_stop.set()
        faults, gens = await chaos_task
        await asyncio.gather(*workers)
        await sampler
        for t in threads:
            t.join()
        http_up.set_mode("normal")
        grpc_up.set_mode("normal")
        elapsed = time.time() - start

        # Let idle connections and buffers go, then measure.
        await asyncio.sleep(args.settle)
        alive = portico.poll() is None
        end_rss = rss_kb(portico.pid) if alive else 0
        end_fds = fd_count(portico.pid) if alive else -1
        end_kinds = fd_breakdown(portico.pid, listen, ups_ports) if alive else {}
        stderr = stderr_path.read_text()
        panics = stderr.count("panicked")
    finally:
        if portico.poll() is None:
            portico.send_signal(signal.SIGTERM)
            try:
                portico.wait(timeout=10)
            except subprocess.TimeoutExpired:
                portico.kill()
        http_up.kill()
        grpc_up.kill()

    total = sum(stats.c.values())
    lost = sum(n for (k, o), n in stats.c.items() if o == "lost")
    wrong = sum(n for (k, o), n in stats.c.items() if o == "wrong")
    by_kind = {}
    for (k, o), n in sorted(stats.c.items()):
        by_kind.setdefault(k, {})[o] = n
    rss_ok = alive and end_rss <= base_rss * 1.10
    # Idle pooled upstream connections (kept for reuse, per worker, bounded) may differ
    # between the two moments; every other kind of fd must be back to its baseline and no
    # downstream connection may be left once the clients are gone.
    def without_pool(k):
        return sum(n for kind, n in k.items() if kind != "upstream")

    fds_ok = (
        alive
        and end_kinds.get("downstream", 0) == 0
        and without_pool(end_kinds) <= without_pool(base_kinds)
    )
    summary = {
        "duration_s": round(elapsed, 1),
        "requests": total,
        "by_kind": by_kind,
        "lost": lost,
        "wrong": wrong,
        "faults": dict(faults),
        "config_rewrites": gens,
        "portico_alive": alive,
        "panics": panics,
        "rss_kb": {"baseline": base_rss, "peak": peak[0], "end": end_rss},
        "fds": {"before": base_fds, "after": end_fds, "before_by_kind": base_kinds,
                "after_by_kind": end_kinds},
        "examples": {f"{k}/{o}": d for (k, o), d in stats.examples.items()},
    }
    print(json.dumps(summary, indent=2))
    print(
        f"\nsoak: {total} requests in {elapsed:.0f} s, lost={lost}, wrong={wrong}, "
        f"panics={panics}, RSS baseline/peak/end = {base_rss}/{peak[0]}/{end_rss} KiB "
        f"({'ok' if rss_ok else 'NOT within 10%'}), fds before/after = {base_fds}/{end_fds} "
        f"({'ok' if fds_ok else 'LEAK?'})"
    )
    passed = alive and lost == 0 and wrong == 0 and panics == 0 and rss_ok and fds_ok
    print("soak: PASS" if passed else "soak: FAIL")
    if args.keep:
        print(f"work dir: {work}")
    return 0 if passed else 1


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--serve-http":
        return serve_http(int(sys.argv[2]), sys.argv[3])
    if len(sys.argv) >= 2 and sys.argv[1] == "--serve-grpc":
        return serve_grpc(int(sys.argv[2]), sys.argv[3])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=300, help="load seconds (default 300)")
    ap.add_argument("--settle", type=float, default=10, help="seconds before the end measure")
    ap.add_argument("--portico-bin", default=str(ROOT / "target/release/portico"))
    ap.add_argument("--keep", action="store_true", help="print the work dir (logs)")
    args = ap.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
