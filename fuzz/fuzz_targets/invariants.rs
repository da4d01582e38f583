// What must hold for any body the ingress splits, shared by the fuzz targets.
use wapipe_core::split::split;
use wapipe_core::{EventKind, Provider};

pub fn check(body: &[u8]) {
    for provider in [Provider::Meta, Provider::Wasender] {
        let records = split(provider, body, "fallback");
        // Nothing signed is ever dropped.
        assert!(!records.is_empty());
        for record in &records {
            assert!(!record.key.is_empty());
            if record.kind == EventKind::Unparsed {
                continue;
            }
            // Every split record is valid JSON built from the body's own pieces.
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&record.value) {
                panic!("{provider} record is not JSON ({e}): {}", String::from_utf8_lossy(&record.value));
            }
        }
    }
}
