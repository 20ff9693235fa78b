//! # palisade-agent
//!
//! The per-node agent loop: watch -> batch -> calc -> render -> dataplane; health and metrics.
