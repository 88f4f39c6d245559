#!/usr/bin/env python3
"""Same-window duels (issue 16): Portico and a peer on one pinned core at the same time.

Both proxies run on core 1 (`taskset -c 1`, one worker each), each driven by its own load
generator (`wrk -t1 -c64`, or `h2load -c16 -m32`) on core 0 beside the origin, started
together. Whatever else the machine does in that window hits both, so the ratio of their
req/s is what to read (its median is within ~1% of the truth here, where sequential medians
drift ±10%: see the control duels in docs/benchmarks.md). Each round alternates which load
generator starts first; the median of the per-round ratios is the figure. `--control` duels
the peer against a second instance of itself (the ratio should be 1.00) to check the method
on this machine. Each round also reads each proxy's CPU time per request from /proc: when
other work shares core 1 the req/s ratio is pulled toward 1, the CPU ratio is not.

`--instructions` adds user-space instructions per request under callgrind for Portico and
the peer: counters zeroed after a warm-up, dumped after a fixed request count, minus an idle
window of the same length with no requests (timers, wake-ups), divided by the count.

Usage: bench/duel.py --duel nginx|haproxy|envoy|portico [--h2|--grpc|--large|--mappings]
                     [--control] [--rounds 5] [--duration 10] [--instructions [--requests N]]
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
from pathlib import Path

from lib.load import h2load_argv, h2load_log_p99, parse_h2load, parse_wrk, run_load, run_loads, wrk_argv
from lib.peers import PEERS, peer_command, start_origin, start_peer
from lib.procs import LOAD_CORE, PORTICO, ROOT, Proc, cpu_secs, raise_nofile, stop_live

# What each scenario runs. kind: the peer configs of lib/peers.py; port: which listener the
# load goes to ("h1" = .port, "h2" = .h2_port); tool: wrk (HTTP/1.1) or h2load (h2c).
SCENARIOS = {
    "h1": {"title": "HTTP/1.1 keep-alive, 64 connections, tiny response",
           "kind": "h1", "port": "h1", "tool": "wrk", "path": "/", "conns": 64},
    "h2": {"title": "h2c downstream (16 conns x 32 streams) -> HTTP/1.1 origin",
           "kind": "h1", "port": "h2", "tool": "h2load"},
    "grpc": {"title": "gRPC-style h2c on both sides (16 conns x 32 streams; h2c origin)",
             "kind": "h2up", "port": "h2", "tool": "h2load"},
    "large": {"title": "1 MiB responses, 16 connections (req/s = MiB/s)",
              "kind": "h1", "port": "h1", "tool": "wrk", "path": "/big", "conns": 16},
    "mappings": {"title": "10,000 Mappings, the request matching the last one, vs one-Mapping Portico",
                 "kind": "h1", "port": "h1", "tool": "wrk", "path": "/", "conns": 64},
}
WARMUP_SECS = 2
MANY_MAPPINGS = 10_000
IDLE_LIMIT = 0.05  # idle instructions above this share of the loaded window: no per-request figure


def load_argv(scn, port, duration, log=None):
    if scn["tool"] == "wrk":
        return wrk_argv(port, scn["path"], duration, conns=scn["conns"])
    return h2load_argv(port, duration, extra=[f"--log-file={log}"] if log else ())


def parse_load(scn, out, log=None):
    if scn["tool"] == "wrk":
        return parse_wrk(out)
    r = parse_h2load(out)
    return {"rps": r["rps"], "p99_ms": h2load_log_p99(log) if log else None,
            "errors": r["errors"] + (0 if r["rps"] else 1)}


def target_port(scn, proc):
    return proc.port if scn["port"] == "h1" else proc.h2_port


def duel_round(scn, contestants, duration, work, first):
    """One window: a load generator per contestant, started together (contestant `first`
    first). Returns {name: {rps, p99_ms, errors, cpu_us_per_req}, "proxies_core_share": x}:
    CPU per request is each process tree's user + system time over the window divided by the
    requests it answered; the share is the fraction of the window's wall time the two
    proxies were on a CPU together (1.0 = they had the whole proxy core)."""
    names = list(contestants)
    order = names[first:] + names[:first]
    logs = {n: work / f"h2load-{n}.log" for n in names} if scn["tool"] == "h2load" else {}
    argvs = [load_argv(scn, target_port(scn, contestants[n]), duration, logs.get(n)) for n in order]
    cpu0 = {n: cpu_secs(contestants[n].p.pid) for n in names}
    t0 = time.time()
    outs = run_loads(argvs, duration + 60)
    wall = time.time() - t0
    res = {n: parse_load(scn, out, logs.get(n)) for n, out in zip(order, outs)}
    used = 0.0
    for n in names:
        cpu = cpu_secs(contestants[n].p.pid) - cpu0[n]
        used += cpu
        answered = res[n]["rps"] * duration
        res[n]["cpu_us_per_req"] = cpu / answered * 1e6 if answered else None
    res["proxies_core_share"] = used / wall
    return res


def run_duel(scn, contestants, rounds, duration, work):
    """Warm-up window, then `rounds` windows. Ratio = first contestant / second."""
    a, b = list(contestants)
    duel_round(scn, contestants, WARMUP_SECS, work, 0)
    check_alive(contestants, "the warm-up")
    per_round = []
    for r in range(rounds):
        res = duel_round(scn, contestants, duration, work, r % 2)
        check_alive(contestants, f"round {r + 1}")
        res["ratio"] = res[a]["rps"] / res[b]["rps"] if res[b]["rps"] else None
        ca, cb = res[a]["cpu_us_per_req"], res[b]["cpu_us_per_req"]
        res["cpu_ratio"] = cb / ca if ca and cb else None
        res["loadavg"] = os.getloadavg()[0]
        per_round.append(res)
        print_round(r + 1, a, b, res)
    ratios = [x["ratio"] for x in per_round if x["ratio"] is not None]
    cpu_ratios = [x["cpu_ratio"] for x in per_round if x["cpu_ratio"] is not None]
    summary = {"ratio_median": statistics.median(ratios) if ratios else None,
               "ratio_min": min(ratios, default=None), "ratio_max": max(ratios, default=None),
               "cpu_ratio_median": statistics.median(cpu_ratios) if cpu_ratios else None,
               "proxies_core_share_median": statistics.median(x["proxies_core_share"] for x in per_round)}
    for n in (a, b):
        p99s = [x[n]["p99_ms"] for x in per_round if x[n]["p99_ms"] is not None]
        cpus = [x[n]["cpu_us_per_req"] for x in per_round if x[n]["cpu_us_per_req"] is not None]
        summary[n] = {"rps_median": statistics.median(x[n]["rps"] for x in per_round),
                      "cpu_us_per_req_median": statistics.median(cpus) if cpus else None,
                      "p99_ms_median": statistics.median(p99s) if p99s else None,
                      "errors": sum(x[n]["errors"] for x in per_round)}
    return per_round, summary


def check_alive(contestants, when):
    """A contestant that exited makes the window meaningless: stop with how it ended (a
    signal it did not raise itself, such as SIGTERM, means something outside killed it)."""
    for n, p in contestants.items():
        rc = p.p.poll()
        if rc is not None:
            how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
            raise RuntimeError(f"{n} (pid {p.p.pid}) ended during {when}: {how}")


def fmt(v, spec, width):
    return format(v, spec).rjust(width) if v is not None else "-".rjust(width)


def print_header(a, b):
    print(f"  {'round':>5} {a + ' req/s':>18} {'p99 ms':>8} {'cpu us':>7} {b + ' req/s':>18} {'p99 ms':>8} "
          f"{'cpu us':>7} {'ratio':>7} {'cpu rt':>7} {'errors':>7} {'share':>6} {'load':>5}")


def print_round(label, a, b, res):
    errors = res[a]["errors"] + res[b]["errors"]
    print(f"  {label!s:>5} {res[a]['rps']:18.0f} {fmt(res[a]['p99_ms'], '.2f', 8)} "
          f"{fmt(res[a]['cpu_us_per_req'], '.1f', 7)} {res[b]['rps']:18.0f} {fmt(res[b]['p99_ms'], '.2f', 8)} "
          f"{fmt(res[b]['cpu_us_per_req'], '.1f', 7)} {fmt(res.get('ratio'), '.3f', 7)} "
          f"{fmt(res.get('cpu_ratio'), '.3f', 7)} {errors:7d} {fmt(res.get('proxies_core_share'), '.2f', 6)} "
          f"{fmt(res.get('loadavg'), '.1f', 5)}", flush=True)


def print_summary(a, b, s):
    med = {n: {"rps": s[n]["rps_median"], "p99_ms": s[n]["p99_ms_median"], "errors": s[n]["errors"],
               "cpu_us_per_req": s[n]["cpu_us_per_req_median"]} for n in (a, b)}
    med.update(ratio=s["ratio_median"], cpu_ratio=s["cpu_ratio_median"],
               proxies_core_share=s["proxies_core_share_median"])
    print_round("med", a, b, med)
    if s["ratio_median"] is not None:
        print(f"  {a} / {b} = {s['ratio_median']:.3f} req/s (median of rounds; range "
              f"{s['ratio_min']:.3f}-{s['ratio_max']:.3f}); CPU per request {b} / {a} = "
              f"{fmt(s['cpu_ratio_median'], '.3f', 0)}")


# ---------------------------------------------------------------- instructions per request

def callgrind_total(path):
    """Total Ir of a callgrind dump (its `summary:` or `totals:` line)."""
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def callgrind_control(flag, pid):
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True, timeout=120)


def wait_dump(path, timeout=60):
    """callgrind writes a dump asynchronously: poll until its totals line is there."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            return callgrind_total(path)
        except (OSError, RuntimeError):
            time.sleep(0.1)
    raise RuntimeError(f"callgrind dump {path} never completed")


