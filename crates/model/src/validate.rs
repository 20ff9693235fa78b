//! Validation of Kubernetes objects (SEMANTICS.md, "Invalid input"). Every problem is reported,
//! not just the first, with the path of the field it is about.

use crate::k8s;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// e.g. `spec.ingress[0].from[1].ipBlock.except[0]`.
    pub field: String,
    pub message: String,
}

pub fn namespace(ns: &k8s::Namespace) -> Vec<FieldError> {
    let _ = ns;
    unimplemented!("validate::namespace")
}

pub fn pod(pod: &k8s::Pod) -> Vec<FieldError> {
    let _ = pod;
    unimplemented!("validate::pod")
}

pub fn network_policy(np: &k8s::NetworkPolicy) -> Vec<FieldError> {
    let _ = np;
    unimplemented!("validate::network_policy")
}
