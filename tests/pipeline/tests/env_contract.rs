//! The contract between the operator's pod templates and the binaries' command lines: every
//! `WAPIPE_*` variable the operator writes into the ingress's or the worker's container is one
//! that binary reads. Both sides name the variables with `wapipe_core::env`; this test catches a
//! writer that drifts from it (a variable nobody reads is a setting silently ignored in
//! production).

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use k8s_openapi::api::apps::v1::Deployment;
use wapipe_operator::build::build;
use wapipe_operator::validate::validate;
use wapipe_operator::WhatsAppWebhookPipeline;

fn env_names_read_by(command: &clap::Command) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    for sub in command.get_subcommands() {
        names.extend(env_names_read_by(sub));
    }
    names
}

fn env_names_written_into(deployment: &Deployment) -> Vec<String> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|pod| {
            pod.containers
                .iter()
                .flat_map(|c| c.env.iter().flatten())
                .map(|e| e.name.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn pipeline(fixture: &str) -> WhatsAppWebhookPipeline {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../operator/tests/fixtures")
        .join(fixture);
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_variable_the_operator_writes_is_read_by_the_binary_it_runs() {
    let ingress_reads = env_names_read_by(&wapipe_ingress::Config::command());
    let worker_reads = env_names_read_by(&wapipe_worker::config::Cli::command());
    assert!(ingress_reads.contains(wapipe_core::env::APP_SECRET_FILE));
    assert!(worker_reads.contains(wapipe_core::env::DEAD_LETTER_TOPIC));

    // The fixtures between them use SASL, TLS, a verify token, PostgreSQL and the minimal path.
    for fixture in ["pipeline-meta-postgres.yaml", "pipeline-minimal.yaml"] {
        let valid = validate(&pipeline(fixture), &[], "ghcr.io/wapipe/wapipe:0.1.0")
            .expect("the fixture is valid");
        let children = build(&valid);
        for (deployment, reads, binary) in [
            (
                &children.ingress_deployment,
                &ingress_reads,
                "wapipe-ingress",
            ),
            (&children.worker_deployment, &worker_reads, "wapipe-worker"),
        ] {
            let written = env_names_written_into(deployment);
            assert!(
                !written.is_empty(),
                "{fixture}: {binary} gets no environment"
            );
            for name in written.iter().filter(|n| n.starts_with("WAPIPE_")) {
                assert!(
                    reads.contains(name),
                    "{fixture}: the operator sets {name} on {binary}, which does not read it \
                     (it reads {reads:?})"
                );
            }
        }
    }
}
