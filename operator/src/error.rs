//! The crate's error type: one variant per step of a reconcile that can fail.

use crate::kafka::AdminError;
use crate::status::{ConditionType, Reason};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The resource's spec cannot be reconciled as written; waits for the next change.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("listing pipelines to check topic claims")]
    ListPipelines(#[source] kube::Error),
    /// `condition` is the status condition the Secret is needed for (`TopicReady`, ...).
    #[error("reading Secret {namespace}/{name}")]
    ReadSecret {
        condition: ConditionType,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {namespace}/{name} has no key {key}")]
    SecretKeyMissing {
        condition: ConditionType,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("applying {kind} {name}")]
    ApplyChild {
        kind: &'static str,
        name: String,
        /// The status condition the child belongs to (`IngressReady` or `WorkersReady`).
        condition: ConditionType,
        #[source]
        source: kube::Error,
    },
    #[error("reading {kind} {name}")]
    ReadChild {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// A same-named object exists that this pipeline does not control: it is never taken over.
    #[error(
        "{kind} {name} already exists and is not controlled by this pipeline ({holder}); the \
         operator does not take over an object it did not create: remove or rename that object, \
         or rename the pipeline"
    )]
    ChildNotOwned {
        kind: &'static str,
        name: String,
        /// The status condition the child belongs to (`IngressReady` or `WorkersReady`).
        condition: ConditionType,
        /// Who controls it, in words.
        holder: String,
    },
    #[error("reading the Kafka cluster id")]
    KafkaClusterId(#[source] AdminError),
    #[error("deleting Deployment {name}")]
    DeleteChild {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing worker replicas")]
    PatchReplicas(#[source] kube::Error),
    #[error("writing status")]
    PatchStatus(#[source] kube::Error),
    #[error("updating finalizers")]
    PatchFinalizers(#[source] kube::Error),
    #[error("{action} topic {topic}")]
    Topic {
        action: &'static str,
        topic: String,
        #[source]
        source: AdminError,
    },
    #[error("reading consumer-group lag")]
    ReadLag(#[source] AdminError),
    #[error("serializing {0}")]
    Serialize(&'static str, #[source] serde_json::Error),
}

impl Error {
    /// What a failed Kafka admin call on `topic` becomes, for `map_err`: `action` names the
    /// call in the message ("deleting", "describing").
    pub fn topic(action: &'static str, topic: &str) -> impl FnOnce(AdminError) -> Error {
        let topic = topic.to_string();
        move |source| Error::Topic {
            action,
            topic,
            source,
        }
    }

    /// Whether retrying later may succeed without a change to the resource.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Error::InvalidSpec(_)) && !self.is_child_refused()
    }

    /// Whether the API server refused a child as invalid (422 Invalid, 400 BadRequest): the
    /// spec produced something it will never take, so retrying without a change cannot help.
    pub fn is_child_refused(&self) -> bool {
        matches!(
            self,
            Error::ApplyChild {
                source: kube::Error::Api(status),
                ..
            } if status.code == 422 || status.code == 400
        )
    }

    /// The error and each of its causes, once, on one line: what a status condition message, an
    /// Event note and a log line carry. `Display` alone names only the action that failed.
    pub fn message(&self) -> String {
        wapipe_core::error::with_causes(self)
    }

    /// Whether Kafka refused the operator's credentials (see [`AdminError::is_auth`]).
    pub fn is_kafka_auth(&self) -> bool {
        match self {
            Error::Topic { source, .. }
            | Error::ReadLag(source)
            | Error::KafkaClusterId(source) => source.is_auth(),
            _ => false,
        }
    }

    /// Whether the API server refused to create a child because the namespace is being deleted.
    pub fn is_namespace_terminating(&self) -> bool {
        match self {
            Error::ApplyChild {
                source: kube::Error::Api(status),
                ..
            }
            | Error::PatchReplicas(kube::Error::Api(status)) => namespace_terminating(status),
            _ => false,
        }
    }

    /// A one-word label for metrics and events.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::ListPipelines(_) => "ListPipelines",
            Error::ReadSecret { .. } | Error::SecretKeyMissing { .. } => "ReadSecret",
            Error::ApplyChild { .. } => "ApplyChild",
            Error::PatchReplicas(_) => "PatchReplicas",
            Error::PatchStatus(_) => "PatchStatus",
            Error::PatchFinalizers(_) => "PatchFinalizers",
            Error::DeleteChild { .. } => "DeleteChild",
            Error::ReadChild { .. } => "ReadChild",
            Error::ChildNotOwned { .. } => "ResourceConflict",
            Error::KafkaClusterId(_) => "KafkaError",
            Error::Topic { .. } => "KafkaError",
            Error::ReadLag(_) => "ReadLag",
            Error::Serialize(..) => "Serialize",
        }
    }
}

/// How a failed reconcile shows in the status: the condition that turns False and its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureCondition {
    pub condition: ConditionType,
    pub reason: Reason,
}

impl Error {
    /// The condition a person must see for this failure, if any: a missing or unreadable
    /// Secret, a Kafka cluster the operator cannot talk to, or a child the API server refused. Other failures (API server
    /// hiccups) only retry.
    pub fn failure_condition(&self) -> Option<FailureCondition> {
        let (condition, reason) = match self {
            Error::ReadSecret {
                condition,
                source: kube::Error::Api(status),
                ..
            } if status.code == 404 => (*condition, Reason::SecretNotFound),
            Error::ReadSecret {
                condition,
                source: kube::Error::Api(status),
                ..
            } if status.code == 403 => (*condition, Reason::Forbidden),
            Error::SecretKeyMissing { condition, .. } => (*condition, Reason::SecretNotFound),
            Error::Topic { .. } | Error::KafkaClusterId(_) => {
                (ConditionType::TopicReady, Reason::KafkaUnavailable)
            }
            Error::ChildNotOwned { condition, .. } => (*condition, Reason::ResourceConflict),
            Error::ApplyChild { condition, .. } if self.is_child_refused() => {
                (*condition, Reason::ChildRefused)
            }
            _ => return None,
        };
        Some(FailureCondition { condition, reason })
    }
}

/// Whether the API server refused a write because the namespace is being deleted (its
/// NamespaceLifecycle admission answers 403 with no reason of its own, only this message).
pub fn namespace_terminating(status: &kube::core::Status) -> bool {
    status.code == 403 && status.message.contains("because it is being terminated")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn denied() -> Error {
        let cause = serde_json::from_str::<u32>("connection refused").unwrap_err();
        Error::Serialize("the status", cause)
    }

    #[test]
    fn a_wrapped_error_prints_each_cause_once() {
        let text = format!("{:#}", anyhow::Error::from(denied()).context("reconciling"));
        assert_eq!(text.matches("expected value").count(), 1, "{text}");
    }

    #[test]
    fn a_condition_message_still_carries_the_cause() {
        let message = denied().message();
        assert!(message.starts_with("serializing the status: "), "{message}");
        assert!(message.contains("expected value"), "{message}");
    }
}
