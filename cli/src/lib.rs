//! The `wapipe` command line: local mode (`up`), consumer-group lag with the scaler's decision
//! (`lag`), a load generator for any ingress (`send`) and benchmarks that print figures beside
//! their ceilings (`bench`), a scaling simulator (`simulate`), topic creation (`topics`) and
//! shell completions (`completions`). `output` holds what they share for scripts: `-o json`
//! and the exit codes.
#![forbid(unsafe_code)]

pub mod bench;
pub mod bench_rebalance;
pub mod lag;
pub mod local;
pub mod output;
pub mod payloads;
pub mod send;
pub mod simulate;
pub mod topics;
pub mod up;
