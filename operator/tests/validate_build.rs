//! Pure validate and build over fixture resources: the exact objects the reconciler applies.
//! The golden files under `tests/fixtures/*.children.yaml` are the reviewed rendering; set
//! `WAPIPE_BLESS=1` to rewrite them after an intended change, then review the diff.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use wapipe_operator::build::{build, Children};
use wapipe_operator::validate::{validate, ValidPipeline};
use wapipe_operator::WhatsAppWebhookPipeline;

#[path = "support/text.rs"]
mod text;

use text::assert_contains;

const OPERATOR_IMAGE: &str = "ghcr.io/wapipe/wapipe:0.1.0";

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(name: &str) -> WhatsAppWebhookPipeline {
    let text = std::fs::read_to_string(fixture_path(name)).expect("fixture exists");
    serde_yaml::from_str(&text).expect("fixture parses as a pipeline")
}

fn valid(name: &str) -> ValidPipeline {
    validate(&load(name), &[], OPERATOR_IMAGE).expect("fixture is valid")
}

fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn container(deployment: &Deployment) -> &Container {
    &pod_spec(deployment).containers[0]
}

fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
    container.env.as_ref()?.iter().find(|e| e.name == name)
}

fn plain(container: &Container, name: &str) -> Option<String> {
    env_value(container, name)?.value.clone()
}

