use clap::{CommandFactory, Parser, Subcommand};
use wapipe::bench::{bench_ingress, BenchIngressArgs};
use wapipe::bench_rebalance::{bench_rebalance, BenchRebalanceArgs};
use wapipe::lag::{lag, stalled, LagArgs};
use wapipe::local::args::UpArgs;
use wapipe::output::{print_json, EXIT_FOUND_PROBLEM};
use wapipe::send::{send, SendArgs};
use wapipe::simulate::{simulate, SimulateArgs};
use wapipe::topics::{self, TopicsArgs};
use wapipe::up::up;

#[derive(Parser)]
#[command(
    name = "wapipe",
    version,
    about = "wapipe: WhatsApp webhooks into Kafka, durably",
    after_help = "Exit codes: 0 ran and found nothing wrong; 1 could not run (the message says why); \
                  2 wrong command line; 3 ran and found a problem (lag: a stalled partition; send: \
                  requests not answered 200)."
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
    /// Print a shell completion script: `source <(wapipe completions bash)`, or save it where
    /// the shell loads completions from (see docs/cli.md).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
        Command::Lag(args) => {
            let decision = lag(&args).await?;
            if !stalled(&decision).is_empty() {
                std::process::exit(EXIT_FOUND_PROBLEM);
            }
        }
        Command::Send(args) => {
            let report = send(&args).await?;
            if args.output.json() {
                print_json(&report.to_json())?;
            } else {
                report.print();
            }
            if !report.all_accepted() {
                std::process::exit(EXIT_FOUND_PROBLEM);
            }
        }
        Command::Topics(Topics::Create(args)) => topics::create(&args).await?,
        Command::Bench(Bench::Ingress(args)) => bench_ingress(&args).await?,
        Command::Bench(Bench::Rebalance(args)) => bench_rebalance(&args).await?,
        Command::Simulate(args) => simulate(&args)?,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "wapipe", &mut std::io::stdout());
        }
    }
    Ok(())
}
