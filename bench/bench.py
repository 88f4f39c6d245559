#!/usr/bin/env python3
"""Portico vs nginx, HAProxy and Envoy: same origin, same core, same load (issue 8).

Method (see bench/README.md): every proxy runs on core 1 (`taskset -c 1`) with one worker;
the origin (nginx) and the load generator share core 0. Each scenario runs every target in
turn, `--rounds` times, alternating the order; the median is reported. Absolute figures
drift ±10% on this noisy machine; the ratios within one run are what to read.

Environment: PORTICO_BIN (default target/release/portico) and ENVOY_BIN (default
bench/.cache/envoy/_bin/envoy) override the binaries under test.
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORTICO = Path(os.environ.get("PORTICO_BIN") or ROOT / "target" / "release" / "portico")
ENVOY = Path(os.environ.get("ENVOY_BIN") or ROOT / "bench" / ".cache" / "envoy" / "_bin" / "envoy")
PROXY_CORE = "1"
LOAD_CORE = "0"
ALL_SCENARIOS = "1,2,3,4,5,6,7,7c,scale,reload"
IDLE_CONNS = 10_000
HAPROXY_IDLE_MAXCONN = 9990


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def raise_nofile():
    """Children inherit it: 10,000 idle connections need ~10,100 fds in each proxy."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kb(pid):
    total = 0
    # nginx/haproxy fork workers: sum the process tree.
    pids = [str(pid)]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += out
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


LIVE = []  # every Proc started, so that an error mid-run still stops them all


class Proc:
    def __init__(self, name, argv, port, h2_port=None, cwd=None, core=PROXY_CORE):
        self.name, self.port, self.h2_port = name, port, h2_port
        pin = ["taskset", "-c", core] if core else []
        self.p = subprocess.Popen(pin + argv, cwd=cwd,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        LIVE.append(self)
        if not wait_port(port, timeout=30):
            self.stop()
            raise RuntimeError(f"{name} did not start on port {port}")

    def rss(self):
        return rss_kb(self.p.pid)

    def stop(self):
        if self.p.poll() is not None:
            return
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(timeout=5)
        except Exception:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=5)
            except Exception:
                pass


def load_prefix(pinned=True):
    # scale scenario: the load generator floats over both cores at the lowest priority.
    return ["taskset", "-c", LOAD_CORE] if pinned else ["nice", "-n", "19"]


