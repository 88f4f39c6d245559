"""Processes of a benchmark run: free ports, port polls, pinned child processes in their own
sessions (stopped by process group, also after an error), RSS of a process tree, and the paths
of the binaries under test (PORTICO_BIN, ENVOY_BIN)."""

import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PORTICO = Path(os.environ.get("PORTICO_BIN") or ROOT / "target" / "release" / "portico")
ENVOY = Path(os.environ.get("ENVOY_BIN") or ROOT / "bench" / ".cache" / "envoy" / "_bin" / "envoy")
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


def raise_nofile():
    """Children inherit it: 10,000 idle connections need ~10,100 fds in each proxy."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def tree_pids(pid):
    """pid and its children (nginx and HAProxy fork workers)."""
    pids = [str(pid)]
    try:
        pids += subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    except OSError:
        pass
    return pids


def rss_kb(pid):
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_secs(pid):
    """User + system CPU seconds used so far by pid and its children, all threads."""
    ticks = 0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def core_ticks(core):
    """(busy, total) jiffies of one CPU since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        f = line.split()
        if f[0] == f"cpu{core}":
            v = [int(x) for x in f[1:]]
            idle = v[3] + v[4]  # idle + iowait
            return sum(v) - idle, sum(v)
    return 0, 0


LIVE = []  # every Proc started, so that an error mid-run still stops them all


class Proc:
    def __init__(self, name, argv, port, h2_port=None, cwd=None, core=PROXY_CORE, start_timeout=30):
        self.name, self.port, self.h2_port = name, port, h2_port
        pin = ["taskset", "-c", core] if core else []
        self.p = subprocess.Popen(pin + argv, cwd=cwd,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        LIVE.append(self)
        if not wait_port(port, timeout=start_timeout):
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


def stop_live():
    """Stops every Proc started so far (the `finally` of a run)."""
    for proc in LIVE:
        proc.stop()
