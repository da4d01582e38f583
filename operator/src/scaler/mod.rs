//! Lag-driven scaling of the worker pool, pure: the [`policy`] that decides, with the drain rates
//! and capacities it measures in [`rate`]. Nothing here reads Kafka or writes to the API server;
//! the reconcile's scale step, [`crate::scaling`], does.

pub mod policy;
pub mod rate;