def run_load(argv, timeout):
    """Runs a load generator in its own session; on timeout kills that session only."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
    return out


def wrk(port, path, duration, conns=64, scheme="http", pinned=True, threads=1):
    out = run_load(
        load_prefix(pinned) + ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency",
                               f"{scheme}://127.0.0.1:{port}{path}"], duration + 30)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)) if "Requests/sec" in out else 0.0
    p99 = None
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    if m:
        v, unit = float(m.group(1)), m.group(2)
        p99 = v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    if not rps:
        errors += 1
    return {"rps": rps, "p99_ms": p99, "errors": errors}


def parse_h2load(out):
    m = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", out)
    secs = (float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)) if m else 0.0
    rps = float(m.group(3)) if m else 0.0
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    ok, failed = (int(m.group(1)), int(m.group(2))) if m else (0, -1)
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    non2xx = sum(int(x) for x in m.groups()[1:]) if m else 0
    two = int(m.group(1)) if m else 0
    errors = failed + non2xx if failed >= 0 else 1
    m = re.search(r"TLS Protocol: (\S+)", out)
    return {"rps": rps, "secs": secs, "ok2xx": two, "errors": errors, "tls": m.group(1) if m else None}


def h2load(port, duration, conns=16, streams=32, extra=()):
    out = run_load(
        ["taskset", "-c", LOAD_CORE, "h2load", f"-c{conns}", f"-m{streams}", "-t1", f"-D{duration}",
         *extra, f"http://127.0.0.1:{port}/"], duration + 30)
    r = parse_h2load(out)
    return {"rps": r["rps"], "p99_ms": None, "errors": r["errors"] + (0 if r["rps"] else 1)}


def tls_handshakes_h2load(port, duration, batch=100):
    """New TLS handshakes per second: h2load batches of `batch` connections, one HTTP/1.1
    request each (each h2load client starts without a session: no resumption)."""
    done, secs, errors, tls = 0, 0.0, 0, None
    end = time.time() + duration
    while time.time() < end:
        out = run_load(["taskset", "-c", LOAD_CORE, "h2load", "--h1", f"-c{batch}", f"-n{batch}", "-t1",
                        f"https://127.0.0.1:{port}/"], 60)
        r = parse_h2load(out)
        done += r["ok2xx"]
        secs += r["secs"]
        errors += r["errors"]
        tls = tls or r["tls"]
    return {"rps": done / secs if secs else 0.0, "p99_ms": None, "errors": errors, "tls": tls}


def tls_handshakes_stime(port, duration):
    """`openssl s_time -new`: one connection at a time, full handshake each, no request."""
    t0 = time.time()
    out = run_load(["taskset", "-c", LOAD_CORE, "openssl", "s_time", "-new", "-connect",
                    f"127.0.0.1:{port}", "-time", str(duration)], duration + 30)
    wall = time.time() - t0
    m = re.search(r"(\d+) connections in [\d.]+s;", out)
    n = int(m.group(1)) if m else 0
    return {"rps": n / wall if wall else 0.0, "p99_ms": None, "errors": 0 if n else 1}


# ---------------------------------------------------------------- configs

def tls_files(work):
    """One ECDSA P-256 self-signed certificate for every proxy."""
    cert, key, both = work / "cert.pem", work / "key.pem", work / "cert+key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=bench.local",
                        "-addext", "subjectAltName=DNS:bench.local,IP:127.0.0.1"],
                       check=True, capture_output=True)
        both.write_text(cert.read_text() + key.read_text())  # HAProxy wants both in one file
        for f in (cert, key, both):
            os.chmod(f, 0o644)
    return cert, key, both


def origin_conf(port, h2_port, work):
    big = work / "big.bin"
    big.write_bytes(os.urandom(1 << 20))
    os.chmod(big, 0o644)
    return f"""
worker_processes 1;
daemon off;
pid {work}/origin.pid;
error_log /dev/null;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  http2_max_concurrent_streams 1024;
  server {{
    listen 127.0.0.1:{port};
    location = /big {{ alias {big}; }}
    location / {{ return 200 "ok"; }}
  }}
  server {{
    # h2c with prior knowledge only (the h2 upstream of scenario 4)
    listen 127.0.0.1:{h2_port} http2;
    location / {{ return 200 "ok"; }}
  }}
}}
"""


def nginx_conf(port, h2_port, origin, work, kind="h1", workers=1):
    if kind == "h2up":
        server = f"""
  upstream origin_h2 {{ server 127.0.0.1:{origin['h2']}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} http2;
    location / {{ grpc_pass grpc://origin_h2; }}
  }}"""
    else:
        tls = ""
        listen = f"listen 127.0.0.1:{port};\n    listen 127.0.0.1:{h2_port} http2;"
        if kind == "tls":
            cert, key, _ = tls_files(work)
            listen = f"listen 127.0.0.1:{port} ssl http2;"
            # nginx 1.22's default ssl_protocols has no TLSv1.3 (added in 1.23.4): set what the
            # other proxies offer.
            tls = f"ssl_certificate {cert};\n    ssl_certificate_key {key};\n    ssl_protocols TLSv1.2 TLSv1.3;"
        server = f"""
  upstream origin {{ server 127.0.0.1:{origin['h1']}; keepalive 128; }}
  server {{
    {listen}
    {tls}
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }}
  }}"""
    return f"""
