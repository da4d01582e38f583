//! Pod and Service settings a pipeline may add to the children the operator builds, in the
//! manner of Strimzi's `template`: scheduling (node selector, tolerations, affinity, spread,
//! priority), identity (service account, image pull secrets), metadata, extra environment, and
//! the ingress Service's type and annotations. What the operator sets for the pipeline to work
//! (its labels, the container's command, probes, security context and `WAPIPE_*` variables)
//! always wins; a template only adds.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, PodTemplateSpec, Service, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables the operator sets; a template may not set its own.
pub const RESERVED_ENV_PREFIX: &str = "WAPIPE_";

/// Labels and annotations added to an object the operator creates.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels added; the operator's own (`app.kubernetes.io/*`, `wapipe.dev/*`) win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations added (e.g. for a service mesh, a log shipper or a cloud load balancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Settings of the pods of one component.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSettings {
    /// Labels and annotations of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// Secrets to pull the image from a private registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// Nodes the pods may run on, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node and pod affinity. For the ingress, setting it (or `topologySpreadConstraints`)
    /// replaces the default spread across nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How the pods spread over zones or nodes. Without this and without `affinity`, ingress
    /// pods spread across nodes (`kubernetes.io/hostname`, maxSkew 1, ScheduleAnyway), so one
    /// node going away leaves an ingress pod answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
    /// ServiceAccount the pods run as (e.g. one bound to a cloud identity for Kafka or the
    /// database). Its API token is still not mounted: wapipe's pods never call the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
}

/// Settings of the component's container.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSettings {
    /// Extra environment variables (e.g. `RUST_LOG`, a proxy). Names starting with `WAPIPE_`
    /// are the operator's: such a pipeline is refused with `InvalidSpec`. (Not a CEL rule: an
    /// EnvVar's name has no length bound, so the API server would judge the rule too costly.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
}

/// How the ingress Service is exposed.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Inside the cluster only; expose it with an Ingress or a Gateway (the default).
    #[default]
    ClusterIP,
    /// On a port of every node.
    NodePort,
    /// Through the cloud's load balancer.
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Settings of the ingress Service.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSettings {
    /// Labels and annotations of the Service (e.g. a load balancer's settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
}

/// What the ingress's children may be given.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressTemplate {
    /// The ingress pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSettings>,
    /// The ingress container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSettings>,
    /// The ingress Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSettings>,
}

/// What the worker pods may be given.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerTemplate {
    /// The worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSettings>,
    /// The worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSettings>,
}

/// Adds `extra` to `map` without replacing any key already there.
fn add_missing(
    map: &mut Option<BTreeMap<String, String>>,
    extra: Option<&BTreeMap<String, String>>,
) {
    let Some(extra) = extra.filter(|e| !e.is_empty()) else {
        return;
    };
    let map = map.get_or_insert_with(BTreeMap::new);
    for (key, value) in extra {
        map.entry(key.clone()).or_insert_with(|| value.clone());
    }
}

/// Adds the template's labels and annotations to `meta`; keys already set stay.
pub fn apply_metadata(meta: &mut ObjectMeta, template: Option<&TemplateMetadata>) {
    let Some(template) = template else {
        return;
    };
    add_missing(&mut meta.labels, template.labels.as_ref());
    add_missing(&mut meta.annotations, template.annotations.as_ref());
}

/// Applies pod and container settings to a pod template the operator built. `spread` is the
/// default spread when the settings bring neither affinity nor spread constraints (the
/// ingress's; `None` for the worker).
pub fn apply_pod(
    template: &mut PodTemplateSpec,
    pod: Option<&PodSettings>,
    container: Option<&ContainerSettings>,
    spread: Option<LabelSelector>,
) {
    let default_pod = PodSettings::default();
    let pod = pod.unwrap_or(&default_pod);
    apply_metadata(
        template.metadata.get_or_insert_with(ObjectMeta::default),
        pod.metadata.as_ref(),
    );
    let spec = template.spec.get_or_insert_with(Default::default);
    spec.image_pull_secrets = pod.image_pull_secrets.clone().filter(|s| !s.is_empty());
    spec.node_selector = pod.node_selector.clone().filter(|s| !s.is_empty());
    spec.tolerations = pod.tolerations.clone().filter(|t| !t.is_empty());
    spec.affinity = pod.affinity.clone();
    spec.priority_class_name = pod.priority_class_name.clone();
    spec.service_account_name = pod.service_account_name.clone();
    spec.topology_spread_constraints = match (&pod.topology_spread_constraints, &pod.affinity) {
        (Some(constraints), _) if !constraints.is_empty() => Some(constraints.clone()),
        (_, Some(_)) => None,
        _ => spread.map(|selector| {
            vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "kubernetes.io/hostname".into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                label_selector: Some(selector),
                ..TopologySpreadConstraint::default()
            }]
        }),
    };
    if let Some(extra) = container.and_then(|c| c.env.as_ref()) {
        if let Some(main) = spec.containers.first_mut() {
            let env = main.env.get_or_insert_with(Vec::new);
            for var in extra {
                if !var.name.starts_with(RESERVED_ENV_PREFIX)
                    && !env.iter().any(|existing| existing.name == var.name)
                {
                    env.push(var.clone());
                }
            }
        }
    }
}

