//! `wapipe up`: the whole pipeline on one machine, no Kubernetes. An Apache Kafka broker on
//! loopback (KRaft, its log in the state directory), the topics of the pipeline, one ingress and a
//! pool of worker processes sized every poll interval by the operator's own scaling policy. A
//! live view shows rates, lag, workers and dead letters; Ctrl-C or SIGTERM stops everything in
//! order (ingress and workers drain, then the broker) and waits for every child.
//!
//! This file holds the command: its state directory and its stop signal. Its arguments are
//! [`crate::local::args::UpArgs`]; starting and running the pipeline is
//! [`crate::local::running`], made of the other pieces of [`crate::local`].

use std::time::Duration;

use anyhow::Context;

use crate::local::args::UpArgs;
use crate::local::host::{Children, StateLock};
use crate::local::{pipeline, running};

/// Runs `wapipe up` until Ctrl-C, SIGTERM or a fatal failure of the ingress or the broker.
pub async fn up(args: &UpArgs) -> anyhow::Result<()> {
    let mut pipeline = pipeline::load(args.file.as_deref())?;
    if let Some(poll) = args.poll_interval {
        pipeline.poll_interval = poll.max(Duration::from_millis(100));
    }
    if let Some(window) = args.scale_down_window {
        pipeline.policy.scale_down_window = window;
    }
    std::fs::create_dir_all(args.state_dir.join("logs"))
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let state_dir = args.state_dir.canonicalize()?;
    let _lock = StateLock::acquire(&state_dir)?;

    let mut children = Children::default();
    let outcome = tokio::select! {
        result = async {
            let running = running::start(args, &pipeline, &state_dir, &mut children).await?;
            running.run(&mut children, args.refresh).await
        } => result,
        signal = wapipe_core::service::stop_signal() => {
            println!("\n{signal}: stopping the ingress, the workers, then the broker");
            Ok(())
        }
    };
    let count = children.count();
    children.shutdown(args.grace).await;
    println!("stopped {count} processes; none left running");
    outcome
}
