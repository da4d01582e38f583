//! Webhook signature checks (being written).
