//! The `wapipe` binary as scripts meet it: `-o json`, the documented exit codes and shell
//! completions. `lag` runs against a real broker (the testkit's shared one, or
//! `WAPIPE_TEST_KAFKA`).

use std::process::{Command, Output};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

fn wapipe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wapipe"))
        .args(args)
        .output()
        .expect("running wapipe")
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn completions_are_printed_for_each_shell_and_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = wapipe(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["wapipe", "lag", "send", "simulate", "topics"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    assert_eq!(wapipe(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn help_lists_the_choices_of_every_enum_and_the_exit_codes() {
    let help = String::from_utf8_lossy(&wapipe(&["simulate", "--help"]).stdout).to_string();
    for choice in ["diurnal", "saturated-sink", "table", "json"] {
        assert!(
            help.contains(choice),
            "simulate --help lacks {choice}:\n{help}"
        );
    }
    let help = String::from_utf8_lossy(&wapipe(&["send", "--help"]).stdout).to_string();
    for choice in ["meta", "wasender"] {
        assert!(help.contains(choice), "send --help lacks {choice}:\n{help}");
    }
    let help = String::from_utf8_lossy(&wapipe(&["--help"]).stdout).to_string();
    assert!(help.contains("Exit codes"), "{help}");
}

#[test]
fn simulate_prints_json_and_a_wrong_trace_is_a_usage_error() {
    let out = wapipe(&["simulate", "--plan-peak", "50000", "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&out)["partitions"], 12);

    let out = wapipe(&["simulate", "--traces", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn send_to_an_ingress_that_is_not_there_reports_json_and_exits_3() {
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/webhook");
    let out = wapipe(&[
        "send",
        "--url",
        &url,
        "--secret",
        "s",
        "--requests",
        "3",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let report = json(&out);
    assert_eq!(report["requests"], 3, "{report}");
    assert_eq!(report["allAccepted"], false, "{report}");
    assert_eq!(report["eventsAcknowledged"], 0, "{report}");
}

/// Produces `count` records to partition 0 of `topic` and commits `group` at `committed`.
async fn backlog(bootstrap: &str, topic: &str, group: &str, count: usize, committed: i64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for i in 0..count {
        producer
            .send(
                FutureRecord::to(topic)
                    .partition(0)
                    .key("15550000001")
                    .payload(&format!("{{\"n\":{i}}}")),
                Duration::from_secs(10),
            )
            .await
            .expect("producing");
    }
    wapipe_testkit::commit_offset(bootstrap, group, topic, 0, committed).expect("committing");
}

#[tokio::test]
async fn lag_exits_3_on_a_stalled_partition_and_0_on_a_group_that_caught_up() {
    let (bootstrap, _broker) = wapipe_testkit::broker().expect("a Kafka broker for the test");
    let topic = wapipe_testkit::unique_name("cli-lag");
    wapipe_testkit::create_topic(&bootstrap, &topic, 1)
        .await
        .unwrap();
    backlog(&bootstrap, &topic, "stuck", 20, 5).await;
    backlog(&bootstrap, &topic, "done", 0, 20).await;
    let lag = |group: &str| {
        wapipe(&[
            "lag",
            "--kafka-brokers",
            &bootstrap,
            "--topic",
            &topic,
            "--group",
            group,
            "--workers",
            "1",
            "--samples",
            "3",
            "--interval",
            "200ms",
            "-o",
            "json",
        ])
    };

    // 15 records behind, a commit that never moves while a worker is said to run: stalled.
    let out = lag("stuck");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let report = json(&out);
    assert_eq!(
        report["stalledPartitions"],
        serde_json::json!([0]),
        "{report}"
    );
    assert_eq!(report["partitions"][0]["lag"], 15, "{report}");
    assert_eq!(report["totalLag"], 15, "{report}");

    let out = lag("done");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report = json(&out);
    assert_eq!(report["totalLag"], 0, "{report}");
    assert_eq!(report["partitions"][0]["status"], "ok", "{report}");
}
