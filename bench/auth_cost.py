#!/usr/bin/env python3
"""What an allowing HTTP auth service costs (issue 17, docs/benchmarks.md "Edge
authentication"): request latency through Portico with and without an `AuthService`.

Two Portico processes (one worker each, on core 1) serve the same origin nginx; the one with
auth asks an `AuthService` on loopback (a second nginx server block answering 200 to
everything, on the load core) before each request. wrk drives each in turn with the same
closed-loop load (`--conns` connections) from core 0, `--rounds` times, alternating the order.
Prints p50/p99 and req/s per round, the medians, and the differences. Usage:

    bench/auth_cost.py [--duration 5] [--rounds 3] [--conns 16]

Needs wrk and nginx (bench/run installs both) and a release build (PORTICO_BIN overrides).
"""

import argparse
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib.load import run_load, wrk_argv  # noqa: E402
from lib.peers import portico_argv, portico_conf, start_origin  # noqa: E402
from lib.procs import Proc, free_port, stop_live  # noqa: E402


def latency(out, q):
    m = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)", out)
    if not m:
        return None
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def measure(port, duration, conns):
    out = run_load(wrk_argv(port, "/", duration, conns), duration + 30)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": latency(out, 50),
        "p99_ms": latency(out, 99),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=16)
    args = ap.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (bench/run installs it)")
    work = Path(tempfile.mkdtemp(prefix="portico-authcost-"))
    try:
        origin = start_origin(work)
        targets = {}
        for name in ("no auth", "http auth"):
            port = free_port()
            conf = portico_conf(port, origin)
            if name == "http auth":
                conf += f"""---
apiVersion: portico.dev/v1
kind: AuthService
metadata: {{ name: auth }}
spec: {{ auth_service: "127.0.0.1:{origin['h1']}", path_prefix: /extauth }}
"""
            cfg = work / f"{name.replace(' ', '-')}.yaml"
            cfg.write_text(conf)
            Proc(name, portico_argv(cfg), port)
            targets[name] = port
        res = {n: [] for n in targets}
        names = list(targets)
        for r in range(args.rounds):
            for n in (names if r % 2 == 0 else names[::-1]):
                m = measure(targets[n], args.duration, args.conns)
                res[n].append(m)
                print(f"round {r + 1} {n:10} {m['rps']:8.0f} req/s  p50 {m['p50_ms']:.3f} ms  "
                      f"p99 {m['p99_ms']:.3f} ms  non-2xx {m['non_2xx']}", flush=True)
        med = {n: {k: statistics.median(x[k] for x in v) for k in ("rps", "p50_ms", "p99_ms")}
               for n, v in res.items()}
        print(f"\nAllowing HTTP AuthService on loopback, wrk -c{args.conns}, medians of {args.rounds} rounds")
        for n, m in med.items():
            print(f"  {n:10} {m['rps']:8.0f} req/s  p50 {m['p50_ms']:.3f} ms  p99 {m['p99_ms']:.3f} ms")
        a, b = med["no auth"], med["http auth"]
        print(f"  with auth: p50 {b['p50_ms'] - a['p50_ms']:+.3f} ms, p99 {b['p99_ms'] - a['p99_ms']:+.3f} ms, "
              f"req/s x{b['rps'] / a['rps']:.2f}")
    finally:
        stop_live()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
