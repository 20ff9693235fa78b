//! # palisade-store
//!
//! The Datastore trait with etcd v3 and embedded backends; key layout and codec.
