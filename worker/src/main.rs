//! `wapipe-worker`: see the library for what it does.
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = wapipe_worker::Cli::parse();
    wapipe_worker::run_cli(cli).await?;
    Ok(())
}
