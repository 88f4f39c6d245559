#!/usr/bin/env python3
"""What the access log costs (issue 6): request latency at a fixed rate with the access log
written to a file versus turned off.

Two Portico processes (one worker each, both on core 1) serve the same origin; oha drives
each in turn at the same constant rate (latency-corrected, so queueing shows in the
percentiles) from core 0, `--rounds` times, alternating the order. Prints p50/p99/p99.9 per
round, the medians, and the p99 rise. Usage:

    bench/access_log.py [--rate 20000] [--duration 10] [--rounds 3] [--conns 64]

Needs oha (`cargo install oha`) and nginx (the origin); bench/run installs nginx.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the shared helpers: ports, processes, configs)


def oha(port, rate, duration, conns):
    out = subprocess.run(
        ["taskset", "-c", bench.LOAD_CORE, "oha", "--no-tui", "--output-format", "json",
         "-z", f"{duration}s", "-q", str(rate), "-c", str(conns), "--latency-correction",
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True).stdout
    r = json.loads(out)
    pct = r["latencyPercentiles"]
    codes = r.get("statusCodeDistribution", {})
    return {
        "rps": r["summary"]["requestsPerSec"],
        "p50_ms": pct["p50"] * 1000,
        "p99_ms": pct["p99"] * 1000,
        "p999_ms": pct["p99.9"] * 1000,
        "non_200": sum(v for k, v in codes.items() if k != "200"),
        "errors": sum(r.get("errorDistribution", {}).values()),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=64)
    args = ap.parse_args()
    if not shutil.which("oha"):
        sys.exit("oha not found: cargo install oha")
    work = Path(tempfile.mkdtemp(prefix="portico-accesslog-"))
    procs = []
    try:
        origin_port, origin_h2 = bench.free_port(), bench.free_port()
        (work / "origin.conf").write_text(bench.origin_conf(origin_port, origin_h2, work))
        procs.append(bench.Proc("origin", ["nginx", "-c", str(work / "origin.conf"), "-p", str(work)],
                                origin_port, core=bench.LOAD_CORE))
        targets = {}
        for name, log in [("log off", "off"), ("log to file", str(work / "access.log"))]:
            port = bench.free_port()
            cfg = work / f"{name.replace(' ', '-')}.yaml"
            cfg.write_text(bench.portico_conf(port, {"h1": origin_port, "h2": origin_h2}))
            procs.append(bench.Proc(name, [str(bench.PORTICO), "run", "-c", str(cfg), "--workers", "1",
                                           "--access-log", log, "--admin", "127.0.0.1:0"], port))
            targets[name] = port
        res = {n: [] for n in targets}
        names = list(targets)
        for r in range(args.rounds):
            for n in (names if r % 2 == 0 else names[::-1]):
                m = oha(targets[n], args.rate, args.duration, args.conns)
                res[n].append(m)
                print(f"round {r + 1} {n:12} {m['rps']:8.0f} req/s  p50 {m['p50_ms']:.3f} ms  "
                      f"p99 {m['p99_ms']:.3f} ms  p99.9 {m['p999_ms']:.3f} ms  "
                      f"non-200 {m['non_200']}  errors {m['errors']}", flush=True)
        med = {n: {k: statistics.median(x[k] for x in v) for k in ("rps", "p50_ms", "p99_ms", "p999_ms")}
               for n, v in res.items()}
        print(f"\nAccess log cost at {args.rate} req/s, {args.conns} connections, medians of {args.rounds} rounds")
        for n, m in med.items():
            print(f"  {n:12} {m['rps']:8.0f} req/s  p50 {m['p50_ms']:.3f} ms  p99 {m['p99_ms']:.3f} ms  "
                  f"p99.9 {m['p999_ms']:.3f} ms")
        rise = med["log to file"]["p99_ms"] / med["log off"]["p99_ms"] - 1
        lines = sum(1 for _ in open(work / "access.log"))
        print(f"  p99 rise with the log on: {rise * 100:+.1f}%   ({lines} lines written)")
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
