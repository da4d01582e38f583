"""Checks on the objects the chart renders, with default and non-default values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import CHART_DIR, CUSTOM_VALUES, NAMESPACE, REPO, helm, lint, render

STANDARD_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding"}
CHART = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())


def container(deployment):
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c):
    return {e["name"]: e for e in c["env"]}


# --- lint ------------------------------------------------------------------


def findings(report, min_severity):
    return [m for m in report["messages"] if m["severity"] >= min_severity]


def test_lint_strict_passes_with_default_values():
    report = lint()
    assert report["errors"] == [] and findings(report, 2) == [], report


def test_lint_strict_passes_with_non_default_values():
    report = lint(CUSTOM_VALUES)
    assert report["errors"] == [] and findings(report, 2) == [], report


def test_lint_reports_invalid_rendered_objects():
    # Proves lint renders templates with the given values and checks the result.
    report = lint({"fullnameOverride": "Bad_Name"})
    assert any("naming requirements" in m["error"] for m in findings(report, 2)), report


def test_render_fails_on_service_monitor_without_metrics_service():
    # Helm's lint mode turns `fail` into a log line, so this is a render check.
    with pytest.raises(helm.HelmRenderError, match="metrics.service.enabled"):
        render({"serviceMonitor": {"enabled": True}, "metrics": {"service": {"enabled": False}}})


# --- what is rendered ------------------------------------------------------


def test_default_render_has_exactly_the_expected_kinds(default_render):
    assert default_render.kinds() == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    }


def test_optional_objects_render_when_enabled(custom_render):
    assert {"ServiceMonitor", "NetworkPolicy"} <= custom_render.kinds()


def test_every_object_carries_the_standard_labels(default_render, custom_render):
    for rendered in (default_render, custom_render):
        for obj in rendered.objects:
            labels = obj["metadata"].get("labels", {})
            missing = STANDARD_LABELS - labels.keys()
            assert not missing, f"{obj['kind']}/{obj['metadata']['name']} lacks {missing}"
            assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_namespaced_objects_live_in_the_release_namespace(default_render, custom_render):
    for rendered in (default_render, custom_render):
        for obj in rendered.objects:
            if obj["kind"] in CLUSTER_SCOPED:
                assert "namespace" not in obj["metadata"]
            else:
                assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


def test_rendered_builtin_objects_match_the_kubernetes_schema(default_render, custom_render):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for rendered in (default_render, custom_render):
        for obj in rendered.objects:
            if obj["apiVersion"].startswith("monitoring.coreos.com"):
                continue  # a CRD type: no upstream schema in kubernetes-validate
            # strict: unknown fields (typos such as `secruityContext`) fail too.
            kv.validate(obj, "1.30", strict=True)


# --- the operator Deployment -------------------------------------------------


def test_image_defaults_to_the_chart_app_version(default_render):
    c = container(default_render.one("Deployment"))
    assert c["image"] == f"ghcr.io/wapipe/wapipe:{CHART['appVersion']}"


def test_ingress_and_worker_default_to_the_operators_own_image(default_render, custom_render):
    for rendered in (default_render, custom_render):
        c = container(rendered.one("Deployment"))
        assert env_of(c)["WAPIPE_IMAGE"]["value"] == c["image"]
    assert container(custom_render.one("Deployment"))["image"] == "registry.example.com/wapipe:1.2.3"


def test_workload_image_can_be_overridden_separately():
    rendered = render({"image": {"tag": "1.0.0"}, "workloadImage": {"repository": "mirror/wapipe"}})
    c = container(rendered.one("Deployment"))
    assert env_of(c)["WAPIPE_IMAGE"]["value"] == "mirror/wapipe:1.0.0"


def test_operator_environment_follows_the_binary_contract(default_render):
    env = env_of(container(default_render.one("Deployment")))
    assert env["WAPIPE_OPERATOR_LISTEN"]["value"] == "0.0.0.0:8080"
    assert env["WAPIPE_LEASE_NAME"]["value"] == "wapipe-operator-leader"
    assert env["WAPIPE_LOG_FORMAT"]["value"] == "json"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_custom_values_reach_the_container(custom_render):
    dep = custom_render.one("Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    env = env_of(c)
    assert dep["spec"]["replicas"] == 3
    assert c["imagePullPolicy"] == "Always"
    assert env["WAPIPE_OPERATOR_LISTEN"]["value"] == "0.0.0.0:9090"
    assert c["ports"] == [{"name": "http-metrics", "containerPort": 9090, "protocol": "TCP"}]
    assert env["WAPIPE_LEASE_NAME"]["value"] == "custom-lease"
    assert env["WAPIPE_LOG_FORMAT"]["value"] == "text"
    assert env["RUST_LOG"]["value"] == "debug"
    assert env["EXTRA"]["value"] == "1"
    assert c["resources"] == CUSTOM_VALUES["resources"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == CUSTOM_VALUES["nodeSelector"]
    assert pod["tolerations"] == CUSTOM_VALUES["tolerations"]
    assert pod["affinity"] == CUSTOM_VALUES["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert dep["spec"]["template"]["metadata"]["annotations"] == {"example.com/a": "b"}
    assert dep["spec"]["template"]["metadata"]["labels"]["team"] == "platform"
    assert custom_render.one("Deployment")["metadata"]["labels"]["app.kubernetes.io/version"] == "1.2.3"


def test_default_affinity_spreads_replicas_over_nodes(default_render):
    pod = default_render.one("Deployment")["spec"]["template"]["spec"]
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_two_replicas_by_default_with_a_disruption_budget(default_render):
    assert default_render.one("Deployment")["spec"]["replicas"] == 2
    assert default_render.one("PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_single_replica_gets_no_disruption_budget():
    assert "PodDisruptionBudget" not in render({"replicaCount": 1}).kinds()


def test_pod_security_is_restricted(default_render, custom_render):
    for rendered in (default_render, custom_render):
        pod = rendered.one("Deployment")["spec"]["template"]["spec"]
        c = container(rendered.one("Deployment"))
        psc, sc = pod["securityContext"], c["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not pod.get("hostNetwork") and not pod.get("hostPID")


def test_read_only_root_has_a_writable_tmp(default_render):
    dep = default_render.one("Deployment")
    mounts = {m["mountPath"]: m["name"] for m in container(dep)["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_resources_are_always_set(default_render):
    res = container(default_render.one("Deployment"))["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= res[kind].keys()


def test_probes_use_the_health_endpoints_on_the_metrics_port(default_render):
    c = container(default_render.one("Deployment"))
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}


def test_selector_matches_the_pod_labels(default_render, custom_render):
    for rendered in (default_render, custom_render):
        dep = rendered.one("Deployment")
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        assert "app.kubernetes.io/version" not in selector  # selectors are immutable
        for kind in ("Service", "PodDisruptionBudget"):
            for obj in rendered.all(kind):
                sel = obj["spec"]["selector"]
                sel = sel.get("matchLabels", sel)
                assert sel.items() <= pod_labels.items(), kind


# --- metrics Service, ServiceMonitor, NetworkPolicy --------------------------


def test_metrics_service_targets_the_named_container_port(default_render, custom_render):
    for rendered in (default_render, custom_render):
        (port,) = rendered.one("Service")["spec"]["ports"]
        assert port["targetPort"] == "http-metrics"
    assert custom_render.one("Service")["spec"]["ports"][0]["port"] == 9091


def test_service_monitor_scrapes_the_metrics_service(custom_render):
    sm = custom_render.one("ServiceMonitor")
    svc = custom_render.one("Service")
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == svc["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"


def test_network_policy_opens_only_the_metrics_port(custom_render):
    np = custom_render.one("NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = np["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http-metrics", "protocol": "TCP"}]
    assert rule["from"] == CUSTOM_VALUES["networkPolicy"]["metricsFrom"]
    egress_ports = [p["port"] for r in np["spec"]["egress"] for p in r["ports"]]
    assert 53 in egress_ports and 6443 in egress_ports and 9092 in egress_ports


def test_network_policy_leaves_egress_open_unless_asked():
    np = render({"networkPolicy": {"enabled": True}}).one("NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress"]
    assert "from" not in np["spec"]["ingress"][0]


# --- RBAC ------------------------------------------------------------------

EXPECTED_CLUSTER_RULES = [
    (("wapipe.dev",), ("whatsappwebhookpipelines",), {"get", "list", "watch", "patch", "update"}),
    (("wapipe.dev",), ("whatsappwebhookpipelines/status",), {"get", "patch", "update"}),
    (("wapipe.dev",), ("whatsappwebhookpipelines/finalizers",), {"update"}),
    (("apps",), ("deployments",), {"get", "list", "watch", "create", "patch", "update", "delete"}),
    (("",), ("services",), {"get", "list", "watch", "create", "patch", "update", "delete"}),
    (("policy",), ("poddisruptionbudgets",), {"get", "list", "watch", "create", "patch", "update", "delete"}),
    (("networking.k8s.io",), ("ingresses",), {"get", "list", "watch", "create", "patch", "update", "delete"}),
    (("", "events.k8s.io"), ("events",), {"create", "patch"}),
    (("",), ("secrets",), {"get"}),
]


def normalized(rules):
    return [(tuple(r["apiGroups"]), tuple(r["resources"]), set(r["verbs"])) for r in rules]


AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def operator_cluster_role(rendered):
    """The operator's own ClusterRole (the others are aggregated into the default user roles)."""
    (role,) = [
        o for o in rendered.all("ClusterRole") if not any(k.startswith(AGGREGATE) for k in o["metadata"]["labels"])
    ]
    return role


