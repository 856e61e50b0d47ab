//! qtrain-model (being written).
