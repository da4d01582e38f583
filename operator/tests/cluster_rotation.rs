//! Rotating the app secret on the real control plane, under steady signed load, without one
//! answer but 200. The Secret is a real Secret of the API server; the ingress runs as a host
//! process from the pod template the operator wrote, and its Secret volume is kept in step with
//! the API's Secret the way the kubelet does it (a syncer reads the Secret every 500 ms and
//! projects it with the atomic `..data` swap). The steps are the documented procedure
//! (docs/secret-rotation.md): the Secret gains the new key, the sender switches to it, the old
//! key is removed. Afterwards the old key gets 401, and the operator never rolled the ingress.
//!
//! Run by tests/cluster/run.sh while its operator runs, with `--ignored` and
//! `WAPIPE_TEST_KUBECONFIG`, `WAPIPE_TEST_BROKERS`, `WAPIPE_TEST_BIN_DIR` (wapipe-ingress).
//! Deadlines only bound waiting; the figures printed are not asserted.

mod host_pods;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::cluster::{cluster_suite_run, host_run_pipeline_body};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::Api;
use serde_json::json;
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(120);
const OLD: &str = "rotation-old-secret";
const NEW: &str = "rotation-new-secret";
const NEW_KEY: &str = "app-secret-2026-12";

fn post(run: &str, n: u64) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"messages":[{{"from":"5215599{:06}","id":"wamid.{run}.{n}","timestamp":"1767000000","type":"text","text":{{"body":"{n}"}}}}]}}}}]}}]}}"#,
        n % 7
    )
}

