//! Pure construction of the children of a pipeline: the ingress Deployment, Service and
//! PodDisruptionBudget, and the worker Deployment (template only: its replicas belong to the
//! scaler). Secrets are referenced by volume or `secretKeyRef`, never copied.

use std::collections::BTreeMap;

use wapipe_core::env as wenv;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::budget::ingress_budgets;
use crate::crd::{KafkaSpec, Resources, SecretKeyRef, SinkType};
use crate::template;
use crate::validate::ValidPipeline;

/// Public port of the ingress: the webhook only, and the only port its Service exposes.
pub const INGRESS_PORT: i32 = 8080;
/// Admin port of the ingress (`/healthz`, `/readyz`, `/metrics`): probes and scrapes reach it
/// on the pod, never through the Service.
pub const INGRESS_ADMIN_PORT: i32 = 9090;
/// Port of the worker (health, metrics).
pub const WORKER_PORT: i32 = 8081;
/// Name of the container port Prometheus scrapes, on the ingress and the worker alike (the
/// chart's PodMonitor names it).
pub const METRICS_PORT_NAME: &str = "metrics";
/// Where Secret volumes are mounted; one directory per Secret reference.
pub const SECRET_MOUNT_ROOT: &str = "/var/run/secrets/wapipe";
/// Label naming the pipeline a child belongs to.
pub const PIPELINE_LABEL: &str = "wapipe.dev/pipeline";

/// Everything the reconciler applies for one pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub ingress_deployment: Deployment,
    pub ingress_service: Service,
    pub ingress_pdb: PodDisruptionBudget,
    pub worker_deployment: Deployment,
    /// The webhook's Ingress, when `ingress.expose` asks for one.
    pub webhook_ingress: Option<Ingress>,
}

pub fn ingress_name(pipeline: &str) -> String {
    format!("{pipeline}-ingress")
}

pub fn worker_name(pipeline: &str) -> String {
    format!("{pipeline}-worker")
}

/// Builds every child of `pipeline`.
pub fn build(pipeline: &ValidPipeline) -> Children {
    Children {
        ingress_deployment: ingress_deployment(pipeline),
        ingress_service: ingress_service(pipeline),
        ingress_pdb: ingress_pdb(pipeline),
        worker_deployment: worker_deployment(pipeline),
        webhook_ingress: webhook_ingress(pipeline),
    }
}

/// The webhook's address inside the cluster (the ingress Service).
pub fn webhook_address(pipeline: &ValidPipeline) -> String {
    format!(
        "http://{}.{}.svc/webhook",
        ingress_name(&pipeline.name),
        pipeline.namespace
    )
}

/// The webhook's public URL, when the pipeline is exposed: https with a TLS Secret, else http
/// (TLS then ends at an edge in front).
pub fn public_url(pipeline: &ValidPipeline) -> Option<String> {
    let expose = pipeline.spec.ingress.expose.as_ref()?;
    let scheme = if expose.tls_secret_name.is_some() {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{}/webhook", expose.host))
}

fn selector_labels(pipeline: &ValidPipeline, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            format!("wapipe-{component}"),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
        (PIPELINE_LABEL.to_string(), pipeline.name.clone()),
    ])
}

fn labels(pipeline: &ValidPipeline, component: &str) -> BTreeMap<String, String> {
    let mut labels = pipeline.labels.clone();
    labels.extend(selector_labels(pipeline, component));
    labels.insert("app.kubernetes.io/part-of".into(), "wapipe".into());
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        crate::FIELD_MANAGER.into(),
    );
    labels
}