def test_cluster_role_grants_exactly_the_documented_rules(default_render):
    assert normalized(operator_cluster_role(default_render)["rules"]) == EXPECTED_CLUSTER_RULES


def test_pipelines_are_aggregated_into_the_default_user_roles(default_render):
    aggregated = {
        k[len(AGGREGATE):]: o
        for o in default_render.all("ClusterRole")
        for k, v in o["metadata"]["labels"].items()
        if k.startswith(AGGREGATE) and v == "true"
    }
    assert set(aggregated) == {"admin", "edit", "view"}
    full = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
    read = {"get", "list", "watch"}
    pipelines, status = ("whatsappwebhookpipelines",), ("whatsappwebhookpipelines/status",)
    for role, verbs in (("admin", full), ("edit", full), ("view", read)):
        assert normalized(aggregated[role]["rules"]) == [(("wapipe.dev",), pipelines, verbs), (("wapipe.dev",), status, read)]
    assert not [o for o in render({"rbac": {"aggregateToDefaultRoles": False}}).all("ClusterRole") if o is not None and
                any(k.startswith(AGGREGATE) for k in o["metadata"]["labels"])]


def test_rbac_has_no_wildcards_and_secrets_are_read_only(default_render):
    for role in default_render.all("ClusterRole") + default_render.all("Role"):
        kind = role["kind"]
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (kind, rule)
            if "secrets" in rule["resources"]:
                assert set(rule["verbs"]) == {"get"}, "Secrets: get by name only"


