//! `wapipe-worker`: see the library for what it does.
#![forbid(unsafe_code)]

use clap::Parser;

/// Many small allocations per event (records, headers, routed fields): mimalloc serves them
/// with a fraction of the system allocator's instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = wapipe_worker::Cli::parse();
    wapipe_worker::run_cli(cli).await?;
    Ok(())
}
