//! Helpers shared by the integration tests of `palisade` (each test file uses `mod common;`).

// Each test crate uses a different part of these helpers.
#[allow(dead_code)]
pub mod conformance;
#[allow(dead_code)]
pub mod etcd;
#[allow(dead_code)]
pub mod lab;