def test_leases_are_granted_only_in_the_release_namespace(default_render):
    cluster_resources = {r for role in default_render.all("ClusterRole") for rule in role["rules"] for r in rule["resources"]}
    assert "leases" not in cluster_resources
    role = default_render.one("Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert normalized(role["rules"]) == [
        (("coordination.k8s.io",), ("leases",), {"create"}),
        (("coordination.k8s.io",), ("leases",), {"get", "update", "patch"}),
    ]
    assert role["rules"][1]["resourceNames"] == ["wapipe-operator-leader"]


def test_bindings_point_at_the_operator_service_account(default_render, custom_render):
    for rendered, sa_name in ((default_render, default_render.one("ServiceAccount")["metadata"]["name"]),
                              (custom_render, "wapipe-sa")):
        pod = rendered.one("Deployment")["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == sa_name
        for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
            binding = rendered.one(kind)
            assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}]
            role = operator_cluster_role(rendered) if role_kind == "ClusterRole" else rendered.one(role_kind)
            assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_existing_service_account_and_no_rbac_can_be_chosen():
    rendered = render(
        {"serviceAccount": {"create": False, "name": "byo"}, "rbac": {"create": False, "aggregateToDefaultRoles": False}}
    )
    assert rendered.kinds().isdisjoint({"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"})
    assert rendered.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "byo"


