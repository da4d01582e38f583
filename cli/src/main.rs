use clap::{Parser, Subcommand};
use wapipe::bench::{bench_ingress, BenchIngressArgs};
use wapipe::bench_rebalance::{bench_rebalance, BenchRebalanceArgs};
use wapipe::lag::{lag, LagArgs};
use wapipe::send::{send, SendArgs};
use wapipe::simulate::{simulate, SimulateArgs};
use wapipe::topics::{self, TopicsArgs};
use wapipe::up::{up, UpArgs};

#[derive(Parser)]
#[command(
    name = "wapipe",
    version,
    about = "wapipe: WhatsApp webhooks into Kafka, durably"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline on this machine: broker, topics, ingress and a worker pool scaled
    /// by the operator's policy, with a live view. Ctrl-C stops everything.
    Up(UpArgs),
    /// Per-partition lag of a consumer group, its status (ok, lagging, stalled) and the scaler's
    /// decision.
    Lag(LagArgs),
    /// Send signed, realistic webhooks to an ingress and report what came back.
    Send(SendArgs),
    /// Kafka topics of a pipeline.
    #[command(subcommand)]
    Topics(Topics),
    /// Benchmarks that print figures beside their ceilings.
    #[command(subcommand)]
    Bench(Bench),
    /// Simulate a day of traffic through the operator's scaling policy and through KEDA's
    /// Kafka scaler with an HPA, on the same traces; or plan capacity for a peak (--plan-peak).
    Simulate(SimulateArgs),
}

#[derive(Subcommand)]
enum Topics {
    /// Create the raw and dead-letter topics (existing ones are kept as they are).
    Create(TopicsArgs),
}

#[derive(Subcommand)]
enum Bench {
    /// Requests/s, events/s, p50/p99 and peak RSS of a real ingress, beside the raw producer rate.
    Ingress(BenchIngressArgs),
    /// The consumption stall while a worker group grows under load, classic protocol vs
    /// KIP-848's (`group.protocol=consumer`), on a real broker.
    Rebalance(BenchRebalanceArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Up(args) => up(&args).await?,
        Command::Lag(args) => lag(&args).await?,
        Command::Send(args) => {
            let report = send(&args).await?;
            report.print();
            if report.ok() != report.requests() {
                std::process::exit(1);
            }
        }
        Command::Topics(Topics::Create(args)) => topics::create(&args).await?,
        Command::Bench(Bench::Ingress(args)) => bench_ingress(&args).await?,
        Command::Bench(Bench::Rebalance(args)) => bench_rebalance(&args).await?,
        Command::Simulate(args) => simulate(&args)?,
    }
    Ok(())
}