def instructions_per_request(name, scn, work, origin, requests, warmup=2000, mappings=1):
    """User-space instructions per request of `name` under callgrind (all threads)."""
    argv, port, h2_port = peer_command(name, work, origin, scn["kind"], label=f"cg-{name}",
                                       mappings=mappings, single_process=True)
    out = work / f"callgrind.{name}"
    p = Proc(f"callgrind {name}", ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"] + argv,
             port, h2_port, start_timeout=180)
    target = port if scn["port"] == "h1" else h2_port
    # HTTP/1.1 scenarios: h2load --h1 -c64 (a fixed count, which wrk cannot do); h2: -c16 -m32.
    shape = ["--h1", "-c64"] if scn["tool"] == "wrk" else ["-c16", "-m32"]
    path = scn.get("path", "/")

    def load(n):
        o = run_load(["taskset", "-c", LOAD_CORE, "h2load", *shape, "-t1", f"-n{n}",
                      f"http://127.0.0.1:{target}{path}"], 900)
        r = parse_h2load(o)
        if r["ok2xx"] != n:
            raise RuntimeError(f"{name}: {r['ok2xx']} of {n} requests answered 2xx under callgrind")

    try:
        load(warmup)
        callgrind_control("-z", p.p.pid)
        t0 = time.time()
        load(requests)
        busy_secs = time.time() - t0
        callgrind_control("-d", p.p.pid)
        loaded = wait_dump(f"{out}.{p.p.pid}.1")
        callgrind_control("-z", p.p.pid)
        time.sleep(busy_secs)  # the idle baseline: the same wall time with no request
        callgrind_control("-d", p.p.pid)
        idle = wait_dump(f"{out}.{p.p.pid}.2")
    finally:
        p.stop()
    # Background work that costs as much as the valgrind'ed process can run (a periodic task
    # over a large config) fills the idle window as well as the loaded one: the difference is
    # then not the requests' cost, and the figure is withheld.
    valid = idle < IDLE_LIMIT * loaded
    return {"requests": requests, "loaded_ir": loaded, "idle_ir": idle, "secs": round(busy_secs, 1),
            "idle_share": round(idle / loaded, 3) if loaded else None,
            "per_request": round((loaded - idle) / requests) if valid else None}


