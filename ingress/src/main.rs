use clap::Parser;
use wapipe_ingress::server;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = wapipe_ingress::Config::parse();
    wapipe_core::service::init_tracing(config.log_format);
    server::run(config, async {
        wapipe_core::service::stop_signal().await;
    })
    .await?;
    Ok(())
}