worker_processes {workers};
worker_rlimit_nofile 20000;
daemon off;
pid {work}/nginx-{kind}-{workers}.pid;
error_log /dev/null;
events {{ worker_connections {19000 if kind == "idle" else 8192}; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  {server}
}}
"""


def haproxy_conf(port, h2_port, origin, work, kind="h1"):
    # idle: 9,990 is the most the 20,000-fd hard limit here allows (HAProxy wants 2 fds per
    # connection and refuses to start otherwise); scenario 7c opens that many to HAProxy.
    maxconn = HAPROXY_IDLE_MAXCONN if kind == "idle" else 8000
    if kind == "h2up":
        fronts = f"""frontend f2
  bind 127.0.0.1:{port} proto h2
  default_backend b
backend b
  server o 127.0.0.1:{origin['h2']} proto h2
"""
    elif kind == "tls":
        _, _, both = tls_files(work)
        fronts = f"""frontend f1
  bind 127.0.0.1:{port} ssl crt {both} alpn h2,http/1.1
  default_backend b
backend b
  server o 127.0.0.1:{origin['h1']}
"""
    else:
        fronts = f"""frontend f1
  bind 127.0.0.1:{port}
  default_backend b
frontend f2
  bind 127.0.0.1:{h2_port} proto h2
  default_backend b
backend b
  server o 127.0.0.1:{origin['h1']}
"""
    return f"""
global
  nbthread 1
  maxconn {maxconn}{chr(10) + "  ulimit-n 20000" if kind == "idle" else ""}
defaults
  mode http
  maxconn {maxconn}
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
{fronts}"""


def envoy_conf(port, h2_port, origin, work, kind="h1"):
    def listener(name, p, tls=False):
        ts = ""
        if tls:
            cert, key, _ = tls_files(work)
            ts = f"""
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: ["h2", "http/1.1"]
            tls_certificates:
            - certificate_chain: {{ filename: "{cert}" }}
              private_key: {{ filename: "{key}" }}"""
        return f"""
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: origin }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router{ts}
"""
    h2 = ""
    if kind == "h2up":
        listeners = listener("l1", port)
        up = origin["h2"]
        h2 = """
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}"""
    elif kind == "tls":
        listeners = listener("l1", port, tls=True)
        up = origin["h1"]
    else:
        listeners = listener("l1", port) + listener("l2", h2_port)
        up = origin["h1"]
    return f"""
static_resources:
  listeners:{listeners}
  clusters:
  - name: origin
    type: STATIC
    connect_timeout: 1s{h2}
    load_assignment:
      cluster_name: origin
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {up} }} }} }}
"""


def portico_conf(port, origin, mappings=1, kind="h1", work=None, probe=None):
    listener = f"""apiVersion: portico.dev/v1
kind: Listener
metadata: {{ name: bench }}
spec: {{ address: 127.0.0.1, port: {port} }}
"""
    up_port, proto = origin["h1"], ""
    if kind == "h2up":
        up_port, proto = origin["h2"], ", protocol: h2c"
    if kind == "tls":
        cert, key, _ = tls_files(work)
        listener = f"""apiVersion: portico.dev/v1
kind: Listener
metadata: {{ name: bench }}
spec: {{ address: 127.0.0.1, port: {port}, protocol: HTTPS }}
---
apiVersion: portico.dev/v1
kind: Host
metadata: {{ name: any }}
spec:
  hostname: "*"
  tls: {{ cert_chain_file: "{cert}", private_key_file: "{key}" }}
"""
    docs = [listener + f"""---
apiVersion: portico.dev/v1
kind: Upstream
metadata: {{ name: origin }}
spec: {{ endpoints: ["127.0.0.1:{up_port}"]{proto} }}
"""]
    if probe is not None:  # reload scenario: a route whose answer tells which config is applied
        docs.append(f"""apiVersion: portico.dev/v1
kind: Mapping
metadata: {{ name: probe }}
spec: {{ prefix: /__probe, prefix_exact: true, direct_response: {{ status: 200, body: "{probe}" }} }}
""")
    for i in range(mappings - 1):
        docs.append(f"""apiVersion: portico.dev/v1
kind: Mapping
metadata: {{ name: m{i} }}
spec: {{ prefix: /svc{i}/api/, service: origin }}
""")
    docs.append("""apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: last }
