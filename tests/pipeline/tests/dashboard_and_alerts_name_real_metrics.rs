//! Every metric the Grafana dashboard and the Prometheus alerts name is one the binaries really
//! export: the ingress is started and scraped on `/metrics`; the worker's and the operator's
//! `/metrics` routers (the ones their binaries serve) are served and scraped. No hand-written
//! list of names.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use wapipe_core::service::probe_router;
use wapipe_operator::metrics::{ErrorLabels, PartitionLabels, PipelineLabels, ScalingLabels};

/// Sample names a scrape can contain, from its `# TYPE` lines (OpenMetrics: a counter `x` is
/// sampled as `x_total`, a histogram as `x_bucket`, `x_sum` and `x_count`).
fn sample_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

async fn scrape(url: &str) -> String {
    for _ in 0..100 {
        if let Ok(response) = reqwest::get(url).await {
            if response.status().is_success() {
                return response.text().await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered");
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/metrics")
}

/// `wapipe_...` names in a PromQL expression (label values and names never start so).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(found) = expr[i..].find("wapipe_") {
        let start = i + found;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded {
            names.push(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

fn expressions(repo: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo.join("deploy/grafana/wapipe-dashboard.json")).unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("dashboard panel {:?}", panel["title"]),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["definition"].as_str() {
            out.push((
                format!("dashboard variable {:?}", variable["name"]),
                query.into(),
            ));
        }
    }
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo.join("deploy/prometheus/wapipe-alerts.yaml")).unwrap(),
    )
    .unwrap();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            out.push((
                format!("alert {:?}", rule["alert"].as_str().unwrap_or("?")),
                rule["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_name_is_exported_by_a_binary() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut exported = BTreeSet::new();

    // The ingress, as its binary runs it (no broker needed to serve /metrics).
    let listen = format!("127.0.0.1:{}", wapipe_testkit::free_port());
    let admin = format!("127.0.0.1:{}", wapipe_testkit::free_port());
    let config = wapipe_ingress::Config::try_parse_from([
        "wapipe-ingress",
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
        "--app-secret",
        "s",
        "--kafka-brokers",
        "127.0.0.1:1",
    ])
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ingress = tokio::spawn(wapipe_ingress::server::run(config, async {
        let _ = stopped.await;
    }));
    exported.extend(sample_names(
        &scrape(&format!("http://{admin}/metrics")).await,
    ));
    let _ = stop.send(());
    let _ = ingress.await;

    // The worker's endpoints with a worker's metrics.
    let worker = wapipe_worker::Worker::new();
    let url = serve(probe_router(Arc::new(wapipe_worker::observe::AppState {
        metrics: worker.metrics.clone(),
        health: worker.health.clone(),
    })))
    .await;
    exported.extend(sample_names(&scrape(&url).await));

    // The operator's endpoints with its registry, as its main builds them. Its series are per
    // pipeline and appear once one is reconciled: a pipeline's worth of them is set here.
    let metrics = wapipe_operator::metrics::Metrics::default();
    let pipeline = PipelineLabels {
        namespace: "shop".into(),
        pipeline: "meta".into(),
    };
    let _ = metrics.reconcile_errors.get_or_create(&ErrorLabels {
        error: "kafka".into(),
    });
    for gauge in [
        &metrics.total_lag,
        &metrics.desired_workers,
        &metrics.max_workers,
        &metrics.current_workers,
        &metrics.stalled_partitions,
    ] {
        let _ = gauge.get_or_create(&pipeline);
    }
    let _ = metrics.partition_lag.get_or_create(&PartitionLabels {
        namespace: "shop".into(),
        pipeline: "meta".into(),
        partition: "0".into(),
    });
    let _ = metrics.scaling_changes.get_or_create(&ScalingLabels {
        namespace: "shop".into(),
        pipeline: "meta".into(),
        reason: "ScaledUp".into(),
    });
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let url = serve(probe_router(Arc::new(wapipe_operator::probes::AppState {
        registry,
        ready: AtomicBool::new(true),
    })))
    .await;
    exported.extend(sample_names(&scrape(&url).await));
    assert!(
        exported.contains("wapipe_ingress_requests_total"),
        "{exported:?}"
    );

    let mut unknown = Vec::new();
    let mut named = 0;
    for (place, expr) in expressions(&repo) {
        for name in metric_names(&expr) {
            named += 1;
            if !exported.contains(&name) {
                unknown.push(format!("{place}: {name}"));
            }
        }
    }
    assert!(named > 20, "only {named} metric references found");
    assert!(
        unknown.is_empty(),
        "metrics no binary exports: {unknown:#?}\nexported: {exported:#?}"
    );
}
