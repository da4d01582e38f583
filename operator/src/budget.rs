//! The ingress's memory budgets, derived from its container's memory limit.
//!
//! The ingress holds bodies in two stages, each bounded in bytes: the read stage (unverified
//! bodies, `WAPIPE_MAX_BODY_READ_BYTES`, 64 MiB by default) and the produce stage (verified
//! bodies with their records and the producer's copies until Kafka answers,
//! `WAPIPE_MAX_IN_FLIGHT_BYTES`). Their defaults suit no particular limit; with a limit set,
//! the operator sizes both from it so that a burst of large bodies meets 503, not the OOM
//! killer:
//!
//! - read stage: half the limit, but not above its 64 MiB default and not below the largest
//!   body (one body must always fit). A burst of large bodies all arriving at once is held
//!   here before any of them is verified: this stage is the larger share of the peak.
//! - produce stage: a sixteenth of the limit. A byte counted there costs 2.5 to 5 in memory
//!   (its records, librdkafka's copies and batches, the allocator's slack), so this stage
//!   uses up to about a quarter to a third.
//!
//! What is left is the process's own: about 14 MiB at rest, and what the allocator keeps.
//! Measured in docs/ingress.md (Memory).

use crate::crd::Resources;

/// The read stage's default, which the derived value never exceeds.
pub const DEFAULT_READ_BYTES: u64 = 64 * 1024 * 1024;

/// What the ingress is told when its container has a memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressBudgets {
    /// `WAPIPE_MAX_BODY_READ_BYTES`.
    pub read_bytes: u64,
    /// `WAPIPE_MAX_IN_FLIGHT_BYTES`.
    pub in_flight_bytes: u64,
}

/// The budgets for an ingress with `resources` and bodies up to `max_body_bytes`; `None`
/// without a memory limit (the ingress's defaults then apply) or with one that does not parse.
pub fn ingress_budgets(
    resources: Option<&Resources>,
    max_body_bytes: u64,
) -> Option<IngressBudgets> {
    let limit = memory_bytes(resources?.limits.get("memory")?)?;
    Some(IngressBudgets {
        read_bytes: (limit / 2).min(DEFAULT_READ_BYTES).max(max_body_bytes),
        // At least 1 KiB: 0 would mean no bound at all.
        in_flight_bytes: (limit / 16).max(1024),
    })
}

/// A Kubernetes quantity as bytes: `128Mi`, `1G`, `1.5Gi`, `2e9`, `134217728`; `None` for
/// anything else (the API server validates limits, so that is only a defence).
pub fn memory_bytes(quantity: &str) -> Option<u64> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent => 10f64.powi(exponent.strip_prefix(['e', 'E'])?.parse().ok()?),
    };
    let bytes = number * factor;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then(|| bytes.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn quantities_read_as_the_api_server_reads_them() {
        for (text, bytes) in [
            ("128Mi", 128 << 20),
            ("1Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("512Ki", 512 << 10),
            ("1G", 1_000_000_000),
            ("250M", 250_000_000),
            ("2e9", 2_000_000_000),
            ("134217728", 134_217_728),
        ] {
            assert_eq!(memory_bytes(text), Some(bytes), "{text}");
        }
        for text in ["", "Mi", "12Xi", "1e", "-1Gi", "lots"] {
            assert_eq!(memory_bytes(text), None, "{text}");
        }
    }

    fn limit(memory: &str) -> Resources {
        Resources {
            requests: BTreeMap::new(),
            limits: BTreeMap::from([("memory".to_string(), memory.to_string())]),
        }
    }

    #[test]
    fn the_budgets_follow_the_memory_limit_within_their_bounds() {
        let body = 3 << 20;
        // The suite's 128Mi: the read stage keeps its default, 8 MiB for the produce stage.
        assert_eq!(
            ingress_budgets(Some(&limit("128Mi")), body),
            Some(IngressBudgets {
                read_bytes: 64 << 20,
                in_flight_bytes: 8 << 20,
            })
        );
        // Small: the read stage still takes the largest body.
        assert_eq!(
            ingress_budgets(Some(&limit("4Mi")), body),
            Some(IngressBudgets {
                read_bytes: body,
                in_flight_bytes: 256 << 10,
            })
        );
        let large = ingress_budgets(Some(&limit("2Gi")), body).unwrap();
        assert_eq!(
            (large.read_bytes, large.in_flight_bytes),
            (64 << 20, 128 << 20)
        );
        assert_eq!(ingress_budgets(None, body), None);
        let cpu_only = Resources {
            requests: BTreeMap::new(),
            limits: BTreeMap::from([("cpu".to_string(), "1".to_string())]),
        };
        assert_eq!(ingress_budgets(Some(&cpu_only), body), None);
    }
}
