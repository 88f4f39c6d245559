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
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from lib.load import h2load, parse_h2load, pct, tls_handshakes_h2load, tls_handshakes_stime, wrk
from lib.peers import HAPROXY_IDLE_MAXCONN, nginx_conf, portico_conf, start_origin, start_portico, \
    start_targets, stop_all, tls_files
from lib.procs import LOAD_CORE, PORTICO, ROOT, Proc, free_port, raise_nofile, stop_live

ALL_SCENARIOS = "1,2,3,4,5,6,7,7c,scale,reload"
IDLE_CONNS = 10_000


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
    origin = start_origin(work)
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
        stop_live()
        shutil.rmtree(work, ignore_errors=True)
    report["loadavg_end"] = os.getloadavg()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"\nresults: {args.json}")


if __name__ == "__main__":
    main()
