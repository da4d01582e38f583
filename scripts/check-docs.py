#!/usr/bin/env python3
"""Checks the documentation without a network: every relative link and image in the Markdown
files resolves to a file (and its #anchor to a heading there); links to this repository on
GitHub (blob, edit, raw) name files that exist; every page of docs/ is in the book's SUMMARY.md;
every alert has a runbook section in docs/alerts.md and a runbook_url pointing at it; every
condition reason the operator can write is explained in docs/conditions.md."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
GITHUB = re.compile(r"^https://(?:github\.com/wapipe/wapipe/(?:blob|edit|tree)/[^/]+|raw\.githubusercontent\.com/wapipe/wapipe/[^/]+)/([^#?]*)(?:#(.*))?$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_files() -> list[Path]:
    files = sorted((REPO / "docs").rglob("*.md"))
    files += [REPO / n for n in ("README.md", "CHANGELOG.md", "SECURITY.md")]
    files += sorted(p for p in REPO.glob("*/README.md")) + [REPO / "charts/wapipe-operator/README.md"]
    return [f for f in files if f.exists()]


def prose(text: str):
    """Lines outside fenced code blocks, with inline code removed."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, re.sub(r"`[^`]*`", "", line)


def slug(heading: str) -> str:
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    fenced = False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^#{1,6}\s+(.*)$", line)):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def check_target(source: Path, target: Path, anchor: str | None, shown: str) -> str | None:
    if not target.exists():
        return f"{shown}: no such file {target.relative_to(REPO) if target.is_relative_to(REPO) else target}"
    if anchor and target.suffix == ".md" and anchor not in anchors(target):
        return f"{shown}: no heading #{anchor} in {target.relative_to(REPO)}"
    return None


def check_links() -> list[str]:
    problems = []
    for path in markdown_files():
        for number, line in prose(path.read_text()):
            for target in LINK.findall(line):
                where = f"{path.relative_to(REPO)}:{number}: {target}"
                if m := GITHUB.match(target):
                    problems.append(check_target(path, REPO / m.group(1), m.group(2), where))
                elif re.match(r"^[a-z]+:", target):
                    continue  # another site: not reachable from here, not checked
                elif target.startswith("#"):
                    problems.append(check_target(path, path, target[1:], where))
                else:
                    file, _, anchor = target.partition("#")
                    problems.append(check_target(path, (path.parent / file).resolve(), anchor or None, where))
    return [p for p in problems if p]


def check_summary() -> list[str]:
    summary = (REPO / "docs/SUMMARY.md").read_text()
    listed = {Path(t) for t in re.findall(r"\]\(([^)]+\.md)\)", summary)}
    pages = {p.relative_to(REPO / "docs") for p in (REPO / "docs").rglob("*.md")} - {Path("SUMMARY.md")}
    return [f"docs/{p}: not in docs/SUMMARY.md, so not in the book" for p in sorted(pages - listed)]


def check_runbooks() -> list[str]:
    rules = yaml.safe_load((REPO / "deploy/prometheus/wapipe-alerts.yaml").read_text())
    sections = anchors(REPO / "docs/alerts.md")
    problems = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert")
            if not name:
                continue
            if slug(name) not in sections:
                problems.append(f"alert {name}: no section in docs/alerts.md")
            url = rule.get("annotations", {}).get("runbook_url", "")
            if not url.endswith(f"/docs/alerts.md#{slug(name)}"):
                problems.append(f"alert {name}: runbook_url {url!r} does not point at its section of docs/alerts.md")
    return problems


def emitted_reasons() -> set[str]:
    """Every reason (and partition status) string the operator's status and scaler can write."""
    reasons = set()
    for path in (REPO / "operator/src").rglob("*.rs"):
        text = path.read_text()
        for enum in re.finditer(r"impl (?:Reason|PartitionStatus) \{\s*pub fn as_str\(self\) -> &'static str \{(.*?)\n    \}", text, re.S):
            reasons |= set(re.findall(r'=> "([A-Z][A-Za-z]+)"', enum.group(1)))
    return reasons


def check_conditions() -> list[str]:
    doc = (REPO / "docs/conditions.md").read_text()
    documented = set(re.findall(r"`([A-Z][A-Za-z]+)`", doc))
    return [f"reason {r}: the operator can write it, docs/conditions.md does not explain it" for r in sorted(emitted_reasons() - documented)]


def check_argocd_health() -> list[str]:
    """The health check's spec errors are reasons the operator writes, and exactly those the
    conditions page marks as needing a person (`spec`)."""
    lua = (REPO / "deploy/argocd/health.lua").read_text()
    block = re.search(r"local SPEC_ERRORS = \{(.*?)\}", lua, re.S).group(1)
    spec_errors = set(re.findall(r"(\w+) = true", block))
    doc = (REPO / "docs/conditions.md").read_text()
    marked = set(re.findall(r"^\| `([A-Za-z]+)` \|[^|]*\| spec \|", doc, re.M))
    problems = [f"health.lua: {r} is not a reason the operator writes" for r in sorted(spec_errors - emitted_reasons())]
    problems += [f"{r}: docs/conditions.md and health.lua disagree on whether it needs a person" for r in sorted(spec_errors ^ marked)]
    copy = (REPO / "deploy/argocd/argocd-cm.yaml").read_text()
    problems += [f"argocd-cm.yaml: {r} differs from health.lua" for r in sorted(spec_errors ^ set(re.findall(r"(\w+) = true", re.search(r"local SPEC_ERRORS = \{(.*?)\}", copy, re.S).group(1))))]
    return problems


def main() -> int:
    problems = check_links() + check_summary() + check_runbooks() + check_conditions() + check_argocd_health()
    for p in problems:
        print(f"check-docs: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