/// Asserts the container's plain env values, naming every one that differs.
fn assert_plain(container: &Container, expected: &[(&str, &str)]) {
    let wrong: Vec<String> = expected
        .iter()
        .filter_map(|&(name, value)| {
            let found = plain(container, name);
            (found.as_deref() != Some(value))
                .then(|| format!("{name}={found:?}, expected {value:?}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("; "));
}

/// Asserts that no name in `names` appears twice.
fn assert_distinct<'a>(names: impl Iterator<Item = &'a str>, what: &str) {
    let mut names: Vec<&str> = names.collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "duplicate {what}");
}

/// What the API server refuses in a server-side apply and a golden file would keep: two env
/// entries (or volume mounts, or volumes) with the same name in one pod template.
fn assert_no_duplicate_names(children: &Children) {
    for deployment in [&children.ingress_deployment, &children.worker_deployment] {
        let pod = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .unwrap();
        let volumes = pod.volumes.iter().flatten().map(|v| v.name.as_str());
        assert_distinct(volumes, "volume names");
        for container in &pod.containers {
            let env = container.env.iter().flatten().map(|e| e.name.as_str());
            assert_distinct(env, &format!("env names in {}", container.name));
            let mounts = container.volume_mounts.iter().flatten();
            let paths = mounts.map(|m| m.mount_path.as_str());
            assert_distinct(paths, &format!("mount paths in {}", container.name));
        }
    }
}

fn assert_golden(name: &str, children: &Children) {
    assert_no_duplicate_names(children);
    let rendered = [
        serde_yaml::to_string(&children.ingress_deployment).unwrap(),
        serde_yaml::to_string(&children.ingress_service).unwrap(),
        serde_yaml::to_string(&children.ingress_pdb).unwrap(),
        serde_yaml::to_string(&children.worker_deployment).unwrap(),
    ]
    .into_iter()
    .chain(
        children
            .webhook_ingress
            .iter()
            .map(|route| serde_yaml::to_string(route).unwrap()),
    )
    .collect::<Vec<_>>()
    .join("---\n");
    let path = fixture_path(name);
    if std::env::var_os("WAPIPE_BLESS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let expected = std::fs::read_to_string(&path).expect("golden file exists (WAPIPE_BLESS=1)");
    assert_eq!(
        rendered,
        expected,
        "rendering differs from {}",
        path.display()
    );
}

#[test]
fn production_fixture_renders_the_reviewed_children() {
    assert_golden(
        "pipeline-meta-postgres.children.yaml",
        &build(&valid("pipeline-meta-postgres.yaml")),
    );
}

#[test]
fn minimal_fixture_renders_the_reviewed_children() {
    assert_golden(
        "pipeline-minimal.children.yaml",
        &build(&valid("pipeline-minimal.yaml")),
    );
}

#[test]
fn minimal_fixture_takes_every_default() {
    let valid = valid("pipeline-minimal.yaml");
    // Topics named after the pipeline: two pipelines left at their defaults never share one.
    assert_eq!(valid.spec.topic.name, "wapipe-default.minimal");
    assert_eq!(valid.spec.topic.partitions, 12);
    assert_eq!(
        valid.spec.dead_letter_topic.name,
        "wapipe-default.minimal.failed"
    );
    assert_eq!(valid.spec.worker.scale_down_window_seconds, 300);
    assert_eq!(valid.spec.worker.poll_interval_seconds, 10);
    assert_eq!(valid.spec.worker.max_attempts, 3);
    // A new pipeline's default group names its namespace too.
    assert_eq!(valid.consumer_group, "wapipe-default.minimal");
    assert_eq!(valid.ingress_image, OPERATOR_IMAGE);
    assert_eq!(valid.worker_image, OPERATOR_IMAGE);
    assert_eq!(
        valid.spec.deletion_policy,
        wapipe_operator::crd::DeletionPolicy::Retain
    );
}

#[test]
fn the_ingress_memory_limit_sets_its_byte_budgets_and_no_limit_keeps_the_defaults() {
    // 256Mi: the produce stage gets a sixteenth, the read stage half capped at its 64 MiB
    // default (operator/src/budget.rs), so a burst of large bodies meets 503, not the OOM killer.
    let ingress = build(&valid("pipeline-meta-postgres.yaml")).ingress_deployment;
    let ingress = container(&ingress);
    assert_plain(
        ingress,
        &[
            ("WAPIPE_MAX_IN_FLIGHT_BYTES", "16777216"),
            ("WAPIPE_MAX_BODY_READ_BYTES", "67108864"),
        ],
    );
    let minimal = build(&valid("pipeline-minimal.yaml")).ingress_deployment;
    let minimal = container(&minimal);
    assert_eq!(plain(minimal, "WAPIPE_MAX_IN_FLIGHT_BYTES"), None);
    assert_eq!(plain(minimal, "WAPIPE_MAX_BODY_READ_BYTES"), None);
}

#[test]
fn the_service_exposes_only_the_webhook_and_probes_and_scrapes_use_the_admin_port() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    for fixture in ["pipeline-minimal.yaml", "pipeline-meta-postgres.yaml"] {
        let children = build(&valid(fixture));
        let ingress = container(&children.ingress_deployment);
        let ports: Vec<(String, i32)> = ingress
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [("http".to_string(), 8080), ("metrics".to_string(), 9090)],
            "{fixture}"
        );
        assert_plain(
            ingress,
            &[
                ("WAPIPE_LISTEN", "0.0.0.0:8080"),
                ("WAPIPE_ADMIN_LISTEN", "0.0.0.0:9090"),
            ],
        );
        for (probe, path) in [
            (ingress.liveness_probe.as_ref(), "/healthz"),
            (ingress.readiness_probe.as_ref(), "/readyz"),
        ] {
            let get = probe.unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.path.as_deref(), Some(path), "{fixture}");
            assert_eq!(get.port, IntOrString::Int(9090), "{fixture} {path}");
        }
        // The Service (what a load balancer or Ingress puts on the internet): the webhook only.
        let service_ports = children
            .ingress_service
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap();
        assert_eq!(service_ports.len(), 1, "{fixture}: {service_ports:?}");
        assert_eq!(
            service_ports[0].target_port,
            Some(IntOrString::String("http".into()))
        );
        // The PodMonitor scrapes the port named `metrics` on both kinds of pod.
        let worker = container(&children.worker_deployment);
        let worker_ports = worker.ports.as_ref().unwrap();
        assert_eq!(worker_ports.len(), 1);
        assert_eq!(worker_ports[0].name.as_deref(), Some("metrics"));
        assert_eq!(worker_ports[0].container_port, 8081);
    }
}

#[test]
fn worker_template_leaves_replicas_to_the_scaler() {
    let children = build(&valid("pipeline-meta-postgres.yaml"));
    assert_eq!(
        children.worker_deployment.spec.as_ref().unwrap().replicas,
        None
    );
    assert_eq!(
        children.ingress_deployment.spec.as_ref().unwrap().replicas,
        Some(3)
    );
}

#[test]
fn argo_cd_tracking_labels_and_annotations_never_reach_children() {
    let children = build(&valid("pipeline-meta-postgres.yaml"));
    let metas = [
        &children.ingress_deployment.metadata,
        &children.ingress_service.metadata,
        &children.ingress_pdb.metadata,
        &children.worker_deployment.metadata,
    ];
    for meta in metas {
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels.get("team").map(String::as_str), Some("messaging"));
        assert!(labels.keys().all(|k| !k.starts_with("argocd.argoproj.io/")));
        assert!(!labels.contains_key("app.kubernetes.io/instance"));
        // Only what the pipeline's template adds (the Service's load balancer setting).
        let annotations = meta.annotations.clone().unwrap_or_default();
        assert!(annotations
            .keys()
            .all(|k| !k.starts_with("argocd.argoproj.io/")));
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "WhatsAppWebhookPipeline");
        assert_eq!(owner.name, "orders");
        assert_eq!(owner.controller, Some(true));
    }
}

