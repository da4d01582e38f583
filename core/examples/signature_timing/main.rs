//! How long refusing a forged signature takes, by the number of trusted secrets and by which
//! secret the forgery is closest to. Prints a table; asserts nothing about time.
//!
//! ```text
//! cargo run --release -p wapipe-core --no-default-features --example signature_timing [rounds]
//! ```
//!
//! What is measured: one call of `match_meta` (HMAC-SHA256 of an 796-byte Meta POST under every
//! trusted secret, each compared in constant time) or `match_shared` (WASender's secret), in a
//! single thread, the cases interleaved round by round (see `measure.rs`). The time grows with
//! the number of secrets, one HMAC each, and the ingress refuses more than 16; it does not
//! change with which secret, if any, the header is close to or signed by.

mod measure;

fn main() {
    let rounds = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(400);
    let cases = measure::cases();
    let figures = measure::measure(&cases, rounds, 50);
    println!(
        "signature checks: {rounds} rounds of 50 checks per case, body {} bytes",
        measure::BODY.len()
    );
    println!(
        "{:<48} {:>12} {:>12} {:>14}",
        "case", "median ns", "p99 ns", "median/secret"
    );
    for (case, figure) in cases.iter().zip(&figures) {
        println!(
            "{:<48} {:>12.0} {:>12.0} {:>14.0}",
            case.label,
            figure.median_ns,
            figure.p99_ns,
            figure.median_ns / case.secrets.len() as f64
        );
    }
}
