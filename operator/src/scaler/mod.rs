//! Lag-driven scaling of the worker pool: the pure [`policy`] (with the drain rates and
//! capacities it measures in [`rate`]) and the `step` that applies its decision to the worker
//! Deployment once per poll interval.

pub mod policy;
pub mod rate;
pub(crate) mod step;

pub use step::{offsets_to_keep, OFFSET_KEEPALIVE};
