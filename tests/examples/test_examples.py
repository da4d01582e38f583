"""The examples are what users copy: they must stay consistent with each other and,
once the operator's CRD is generated, with its schema."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
PIPELINES = {"meta-postgres.yaml": "secrets-meta.yaml", "wasender-http.yaml": "secrets-wasender.yaml"}


def docs(path: Path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def secret_refs(spec):
    """Yield (path, {name, key}) for every *SecretRef / *Ref to a Secret key in a spec."""
    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                if k.endswith("Ref") and isinstance(v, dict) and {"name", "key"} <= v.keys():
                    yield f"{path}.{k}", v
                else:
                    yield from walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{path}[{i}]")
    yield from walk(spec, "spec")


@pytest.mark.parametrize("pipeline_file,secrets_file", PIPELINES.items())
def test_every_secret_reference_resolves_to_an_example_secret(pipeline_file, secrets_file):
    (pipeline,) = docs(EXAMPLES / pipeline_file)
    secrets = {
        (s["metadata"]["namespace"], s["metadata"]["name"]): s.get("stringData", {})
        for s in docs(EXAMPLES / secrets_file)
    }
    ns = pipeline["metadata"]["namespace"]
    refs = list(secret_refs(pipeline["spec"]))
    assert refs, "a pipeline always references at least the app secret"
    for path, ref in refs:
        assert (ns, ref["name"]) in secrets, f"{path}: no Secret {ns}/{ref['name']}"
        assert ref["key"] in secrets[(ns, ref["name"])], f"{path}: Secret has no key {ref['key']}"


def test_there_is_one_pipeline_per_provider_and_sink():
    seen = {}
    for f in PIPELINES:
        (p,) = docs(EXAMPLES / f)
        assert p["apiVersion"] == "wapipe.dev/v1alpha1" and p["kind"] == "WhatsAppWebhookPipeline"
        seen[p["spec"]["ingress"]["provider"]] = p["spec"]["worker"]["sink"]["type"]
    assert seen == {"meta": "postgres", "wasender": "http"}


def test_pipelines_do_not_share_topics():
    topics = []
    for f in PIPELINES:
        (p,) = docs(EXAMPLES / f)
        topics += [p["spec"]["topic"]["name"], p["spec"]["deadLetterTopic"]["name"]]
    assert len(topics) == len(set(topics))


def test_example_secrets_hold_only_placeholders():
    for f in PIPELINES.values():
        for s in docs(EXAMPLES / f):
            for value in s["stringData"].values():
                assert "REPLACE_WITH_" in value, f"{f}: {s['metadata']['name']} looks like a real secret"


def test_example_secrets_match_the_kubernetes_schema():
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for f in PIPELINES.values():
        for s in docs(EXAMPLES / f):
            kv.validate(s, "1.30", strict=True)


def test_argocd_applications_point_at_files_that_exist():
    apps = docs(EXAMPLES / "argocd-application.yaml")
    assert {a["kind"] for a in apps} == {"Application"}
    for app in apps:
        source = app["spec"]["source"]
        assert (REPO / source["path"]).is_dir(), source["path"]
        include = source.get("directory", {}).get("include")
        if include:
            for name in re.findall(r"[\w.-]+\.yaml", include):
                assert (REPO / source["path"] / name).is_file(), name
    chart_app = next(a for a in apps if a["spec"]["source"]["path"] == "charts/wapipe-operator")
    assert "ServerSideApply=true" in chart_app["spec"]["syncPolicy"]["syncOptions"]


def crd_schema():
    # The generated CRD, else the chart's copy of it (kept identical by check-chart.sh).
    files = sorted((REPO / "crds").glob("*.yaml")) or sorted(
        (REPO / "charts" / "wapipe-operator" / "crds").glob("*.yaml")
    )
    for f in files:
        for d in docs(f):
            if d.get("kind") == "CustomResourceDefinition" and d["spec"]["group"] == "wapipe.dev":
                (version,) = [v for v in d["spec"]["versions"] if v["name"] == "v1alpha1"]
                return version["schema"]["openAPIV3Schema"]
    return None


@pytest.mark.parametrize("pipeline_file", PIPELINES)
def test_pipeline_validates_against_the_generated_crd_schema(pipeline_file):
    schema = crd_schema()
    if schema is None:
        pytest.skip("crds/ has no generated WhatsAppWebhookPipeline CRD yet")
    jsonschema = pytest.importorskip("jsonschema")
    (pipeline,) = docs(EXAMPLES / pipeline_file)
    # Structural schemas prune unknown fields silently; fail on them here instead, so a
    # renamed field in the operator shows up as a broken example.
    strict = close_objects(schema)
    jsonschema.validate({"spec": pipeline["spec"]}, {**strict, "required": ["spec"]})


def close_objects(schema):
    """Copy of an OpenAPI schema where objects with `properties` reject unknown keys."""
    if isinstance(schema, dict):
        out = {k: close_objects(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [close_objects(v) for v in schema]
    return schema


E2E_MANIFESTS = REPO / "tests" / "e2e" / "manifests"


def test_e2e_infrastructure_manifests_match_the_kubernetes_schema():
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for name in ("kafka.yaml", "postgres.yaml", "pipeline.yaml"):
        for d in docs(E2E_MANIFESTS / name):
            if d["apiVersion"].startswith("wapipe.dev/"):
                continue
            kv.validate(d, "1.30", strict=True)


def test_e2e_pipeline_validates_against_the_generated_crd_schema():
    schema = crd_schema()
    if schema is None:
        pytest.skip("crds/ has no generated WhatsAppWebhookPipeline CRD yet")
    jsonschema = pytest.importorskip("jsonschema")
    (pipeline,) = [d for d in docs(E2E_MANIFESTS / "pipeline.yaml") if d["kind"] == "WhatsAppWebhookPipeline"]
    jsonschema.validate({"spec": pipeline["spec"]}, {**close_objects(schema), "required": ["spec"]})