/// The value of `series` in the ingress's `/metrics` (on its admin port), 0 when absent.
async fn ingress_metric(http: &reqwest::Client, admin_port: u16, series: &str) -> f64 {
    let text = http
        .get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .send()
        .await
        .expect("the ingress serves /metrics")
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the ingress shows `series` at `want`.
async fn wait_metric(http: &reqwest::Client, port: u16, series: &str, want: f64) {
    let deadline = Instant::now() + PATIENCE;
    while ingress_metric(http, port, series).await != want {
        assert!(Instant::now() < deadline, "{series} never became {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Changes the Secret `meta` with a JSON merge patch, as the person rotating the key does.
async fn merge_into_secret(secrets: &Api<Secret>, patch: serde_json::Value) {
    secrets
        .patch("meta", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patching the Secret meta");
}

/// Answers of the load while one phase lasted.
#[derive(Default, Debug, Clone)]
struct Tally {
    sent: u64,
    refused: Vec<u16>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the cluster suite: tests/cluster/run.sh runs it with --ignored"]
async fn rotating_a_real_secret_under_steady_signed_load_answers_nothing_but_200() {
    let meta = [("app-secret", OLD), ("verify-token", "rotation-token")];
    let (c, bin_dir, run, ns) = cluster_suite_run("rotate", &meta).await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), &ns);
    let mut body = host_run_pipeline_body(&ns, "rotate", &c.brokers, &run, 1);
    body["spec"]["worker"] = json!({"minReplicas": 1, "maxReplicas": 1, "sink": {"type": "log"}});
    c.create_pipeline(&ns, body).await;
    let pipelines = c.pipelines(&ns);
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), &ns);
    let ingress = c.deployment(&ns, "rotate-ingress").await;
    let generation = ingress.metadata.generation;

    let files = tempfile::tempdir().unwrap();
    let ingress_files = files.path().join("ingress");
    let command = host_pods::resolve_deployment(&secrets, ingress, &bin_dir, &ingress_files).await;
    assert!(
        command
            .volumes
            .iter()
            .any(|v| v.secret == "meta" && v.items.is_none()),
        "the whole Secret is mounted: {:?}",
        command.volumes
    );
    let log = files.path().join("ingress.log");
    let (_ingress, ports) = command.start(&log);
    // Metrics and readiness on the admin port, the webhook on the public one.
    let (port, admin) = (ports.http, ports.admin);
    let http = reqwest::Client::new();
    host_pods::wait_ready(&http, admin, &log, PATIENCE).await;

    // The kubelet's part: the mounted volumes follow the API's Secret.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let syncer = tokio::spawn({
        let (volumes, secrets, mut stopped) =
            (command.volumes.clone(), secrets.clone(), stopped.clone());
        async move {
            while !*stopped.borrow_and_update() {
                for volume in &volumes {
                    volume.sync(&secrets).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });

    // Steady signed load, two senders, each request signed with the key the provider uses now.
    let signing_key = Arc::new(Mutex::new(OLD.to_string()));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let url = format!("http://127.0.0.1:{port}/webhook");
    let mut senders = Vec::new();
    for sender in 0..2u64 {
        let (http, url, key, tally, mut stopped, run) = (
            http.clone(),
            url.clone(),
            signing_key.clone(),
            tally.clone(),
            stopped.clone(),
            run.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut n = sender;
            while !*stopped.borrow_and_update() {
                let body = post(&run, n);
                n += 2;
                let secret = key.lock().unwrap().clone();
                let status = wapipe_testkit::signed_meta_post(&http, &url, &secret, body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                let mut tally = tally.lock().unwrap();
                tally.sent += 1;
                if status != 200 {
                    tally.refused.push(status);
                }
            }
        }));
    }
    let mut phases: Vec<(&str, Duration, Tally)> = Vec::new();
    let mut phase_start = Instant::now();
    let mut end_phase = |name: &'static str, phases: &mut Vec<(&str, Duration, Tally)>| {
        let taken = std::mem::take(&mut *tally.lock().unwrap());
        phases.push((name, phase_start.elapsed(), taken));
        phase_start = Instant::now();
    };
    let old_loaded = "wapipe_ingress_secrets{kind=\"signing\",secret=\"app-secret\"}";
    let new_loaded = format!("wapipe_ingress_secrets{{kind=\"signing\",secret=\"{NEW_KEY}\"}}");
    let new_matches = format!("wapipe_ingress_signature_matches_total{{secret=\"{NEW_KEY}\"}}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    end_phase("steady on the old key", &mut phases);

    // 1. The Secret gains the new key; wait until the ingress has loaded it.
    merge_into_secret(&secrets, json!({"stringData": {NEW_KEY: NEW}})).await;
    wait_metric(&http, admin, &new_loaded, 1.0).await;
    end_phase("Secret gains the new key, until loaded", &mut phases);

    // 2. The sender switches; both keys are trusted meanwhile.
    *signing_key.lock().unwrap() = NEW.to_string();
    let deadline = Instant::now() + PATIENCE;
    while ingress_metric(&http, admin, &new_matches).await < 50.0 {
        assert!(Instant::now() < deadline, "nothing signed by the new key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A while on both keys, as while the provider's change spreads.
    tokio::time::sleep(Duration::from_secs(2)).await;
    end_phase("sender switched to the new key", &mut phases);

    // 3. The old key is removed; wait until the ingress no longer trusts it.
    merge_into_secret(&secrets, json!({"data": {"app-secret": null}})).await;
    wait_metric(&http, admin, old_loaded, 0.0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    end_phase("old key removed, until unloaded", &mut phases);

    let _ = stop.send(true);
    for sender in senders {
        sender.await.unwrap();
    }
    end_phase("draining", &mut phases);
    syncer.await.unwrap();

    let mut total = Tally::default();
    println!("rotation on the real Secret:");
    for (name, duration, tally) in &phases {
        println!(
            "  {name:<42} {:>6.1} s {:>6} requests {:>3} not 200",
            duration.as_secs_f64(),
            tally.sent,
            tally.refused.len()
        );
        total.sent += tally.sent;
        total.refused.extend(&tally.refused);
    }
    println!(
        "  total {} requests, {} not 200",
        total.sent,
        total.refused.len()
    );
    assert!(
        phases[..4].iter().all(|(_, _, tally)| tally.sent > 0),
        "load ran in every phase: {phases:?}"
    );
    assert!(
        total.refused.is_empty(),
        "answers not 200: {:?}",
        total.refused
    );

    // The old key is refused now, the new one accepted.
    for (secret, want) in [(OLD, 401), (NEW, 200)] {
        let body = post(&run, u64::MAX);
        let status = wapipe_testkit::signed_meta_post(&http, &url, secret, body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, want, "signed by {secret}");
    }
    // The keys reached the running ingress through its mounted directory: no rollout.
    let after = deployments.get("rotate-ingress").await.unwrap();
    assert_eq!(
        after.metadata.generation, generation,
        "the ingress was rolled"
    );

    pipelines
        .delete("rotate", &DeleteParams::default())
        .await
        .unwrap();
    c.delete_namespace(&ns).await;
}
