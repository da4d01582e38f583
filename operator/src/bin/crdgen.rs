//! Prints the `WhatsAppWebhookPipeline` CRD as YAML, or writes it to the path given.
//! `cargo run -p wapipe-operator --bin crdgen` refreshes `crds/` in the repository.

use kube::CustomResourceExt;
use wapipe_operator::WhatsAppWebhookPipeline;

fn main() -> anyhow::Result<()> {
    let yaml = serde_yaml::to_string(&WhatsAppWebhookPipeline::crd())?;
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crds/whatsappwebhookpipelines.wapipe.dev.yaml"
        )
        .to_string()
    });
    if path == "-" {
        print!("{yaml}");
    } else {
        std::fs::write(&path, yaml)?;
        eprintln!("wrote {path}");
    }
    Ok(())
}
