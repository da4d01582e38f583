//! The time to refuse a forged signature tells nothing about the secrets: it does not change
//! with which secret the forgery is closest to (or which one signed a genuine request), and
//! it grows with their number only as one HMAC each, up to the ingress's bound of 16.
//!
//! Compares measured distributions with each other (ratios of medians, generous bounds),
//! never with a wall-clock figure. Timing on a shared machine is noisy, so it is ignored by
//! default: `cargo test --release -p wapipe-core --no-default-features --test signature_timing
//! -- --ignored --nocapture` on a quiet machine. The example `signature_timing` prints the
//! same figures as a table.

#[path = "../examples/signature_timing/measure.rs"]
mod measure;

fn median_of(cases: &[measure::Case], figures: &[measure::Figures], label: &str) -> f64 {
    let index = cases
        .iter()
        .position(|c| c.label == label)
        .unwrap_or_else(|| panic!("no case {label:?}"));
    figures[index].median_ns
}

fn assert_close(what: &str, a: f64, b: f64, bound: f64) {
    let ratio = a / b;
    println!("{what}: ratio {ratio:.3}");
    assert!(
        (1.0 / bound..=bound).contains(&ratio),
        "{what}: {a:.0} ns against {b:.0} ns (ratio {ratio:.3}, allowed 1/{bound}..{bound})"
    );
}

#[test]
#[ignore = "timing: run with --ignored on a quiet machine"]
fn refusing_a_forgery_takes_as_long_whichever_secret_it_is_close_to_and_one_hmac_per_secret() {
    let cases = measure::cases();
    let figures = measure::measure(&cases, 300, 40);
    for (case, figure) in cases.iter().zip(&figures) {
        println!(
            "{:<48} median {:>8.0} ns, p99 {:>8.0} ns",
            case.label, figure.median_ns, figure.p99_ns
        );
    }
    let median = |label: &str| median_of(&cases, &figures, label);
    let far = median("meta: forged, 16 secrets");
    for index in [0, 7, 15] {
        assert_close(
            &format!("meta: close to secret {index} vs close to none"),
            median(&format!("meta: 16 secrets, forged close to secret {index}")),
            far,
            1.25,
        );
    }
    assert_close(
        "meta: signed by the first vs by the last secret",
        median("meta: 16 secrets, signed by secret 0"),
        median("meta: 16 secrets, signed by secret 15"),
        1.25,
    );
    let shared_far = median("shared: 16 secrets, forged close to none");
    for index in [0, 15] {
        assert_close(
            &format!("shared: close to secret {index} vs close to none"),
            median(&format!(
                "shared: 16 secrets, forged close to secret {index}"
            )),
            shared_far,
            1.25,
        );
    }
    // One HMAC per secret: the cost per secret stays the same from 1 to 16, so the time is
    // bounded by 16 of them (the ingress refuses a 17th secret).
    let per_secret_1 = median("meta: forged, 1 secrets");
    for count in [4, 16] {
        assert_close(
            &format!("meta: per-secret cost with {count} secrets vs 1"),
            median(&format!("meta: forged, {count} secrets")) / count as f64,
            per_secret_1,
            1.5,
        );
    }
}
