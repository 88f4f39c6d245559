#!/usr/bin/env python3
"""Self instructions per source file (and per crate) from a callgrind dump.

With LTO nearly everything is inlined into a few functions, so callgrind's per-function view
says little; the per-line costs still carry the source file of the inlined code (fi=/fe=).
Usage: bench/cg_by_file.py CALLGRIND_OUT [REQUESTS] [TOP]
"""
import re
import sys
from collections import defaultdict

path = sys.argv[1]
reqs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
top = int(sys.argv[3]) if len(sys.argv) > 3 else 40
names = {}
cur_fl = cur_file = None
by_file = defaultdict(int)
skip_next = False
def name(kind, v):
    m = re.match(r"\((\d+)\)(?: (.*))?", v)
    if not m:
        return v
    key = (kind, m.group(1))
    if m.group(2):
        names[key] = m.group(2)
    return names.get(key, v)
with open(path) as f:
    for line in f:
        line = line.rstrip("\n")
        if not line:
            continue
        if line.startswith("fl="):
            cur_fl = cur_file = name("fl", line[3:])
        elif line.startswith(("fi=", "fe=")):
            cur_file = name("fl", line[3:])
        elif line.startswith("fn="):
            cur_file = cur_fl
        elif line.startswith(("cfl=", "cfi=")):
            name("fl", line[4:])
        elif line.startswith("cfn="):
            pass
        elif line.startswith("calls="):
            skip_next = True
        elif line[0] in "0123456789+-*":
            if skip_next:
                skip_next = False
                continue
            parts = line.split()
            if len(parts) >= 2 and cur_file:
                by_file[cur_file] += int(parts[1])
total = sum(by_file.values())
def crate(p):
    m = re.search(r"registry/src/[^/]+/([^/]+)/", p)
    if m:
        return re.sub(r"-[0-9][0-9.]*.*$", "", m.group(1))
    m = re.search(r"/rustc/[0-9a-f]+/library/([^/]+)/", p)
    if m:
        return "std:" + m.group(1)
    m = re.search(r"crates/([^/]+)/", p)
    if m:
        return m.group(1)
    return p.split("/")[-1] if "/" in p else p
by_crate = defaultdict(int)
for p, c in by_file.items():
    by_crate[crate(p)] += c
print(f"total {total/reqs:,.0f} instructions/request")
print("--- by crate")
for c, v in sorted(by_crate.items(), key=lambda x: -x[1])[:25]:
    print(f"{v/reqs:10,.0f}  {100*v/total:5.1f}%  {c}")
print("--- by file")
for p, v in sorted(by_file.items(), key=lambda x: -x[1])[:top]:
    short = re.sub(r".*registry/src/[^/]+/", "", p)
    short = re.sub(r"/rustc/[0-9a-f]+/library/", "std/", short)
    print(f"{v/reqs:10,.0f}  {100*v/total:5.1f}%  {short}")
