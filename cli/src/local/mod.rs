//! Local mode: the pieces `wapipe up` is made of. The scaling decisions come from the operator's
//! own [`wapipe_operator::scaler::policy`]; only the executor differs (a pool of processes
//! instead of a Deployment's replicas).

pub mod args;
pub mod broker;
pub mod env;
pub mod host;
pub mod metrics;
pub mod pipeline;
pub mod process;
pub mod running;
pub mod scale;
pub mod view;
