//! What the commands print for scripts: `-o json`, and the exit codes they share.
//!
//! Exit codes (also in `docs/cli.md`):
//! - `0`: the command ran and found nothing wrong;
//! - `1`: it could not run (a broker not reached, a file not read); the message says why;
//! - `2`: the command line is wrong (clap's own code);
//! - `3`: it ran and found a problem: `lag` saw a stalled partition, `send` had requests that
//!   were not answered 200.

use std::io::Write;

/// The command ran and found a problem (see the module's documentation).
pub const EXIT_FOUND_PROBLEM: i32 = 3;

/// How a command prints its result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text for people.
    #[default]
    Table,
    /// One JSON document on stdout, for scripts (`jq`).
    Json,
}

/// The `-o/--output` flag of commands that print a result.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

impl OutputArgs {
    pub fn json(self) -> bool {
        self.format == Format::Json
    }
}

/// Prints `value` as pretty JSON with a final newline.
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A duration as fractional seconds, `null` when unknown.
pub fn seconds(duration: Option<std::time::Duration>) -> serde_json::Value {
    duration.map_or(serde_json::Value::Null, |d| d.as_secs_f64().into())
}

/// A rate rounded to two decimals, `null` when not measured.
pub fn rate(rate: Option<f64>) -> serde_json::Value {
    rate.map_or(serde_json::Value::Null, |r| {
        ((r * 100.0).round() / 100.0).into()
    })
}
