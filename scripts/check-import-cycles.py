#!/usr/bin/env python3
"""Import cycles between the source files of each crate.

For every crate under crates/, this builds a graph whose nodes are the files of src/ (one file
is one module, plus the inline modules it holds, such as `mod tests { .. }`) and whose edges are
the references one file makes to another: `use` trees and paths in code that start with
`crate::`, `super::`, `self::` or the name of a child module. A path is resolved to the
deepest module file it names; a name a module only re-exports (`pub use a::Name;`) is followed
to the module that defines it, and the re-export itself is not an edge (a facade `mod.rs` that
re-exports its children is not a cycle with them). `mod x;` declarations are not edges, nor
are references made inside a `#[cfg(test)] mod .. { .. }` block: a unit test may call the
crate's public API as any caller would, which does not make production code depend on it.

Every strongly connected component of more than one file is a cycle and is reported with one
concrete loop and the lines that make each of its edges.

    scripts/check-import-cycles.py    # report every cycle; exit 1 if any

CI runs it (scripts/test.sh): the crates have no cycle, and a new one fails the build. Standard library only (python3).
"""
import argparse
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CRATES = os.path.join(ROOT, "crates")
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_code(text):
    """Blank out comments, string and char literals (keeping newlines, so line numbers hold)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 260]) and not re.match(r"[A-Za-z0-9_]", text[i - 1] if i else " "):
            m = re.match(r'r(#*)"', text[i:])
            close = '"' + m.group(1)
            j = text.find(close, i + len(m.group(0)))
            j = n if j < 0 else j + len(close)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{..}') or a lifetime ('a): only blank the former.
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:i + 12])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use_tree(tree):
    """`a::{b, c::{d as e, self}}` -> [[a, b], [a, c, d], [a, c]] (globs end at their module)."""
    tree = re.sub(r"\s+as\s+" + IDENT, "", tree)
    tree = re.sub(r"\s+", "", tree)
    paths = []

    def walk(prefix, s):
        # split s at top-level commas
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        for part in parts:
            brace = part.find("{")
            if brace >= 0:
                head = part[:brace].rstrip(":")
                inner = part[brace + 1:part.rindex("}")]
                segs = [x for x in head.split("::") if x]
                walk(prefix + segs, inner)
            else:
                segs = [x for x in part.split("::") if x and x != "*"]
                if segs and segs[-1] == "self":
                    segs = segs[:-1]
                paths.append(prefix + segs)

    walk([], tree)
    return paths


class Crate:
    def __init__(self, path):
        self.path = path
        self.src = os.path.join(path, "src")
        self.root_file = None
        for name in ("lib.rs", "main.rs"):
            if os.path.exists(os.path.join(self.src, name)):
                self.root_file = os.path.join(self.src, name)
                break
        self.modules = {}  # module path tuple -> file
        self.children = {}  # module path tuple -> set of child names
        self.reexports = {}  # module -> {name it re-exports: (module, path as written)}
        self.test_opened = set()  # (file, body start) of `#[cfg(test)] mod x { .. }`
        self.files = {}  # file -> (stripped text, [(start, end, module path)] inline module spans)
        if self.root_file:
            self.load_file(self.root_file, ())

    def rel(self, f):
        return os.path.relpath(f, CRATES)

    def load_file(self, f, modpath):
        self.modules[modpath] = f
        self.children.setdefault(modpath, set())
        with open(f, encoding="utf-8") as fh:
            text = strip_code(fh.read())
        spans = []
        # Modules declared here: `mod x;` (a file) and `mod x { .. }` (inline, same file).
        stack = [(modpath, -1)]  # (module path, brace depth at which it closes)
        depth = 0
        i = 0
        decl = re.compile(r"\b(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*([;{])")
        events = []
        for m in decl.finditer(text):
            events.append(m)
        ev = 0
        cur_start = 0
        opened = []  # (module path, start offset)
        while i < len(text):
            if ev < len(events) and events[ev].start() == i:
                m = events[ev]
                ev += 1
                name, kind = m.group(1), m.group(2)
                parent = stack[-1][0]
                self.children.setdefault(parent, set()).add(name)
                child = parent + (name,)
                if kind == ";":
                    self.declare_file_module(f, parent, child)
                    i = m.end()
                    continue
                # inline module: its body starts after the brace
                depth += 1
                stack.append((child, depth))
                self.children.setdefault(child, set())
                opened.append((child, m.end()))
                if re.search(r"#\[cfg\(test\)\]\s*$", text[max(0, m.start() - 40):m.start()]):
                    self.test_opened.add((f, m.end()))
                self.modules.setdefault(child, f)
                i = m.end()
                continue
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                if stack[-1][1] == depth:
                    mp, _ = stack.pop()
                    start = [s for (p, s) in opened if p == mp][-1]
                    spans.append((start, i, mp))
                depth -= 1
            i += 1
        self.files[f] = (text, modpath, spans)
        for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
            cur = self.module_at(f, m.start())
            for p in expand_use_tree(m.group(1)):
                if p:
                    self.reexports.setdefault(cur, {})[p[-1]] = (cur, p)

    def declare_file_module(self, f, parent, child):
        d = os.path.dirname(f)
        base = os.path.basename(f)
        if base in ("lib.rs", "main.rs", "mod.rs") and len(parent) == len(self.file_modpath(f)):
            here = d
        else:
            here = os.path.join(d, os.path.splitext(base)[0])
        # inline parents inside this file add directories too
        extra = parent[len(self.file_modpath(f)):]
        here = os.path.join(here, *extra) if extra else here
        for cand in (os.path.join(here, child[-1] + ".rs"), os.path.join(here, child[-1], "mod.rs")):
            if os.path.exists(cand):
                self.load_file(cand, child)
                return

    def file_modpath(self, f):
        for mp, ff in self.modules.items():
            if ff == f and (mp == () or self.modules.get(mp[:-1]) != f):
                return mp
        return ()

    def module_at(self, f, offset):
        text, modpath, spans = self.files[f]
        best = modpath
        for start, end, mp in spans:
            if start <= offset <= end and len(mp) > len(best):
                best = mp
        return best

    def resolve(self, cur, segs, depth=0):
        """Module file that a path starting in module `cur` names, or None (external, std)."""
        if not segs:
            return None
        if segs[0] == "crate":
            base, rest = (), segs[1:]
        elif segs[0] == "super":
            base, rest = cur, segs
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
        elif segs[0] == "self":
            base, rest = cur, segs[1:]
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
        elif segs[0] in self.children.get(cur, ()):
            base, rest = cur, segs
        else:
            return None
        full = tuple(base) + tuple(rest)
        # deepest known module
        k = len(full)
        while k > 0 and full[:k] not in self.modules:
            k -= 1
        target = full[:k]
        # a name the module only re-exports (`pub use x::Name;`): follow it to its definition
        if k < len(full) and full[k] in self.reexports.get(target, {}) and depth < 8:
            where, path = self.reexports[target][full[k]]
            if list(path) != list(segs):
                via = self.resolve(where, list(path), depth + 1)
                if via:
                    return via
        return self.modules.get(target)

    def edges(self):
        """{(from file, to file): [line numbers]}"""
        out = {}
        for f, (text, _modpath, _spans) in self.files.items():
            refs = []
            for m in re.finditer(r"\buse\s+([^;]+);", text):
                if re.search(r"\bpub(\([^)]*\))?\s+$", text[max(0, m.start() - 24):m.start()]):
                    continue  # re-exports are followed to their definition, not counted
                for p in expand_use_tree(m.group(1)):
                    refs.append((m.start(), p))
            code = re.sub(r"\buse\s+[^;]+;", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
            for m in re.finditer(r"(?<![A-Za-z0-9_:])((?:" + IDENT + r"::)+" + IDENT + ")", code):
                refs.append((m.start(), m.group(1).split("::")))
            tests = [(a, b) for (a, b, _mp) in _spans if (f, a) in self.test_opened]
            for off, p in refs:
                if any(a <= off <= b for (a, b) in tests):
                    continue  # a unit test may use the crate's API like any caller
                cur = self.module_at(f, off)
                tgt = self.resolve(cur, p)
                if tgt and tgt != f:
                    line = text.count("\n", 0, off) + 1
                    out.setdefault((f, tgt), []).append(line)
        return out


def sccs(nodes, adj):
    index, low, on, stack, res = {}, {}, set(), [], []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(adj.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            res.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            strong(v)
    return res


def one_loop(comp, adj):
    """A shortest loop through the component's first file (breadth-first search)."""
    start = comp[0]
    members = set(comp)
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(adj.get(v, ())):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return comp


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.parse_args()

    found = []  # (set of rel files, description lines)
    for name in sorted(os.listdir(CRATES)):
        path = os.path.join(CRATES, name)
        if not os.path.isdir(os.path.join(path, "src")):
            continue
        crate = Crate(path)
        edges = crate.edges()
        adj = {}
        for (a, b) in edges:
            adj.setdefault(a, set()).add(b)
        for comp in sccs(crate.files.keys(), adj):
            if len(comp) < 2:
                continue
            loop = one_loop(comp, adj)
            lines = ["  " + " -> ".join(crate.rel(x) for x in loop)]
            members = set(comp)
            for (a, b), ls in sorted(edges.items()):
                if a in members and b in members:
                    where = ", ".join(str(x) for x in sorted(set(ls))[:6])
                    more = " ..." if len(set(ls)) > 6 else ""
                    lines.append(f"    {crate.rel(a)} -> {crate.rel(b)} (lines {where}{more})")
            found.append(({crate.rel(x) for x in comp}, lines))

    for _, lines in found:
        print("IMPORT CYCLE:")
        print("\n".join(lines))
    total = len(found)
    print(f"{total} cycle(s)")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
