//! # palisade-calc
//!
//! Incremental per-node calculation: selector index, IP sets, active policies per local endpoint -> DesiredState (pure).
