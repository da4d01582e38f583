#!/usr/bin/env python3
"""Writes docs/api-reference.md from the generated CRD (crds/*.yaml): every field of the spec
and the status with its type, default, bounds and description, and the CEL rules the API server
enforces. `--check` fails when the file in docs/ differs (run by scripts/check-docs.sh)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "api-reference.md"


# Kubernetes types a pipeline's `template` embeds: named and linked, not expanded (their
# schemas are the Kubernetes API's own).
POD_API = "https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/"
KUBERNETES_TYPES = {
    "affinity": f"[Affinity]({POD_API}#scheduling)",
    "tolerations": f"[][Toleration]({POD_API}#scheduling)",
    "topologySpreadConstraints": f"[][TopologySpreadConstraint]({POD_API}#scheduling)",
    "imagePullSecrets": f"[][LocalObjectReference]({POD_API}#containers)",
    "env": f"[][EnvVar]({POD_API}#environment-variables)",
}


def kubernetes_type(path: str, name: str) -> str | None:
    return KUBERNETES_TYPES.get(name) if ".template." in f"{path}." else None


def type_of(schema: dict) -> str:
    if "x-kubernetes-int-or-string" in schema:
        return "int or string"
    kind = schema.get("type", "object")
    if kind == "array":
        return f"[]{type_of(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema and "properties" not in schema:
        return f"map[string]{type_of(schema['additionalProperties'])}"
    return kind


def constraints(schema: dict) -> str:
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"] if v is not None))
    for key, word in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "length ≥"), ("maxLength", "length ≤")):
        if key in schema:
            value = schema[key]
            parts.append(f"{word} {int(value) if float(value).is_integer() else value}")
    if "pattern" in schema:
        parts.append(f"pattern `{schema['pattern']}`")
    return "; ".join(parts)


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def walk(schema: dict, path: str, sections: list[tuple[str, dict]]) -> None:
    sections.append((path, schema))
    for name, sub in sorted(schema.get("properties", {}).items()):
        target = sub.get("items", sub) if sub.get("type") == "array" else sub
        if "properties" in target and not kubernetes_type(path, name):
            walk(target, f"{path}.{name}", sections)


def render(crd: dict) -> str:
    names = crd["spec"]["names"]
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    group = crd["spec"]["group"]
    root = version["schema"]["openAPIV3Schema"]
    lines = [
        "# API reference",
        "",
        f"`{names['kind']}` (`{group}/{version['name']}`, namespaced; `kubectl get {names['plural']}`"
        + "".join(f", `{s}`" for s in names.get("shortNames", []))
        + "). Generated from the CRD by `scripts/gen-api-reference.py`; the CRD itself is generated"
        " from the operator's Rust types (`cargo run -p wapipe-operator --bin crdgen`).",
        "",
    ]
    for part in ("spec", "status"):
        sections: list[tuple[str, dict]] = []
        walk(root["properties"][part], part, sections)
        for path, schema in sections:
            lines += [f"## `{path}`", ""]
            if schema.get("description"):
                lines += [" ".join(schema["description"].split()), ""]
            required = set(schema.get("required", []))
            lines += ["| field | type | required | default | constraints | description |", "| --- | --- | --- | --- | --- | --- |"]
            for name, sub in sorted(schema.get("properties", {}).items()):
                default = f"`{yaml.safe_dump(sub['default'], default_flow_style=True).strip().removesuffix('...').strip()}`" if "default" in sub else ""
                lines.append(
                    f"| `{name}` | {kubernetes_type(path, name) or type_of(sub)} | {'yes' if name in required else ''} | {cell(default)} | "
                    f"{cell(constraints(sub))} | {cell(sub.get('description', ''))} |"
                )
            rules = schema.get("x-kubernetes-validations", [])
            if rules:
                lines += ["", "Checked by the API server when the resource is written:", ""]
                for rule in rules:
                    lines.append(f"- {cell(rule.get('message', rule['rule']))} (`{cell(rule['rule'])}`)")
            lines.append("")
    columns = version.get("additionalPrinterColumns", [])
    if columns:
        lines += ["## `kubectl get` columns", "", "| column | from | shown |", "| --- | --- | --- |"]
        for c in columns:
            lines.append(f"| {c['name']} | `{c['jsonPath']}` | {'with `-o wide`' if c.get('priority', 0) > 0 else 'always'} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    (path,) = sorted((REPO / "crds").glob("*.yaml"))
    text = render(yaml.safe_load(path.read_text()))
    if sys.argv[1:] == ["--check"]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(REPO)} is stale: run python3 scripts/gen-api-reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
