//! Lag-driven scaling of the worker pool: the pure [`policy`] and the conversion of its
//! decision into the pipeline's status.

pub mod policy;
