//! The wapipe command line (being written).
