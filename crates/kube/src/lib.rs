//! # palisade-kube
//!
//! The Kubernetes controller: kube-runtime watchers of NetworkPolicy/Namespace/Pod -> datastore.
