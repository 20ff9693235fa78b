//! # palisade-engine
//!
//! The semantics: verdict for one flow with a trace of why, and the reachability matrix (pure).
