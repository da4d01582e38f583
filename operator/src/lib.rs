//! wapipe operator (being written).