#[test]
fn secrets_are_referenced_by_file_or_secret_key_ref_and_never_copied() {
    let children = build(&valid("pipeline-meta-postgres.yaml"));
    let ingress = container(&children.ingress_deployment);
    // The whole Secret is mounted, so a rotation's new key appears without a restart; the
    // referenced key is the prefix of the trusted ones.
    assert_plain(
        ingress,
        &[
            (
                "WAPIPE_APP_SECRET_DIR",
                "/var/run/secrets/wapipe/app-secret",
            ),
            ("WAPIPE_APP_SECRET_PREFIX", "app-secret"),
            (
                "WAPIPE_VERIFY_TOKEN_DIR",
                "/var/run/secrets/wapipe/verify-token",
            ),
            ("WAPIPE_VERIFY_TOKEN_PREFIX", "verify-token"),
            (
                "WAPIPE_KAFKA_SASL_PASSWORD_FILE",
                "/var/run/secrets/wapipe/kafka-sasl-password/password",
            ),
            ("WAPIPE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("WAPIPE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("WAPIPE_PROVIDER", "meta"),
            ("WAPIPE_LISTEN", "0.0.0.0:8080"),
        ],
    );

    let worker = container(&children.worker_deployment);
    let database = env_value(worker, "WAPIPE_DATABASE_URL").unwrap();
    assert_eq!(database.value, None);
    let selector = database
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .unwrap();
    assert_eq!(
        (selector.name.as_str(), selector.key.as_str()),
        ("orders-db", "url")
    );
    assert_plain(
        worker,
        &[
            ("WAPIPE_GROUP", "orders-workers"),
            ("WAPIPE_MAX_ATTEMPTS", "5"),
            ("WAPIPE_LISTEN", "0.0.0.0:8081"),
        ],
    );
    assert_eq!(
        worker.image.as_deref(),
        Some("registry.example/wapipe:1.2.3")
    );
}

#[test]
fn every_container_runs_under_the_restricted_profile() {
    let children = build(&valid("pipeline-minimal.yaml"));
    for deployment in [&children.ingress_deployment, &children.worker_deployment] {
        let pod = pod_spec(deployment);
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        let security = container(deployment).security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert_eq!(
            security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
    }
}

#[test]
fn spec_errors_are_reported_with_a_reason() {
    type Mutation = fn(&mut WhatsAppWebhookPipeline);
    let cases: [(&str, Mutation); 10] = [
        ("max below min", |p| {
            p.spec.worker.min_replicas = 5;
            p.spec.worker.max_replicas = 2;
        }),
        ("same topic twice", |p| {
            p.spec.topic.name = "orders".into();
            p.spec.dead_letter_topic.name = "orders".into();
        }),
        ("postgres without url", |p| {
            p.spec.worker.sink.database_url_secret_ref = None;
        }),
        ("meta without verify token", |p| {
            p.spec.ingress.verify_token_ref = None;
        }),
        ("bad topic name", |p| {
            p.spec.topic.name = "no spaces allowed".into()
        }),
        ("SASL without TLS", |p| {
            p.spec.kafka.tls = None;
        }),
        ("a name too long for the children", |p| {
            p.metadata.name = Some("a".repeat(56));
        }),
        ("a name no Service can carry", |p| {
            p.metadata.name = Some("1-orders".into());
        }),
        ("an http sink URL without a scheme", |p| {
            p.spec.worker.sink.type_ = wapipe_operator::crd::SinkType::Http;
            p.spec.worker.sink.database_url_secret_ref = None;
            p.spec.worker.sink.http_url = Some("hooks.example.com/whatsapp".into());
        }),
        ("an operator variable in the worker template", |p| {
            p.spec.worker.template = serde_json::from_value(serde_json::json!({
                "container": {"env": [{"name": "WAPIPE_SINK", "value": "log"}]}
            }))
            .unwrap();
        }),
    ];
    for (case, mutate) in cases {
        let mut pipeline = load("pipeline-meta-postgres.yaml");
        mutate(&mut pipeline);
        let invalid = validate(&pipeline, &[], OPERATOR_IMAGE).expect_err(case);
        assert_eq!(invalid.reason, "InvalidSpec", "{case}");
    }
}

#[test]
fn a_younger_pipeline_claiming_the_same_topic_is_a_resource_conflict() {
    let older = load("pipeline-meta-postgres.yaml");
    let mut younger = older.clone();
    younger.metadata.name = Some("orders-copy".into());
    younger.metadata.uid = Some("11111111-2222-4333-8444-555555555555".into());
    younger.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-02-01T00:00:00Z".parse().unwrap(),
        ));
    // Same cluster spelled differently: order and spacing of the bootstrap list do not matter.
    younger.spec.kafka.bootstrap_servers = "kafka-1.kafka:9093, kafka-0.kafka:9093".into();
    let all = [older.clone(), younger.clone()];
    let invalid = validate(&younger, &all, OPERATOR_IMAGE).unwrap_err();
    assert_eq!(invalid.reason, "ResourceConflict");
    assert_contains(&invalid.message, "shop/orders");
    assert!(
        validate(&older, &all, OPERATOR_IMAGE).is_ok(),
        "the oldest claim wins"
    );

    younger.spec.kafka.bootstrap_servers = "other-cluster:9092".into();
    assert!(
        validate(&younger, &all, OPERATOR_IMAGE).is_ok(),
        "another cluster is no conflict"
    );
}

