//! Times the refusal of forged signatures, shared by the `signature_timing` example (which
//! prints the figures) and the timing test in `core/tests/signature_timing.rs` (which compares
//! them with each other, never with a wall-clock bound).
//!
//! Every case is a set of trusted secrets and one forged (or genuine) signature. The cases are
//! measured in rounds, interleaved: each round times a batch of checks of every case, in an
//! order that shifts from round to round, so a slow second on a shared machine (another build,
//! frequency scaling) falls on all cases alike instead of on whichever ran then. The figures are
//! the median and the 99th percentile, over rounds, of the time of one check.

use std::hint::black_box;
use std::time::Instant;

use wapipe_core::signature::{body_sha256, match_meta, match_shared, sign_meta};

/// A Meta POST as it arrives: the body every HMAC is computed over.
pub const BODY: &[u8] = include_bytes!("../../tests/fixtures/meta/two_senders.json");

/// Which check a case runs.
#[derive(Clone, Copy, Debug)]
pub enum Check {
    /// `X-Hub-Signature-256`: one HMAC-SHA256 of the body per trusted secret.
    Meta,
    /// WASender's `X-Webhook-Signature` (and Meta's verify token): the value itself.
    Shared,
}

/// One measured situation: the trusted secrets and the header a request brings.
pub struct Case {
    pub label: String,
    pub check: Check,
    pub secrets: Vec<Vec<u8>>,
    pub header: Vec<u8>,
    /// Whether the header should be accepted (checked once before timing).
    pub accepted: bool,
}

impl Case {
    fn run(&self) -> bool {
        let header = Some(black_box(self.header.as_slice()));
        match self.check {
            Check::Meta => match_meta(black_box(&self.secrets), black_box(BODY), header).is_ok(),
            Check::Shared => match_shared(black_box(&self.secrets), header).is_ok(),
        }
    }
}

/// Median and 99th percentile of the time of one check, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct Figures {
    pub median_ns: f64,
    pub p99_ns: f64,
}

/// `count` secrets shaped like Meta's App Secrets (32 hex digits), all different, the same
/// every run.
pub fn secrets(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| body_sha256(format!("secret {i}").as_bytes()).as_bytes()[..32].to_vec())
        .collect()
}

/// The genuine Meta header of secret `index`, with its last hex digit changed: a forgery that
/// agrees with that secret's signature on all but the last of its 64 digits.
pub fn near_meta(secrets: &[Vec<u8>], index: usize) -> Vec<u8> {
    with_last_changed(sign_meta(&secrets[index], BODY).into_bytes())
}

/// A well-formed Meta header that is close to no secret's signature.
pub fn far_meta() -> Vec<u8> {
    sign_meta(b"a secret nobody trusts", BODY).into_bytes()
}

/// Secret `index` with its last character changed.
pub fn near_shared(secrets: &[Vec<u8>], index: usize) -> Vec<u8> {
    with_last_changed(secrets[index].clone())
}

/// `value` with its last byte changed to another hex digit.
fn with_last_changed(mut value: Vec<u8>) -> Vec<u8> {
    let last = value.len() - 1;
    value[last] = if value[last] == b'0' { b'1' } else { b'0' };
    value
}

/// The cases of the benchmark: refusing a forgery under 1, 2, 4, 8 and 16 secrets; under 16,
/// forgeries close to the first, a middle and the last secret and one close to none; the
/// genuine signatures of the first and the last (accepted); and WASender's shared secret.
pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for count in [1, 2, 4, 8, 16] {
        cases.push(Case {
            label: format!("meta: forged, {count} secrets"),
            check: Check::Meta,
            secrets: secrets(count),
            header: far_meta(),
            accepted: false,
        });
    }
    let all = secrets(16);
    for index in [0, 7, 15] {
        cases.push(Case {
            label: format!("meta: 16 secrets, forged close to secret {index}"),
            check: Check::Meta,
            secrets: all.clone(),
            header: near_meta(&all, index),
            accepted: false,
        });
    }
    for index in [0, 15] {
        cases.push(Case {
            label: format!("meta: 16 secrets, signed by secret {index}"),
            check: Check::Meta,
            secrets: all.clone(),
            header: sign_meta(&all[index], BODY).into_bytes(),
            accepted: true,
        });
    }
    for index in [0, 15] {
        cases.push(Case {
            label: format!("shared: 16 secrets, forged close to secret {index}"),
            check: Check::Shared,
            secrets: all.clone(),
            header: near_shared(&all, index),
            accepted: false,
        });
    }
    cases.push(Case {
        label: "shared: 16 secrets, forged close to none".into(),
        check: Check::Shared,
        secrets: all.clone(),
        header: b"a secret nobody trusts".to_vec(),
        accepted: false,
    });
    cases
}

/// Figures of every case, in the order given: `rounds` rounds of `per_round` checks each.
pub fn measure(cases: &[Case], rounds: usize, per_round: usize) -> Vec<Figures> {
    for case in cases {
        assert_eq!(case.run(), case.accepted, "{}", case.label);
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); cases.len()];
    for round in 0..rounds {
        for offset in 0..cases.len() {
            let index = (round + offset) % cases.len();
            let case = &cases[index];
            let start = Instant::now();
            for _ in 0..per_round {
                black_box(case.run());
            }
            let elapsed = start.elapsed().as_nanos() as f64;
            samples[index].push(elapsed / per_round as f64);
        }
    }
    samples
        .into_iter()
        .map(|mut times| {
            times.sort_by(f64::total_cmp);
            Figures {
                median_ns: percentile(&times, 0.5),
                p99_ns: percentile(&times, 0.99),
            }
        })
        .collect()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[rank]
}
