//! Splitting a POST into records (being written).
