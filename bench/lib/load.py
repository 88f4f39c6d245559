"""Load generators: wrk and h2load runs pinned to the load core, their output parsed into
req/s, p99 and an error count; TLS handshake rates."""

import os
import re
import signal
import subprocess
import time

from .procs import LOAD_CORE


def load_prefix(pinned=True):
    # scale scenario: the load generator floats over both cores at the lowest priority.
    return ["taskset", "-c", LOAD_CORE] if pinned else ["nice", "-n", "19"]


def run_loads(argvs, timeout):
    """Runs load generators at the same time, each in its own session, and returns their
    outputs in order; on timeout kills those sessions only."""
    procs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for a in argvs]
    outs = []
    try:
        for p in procs:
            try:
                out, _ = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                out, _ = p.communicate()
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return outs


def run_load(argv, timeout):
    """Runs one load generator in its own session; on timeout kills that session only."""
    return run_loads([argv], timeout)[0]


def wrk_argv(port, path, duration, conns=64, scheme="http", pinned=True, threads=1):
    return load_prefix(pinned) + ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency",
                                  f"{scheme}://127.0.0.1:{port}{path}"]


def parse_wrk(out):
    """wrk --latency output -> {rps, p99_ms, errors} (non-2xx/3xx and socket errors)."""
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


def wrk(port, path, duration, conns=64, scheme="http", pinned=True, threads=1):
    return parse_wrk(run_load(wrk_argv(port, path, duration, conns, scheme, pinned, threads), duration + 30))


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


def h2load_argv(port, duration, conns=16, streams=32, extra=()):
    return ["taskset", "-c", LOAD_CORE, "h2load", f"-c{conns}", f"-m{streams}", "-t1", f"-D{duration}",
            *extra, f"http://127.0.0.1:{port}/"]


def h2load_log_p99(log):
    """p99 in ms from an h2load --log-file (start µs, status, µs to the end of the response)."""
    ms = []
    for line in log.read_text().splitlines():
        f = line.split("\t")
        if len(f) >= 3:
            ms.append(int(f[2]) / 1000)
    return pct(ms, 0.99)


def h2load(port, duration, conns=16, streams=32, extra=()):
    r = parse_h2load(run_load(h2load_argv(port, duration, conns, streams, extra), duration + 30))
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


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]