@pytest.mark.parametrize("template", ["clusterrole.yaml", "role.yaml", "aggregated-roles.yaml"])
def test_every_rbac_rule_has_a_comment(template):
    lines = (CHART_DIR / "templates" / template).read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("- apiGroups:"):
            assert lines[i - 1].strip().startswith("#"), f"{template}:{i + 1} has no comment"


# --- chart files ------------------------------------------------------------


def leaf_keys(tree, prefix=""):
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaf_keys(value, path + ".")
        else:
            yield path


def all_keys(tree, prefix=""):
    for key, value in tree.items():
        yield f"{prefix}{key}"
        if isinstance(value, dict):
            yield from all_keys(value, f"{prefix}{key}.")


def test_readme_documents_every_value():
    # The table is generated by helm-docs (scripts/check-docs.sh checks it is current); this
    # checks what it covers: a documented object (resources, probes) covers what it holds.
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    readme = (CHART_DIR / "README.md").read_text()
    table = readme.split("## Parameters", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.M))
    covered = lambda leaf: any(leaf == d or leaf.startswith(d + ".") for d in documented)  # noqa: E731
    assert {leaf for leaf in leaf_keys(values) if not covered(leaf)} == set(), "values missing from the README table"
    assert documented - set(all_keys(values)) == set(), "README documents values that do not exist"
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert all(not line.rstrip().endswith("|  |") for line in rows), "a value without a description"


def test_readme_warns_that_upgrade_does_not_touch_crds():
    readme = (CHART_DIR / "README.md").read_text()
    assert "does not upgrade" in readme and "kubectl apply --server-side" in readme


def test_notes_render(default_render):
    assert "wapipe-operator" in default_render.notes and "helm upgrade" in default_render.notes


def test_chart_crds_are_identical_to_the_generated_ones():
    generated = REPO / "crds"
    if not generated.is_dir() or not list(generated.glob("*.yaml")):
        pytest.skip("crds/ has no generated CRD yet (operator crdgen); nothing to compare")
    chart_crds = CHART_DIR / "crds"
    gen = {p.name: p.read_bytes() for p in generated.glob("*.yaml")}
    packaged = {p.name: p.read_bytes() for p in chart_crds.glob("*.yaml")}
    assert gen == packaged, "chart CRDs differ from crds/: run scripts/sync-chart-crds.sh"


def test_chart_crds_define_the_pipeline_kind():
    files = list((CHART_DIR / "crds").glob("*.yaml"))
    if not files:
        pytest.skip("charts/wapipe-operator/crds/ is empty until scripts/sync-chart-crds.sh runs")
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert "whatsappwebhookpipelines.wapipe.dev" in names


# --- dashboard, alerts, pipeline PodMonitor -----------------------------------


def test_dashboard_alerts_and_pod_monitor_are_off_by_default(default_render):
    assert not {"PrometheusRule", "PodMonitor"} & default_render.kinds()
    assert not [
        o for o in default_render.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")
    ]


