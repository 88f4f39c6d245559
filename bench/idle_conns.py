#!/usr/bin/env python3
"""Open N HTTP/1.1 keep-alive connections, send one request on each, keep them open (issue 8,
scenario 7c).

Usage: idle_conns.py PORT N [--concurrency C]

Prints `at K open M` each time K (a multiple of --step, default 1000) connections have had
their answer, M of them not yet closed by the server; then `ready OK FAILED` once every connection has had its answer (at most C requests are in
flight at once, so the proxies keep their upstream pools small). Then it reads commands on
stdin: `check` prints `open K` (connections the server has not closed), `quit` (or EOF) closes
everything and exits. The caller measures the proxy's RSS between `ready` and `quit`.
"""

import asyncio
import resource
import sys


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, n + 256)) if hard != resource.RLIM_INFINITY else n + 256
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass


async def one(port, sem, conns, step):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 15)
            w.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 15)
            status = head.split(b" ", 2)[1]
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await asyncio.wait_for(r.readexactly(length), 30)
            if not status.startswith(b"2"):
                w.close()
                return False
            conns.append((r, w))
            if len(conns) % step == 0:
                print(f"at {len(conns)} open {sum(1 for r, _ in conns if not r.at_eof())}", flush=True)
            return True
        except Exception:
            return False


async def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    conc = int(sys.argv[sys.argv.index("--concurrency") + 1]) if "--concurrency" in sys.argv else 64
    step = int(sys.argv[sys.argv.index("--step") + 1]) if "--step" in sys.argv else 1000
    raise_nofile(n)
    sem = asyncio.Semaphore(conc)
    conns = []
    results = await asyncio.gather(*(one(port, sem, conns, step) for _ in range(n)))
    ok = sum(1 for x in results if x)
    print(f"ready {ok} {n - ok}", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        cmd = line.strip()
        if cmd == "check":
            await asyncio.sleep(0.3)  # let pending EOFs arrive
            print(f"open {sum(1 for r, _ in conns if not r.at_eof())}", flush=True)
        else:
            break
    for _, w in conns:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
