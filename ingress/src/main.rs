use clap::Parser;
use wapipe_ingress::server;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = wapipe_ingress::Config::parse();
    server::init_tracing(&config.log_format);
    server::run(config, server::shutdown_signal()).await?;
    Ok(())
}
