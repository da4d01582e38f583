"""Convert the YAML fixtures into one Lua file that returns a list of test cases.

Only the data conversion happens in Python; the health check itself runs in a real
Lua interpreter (tests/argocd/run.lua). JSON null / YAML null becomes an absent key,
which is how Argo CD's Lua bridge presents it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def lua(value, indent: str = "") -> str:
    inner = indent + "  "
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(
            c if c.isprintable() and c not in '\\"' else f"\\{ord(c):03d}" for c in value
        )
        return f'"{escaped}"'
    if isinstance(value, list):
        items = [lua(v, inner) for v in value if v is not None]
        return "{\n" + "".join(f"{inner}{i},\n" for i in items) + indent + "}"
    if isinstance(value, dict):
        items = [f"{inner}[{lua(str(k))}] = {lua(v, inner)},\n" for k, v in value.items() if v is not None]
        return "{\n" + "".join(items) + indent + "}"
    raise TypeError(f"cannot convert {type(value).__name__} to Lua")


def main(fixture_dir: str) -> None:
    cases = []
    for path in sorted(Path(fixture_dir).glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        expect = doc["expect"]
        if expect["status"] not in {"Healthy", "Progressing", "Degraded", "Suspended"}:
            raise SystemExit(f"{path}: unknown expected status {expect['status']!r}")
        cases.append({"name": path.name, "expect": expect, "object": doc["object"]})
    if not cases:
        raise SystemExit(f"no fixtures in {fixture_dir}")
    sys.stdout.write("return " + lua(cases) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
