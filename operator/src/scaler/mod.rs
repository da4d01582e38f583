//! Lag-driven scaling of the worker pool: the pure [`policy`] and the `step` that applies its
//! decision to the worker Deployment once per poll interval.

pub mod policy;
pub(crate) mod step;