#[test]
fn generated_crd_matches_the_committed_yaml() {
    use kube::CustomResourceExt;
    let generated = serde_yaml::to_string(&WhatsAppWebhookPipeline::crd()).unwrap();
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crds/whatsappwebhookpipelines.wapipe.dev.yaml"),
    )
    .unwrap();
    assert_eq!(
        generated, committed,
        "crds/ is stale: run `cargo run -p wapipe-operator --bin crdgen`"
    );
}

#[test]
fn sasl_without_tls_is_accepted_only_when_the_spec_says_so_and_the_error_says_how() {
    let mut pipeline = load("pipeline-meta-postgres.yaml");
    pipeline.spec.kafka.tls = None;
    let invalid = validate(&pipeline, &[], OPERATOR_IMAGE).unwrap_err();
    assert_contains(&invalid.message, "unencrypted");
    assert_contains(&invalid.message, "allowWithoutTls");
    pipeline.spec.kafka.sasl.as_mut().unwrap().allow_without_tls = true;
    assert!(validate(&pipeline, &[], OPERATOR_IMAGE).is_ok());
}

#[test]
fn images_outside_the_allowed_prefixes_are_refused_naming_the_field() {
    use wapipe_operator::validate::check_images;
    let pipeline = load("pipeline-meta-postgres.yaml");
    let valid = validate(&pipeline, &[], OPERATOR_IMAGE).unwrap();
    // No prefixes: any image.
    assert!(check_images(valid.clone(), &[]).is_ok());
    // The fixture's worker names registry.example/wapipe; its ingress runs the operator's image.
    let allowed = [
        "registry.example/".to_string(),
        "ghcr.io/wapipe/".to_string(),
    ];
    assert!(check_images(valid.clone(), &allowed).is_ok());
    let refused = check_images(valid.clone(), &allowed[..1]).unwrap_err();
    assert_eq!(refused.reason, "ImageNotAllowed");
    assert_contains(&refused.message, "ingress.image");
    assert_contains(&refused.message, "registry.example/");
    let mut elsewhere = valid;
    elsewhere.worker_image = "docker.io/someone/miner:1".into();
    let refused = check_images(elsewhere, &allowed).unwrap_err();
    assert_contains(&refused.message, "worker.image");
}

/// A sink URL carrying a token belongs in a Secret: the worker gets it from there, and the
/// URL is nowhere in the Deployment.
#[test]
fn an_http_sink_url_from_a_secret_reaches_the_worker_only_through_the_secret() {
    let mut pipeline = load("pipeline-meta-postgres.yaml");
    pipeline.spec.worker.sink.type_ = wapipe_operator::crd::SinkType::Http;
    pipeline.spec.worker.sink.database_url_secret_ref = None;
    pipeline.spec.worker.sink.http_url_secret_ref = Some(wapipe_operator::crd::SecretKeyRef {
        name: "hooks".into(),
        key: "url".into(),
    });
    let valid = validate(&pipeline, &[], OPERATOR_IMAGE).expect("valid");
    let children = build(&valid);
    let worker = serde_json::to_value(&children.worker_deployment).unwrap();
    let env = worker["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let url = env
        .iter()
        .find(|e| e["name"] == "WAPIPE_HTTP_SINK_URL")
        .expect("the sink URL variable");
    let from = &url["valueFrom"]["secretKeyRef"];
    assert_eq!(
        (&from["name"], &from["key"]),
        (&"hooks".into(), &"url".into()),
        "{url}"
    );
    assert!(url.get("value").is_none(), "{url}");

    pipeline.spec.worker.sink.http_url = Some("https://hooks.example.com/x".into());
    let invalid = validate(&pipeline, &[], OPERATOR_IMAGE).expect_err("both given");
    assert_eq!(invalid.reason, "InvalidSpec");
}