/// Applies the Service settings to the ingress Service the operator built.
pub fn apply_service(service: &mut Service, settings: Option<&ServiceSettings>) {
    let Some(settings) = settings else {
        return;
    };
    apply_metadata(&mut service.metadata, settings.metadata.as_ref());
    if let Some(spec) = service.spec.as_mut() {
        spec.type_ = Some(settings.type_.as_str().into());
    }
}

/// Env names of a template that the operator would refuse, for the operator's own check behind
/// the CEL rule.
pub fn reserved_env_names(container: Option<&ContainerSettings>) -> Vec<String> {
    container
        .and_then(|c| c.env.as_ref())
        .into_iter()
        .flatten()
        .filter(|var| var.name.starts_with(RESERVED_ENV_PREFIX))
        .map(|var| var.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn built() -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([(
                    "wapipe.dev/pipeline".into(),
                    "orders".into(),
                )])),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "ingress".into(),
                    env: Some(vec![EnvVar {
                        name: "WAPIPE_TOPIC".into(),
                        value: Some("t".into()),
                        ..EnvVar::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    fn selector() -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "x".into())])),
            ..LabelSelector::default()
        }
    }

    #[test]
    fn the_operators_labels_and_variables_win_over_the_template() {
        let mut pod = built();
        let settings = PodSettings {
            metadata: Some(TemplateMetadata {
                labels: Some(BTreeMap::from([
                    ("wapipe.dev/pipeline".into(), "hijack".into()),
                    ("team".into(), "payments".into()),
                ])),
                annotations: Some(BTreeMap::from([(
                    "sidecar.istio.io/inject".into(),
                    "false".into(),
                )])),
            }),
            ..PodSettings::default()
        };
        let container = ContainerSettings {
            env: Some(vec![
                EnvVar {
                    name: "WAPIPE_TOPIC".into(),
                    value: Some("other".into()),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: "RUST_LOG".into(),
                    value: Some("debug".into()),
                    ..EnvVar::default()
                },
            ]),
        };
        apply_pod(&mut pod, Some(&settings), Some(&container), None);
        let labels = pod.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(labels["wapipe.dev/pipeline"], "orders");
        assert_eq!(labels["team"], "payments");
        let env = pod.spec.as_ref().unwrap().containers[0]
            .env
            .as_ref()
            .unwrap();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["WAPIPE_TOPIC", "RUST_LOG"]);
        assert_eq!(env[0].value.as_deref(), Some("t"));
        assert_eq!(reserved_env_names(Some(&container)), ["WAPIPE_TOPIC"]);
    }

    #[test]
    fn the_ingress_spreads_across_nodes_unless_the_template_places_it_otherwise() {
        let mut pod = built();
        apply_pod(&mut pod, None, None, Some(selector()));
        let spread = pod
            .spec
            .as_ref()
            .unwrap()
            .topology_spread_constraints
            .clone()
            .unwrap();
        assert_eq!(spread[0].topology_key, "kubernetes.io/hostname");
        assert_eq!(spread[0].when_unsatisfiable, "ScheduleAnyway");

        let mut pod = built();
        let settings = PodSettings {
            affinity: Some(Affinity::default()),
            ..PodSettings::default()
        };
        apply_pod(&mut pod, Some(&settings), None, Some(selector()));
        assert!(pod
            .spec
            .as_ref()
            .unwrap()
            .topology_spread_constraints
            .is_none());

        let mut pod = built();
        apply_pod(&mut pod, None, None, None);
        assert!(
            pod.spec
                .as_ref()
                .unwrap()
                .topology_spread_constraints
                .is_none(),
            "workers: none"
        );
    }
}
