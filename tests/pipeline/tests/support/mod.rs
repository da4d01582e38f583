//! Shared by the end-to-end tests: the ingress served in this process on free loopback ports.

use std::time::Duration;

use clap::Parser;
use wapipe_testkit::free_port;

/// `wapipe-ingress` running in this process until [`Ingress::stop`].
pub struct Ingress {
    /// Where signed webhooks are posted.
    pub url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Ingress {
    /// Starts the ingress for Meta webhooks signed with `secret` into `topic`, and waits (up to
    /// 5 s) until its admin listener answers.
    pub async fn start(brokers: &str, topic: &str, secret: &str) -> Ingress {
        let (port, admin_port) = (free_port(), free_port());
        let config = wapipe_ingress::Config::try_parse_from([
            "wapipe-ingress",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
            "--app-secret",
            secret,
            "--topic",
            topic,
            "--kafka-brokers",
            brokers,
        ])
        .expect("ingress arguments");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            wapipe_ingress::server::run(config, async {
                let _ = stopped.await;
            })
            .await
            .map_err(|error| error.to_string())
        });
        let client = reqwest::Client::new();
        for _ in 0..100 {
            let health = client
                .get(format!("http://127.0.0.1:{admin_port}/healthz"))
                .send()
                .await;
            if health.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ingress {
            url: format!("http://127.0.0.1:{port}/webhook"),
            stop,
            task,
        }
    }

    /// Stops the ingress and waits for it to drain.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("ingress task").expect("ingress run");
    }
}
