//! wapipe worker (being written).