fn metadata(pipeline: &ValidPipeline, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(pipeline.namespace.clone()),
        labels: Some(labels(pipeline, component)),
        owner_references: Some(vec![pipeline.owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn env_from_secret(name: &str, secret: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Mounted Secret references of one container: volumes, mounts, and the file each key lands in.
#[derive(Default)]
struct SecretFiles {
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
}

impl SecretFiles {
    /// Mounts `secret`'s key under `SECRET_MOUNT_ROOT/<purpose>/` and returns the file path.
    fn mount(&mut self, purpose: &str, secret: &SecretKeyRef) -> String {
        let dir = self.mount_volume(purpose, secret, true);
        format!("{dir}/{}", secret.key)
    }

    /// Mounts every key of `secret`'s Secret under `SECRET_MOUNT_ROOT/<purpose>/` and returns
    /// the directory. The kubelet updates it in place, keys coming and going, so a running
    /// ingress sees a rotation without a restart; the key names which files it trusts.
    fn mount_whole(&mut self, purpose: &str, secret: &SecretKeyRef) -> String {
        self.mount_volume(purpose, secret, false)
    }

    fn mount_volume(&mut self, purpose: &str, secret: &SecretKeyRef, only_key: bool) -> String {
        let dir = format!("{SECRET_MOUNT_ROOT}/{purpose}");
        self.volumes.push(Volume {
            name: purpose.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                items: only_key.then(|| {
                    vec![KeyToPath {
                        key: secret.key.clone(),
                        path: secret.key.clone(),
                        mode: None,
                    }]
                }),
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Volume::default()
        });
        self.mounts.push(VolumeMount {
            name: purpose.into(),
            mount_path: dir.clone(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        dir
    }
}

/// Kafka connection env shared by ingress and worker (`wapipe_core::kafka::KafkaArgs`).
fn kafka_env(kafka: &KafkaSpec, files: &mut SecretFiles) -> Vec<EnvVar> {
    let mut vars = vec![env(wenv::KAFKA_BROKERS, kafka.bootstrap_servers.clone())];
    let protocol = wapipe_core::kafka::security_protocol(kafka.sasl.is_some(), kafka.tls.is_some());
    if let Some(protocol) = protocol {
        vars.push(env(wenv::KAFKA_SECURITY_PROTOCOL, protocol));
    }
    if let Some(sasl) = &kafka.sasl {
        vars.push(env(wenv::KAFKA_SASL_MECHANISM, sasl.mechanism.as_str()));
        vars.push(env(wenv::KAFKA_SASL_USERNAME, sasl.username.clone()));
        let path = files.mount("kafka-sasl-password", &sasl.password_secret_ref);
        vars.push(env(wenv::KAFKA_SASL_PASSWORD_FILE, path));
    }
    if let Some(ca) = kafka
        .tls
        .as_ref()
        .and_then(|tls| tls.ca_secret_ref.as_ref())
    {
        let path = files.mount("kafka-ca", ca);
        vars.push(env(wenv::KAFKA_SSL_CA_LOCATION, path));
    }
    vars
}

fn resources(resources: Option<&Resources>) -> Option<ResourceRequirements> {
    let resources = resources?;
    let quantities = |map: &BTreeMap<String, String>| {
        (!map.is_empty()).then(|| {
            map.iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect::<BTreeMap<_, _>>()
        })
    };
    Some(ResourceRequirements {
        requests: quantities(&resources.requests),
        limits: quantities(&resources.limits),
        ..ResourceRequirements::default()
    })
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn http_probe(path: &str, port: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// The restricted Pod Security Standard, container level.
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// The restricted Pod Security Standard, pod level.
fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        run_as_group: Some(65532),
        fs_group: Some(65532),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// A pod template running `command` with a writable `/tmp` (the root filesystem is read-only).
fn pod_template(
    pipeline: &ValidPipeline,
    component: &str,
    container: Container,
    mut volumes: Vec<Volume>,
    grace_seconds: i64,
) -> PodTemplateSpec {
    volumes.push(Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(pipeline, component)),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: Some(volumes),
            security_context: Some(pod_security()),
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(grace_seconds),
            ..PodSpec::default()
        }),
    }
}

/// The container of the `wapipe-<component>` binary: `/healthz` and `/readyz` probed on
/// `health_port`, the restricted security context, and the pod's writable `/tmp` mounted
/// beside `mounts`.
fn component_container(
    component: &str,
    image: &str,
    vars: Vec<EnvVar>,
    ports: Vec<ContainerPort>,
    health_port: i32,
    requested: Option<&Resources>,
    mut mounts: Vec<VolumeMount>,
) -> Container {
    mounts.push(VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    });
    Container {
        name: component.into(),
        image: Some(image.into()),
        command: Some(vec![format!("wapipe-{component}")]),
        env: Some(vars),
        ports: Some(ports),
        liveness_probe: Some(http_probe("/healthz", health_port, 10, 3)),
        readiness_probe: Some(http_probe("/readyz", health_port, 5, 2)),
        resources: resources(requested),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// How long an ingress pod keeps serving after SIGTERM (`WAPIPE_SHUTDOWN_DELAY`).
const INGRESS_SHUTDOWN_DELAY_SECONDS: i64 = 5;

fn ingress_deployment(pipeline: &ValidPipeline) -> Deployment {
    let spec = &pipeline.spec;
    let mut files = SecretFiles::default();
    let mut vars = vec![
        env(wenv::LISTEN, format!("0.0.0.0:{INGRESS_PORT}")),
        env(wenv::ADMIN_LISTEN, format!("0.0.0.0:{INGRESS_ADMIN_PORT}")),
        env(
            wenv::PROVIDER,
            wapipe_core::record::Provider::from(spec.ingress.provider).as_str(),
        ),
        env(wenv::TOPIC, spec.topic.name.clone()),
        env(wenv::LOG_FORMAT, "json"),
        // Serving on after SIGTERM until kube-proxy everywhere has dropped the pod from the
        // Service: a rolling update then refuses no connection.
        env(
            wenv::SHUTDOWN_DELAY,
            format!("{INGRESS_SHUTDOWN_DELAY_SECONDS}s"),
        ),
    ];
    vars.extend(kafka_env(&spec.kafka, &mut files));
    // Every key of the Secret starting with the referenced one is trusted: a rotation adds
    // `<key>-<new>` beside it and later removes the old key, with no restart.
    let app_secret = &spec.ingress.app_secret_ref;
    let dir = files.mount_whole("app-secret", app_secret);
    vars.push(env(wenv::APP_SECRET_DIR, dir));
    vars.push(env(wenv::APP_SECRET_PREFIX, app_secret.key.clone()));
    if let Some(token) = &spec.ingress.verify_token_ref {
        let dir = files.mount_whole("verify-token", token);
        vars.push(env(wenv::VERIFY_TOKEN_DIR, dir));
        vars.push(env(wenv::VERIFY_TOKEN_PREFIX, token.key.clone()));
    }
    if let Some(max) = spec.ingress.max_body_bytes {
        vars.push(env(wenv::MAX_BODY_BYTES, max.to_string()));
    }
    // Bounded by the memory limit, so a burst of large bodies meets 503, not the OOM killer.
    let max_body = spec
        .ingress
        .max_body_bytes
        .unwrap_or(wapipe_core::DEFAULT_MAX_BODY_BYTES as u64);
    if let Some(budgets) = ingress_budgets(spec.ingress.resources.as_ref(), max_body) {
        vars.push(env(
            wenv::MAX_BODY_READ_BYTES,
            budgets.read_bytes.to_string(),
        ));
        vars.push(env(
            wenv::MAX_IN_FLIGHT_BYTES,
            budgets.in_flight_bytes.to_string(),
        ));
    }
    let container = component_container(
        "ingress",
        &pipeline.ingress_image,
        vars,
        vec![
            container_port("http", INGRESS_PORT),
            container_port(METRICS_PORT_NAME, INGRESS_ADMIN_PORT),
        ],
        INGRESS_ADMIN_PORT,
        spec.ingress.resources.as_ref(),
        files.mounts,
    );
    // The shutdown delay, then the ingress's default 25 s for in-flight requests.
    let mut template = pod_template(
        pipeline,
        "ingress",
        container,
        files.volumes,
        INGRESS_SHUTDOWN_DELAY_SECONDS + 30,
    );
    let settings = spec.ingress.template.as_ref();
    let selector = LabelSelector {
        match_labels: Some(selector_labels(pipeline, "ingress")),
        ..LabelSelector::default()
    };
    template::apply_pod(
        &mut template,
        settings.and_then(|t| t.pod.as_ref()),
        settings.and_then(|t| t.container.as_ref()),
        Some(selector.clone()),
    );
    Deployment {
        metadata: metadata(pipeline, ingress_name(&pipeline.name), "ingress"),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.ingress.replicas),
            selector,
            template,
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn ingress_service(pipeline: &ValidPipeline) -> Service {
    let mut service = Service {
        metadata: metadata(pipeline, ingress_name(&pipeline.name), "ingress"),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(pipeline, "ingress")),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let settings = pipeline.spec.ingress.template.as_ref();
    template::apply_service(&mut service, settings.and_then(|t| t.service.as_ref()));
    service
}

/// One rule: `<host>/webhook` (and below) to the ingress Service's webhook port.
fn webhook_ingress(pipeline: &ValidPipeline) -> Option<Ingress> {
    let expose = pipeline.spec.ingress.expose.as_ref()?;
    let mut metadata = metadata(pipeline, ingress_name(&pipeline.name), "ingress");
    if !expose.annotations.is_empty() {
        metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(expose.annotations.clone());
    }
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: expose.ingress_class_name.clone(),
            tls: expose.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![expose.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(expose.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/webhook".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: ingress_name(&pipeline.name),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}

fn ingress_pdb(pipeline: &ValidPipeline) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(pipeline, ingress_name(&pipeline.name), "ingress"),
        spec: Some(PodDisruptionBudgetSpec {
            // At most one pod down at a time: with two or more replicas one always answers.
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(pipeline, "ingress")),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn worker_deployment(pipeline: &ValidPipeline) -> Deployment {
    let spec = &pipeline.spec;
    let worker = &spec.worker;
    let mut files = SecretFiles::default();
    let mut vars = vec![
        env(wenv::LISTEN, format!("0.0.0.0:{WORKER_PORT}")),
        env(wenv::TOPIC, spec.topic.name.clone()),
        env(wenv::DEAD_LETTER_TOPIC, spec.dead_letter_topic.name.clone()),
        env(wenv::GROUP, pipeline.consumer_group.clone()),
        env(wenv::SINK, worker.sink.type_.as_str()),
        env(wenv::MAX_ATTEMPTS, worker.max_attempts.to_string()),
        env(wenv::LOG_FORMAT, "json"),
    ];
    vars.extend(kafka_env(&spec.kafka, &mut files));
    match worker.sink.type_ {
        SinkType::Postgres => {
            if let Some(secret) = &worker.sink.database_url_secret_ref {
                vars.push(env_from_secret(wenv::DATABASE_URL, secret));
            }
        }
        SinkType::Http => {
            if let Some(secret) = &worker.sink.http_url_secret_ref {
                vars.push(env_from_secret(wenv::HTTP_SINK_URL, secret));
            } else if let Some(url) = &worker.sink.http_url {
                vars.push(env(wenv::HTTP_SINK_URL, url.clone()));
            }
        }
        SinkType::Log => {}
    }
    let container = component_container(
        "worker",
        &pipeline.worker_image,
        vars,
        vec![container_port(METRICS_PORT_NAME, WORKER_PORT)],
        WORKER_PORT,
        worker.resources.as_ref(),
        files.mounts,
    );
    // Time to finish the event in hand and commit its offset before the pod is killed.
    let mut template = pod_template(pipeline, "worker", container, files.volumes, 60);
    let settings = worker.template.as_ref();
    template::apply_pod(
        &mut template,
        settings.and_then(|t| t.pod.as_ref()),
        settings.and_then(|t| t.container.as_ref()),
        None,
    );
    Deployment {
        metadata: metadata(pipeline, worker_name(&pipeline.name), "worker"),
        spec: Some(DeploymentSpec {
            // Left out on purpose: `spec.replicas` is owned by the scaler's field manager.
            replicas: None,
            selector: LabelSelector {
                match_labels: Some(selector_labels(pipeline, "worker")),
                ..LabelSelector::default()
            },
            template,
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
