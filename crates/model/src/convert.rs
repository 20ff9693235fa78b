//! Kubernetes → Palisade model. Each function validates first and converts only valid input,
//! so callers get either a model value or every field error.

use crate::cluster::Cluster;
use crate::endpoint::{Endpoint, Namespace};
use crate::k8s;
use crate::manifest::{Document, ManifestError};
use crate::policy::Policy;
use crate::selector::Selector;
use crate::validate::FieldError;

/// A NetworkPolicy as a model policy: default tier, order 1000, Allow rules, effective
/// policyTypes applied (SEMANTICS.md 4-5), peers and ports normalized (8-12).
pub fn network_policy(np: &k8s::NetworkPolicy) -> Result<Policy, Vec<FieldError>> {
    let _ = np;
    unimplemented!("convert::network_policy")
}

/// A Pod as a workload endpoint; `Ok(None)` for pods that are not workload endpoints
/// (hostNetwork, phase Succeeded/Failed, or being deleted).
pub fn pod(pod: &k8s::Pod) -> Result<Option<Endpoint>, Vec<FieldError>> {
    let _ = pod;
    unimplemented!("convert::pod")
}

/// A Namespace with its labels plus `kubernetes.io/metadata.name`.
pub fn namespace(ns: &k8s::Namespace) -> Result<Namespace, Vec<FieldError>> {
    let _ = ns;
    unimplemented!("convert::namespace")
}

/// A Kubernetes label selector as a model selector (empty selects everything).
pub fn label_selector(sel: &k8s::LabelSelector) -> Result<Selector, Vec<FieldError>> {
    let _ = sel;
    unimplemented!("convert::label_selector")
}

/// Every document of a batch into one cluster: all of it, or every error and nothing.
pub fn cluster(documents: &[Document]) -> Result<Cluster, Vec<ManifestError>> {
    let _ = documents;
    unimplemented!("convert::cluster")
}
