//! The `wapipe` command line: a load generator for any ingress (`send`) and benchmarks that
//! print figures beside their ceilings (`bench`).
#![forbid(unsafe_code)]

pub mod bench;
pub mod payloads;
pub mod send;
pub mod topics;
