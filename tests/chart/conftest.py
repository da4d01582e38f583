"""Render the chart with Helm's own engine (Helm v4 Go SDK through helm-python-sdk).

`helm_python.Chart.render` is Helm's `engine.Render` over the values Helm itself
coalesces with values.yaml, the same path `helm template` takes (offline: no cluster,
`lookup` returns nothing). Nothing here re-implements templating.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk is not installed (pip install helm-python-sdk)"
)

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "wapipe-operator"
RELEASE = "wapipe"
NAMESPACE = "wapipe-system"


class Rendered:
    """The objects one render produced, addressable by kind and name."""

    def __init__(self, manifests: dict[str, str]):
        self.manifests = manifests
        self.objects: list[dict[str, Any]] = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    self.objects.append(doc)

    @property
    def notes(self) -> str:
        return next((t for p, t in self.manifests.items() if p.endswith("NOTES.txt")), "")

    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]


def render(values: dict[str, Any] | None = None, *, name: str = RELEASE) -> Rendered:
    chart = helm.Chart.load(str(CHART_DIR))
    try:
        manifests = chart.render(
            copy.deepcopy(values) if values else None,
            name=name,
            namespace=NAMESPACE,
            is_install=True,
        )
    finally:
        chart.close()
    return Rendered(manifests)


def lint(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return helm.lint(str(CHART_DIR), values, strict=True, namespace=NAMESPACE)


@pytest.fixture(scope="session")
def default_render() -> Rendered:
    return render()


# Non-default values exercising every optional template and override.
CUSTOM_VALUES: dict[str, Any] = {
    "image": {"repository": "registry.example.com/wapipe", "tag": "1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "replicaCount": 3,
    "leaderElection": {"leaseName": "custom-lease"},
    "logFormat": "text",
    "logLevel": "debug",
    "extraEnv": [{"name": "EXTRA", "value": "1"}],
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}
                ]
            }
        }
    },
    "priorityClassName": "system-cluster-critical",
    "podAnnotations": {"example.com/a": "b"},
    "podLabels": {"team": "platform"},
    "serviceAccount": {"name": "wapipe-sa", "annotations": {"iam.example.com/role": "x"}},
    "metrics": {"port": 9090, "service": {"port": 9091}},
    "serviceMonitor": {"enabled": True, "additionalLabels": {"release": "prometheus"}, "interval": "15s"},
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "egress": {
            "enabled": True,
            "rules": [{"ports": [{"port": 6443, "protocol": "TCP"}, {"port": 9092, "protocol": "TCP"}]}],
        },
    },
}


@pytest.fixture(scope="session")
def custom_render() -> Rendered:
    return render(CUSTOM_VALUES)
