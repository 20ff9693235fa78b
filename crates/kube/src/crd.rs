//! The ClusterNetworkPolicy resource (`policy.networking.k8s.io/v1alpha2`, cluster-scoped):
//!
//! * [`RawClusterNetworkPolicy`]: what the controller watches. The spec stays raw JSON so
//!   that an object the API server let through but Palisade refuses reaches
//!   `palisade_model::validate` (and is reported, field by field) instead of failing the watch.
//! * [`ClusterNetworkPolicy`] and the types under it: the schema, from which
//!   [`crd_yaml`] generates `deploy/05-crd-clusternetworkpolicy.yaml` with the upstream
//!   validation rules (enums, bounds, list sizes, exactly-one-of, CEL rules).
//!   Regenerate: `cargo run -p palisade-kube --example crd > deploy/05-crd-clusternetworkpolicy.yaml`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::crd::CustomResourceExt;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "policy.networking.k8s.io";
pub const VERSION: &str = "v1alpha2";
pub const PLURAL: &str = "clusternetworkpolicies";
/// The CRD's name, as `kubectl get crd` shows it.
pub const CRD_NAME: &str = "clusternetworkpolicies.policy.networking.k8s.io";

/// A ClusterNetworkPolicy as the API server sends it, spec untyped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RawClusterNetworkPolicy {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
}

impl kube::Resource for RawClusterNetworkPolicy {
    type DynamicType = ();
    type Scope = kube::core::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "ClusterNetworkPolicy".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The tier a ClusterNetworkPolicy belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Tier {
    Admin,
    Baseline,
}

/// What a rule does with the traffic it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Action {
    Accept,
    Deny,
    Pass,
}

/// Spec of a ClusterNetworkPolicy.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.networking.k8s.io",
    version = "v1alpha2",
    kind = "ClusterNetworkPolicy",
    plural = "clusternetworkpolicies",
    shortname = "cnp",
    doc = "A cluster-scoped network policy of the Admin or the Baseline tier (network-policy-api v1alpha2).",
    printcolumn = r#"{"name":"Tier","type":"string","jsonPath":".spec.tier"}"#,
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySpec {
    /// `Admin` (evaluated before NetworkPolicies) or `Baseline` (after them).
    pub tier: Tier,
    /// Lower first within a tier.
    #[schemars(range(min = 0, max = 1000))]
    pub priority: i32,
    /// The pods the policy applies to.
    pub subject: Subject,
    /// Ingress rules, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 25))]
    pub ingress: Option<Vec<IngressRule>>,
    /// Egress rules, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 25))]
    pub egress: Option<Vec<EgressRule>>,
}

/// Exactly one of `namespaces` and `pods`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = "(has(self.namespaces) ? 1 : 0) + (has(self.pods) ? 1 : 0) == 1")]
pub struct Subject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Pods matching `podSelector` in namespaces matching `namespaceSelector`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    pub namespace_selector: LabelSelector,
    pub pod_selector: LabelSelector,
}

/// A Kubernetes label selector (empty: everything).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

/// `key operator values`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One ingress rule: traffic from `from` (on `protocols`, or any) gets `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub name: Option<String>,
    pub action: Action,
    #[schemars(length(min = 1, max = 25))]
    pub from: Vec<IngressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 25))]
    pub protocols: Option<Vec<Protocol>>,
}

/// One egress rule: traffic to `to` (on `protocols`, or any) gets `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EgressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub name: Option<String>,
    pub action: Action,
    #[schemars(length(min = 1, max = 25))]
    pub to: Vec<EgressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 25))]
    pub protocols: Option<Vec<Protocol>>,
}

/// Exactly one of `namespaces` and `pods`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = "(has(self.namespaces) ? 1 : 0) + (has(self.pods) ? 1 : 0) == 1")]
pub struct IngressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Exactly one of `namespaces`, `pods`, `nodes`, `networks` and `domainNames`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = "(has(self.namespaces) ? 1 : 0) + (has(self.pods) ? 1 : 0) + (has(self.nodes) ? 1 : 0) + (has(self.networks) ? 1 : 0) + (has(self.domainNames) ? 1 : 0) == 1"
)]
pub struct EgressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    /// CIDRs (`10.0.0.0/8`, `2001:db8::/32`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 25), inner(length(max = 48)))]
    #[x_kube(validation = "self.all(n, isCIDR(n))")]
    pub networks: Option<Vec<String>>,
    /// Domain names (`example.com`, `*.example.com`); Palisade refuses them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 25), inner(length(max = 253)))]
    pub domain_names: Option<Vec<String>>,
}

/// Exactly one of `tcp`, `udp`, `sctp` and `destinationNamedPort`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = "(has(self.tcp) ? 1 : 0) + (has(self.udp) ? 1 : 0) + (has(self.sctp) ? 1 : 0) + (has(self.destinationNamedPort) ? 1 : 0) == 1"
)]
pub struct Protocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<ProtocolPorts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<ProtocolPorts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<ProtocolPorts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15))]
    pub destination_named_port: Option<String>,
}

/// The destination port of a `tcp`, `udp` or `sctp` match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = "has(self.destinationPort)")]
pub struct ProtocolPorts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<Port>,
}

/// Exactly one of `number` and `range`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = "(has(self.number) ? 1 : 0) + (has(self.range) ? 1 : 0) == 1")]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub number: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<PortRange>,
}

/// `start < end`, both in 1..=65535.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = "self.start < self.end")]
pub struct PortRange {
    #[schemars(range(min = 1, max = 65535))]
    pub start: i32,
    #[schemars(range(min = 1, max = 65535))]
    pub end: i32,
}

/// The CustomResourceDefinition as YAML (what `deploy/05-crd-clusternetworkpolicy.yaml` holds).
pub fn crd_yaml() -> String {
    let crd = ClusterNetworkPolicy::crd();
    let body = serde_yaml::to_string(&crd).unwrap_or_default();
    format!(
        "# Generated from crates/kube/src/crd.rs: do not edit. Regenerate with\n\
         #   cargo run -p palisade-kube --example crd > deploy/05-crd-clusternetworkpolicy.yaml\n\
         {body}"
    )
}
