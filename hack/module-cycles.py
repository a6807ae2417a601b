#!/usr/bin/env python3
"""Prints the import cycles between the modules of a crate's src/ directory.

A module is a file (`a/b.rs` or `a/b/mod.rs` is `a::b`); it depends on every
module it names with a `crate::` or `super::` path, in `use` lines or inline
(a path naming an item resolves to the longest module prefix). Test modules
(`#[cfg(test)] mod tests` blocks and `*/tests.rs`) are left out. With
`--top`, modules are merged into their top-level module (`placement::watch`
counts as `placement`). Exit status 1 when a cycle exists.

Usage: hack/module-cycles.py [--top] [daemon/src]
"""
import os
import re
import sys

args = [a for a in sys.argv[1:] if a != "--top"]
top = "--top" in sys.argv[1:]
root = args[0] if args else "daemon/src"
if not os.path.isfile(os.path.join(root, "lib.rs")) and not os.path.isfile(os.path.join(root, "main.rs")):
    sys.exit(f"{root}: not a crate's src/ directory (no lib.rs or main.rs); give the path, e.g. daemon/src")

modules = {}
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".rs"):
            continue
        rel = os.path.relpath(os.path.join(dirpath, f), root)[:-3].split(os.sep)
        if rel[-1] in ("mod", "lib", "main"):
            rel = rel[:-1]
        if rel and rel[-1] == "tests":
            continue
        modules["::".join(rel)] = os.path.join(dirpath, f)

def strip_tests(text):
    """Drops `#[cfg(test)]` items (a module or a function) with their braces."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        j = text.find("{", m.end())
        semi = text.find(";", m.end())
        if semi != -1 and (j == -1 or semi < j):
            i = semi + 1
            continue
        depth = 0
        for k in range(j, len(text)):
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            if depth == 0:
                i = k + 1
                break
    out.append(text[i:])
    return "".join(out)

def resolve(parts):
    for n in range(len(parts), 0, -1):
        name = "::".join(parts[:n])
        if name in modules:
            return name
    return None

def expand(path):
    """`a::{b, c::d}` -> [a::b, a::c::d] (one level of braces is enough here)."""
    m = re.match(r"^(.*?)\{(.*)\}$", path, re.S)
    if not m:
        return [path]
    prefix, inner = m.group(1), m.group(2)
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    items.append(cur)
    return [p for it in items if it.strip() for p in expand(prefix + it.strip())]

edges = {m: set() for m in modules}
for mod, path in modules.items():
    text = strip_tests(open(path).read())
    text = re.sub(r"//[^\n]*", "", text)
    here = mod.split("::") if mod else []
    is_dir_mod = path.endswith("mod.rs") or path.endswith("lib.rs")
    paths = [p for u in re.findall(r"\buse\s+([^;]+);", text) for p in expand(re.sub(r"\s+", "", u))]
    paths += re.findall(r"\b(?:crate|super)(?:::\w+)+", text)
    for p in paths:
        parts = [x for x in p.split("::") if x]
        if not parts or parts[0] not in ("crate", "super"):
            continue
        if parts[0] == "crate":
            parts = parts[1:]
        else:
            base = here if is_dir_mod else here[:-1]
            while parts and parts[0] == "super":
                parts = parts[1:]
                base = base[:-1] if parts and parts[0] == "super" else base
            parts = base + parts
        target = resolve(parts)
        if target is not None and target != mod and target != "":
            edges[mod].add(target)

if top:
    merged = {}
    for a, bs in edges.items():
        ta = a.split("::")[0]
        merged.setdefault(ta, set())
        for b in bs:
            tb = b.split("::")[0]
            if tb != ta:
                merged[ta].add(tb)
    edges = merged

# Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        scc = []
        while True:
            w = stack.pop()
            on.discard(w)
            scc.append(w)
            if w == v:
                break
        if len(scc) > 1:
            sccs.append(sorted(scc))
sys.setrecursionlimit(10000)
for v in sorted(edges):
    if v not in index:
        visit(v)
for scc in sccs:
    print("cycle among:", ", ".join(scc))
    for a in scc:
        print("  ", a, "->", ", ".join(sorted(b for b in edges[a] if b in scc)))
if not sccs:
    print(f"no module cycle in {root}" + (" (top-level modules)" if top else ""))
sys.exit(1 if sccs else 0)
