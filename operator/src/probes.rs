//! What the operator's own HTTP endpoints read: `/metrics`, `/healthz` and `/readyz` are
//! [`wapipe_core::service::probe_router`] over [`AppState`].

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::registry::Registry;
use wapipe_core::service::{Probes, Reason};

/// What the endpoints read.
pub struct AppState {
    pub registry: Registry,
    /// Set once the API server answered; a standby replica (not leader) is ready too: it
    /// serves metrics and takes over when the leader goes.
    pub ready: AtomicBool,
}

/// Always alive; `starting` until the API server answered.
impl Probes for AppState {
    fn ready(&self) -> Result<(), Reason> {
        if self.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("starting".into())
        }
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }
}
