//! `cargo xtask <verb> [args...]`: the verbs a developer needs, each running what `scripts/`
//! holds (the scripts stay the source of truth; CI calls them directly). Arguments after the
//! verb go to the script.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// A verb, what it is for, and the commands it runs in order (each must succeed).
struct Verb {
    name: &'static str,
    about: &'static str,
    steps: &'static [&'static [&'static str]],
}

const VERBS: &[Verb] = &[
    Verb {
        name: "up",
        about: "the whole pipeline on this machine (wapipe up, binaries built first)",
        steps: &[&["bash", "scripts/run-local.sh"]],
    },
    Verb {
        name: "test",
        about: "the README's test command: lint, chart, docs, cluster and node suites, cargo test",
        steps: &[&["bash", "scripts/test.sh"]],
    },
    Verb {
        name: "lint",
        about: "rustfmt, clippy with warnings denied, shellcheck, module import circles",
        steps: &[
            &["cargo", "fmt", "--all", "--", "--check"],
            &[
                "cargo",
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            &["bash", "scripts/check-shell.sh"],
            &["python3", "scripts/check-module-cycles.py"],
        ],
    },
    Verb {
        name: "cluster",
        about: "the operator against a real kube-apiserver (control plane built and cached)",
        steps: &[&["bash", "scripts/test-cluster.sh"]],
    },
    Verb {
        name: "node",
        about: "real pods on a kubelet node: the image, a local registry, helm install",
        steps: &[&["bash", "tests/node/run.sh"]],
    },
    Verb {
        name: "bench",
        about: "ingress and worker beside the Python peers and the raw Kafka ceilings",
        steps: &[&["bash", "scripts/bench-compare.sh"]],
    },
    Verb {
        name: "docs",
        about: "generated pages current, links checked, the book built (--write regenerates)",
        steps: &[&["bash", "scripts/check-docs.sh"]],
    },
    Verb {
        name: "crds",
        about: "the CRD regenerated from the Rust types and copied into the chart",
        steps: &[
            &[
                "sh",
                "-c",
                "cargo run -q -p wapipe-operator --bin crdgen -- - > crds/whatsappwebhookpipelines.wapipe.dev.yaml",
            ],
            &["bash", "scripts/sync-chart-crds.sh"],
        ],
    },
    Verb {
        name: "ci",
        about: "what CI runs: install what is missing, start what the tests need, test",
        steps: &[&["bash", ".ci/run"]],
    },
];

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        usage();
        return ExitCode::from(2);
    };
    let Some(verb) = VERBS.iter().find(|v| v.name == name) else {
        if name != "help" && name != "--help" && name != "-h" {
            eprintln!("xtask: no verb {name:?}");
            usage();
            return ExitCode::from(2);
        }
        usage();
        return ExitCode::SUCCESS;
    };
    let extra: Vec<String> = args.collect();
    let root = workspace_root();
    let last = verb.steps.len() - 1;
    for (i, step) in verb.steps.iter().enumerate() {
        let mut command = Command::new(step[0]);
        command.args(&step[1..]).current_dir(&root);
        // The caller's arguments go to the verb's last step (the script it is named after).
        if i == last {
            command.args(&extra);
        }
        eprintln!(
            "xtask {name}: {}",
            shown(step, if i == last { &extra } else { &[] })
        );
        match command.status() {
            Ok(status) if status.success() => {}
            Ok(status) => {
                eprintln!("xtask {name}: failed ({status})");
                return ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1));
            }
            Err(error) => {
                eprintln!("xtask {name}: cannot run {}: {error}", step[0]);
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn usage() {
    eprintln!("usage: cargo xtask <verb> [args for its script]\n\nverbs:");
    for verb in VERBS {
        eprintln!("  {:<8} {}", verb.name, verb.about);
    }
}

fn shown(step: &[&str], extra: &[String]) -> String {
    step.iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The workspace root: this crate's parent directory.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
