//! # palisade-lab
//!
//! A multi-node cluster of network namespaces on one machine: nodes, pods, veths, servers, prober.
