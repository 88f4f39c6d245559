#!/usr/bin/env python3
"""Reload latency with 10,000 Mappings in 100 files (issue 16): from the file change to the swap.

Starts target/release/portico (or $PORTICO_BIN) on a directory of 100 files of 100 Mappings
each (direct responses, so no origin is needed) plus a probe route, then, `--reloads` times,
rewrites one file atomically (the probe answers a new body) and polls the probe until the new
body answers: that interval is the trigger -> swap time, debounce included (plus at most one
2 ms poll). Also times `POST /reload` (nothing changed). With `--load`, h2load runs against the
last Mapping throughout and the p99 of requests in flight during reloads is compared with the
p99 of steady requests. Prints each figure and the medians; the reload log lines of Portico
(stage timings) are echoed.

    python3 bench/reload_files.py [--reloads 5] [--load]
"""

import argparse
import json
import os
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, method="GET", timeout=5):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def mapping(i):
    return (f"---\napiVersion: portico.dev/v1\nkind: Mapping\nmetadata: {{ name: m{i} }}\n"
            f"spec: {{ prefix: /svc{i}/api/, direct_response: {{ status: 200, body: m{i} }} }}\n")


def write_config(d, port, files, per_file, probe):
    head = (f"apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {{ name: l }}\n"
            f"spec: {{ address: 127.0.0.1, port: {port} }}\n")
    for f in range(files):
        text = head if f == 0 else ""
        text += "".join(mapping(f * per_file + k) for k in range(per_file))
        (d / f"m{f:03}.yaml").write_text(text)
    write_probe(d, probe)


def write_probe(d, probe):
    # The probe lives in the middle file, rewritten whole and atomically (as an editor or a
    # deploy tool does); the hidden temp name is not read as config.
    f = d / "m050.yaml"
    text = f.read_text().split("---\n# probe\n")[0]
    text += (f"---\n# probe\napiVersion: portico.dev/v1\nkind: Mapping\nmetadata: {{ name: probe }}\n"
             f"spec: {{ prefix: /__probe, prefix_exact: true, direct_response: {{ status: 200, body: {probe} }} }}\n")
    tmp = d / ".next.tmp"
    tmp.write_text(text)
    os.replace(tmp, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reloads", type=int, default=5)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--per-file", type=int, default=100)
    ap.add_argument("--load", action="store_true", help="h2load against the last Mapping")
    args = ap.parse_args()
    port, admin = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="portico-reload-"))
    conf = work / "conf"
    conf.mkdir()
    write_config(conf, port, args.files, args.per_file, "gen0")
    log = open(work / "portico.log", "w+")
    p = subprocess.Popen([str(PORTICO), "run", "-c", str(conf), "--workers", "1", "--access-log", "off",
                          "--admin", f"127.0.0.1:{admin}"], stdout=log, stderr=subprocess.STDOUT,
                         env={**os.environ, "PORTICO_LOG": "info,portico_control::watch=debug"})
    load = None
    try:
        for _ in range(300):
            try:
                if get(f"http://127.0.0.1:{port}/__probe")[1] == b"gen0":
                    break
            except Exception:
                time.sleep(0.05)
        last = args.files * args.per_file - 1
        events, file_ms, post_ms = [], [], []
        if args.load:
            dur = int(3 + args.reloads * 2 * 1.5 + 2)
            load = subprocess.Popen(["h2load", "--h1", "-c64", "-m1", "-t1", f"-D{dur}",
                                     f"--log-file={work / 'h2load.log'}",
                                     f"http://127.0.0.1:{port}/svc{last}/api/x"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(2.5)
        for i in range(1, args.reloads + 1):
            t0 = time.time()
            write_probe(conf, f"gen{i}")
            while time.time() - t0 < 30:
                try:
                    if get(f"http://127.0.0.1:{port}/__probe", timeout=2)[1] == f"gen{i}".encode():
                        break
                except Exception:
                    pass
                time.sleep(0.002)
            t1 = time.time()
            file_ms.append((t1 - t0) * 1000)
            events.append((t0, t1))
            time.sleep(1.0)
            t0 = time.time()
            _, body = get(f"http://127.0.0.1:{admin}/reload", method="POST", timeout=30)
            t1 = time.time()
            assert json.loads(body).get("result") == "applied", body
            post_ms.append((t1 - t0) * 1000)
            events.append((t0, t1))
            print(f"reload {i}: file change -> probe answers {file_ms[-1]:6.1f} ms; "
                  f"POST /reload {post_ms[-1]:6.1f} ms", flush=True)
            time.sleep(0.5 if not args.load else 1.0)
        print(f"median of {args.reloads}: file change -> swap {statistics.median(file_ms):.1f} ms, "
              f"POST /reload {statistics.median(post_ms):.1f} ms; load average {os.getloadavg()[0]:.1f}")
        if load:
            load.communicate(timeout=120)
            steady, during = [], []
            for line in (work / "h2load.log").read_text().splitlines():
                f = line.split("\t")
                if len(f) < 3:
                    continue
                start, ms = int(f[0]) / 1e6, int(f[2]) / 1000
                end = start + ms / 1000
                if any(start <= b + 0.05 and end >= a for a, b in events):
                    during.append(ms)
                elif not any(a - 0.2 <= start <= b + 0.3 for a, b in events):
                    steady.append(ms)
            q = lambda v: statistics.quantiles(v, n=100)[98] if len(v) > 100 else max(v, default=0)
            print(f"p99 steady {q(steady):.2f} ms ({len(steady)} req), during reloads {q(during):.2f} ms "
                  f"({len(during)} req): ratio {q(during) / q(steady):.2f}")
    finally:
        p.terminate()
        p.wait()
        if load and load.poll() is None:
            load.kill()
        log.seek(0)
        for line in log:
            if "config applied" in line or "reloading" in line:
                print("  log:", line.strip()[-260:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
