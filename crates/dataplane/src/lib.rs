//! # palisade-dataplane
//!
//! Makes the kernel match the rendered rules: read back, diff, apply atomically, resync, counters.
