#!/usr/bin/env python3
"""Portico vs nginx, HAProxy and Envoy: same origin, same core, same load (issue 8).

Method (see bench/README.md): every proxy runs on core 1 (`taskset -c 1`) with one worker;
the origin (nginx) and the load generator share core 0. Each scenario runs every target in
turn, `--rounds` times, alternating the order; the median is reported. Absolute figures
drift ±10% on this noisy machine; the ratios within one run are what to read.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORTICO = ROOT / "target" / "release" / "portico"
ENVOY = ROOT / "bench" / ".cache" / "envoy" / "_bin" / "envoy"
PROXY_CORE = "1"
LOAD_CORE = "0"


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


class Proc:
    def __init__(self, name, argv, port, h2_port=None, cwd=None, core=PROXY_CORE):
        self.name, self.port, self.h2_port = name, port, h2_port
        self.p = subprocess.Popen(["taskset", "-c", core] + argv, cwd=cwd,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        if not wait_port(port):
            self.stop()
            raise RuntimeError(f"{name} did not start on port {port}")

    def rss(self):
        return rss_kb(self.p.pid)

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(timeout=5)
        except Exception:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except Exception:
                pass


def wrk(port, path, duration, conns=64):
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency",
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True).stdout
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
    return {"rps": rps, "p99_ms": p99, "errors": errors}


def h2load(port, duration, conns=16, streams=32):
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "h2load", f"-c{conns}", f"-m{streams}", "-t1", f"-D{duration}",
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True).stdout
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    rps = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    errors = int(m.group(2)) if m else -1
    return {"rps": rps, "p99_ms": None, "errors": errors}


# ---------------------------------------------------------------- configs

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
  server {{
    listen 127.0.0.1:{port};
    location = /big {{ alias {big}; }}
    location / {{ return 200 "ok"; }}
  }}
}}
"""


def nginx_conf(port, h2_port, origin, work):
    return f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log /dev/null;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    listen 127.0.0.1:{h2_port} http2;
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }}
  }}
}}
"""


def haproxy_conf(port, h2_port, origin, work):
    return f"""
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend f1
  bind 127.0.0.1:{port}
  default_backend b
frontend f2
  bind 127.0.0.1:{h2_port} proto h2
  default_backend b
backend b
  server o 127.0.0.1:{origin}
"""


def envoy_conf(port, h2_port, origin, work):
    def listener(name, p):
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
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""
    return f"""
static_resources:
  listeners:{listener("l1", port)}{listener("l2", h2_port)}
  clusters:
  - name: origin
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: origin
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {origin} }} }} }}
"""


def portico_conf(port, origin, mappings=1):
    docs = [f"""apiVersion: portico.dev/v1
kind: Listener
metadata: {{ name: bench }}
spec: {{ address: 127.0.0.1, port: {port} }}
---
apiVersion: portico.dev/v1
kind: Upstream
metadata: {{ name: origin }}
spec: {{ endpoints: ["127.0.0.1:{origin}"] }}
"""]
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


# ---------------------------------------------------------------- main

def start_targets(work, origin, names, mappings=1):
    targets = {}
    for name in names:
        port, h2_port = free_port(), free_port()
        try:
            if name == "direct":
                targets[name] = ("direct", origin, None, None)
                continue
            if name == "portico":
                cfg = work / f"portico-{mappings}.yaml"
                cfg.write_text(portico_conf(port, origin, mappings))
                p = Proc(name, [str(PORTICO), "run", "-c", str(cfg), "--workers", "1", "--access-log", "off",
                                "--admin", f"127.0.0.1:{free_port()}"], port)
                p.h2_port = port  # h2c by prior knowledge on the same port
            elif name == "nginx":
                cfg = work / "nginx.conf"
                cfg.write_text(nginx_conf(port, h2_port, origin, work))
                p = Proc(name, ["nginx", "-c", str(cfg), "-p", str(work)], port, h2_port)
            elif name == "haproxy":
                cfg = work / "haproxy.cfg"
                cfg.write_text(haproxy_conf(port, h2_port, origin, work))
                p = Proc(name, ["haproxy", "-f", str(cfg)], port, h2_port)
            elif name == "envoy":
                if not ENVOY.exists():
                    continue
                cfg = work / "envoy.yaml"
                cfg.write_text(envoy_conf(port, h2_port, origin, work))
                p = Proc(name, [str(ENVOY), "-c", str(cfg), "--concurrency", "1", "--log-level", "error",
                                "--base-id", str(free_port())], port, h2_port)
            targets[name] = (name, port, p.h2_port, p)
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
                  "errors": sum(x["errors"] for x in rs)}
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
        print(f"  {n:10} {val:12.0f} {p99:>8} {v['errors']:7d} {vs_best:>24} {vs_env:>9}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--scenarios", default="1,2,3,6,7")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "latest.json"))
    args = ap.parse_args()
    want = set(args.scenarios.split(","))
    work = Path(tempfile.mkdtemp(prefix="portico-bench-"))
    # nginx workers run as an unprivileged user: they must be able to read the 1 MiB file.
    os.chmod(work, 0o755)
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip(),
              "cpus": os.cpu_count(), "scenarios": {}}
    origin_port = free_port()
    (work / "origin.conf").write_text(origin_conf(origin_port, None, work))
    origin = Proc("origin", ["nginx", "-c", str(work / "origin.conf"), "-p", str(work)], origin_port, core=LOAD_CORE)
    names = ["direct", "portico", "nginx", "haproxy", "envoy"]
    try:
        targets = start_targets(work, origin_port, names)
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
        if "2" in want:
            t1 = start_targets(work, origin_port, ["portico"], mappings=1)
            t2 = start_targets(work, origin_port, ["portico"], mappings=10_000)
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
        origin.stop()
        shutil.rmtree(work, ignore_errors=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"\nresults: {args.json}")


if __name__ == "__main__":
    main()