def test_dashboard_alerts_and_pod_monitor_render_the_shipped_files_when_enabled():
    rendered = render(
        {
            "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "wapipe"}},
            "prometheusRule": {"enabled": True, "additionalLabels": {"release": "prom"}},
            "podMonitor": {"enabled": True, "additionalLabels": {"release": "prom"}},
        }
    )
    dashboard = next(o for o in rendered.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard"))
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "wapipe"}
    shipped = json.loads((REPO / "deploy/grafana/wapipe-dashboard.json").read_text())
    assert json.loads(dashboard["data"]["wapipe-dashboard.json"]) == shipped

    rule = rendered.one("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom"
    rules_file = yaml.safe_load((REPO / "deploy/prometheus/wapipe-alerts.yaml").read_text())
    assert rule["spec"] == rules_file

    monitor = rendered.one("PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "metrics"
    targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert targets["pipeline"] == ["__meta_kubernetes_pod_label_wapipe_dev_pipeline"]
    assert targets["namespace"] == ["__meta_kubernetes_namespace"]


def test_every_dashboard_panel_has_queries_and_the_variables_exist():
    dashboard = json.loads((REPO / "deploy/grafana/wapipe-dashboard.json").read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "pipeline"} <= variables
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Ingress", "Kafka", "Workers", "Operator"]
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_allowed_image_prefixes_reach_the_operator_only_when_set(default_render):
    assert "WAPIPE_ALLOWED_IMAGE_PREFIXES" not in env_of(container(default_render.one("Deployment")))
    rendered = render({"allowedImagePrefixes": ["registry.example.com/wapipe/", "ghcr.io/acme/"]})
    env = env_of(container(rendered.one("Deployment")))
    assert env["WAPIPE_ALLOWED_IMAGE_PREFIXES"]["value"] == "registry.example.com/wapipe/,ghcr.io/acme/"


def test_the_cleanup_deadline_reaches_the_operator(default_render):
    env = env_of(container(default_render.one("Deployment")))
    assert env["WAPIPE_CLEANUP_DEADLINE_SECONDS"]["value"] == "600"
    rendered = render({"cleanupDeadlineSeconds": 30})
    env = env_of(container(rendered.one("Deployment")))
    assert env["WAPIPE_CLEANUP_DEADLINE_SECONDS"]["value"] == "30"


# --- values schema ------------------------------------------------------------

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())


@pytest.mark.parametrize(
    "values, refusal",
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"imagee": {"tag": "1.0"}}, "'imagee' not allowed"),
        ({"image": {"tagg": "1.0"}}, "'tagg' not allowed"),
        ({"logFormat": "yaml"}, "/logFormat"),
        ({"metrics": {"service": {"type": "Loadbalancer"}}}, "/metrics/service/type"),
        ({"serviceMonitor": {"interval": "30 seconds"}}, "/serviceMonitor/interval"),
    ],
)
def test_schema_refuses_a_mistyped_value_at_install(values, refusal):
    with pytest.raises(Exception, match="schema") as refused:
        render(values)
    assert refusal in str(refused.value)


def schema_leaves(schema, prefix=""):
    """Keys the schema describes, down to objects it leaves open (Kubernetes types, maps)."""
    for key, sub in schema.get("properties", {}).items():
        if sub.get("properties") is not None:
            yield from schema_leaves(sub, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_schema_describes_every_value_and_closes_every_object_of_its_own():
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    leaves = set(schema_leaves(SCHEMA)) - {"global"}
    in_values = set(leaf_keys(values))
    covers = lambda outer, inner: inner == outer or inner.startswith(outer + ".")  # noqa: E731
    assert {v for v in in_values if not any(covers(leaf, v) for leaf in leaves)} == set(), "values the schema misses"
    assert {leaf for leaf in leaves if not any(covers(leaf, v) for v in in_values)} == set(), "schema keys with no value"

    def closed(schema, path="values"):
        if schema.get("properties") is not None:
            assert schema.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for key, sub in schema["properties"].items():
                closed(sub, f"{path}.{key}")

    closed({k: v for k, v in SCHEMA.items() if k != "properties"} | {"properties": {k: v for k, v in SCHEMA["properties"].items() if k != "global"}})
