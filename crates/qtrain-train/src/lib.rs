//! qtrain-train (being written).
