#!/usr/bin/env python3
"""Fails when the top-level modules of a crate import each other in a circle.

A module's imports are the `crate::<module>` paths in its files (comments and the unit tests at
the end of a file left out). Within a crate, every top-level module must sit on one side of
each pair it touches: the domain below, the code that drives it above.

    scripts/check-module-cycles.py [CRATE_DIR...]   (default: every crate with a src/ here)
"""
import os
import re
import sys


def modules(src):
    found = {}
    for root, _, files in os.walk(src):
        for name in files:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                top = os.path.relpath(path, src).split(os.sep)[0].removesuffix(".rs")
                if top not in ("lib", "main"):
                    found.setdefault(top, []).append(path)
    return found


def imports(paths, names, own):
    used = set()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = "\n".join(l for l in f.read().split("\n") if not l.strip().startswith("//"))
        text = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", text, flags=re.S)
        used |= {m for m in re.findall(r"crate::(\w+)", text) if m in names and m != own}
    return used


def circles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(crates):
    failed = False
    for crate in crates:
        found = modules(os.path.join(crate, "src"))
        graph = {m: imports(paths, found, m) for m, paths in found.items()}
        for component in circles(graph):
            failed = True
            print(f"check-module-cycles: {crate}: modules import each other in a circle:", file=sys.stderr)
            for m in component:
                print(f"  {m} -> {', '.join(sorted(graph[m] & set(component)))}", file=sys.stderr)
    if not failed:
        print(f"check-module-cycles: {len(crates)} crates, no module imports circle back")
    return 1 if failed else 0


if __name__ == "__main__":
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(repo)
    crates = sys.argv[1:] or sorted(
        d for d in os.listdir(".") if os.path.isdir(os.path.join(d, "src")) and os.path.isfile(os.path.join(d, "Cargo.toml"))
    )
    sys.exit(main(crates))