# ---------------------------------------------------------------- main

def contestants_for(args, scenario):
    """[(label, peer name, mappings)]: the one measured first, then the one it is divided by."""
    peer = args.duel
    if scenario == "mappings" and peer != "portico":
        sys.exit("--mappings duels Portico with 10,000 Mappings against Portico with one: use --duel portico")
    if args.control:
        return [(f"{peer}-b", peer, 1), (peer, peer, 1)]
    if peer == "portico":
        many = MANY_MAPPINGS if scenario == "mappings" else 1
        return [(f"portico-{many}m" if many > 1 else "portico-b", "portico", many), ("portico", "portico", 1)]
    return [("portico", "portico", 1), (peer, peer, 1)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duel", required=True, choices=PEERS, help="the peer Portico duels")
    g = ap.add_mutually_exclusive_group()
    for s in ("h2", "grpc", "large", "mappings"):
        g.add_argument(f"--{s}", dest="scenario", action="store_const", const=s, help=SCENARIOS[s]["title"])
    ap.set_defaults(scenario="h1")
    ap.add_argument("--control", action="store_true", help="the peer against a second instance of itself")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10, help="seconds per round")
    ap.add_argument("--instructions", action="store_true",
                    help="also callgrind instructions/request of both contestants' programs")
    ap.add_argument("--requests", type=int, default=20_000, help="requests counted under callgrind")
    ap.add_argument("--json", help="default: bench/results/duel-<scenario>-<peer>[-control]-<time>.json")
    args = ap.parse_args()
    scn = SCENARIOS[args.scenario]
    (a, a_peer, a_maps), (b, b_peer, b_maps) = contestants_for(args, args.scenario)
    if "portico" in (a_peer, b_peer) and not PORTICO.exists():
        sys.exit(f"no Portico binary at {PORTICO} (cargo build --release -p portico, or PORTICO_BIN=path)")
    raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="portico-duel-"))
    os.chmod(work, 0o755)  # nginx workers run unprivileged: they read the 1 MiB file here
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "scenario": args.scenario,
              "title": scn["title"], "contestants": [a, b], "portico": str(PORTICO),
              "commit": git_commit(), "portico_version": portico_version(), "cpus": os.cpu_count(),
              "loadavg_start": os.getloadavg(),
              "args": vars(args)}
    try:
        origin = start_origin(work)
        procs = {a: start_peer(a_peer, work, origin, scn["kind"], label=a, mappings=a_maps),
                 b: start_peer(b_peer, work, origin, scn["kind"], label=b, mappings=b_maps)}
        print(f"\nDuel: {scn['title']}\n  {a} vs {b}, both on core 1; {args.rounds} rounds of "
              f"{args.duration} s (load average {os.getloadavg()[0]:.1f})")
        print_header(a, b)
        rounds, summary = run_duel(scn, procs, args.rounds, args.duration, work)
        print_summary(a, b, summary)
        report.update(rounds=rounds, summary=summary)
        for p in procs.values():
            p.stop()
        if args.instructions:
            report["instructions"] = {}
            print(f"\nInstructions per request (callgrind, {args.requests} requests after 2,000 warm-up, "
                  f"minus the same time idle)")
            measured = set()
            for label, peer, maps in ((a, a_peer, a_maps), (b, b_peer, b_maps)):
                if peer == "envoy" or (peer, maps) in measured:  # Envoy under valgrind: too slow
                    continue
                measured.add((peer, maps))
                label = label if maps > 1 else peer
                ipr = instructions_per_request(peer, scn, work, origin, args.requests, mappings=maps)
                report["instructions"][label] = ipr
                per = ipr["per_request"]
                print(f"  {label:12} {fmt(per, 'd', 8)} instructions/request  "
                      f"(loaded {ipr['loaded_ir']:,} Ir, idle {ipr['idle_ir']:,} Ir, {ipr['secs']} s)", flush=True)
                if per is None:
                    print(f"  {'':12} not measurable: idle is {ipr['idle_share']:.0%} of loaded; the program "
                          f"works in the background as fast as valgrind lets it", flush=True)
    finally:
        stop_live()
        shutil.rmtree(work, ignore_errors=True)
    report["loadavg_end"] = os.getloadavg()
    name = f"duel-{args.scenario}-{args.duel}{'-control' if args.control else ''}-{stamp}.json"
    out = Path(args.json or ROOT / "bench" / "results" / name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {out}")


def portico_version():
    """`portico version` of the binary under test (it names the commit it was built from)."""
    if not PORTICO.exists():
        return None
    return subprocess.run([str(PORTICO), "version"], capture_output=True, text=True).stdout.strip()


def git_commit():
    """The checkout's commit (the bench scripts), with -dirty for uncommitted changes."""
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return r.stdout.strip() + ("-dirty" if dirty else "")


if __name__ == "__main__":
    main()