spec: { prefix: /, service: origin, timeout_ms: 0 }
""")
    return "---\n".join(docs)


# ---------------------------------------------------------------- targets

def start_portico(work, origin, label, mappings=1, kind="h1", workers=1, core=PROXY_CORE):
    port = free_port()
    cfg = work / f"portico-{label}.yaml"
    cfg.write_text(portico_conf(port, origin, mappings, kind, work))
    p = Proc(label, [str(PORTICO), "run", "-c", str(cfg), "--workers", str(workers), "--access-log", "off",
                     "--admin", f"127.0.0.1:{free_port()}"], port, core=core)
    p.h2_port = port  # h2c by prior knowledge on the same port
    return p


def start_targets(work, origin, names, mappings=1, kind="h1"):
    """kind: h1 (HTTP/1.1 upstream; h1 and h2c listeners), h2up (h2c listener, h2c upstream),
    tls (HTTPS listener, HTTP/1.1 upstream), idle (h1 with connection limits raised for 10k)."""
    targets = {}
    for name in names:
        port, h2_port = free_port(), free_port()
        try:
            if name == "direct":
                if kind in ("h1", "idle"):
                    targets[name] = ("direct", origin["h1"], None, None)
                elif kind == "h2up":
                    targets[name] = ("direct", origin["h2"], origin["h2"], None)
                continue
            if name == "portico":
                p = start_portico(work, origin, f"{kind}-{mappings}", mappings, kind)
            elif name == "nginx":
                cfg = work / f"nginx-{kind}.conf"
                cfg.write_text(nginx_conf(port, h2_port, origin, work, kind))
                p = Proc(name, ["nginx", "-c", str(cfg), "-p", str(work)], port, h2_port)
            elif name == "haproxy":
                cfg = work / f"haproxy-{kind}.cfg"
                cfg.write_text(haproxy_conf(port, h2_port, origin, work, kind))
                p = Proc(name, ["haproxy", "-f", str(cfg)], port, h2_port)
            elif name == "envoy":
                if not ENVOY.exists():
                    continue
                cfg = work / f"envoy-{kind}.yaml"
                cfg.write_text(envoy_conf(port, h2_port, origin, work, kind))
                p = Proc(name, [str(ENVOY), "-c", str(cfg), "--concurrency", "1", "--log-level", "error",
                                "--base-id", str(free_port())], port, h2_port)
            if kind == "h2up":
                p.h2_port = p.port
            targets[name] = (name, p.port, p.h2_port, p)
        except Exception as e:  # a peer that does not start is left out, loudly
            print(f"  {name}: not started: {e}", file=sys.stderr)
    return targets


def stop_all(targets):
    for (_, _, _, p) in targets.values():
        if p:
            p.stop()


def run_scenario(label, targets, rounds, fn):
    results = {n: [] for n in targets}
    order = list(targets)
    for r in range(rounds):
        seq = order if r % 2 == 0 else list(reversed(order))
        for n in seq:
            results[n].append(fn(targets[n]))
    out = {}
    for n, rs in results.items():
        rps = statistics.median(x["rps"] for x in rs)
        p99s = [x["p99_ms"] for x in rs if x["p99_ms"] is not None]
        out[n] = {"rps": rps, "p99_ms": statistics.median(p99s) if p99s else None,
                  "errors": sum(x["errors"] for x in rs), "runs": [round(x["rps"], 1) for x in rs]}
        if rs and rs[0].get("tls"):
            out[n]["tls"] = rs[0]["tls"]
    return out


def table(title, res, unit="req/s", scale=1.0):
    print(f"\n{title}")
    best_peer = max((v["rps"] for k, v in res.items() if k in ("nginx", "haproxy")), default=0)
    envoy = res.get("envoy", {}).get("rps", 0)
    print(f"  {'target':10} {unit:>12} {'p99 ms':>8} {'errors':>7} {'vs best(nginx,haproxy)':>24} {'vs envoy':>9}")
    for n, v in res.items():
        val = v["rps"] * scale
        vs_best = f"{v['rps'] / best_peer:.2f}x" if best_peer else "-"
        vs_env = f"{v['rps'] / envoy:.2f}x" if envoy else "-"
        p99 = f"{v['p99_ms']:.2f}" if v["p99_ms"] is not None else "-"
        print(f"  {n:10} {val:12.0f} {p99:>8} {v['errors']:7d} {vs_best:>24} {vs_env:>9}", flush=True)


# ---------------------------------------------------------------- scenario 7c

def idle_conns_rss(targets, n=IDLE_CONNS):
    """RSS with n idle keep-alive connections open (one request answered on each)."""
    out = {}
    for name, (_, port, _, p) in targets.items():
        if not p:
            continue
        n_t = min(n, HAPROXY_IDLE_MAXCONN) if name == "haproxy" else n
        fresh = p.rss()
        wrk(port, "/", 1)  # warm the pools and allocator first: the delta is the connections only
        time.sleep(0.5)
        warm = p.rss()
        c = subprocess.Popen(["taskset", "-c", LOAD_CORE, sys.executable, str(ROOT / "bench" / "idle_conns.py"),
                              str(port), str(n_t), "--concurrency", "256"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
        samples = []  # (connections answered, of them still open, RSS KB)
        try:
            t0 = time.time()
            opened = 0
            for line in c.stdout:
                f = line.split()
                if f and f[0] == "at":
                    samples.append((int(f[1]), int(f[3]), p.rss()))
                elif f and f[0] == "ready":
                    opened = int(f[1])
                    break
            secs = time.time() - t0
            # Measure at once: Portico closes a keep-alive connection idle for 10 s (its header
            # read timeout), so on a slow machine the first ones may go before the last opens.
            with_conns = p.rss()
            c.stdin.write("check\n")
            c.stdin.flush()
            still = c.stdout.readline().split()
            still_open = int(still[1]) if len(still) == 2 else 0
            c.stdin.write("quit\n")
            c.stdin.flush()
            c.wait(timeout=60)
        finally:
            if c.poll() is None:
                os.killpg(c.pid, signal.SIGKILL)
                c.wait()
        # KB per connection from the largest sample taken before the server closed any.
        good = [s for s in samples if s[1] == s[0]]
        if still_open == opened and opened:
            good.append((opened, still_open, with_conns))
        best = max(good) if good else None
        per = (best[2] - warm) / best[0] if best else None
        out[name] = {"fresh_kb": fresh, "warm_kb": warm, "with_kb": with_conns, "opened": opened,
                     "still_open": still_open, "open_secs": round(secs, 1), "samples": samples,
                     "measured_at_conns": best[0] if best else None, "rss_at_kb": best[2] if best else None,
                     "kb_per_conn": round(per, 2) if per is not None else None}
        print(f"  {name:10} fresh {fresh / 1024:6.1f} MB  warm {warm / 1024:6.1f} MB  "
              f"{best[0] if best else 0} conns open: {(best[2] if best else 0) / 1024:7.1f} MB  "
              f"-> {per if per is not None else float('nan'):.2f} KB/conn  "
              f"(answered {opened}/{n_t} in {secs:.1f}s, {still_open} still open at the end)", flush=True)
    return out


# ---------------------------------------------------------------- reload

def http_get(url, timeout=5, method="GET"):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def reload_scenario(work, origin, reloads=6, mappings=10_000):
    """Portico with `mappings` Mappings under steady h2load --h1 load (64 conns); alternately
    POST /reload (config unchanged) and an atomic rewrite of the config file (the probe route
    answers a new body). Applied = POST answered `applied` / probe answers the new body."""
    port, admin = free_port(), free_port()
    cdir = work / "reload-conf"
    cdir.mkdir(exist_ok=True)
    cfg = cdir / "portico.yaml"
    cfg.write_text(portico_conf(port, origin, mappings, probe="gen0"))
    p = Proc("portico-reload", [str(PORTICO), "run", "-c", str(cdir), "--workers", "1", "--access-log", "off",
                                "--admin", f"127.0.0.1:{admin}"], port)
    log = work / "reload-h2load.log"
    gap = 3.5
    duration = int(2 + reloads * gap + 3)
    events = []
    try:
        load = subprocess.Popen(["taskset", "-c", LOAD_CORE, "h2load", "--h1", "-c64", "-m1", "-t1",
                                 f"-D{duration}", f"--log-file={log}", f"http://127.0.0.1:{port}/"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        time.sleep(3.0)
        for i in range(1, reloads + 1):
            if i % 2 == 1:
                t0 = time.time()
                status, body = http_get(f"http://127.0.0.1:{admin}/reload", timeout=30, method="POST")
                t1 = time.time()
                info = json.loads(body)
                ok = status == 200 and info.get("result") == "applied"
                events.append({"how": "POST /reload", "t0": t0, "t1": t1, "ok": ok,
                               "generation": info.get("generation")})
            else:
                tmp = cdir / ".next.tmp"  # hidden: not read as config
                tmp.write_text(portico_conf(port, origin, mappings, probe=f"gen{i}"))
                t0 = time.time()
                os.replace(tmp, cfg)
                t1, ok = None, False
                while time.time() - t0 < 30:
                    try:
                        _, b = http_get(f"http://127.0.0.1:{port}/__probe", timeout=2)
                        if b.decode() == f"gen{i}":
                            t1, ok = time.time(), True
                            break
                    except Exception:
                        pass
                    time.sleep(0.005)
                events.append({"how": "file rewrite", "t0": t0, "t1": t1 or time.time(), "ok": ok})
            e = events[-1]
            print(f"  reload {i}: {e['how']:13} applied in {(e['t1'] - e['t0']) * 1000:7.0f} ms"
                  f"{'' if e['ok'] else '  (NOT applied)'}", flush=True)
            time.sleep(max(0.0, gap - (time.time() - t0)))
        out, _ = load.communicate(timeout=duration + 30)
        _, gen = http_get(f"http://127.0.0.1:{admin}/config", timeout=10)
        generation = json.loads(gen).get("generation")
    finally:
        p.stop()
        try:
            if load.poll() is None:
                os.killpg(load.pid, signal.SIGKILL)
                load.wait()
        except Exception:
            pass
    summary = parse_h2load(out)
    # Per-request log: start (µs since epoch), status, µs to the end of the response.
    reqs = []
    for line in log.read_text().splitlines():
        f = line.split("\t")
        if len(f) >= 3:
            reqs.append((int(f[0]) / 1e6, int(f[1]), int(f[2]) / 1000))
    t_first = min(r[0] for r in reqs) if reqs else 0
    during, steady = [], []
    for start, status, ms in reqs:
        end = start + ms / 1000
        if start < t_first + 1.5:
            continue  # warm-up
        if any(start <= e["t1"] + 0.2 and end >= e["t0"] for e in events):
            during.append(ms)
        elif not any(e["t0"] - 0.2 <= start <= e["t1"] + 0.5 for e in events):
            steady.append(ms)
    non2xx = sum(1 for r in reqs if not 200 <= r[1] < 300)
    res = {"mappings": mappings, "events": [{"how": e["how"], "applied_ms": round((e["t1"] - e["t0"]) * 1000, 1),
                                               "ok": e["ok"]} for e in events],
           "final_generation": generation, "rps": summary["rps"], "errors": summary["errors"] + non2xx,
           "p99_steady_ms": pct(steady, 0.99), "p99_during_ms": pct(during, 0.99),
           "p50_steady_ms": pct(steady, 0.5), "p50_during_ms": pct(during, 0.5),
           "max_during_ms": max(during) if during else None,
           "n_steady": len(steady), "n_during": len(during)}
    for how in ("POST /reload", "file rewrite"):
        ms = [e["applied_ms"] for e in res["events"] if e["how"] == how]
        if ms:
            res[f"applied_median_ms[{how}]"] = statistics.median(ms)
    return res


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per run, scenarios 1, 2, 3, 6")
    ap.add_argument("--short", type=int, default=3,
                    help="seconds per run, scenarios 4, 5, scale (kept short: whole run < 10 min)")
    ap.add_argument("--scenarios", default=ALL_SCENARIOS,
                    help=f"comma list out of {ALL_SCENARIOS} (5 = 5a handshakes + 5b HTTPS), or 'all'")
    ap.add_argument("--idle-conns", type=int, default=IDLE_CONNS, help="scenario 7c")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "latest.json"))
    args = ap.parse_args()
    want = set((ALL_SCENARIOS if args.scenarios == "all" else args.scenarios).split(","))
    nofile = raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="portico-bench-"))
    # nginx workers run as an unprivileged user: they must be able to read the 1 MiB file.
    os.chmod(work, 0o755)
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip(),
              "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "portico": str(PORTICO),
              "args": vars(args), "scenarios": {}}
    origin = {"h1": free_port(), "h2": free_port()}
    (work / "origin.conf").write_text(origin_conf(origin["h1"], origin["h2"], work))
    origin_p = Proc("origin", ["nginx", "-c", str(work / "origin.conf"), "-p", str(work)], origin["h1"],
                    core=LOAD_CORE)
    wait_port(origin["h2"])
    names = ["direct", "portico", "nginx", "haproxy", "envoy"]
    short = args.short
    try:
        if want & {"1", "3", "6", "7"}:
            targets = start_targets(work, origin, names)
            idle = {n: t[3].rss() for n, t in targets.items() if t[3]}
            if "1" in want:
                res = run_scenario("1", targets, args.rounds, lambda t: wrk(t[1], "/", args.duration))
                table("Scenario 1: HTTP/1.1 keep-alive, 64 connections, tiny response", res)
                report["scenarios"]["1"] = res
            if "6" in want:
                res = run_scenario("6", targets, args.rounds, lambda t: wrk(t[1], "/big", args.duration, conns=16))
                table("Scenario 6: 1 MiB responses, 16 connections (MiB/s)", res, unit="MiB/s", scale=1.0)
                report["scenarios"]["6"] = res
            if "3" in want:
                h2t = {n: t for n, t in targets.items() if n != "direct" and t[2]}
                res = run_scenario("3", h2t, args.rounds, lambda t: h2load(t[2], args.duration))
                table("Scenario 3: h2c downstream (16 conns x 32 streams), HTTP/1.1 upstream", res)
                report["scenarios"]["3"] = res
            if "7" in want:
                after = {n: t[3].rss() for n, t in targets.items() if t[3]}
                print("\nScenario 7: memory (RSS, whole process tree)")
                for n in idle:
                    print(f"  {n:10} idle {idle[n] / 1024:7.1f} MB   after load {after.get(n, 0) / 1024:7.1f} MB")
                report["scenarios"]["7"] = {"idle_kb": idle, "after_kb": after}
            stop_all(targets)
        if "4" in want:
            targets = start_targets(work, origin, names, kind="h2up")
            res = run_scenario("4", targets, args.rounds, lambda t: h2load(t[1], short))
            table("Scenario 4: h2c both sides (16 conns x 32 streams; h2c origin)", res)
            report["scenarios"]["4"] = res
            stop_all(targets)
        if "5" in want or "5a" in want or "5b" in want:
            tls_files(work)
            targets = start_targets(work, origin, names[1:], kind="tls")
            if want & {"5", "5a"}:
                res = run_scenario("5a", targets, args.rounds, lambda t: tls_handshakes_h2load(t[1], short))
                table("Scenario 5a: new TLS handshakes/s, no resumption (h2load --h1, batches of 100 conns, "
                      "1 request each)", res, unit="hs/s")
                report["scenarios"]["5a"] = res
                res = run_scenario("5a-stime", targets, args.rounds, lambda t: tls_handshakes_stime(t[1], short))
                table("Scenario 5a': new TLS handshakes/s, openssl s_time -new (sequential, no request)",
                      res, unit="hs/s")
                report["scenarios"]["5a-stime"] = res
            if want & {"5", "5b"}:
                res = run_scenario("5b", targets, args.rounds,
                                   lambda t: wrk(t[1], "/", short, scheme="https"))
                table("Scenario 5b: HTTPS keep-alive, 64 connections, tiny response", res)
                report["scenarios"]["5b"] = res
            stop_all(targets)
        if "7c" in want:
            print(f"\nScenario 7c: RSS with {args.idle_conns} idle keep-alive connections (fd limit {nofile})")
            targets = start_targets(work, origin, names[1:], kind="idle")
            report["scenarios"]["7c"] = idle_conns_rss(targets, args.idle_conns)
            stop_all(targets)
        if "scale" in want:
            # No pinning: both cores for the proxy; the origin stays on core 0; wrk (2 threads)
            # floats at nice 19. nginx 1 vs 2 workers is the reference for what 2 cores give.
            t = {}
            for w in (1, 2):
                try:
                    t[f"portico-w{w}"] = ("portico", None, None,
                                          start_portico(work, origin, f"scale-{w}", workers=w, core=None))
                    port = free_port()
                    cfg = work / f"nginx-scale-{w}.conf"
                    cfg.write_text(nginx_conf(port, free_port(), origin, work, "h1", workers=w))
                    t[f"nginx-w{w}"] = ("nginx", port, None,
                                        Proc("nginx", ["nginx", "-c", str(cfg), "-p", str(work)], port, core=None))
                except Exception as e:
                    print(f"  scale: not started: {e}", file=sys.stderr)
            t = {k: (v[0], v[1] or v[3].port, None, v[3]) for k, v in t.items()}
            res = run_scenario("scale", t, args.rounds,
                               lambda x: wrk(x[1], "/", short, pinned=False, threads=2))
            print("\nScenario scale: --workers 1 vs 2, no pinning, wrk -t2 -c64 at nice 19")
            for n, v in res.items():
                p99 = f"{v['p99_ms']:.2f}" if v["p99_ms"] is not None else "-"
                print(f"  {n:10} {v['rps']:10.0f} req/s  p99 {p99} ms  errors {v['errors']}")
            for prod in ("portico", "nginx"):
                a, b = res.get(f"{prod}-w1"), res.get(f"{prod}-w2")
                if a and b and a["rps"]:
                    print(f"  {prod}: 2 workers / 1 worker = {b['rps'] / a['rps']:.2f}x")
            report["scenarios"]["scale"] = res
            stop_all(t)
        if "reload" in want:
            print("\nScenario reload: Portico with 10,000 Mappings under load (h2load --h1 -c64)")
            res = reload_scenario(work, origin)
            r = res
            ratio = (r["p99_during_ms"] / r["p99_steady_ms"]) if r["p99_during_ms"] and r["p99_steady_ms"] else None
            r["p99_ratio"] = round(ratio, 2) if ratio else None
            print(f"  {r['rps']:.0f} req/s overall, errors {r['errors']}, final generation {r['final_generation']}")
            print(f"  p99 steady {r['p99_steady_ms']} ms ({r['n_steady']} req), during reload "
                  f"{r['p99_during_ms']} ms ({r['n_during']} req), ratio {r['p99_ratio']}; max during "
                  f"{r['max_during_ms']} ms")
            report["scenarios"]["reload"] = res
        if "2" in want:
            t1 = start_targets(work, origin, ["portico"], mappings=1)
            t2 = start_targets(work, origin, ["portico"], mappings=10_000)
            both = {"portico-1": t1["portico"], "portico-10k": t2["portico"]}
            res = run_scenario("2", both, args.rounds, lambda t: wrk(t[1], "/", args.duration))
            print("\nScenario 2: 10,000 Mappings loaded, request matches the last one")
            base = res["portico-1"]["rps"]
            for n, v in res.items():
                print(f"  {n:12} {v['rps']:10.0f} req/s  {v['rps'] / base:.3f}x of 1 Mapping")
            report["scenarios"]["2"] = res
            stop_all(t1)
            stop_all(t2)
    finally:
        for proc in LIVE:
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)
    report["loadavg_end"] = os.getloadavg()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"\nresults: {args.json}")


if __name__ == "__main__":
    main()
