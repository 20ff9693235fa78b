//! Palisade's own policy model (SEMANTICS.md, "Beyond v1"). Kubernetes NetworkPolicy v1 maps
//! into it: one policy in the [`DEFAULT_TIER`] with order [`KUBERNETES_POLICY_ORDER`] and only
//! `Allow` rules.
//!
//! Evaluation for one endpoint and direction: tiers in ascending `order`; within a tier the
//! policies that select the endpoint, by `order` then name; within a policy its rules in order.
//! The first `Allow` or `Deny` decides; `Pass` skips to the next tier; `Log` records and goes
//! on. If a tier had a selecting policy and nothing decided or passed, the tier's
//! [`TierAction`] applies: `Deny` (the NetworkPolicy tier) ends evaluation, `Pass` (the
//! ClusterNetworkPolicy tiers) goes on with the next tier. If no tier decides, the endpoint is
//! open.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::endpoint::Endpoint;
use crate::selector::Selector;

/// The tier Kubernetes NetworkPolicies go into.
pub const DEFAULT_TIER: &str = "default";
/// The order Kubernetes NetworkPolicies get inside their tier (as Calico gives them).
pub const KUBERNETES_POLICY_ORDER: u32 = 1000;

/// The tier ClusterNetworkPolicies of `tier: Admin` go into (before the NetworkPolicy tier).
pub const ADMIN_TIER: &str = "admin";
/// The tier ClusterNetworkPolicies of `tier: Baseline` go into (after the NetworkPolicy tier).
pub const BASELINE_TIER: &str = "baseline";

/// The annotation that stages a NetworkPolicy or ClusterNetworkPolicy: `"true"` (evaluated,
/// reported, not enforced) or `"false"` (enforced, as without it).
pub const STAGED_ANNOTATION: &str = "palisade.dev/staged";

/// A tier: a group of policies judged together, before tiers of higher order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub name: String,
    pub order: u32,
    /// What happens to a flow that policies of this tier select but no rule decides or passes.
    #[serde(default, skip_serializing_if = "TierAction::is_deny")]
    pub default_action: TierAction,
}

/// The end of a tier for an endpoint some policy of the tier selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TierAction {
    /// Deny (Kubernetes NetworkPolicy: a selected pod is isolated).
    #[default]
    Deny,
    /// Go on with the next tier (ClusterNetworkPolicy tiers: a rule that does not match has
    /// no effect).
    Pass,
}

impl TierAction {
    pub fn is_deny(&self) -> bool {
        *self == TierAction::Deny
    }
}

impl Tier {
    /// The tiers Palisade knows by default: `admin` (100, ends with Pass), `default` (1000,
    /// ends with Deny), `baseline` (10000, ends with Pass): ClusterNetworkPolicy's Admin tier,
    /// the NetworkPolicy tier and ClusterNetworkPolicy's Baseline tier.
    pub fn defaults() -> Vec<Tier> {
        vec![
            Tier {
                name: ADMIN_TIER.into(),
                order: 100,
                default_action: TierAction::Pass,
            },
            Tier {
                name: DEFAULT_TIER.into(),
                order: 1000,
                default_action: TierAction::Deny,
            },
            Tier {
                name: BASELINE_TIER.into(),
                order: 10000,
                default_action: TierAction::Pass,
            },
        ]
    }
}

/// Identifies a policy: tier, namespace (`None` for a cluster-wide policy) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyId {
    pub tier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for PolicyId {
    /// `ns/name` for a namespaced policy in the default tier, `tier:ns/name` in another tier,
    /// `name` (or `tier:name`) for a cluster-wide one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tier != DEFAULT_TIER {
            write!(f, "{}:", self.tier)?;
        }
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// A policy in Palisade's model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: PolicyId,
    /// Position inside the tier: lower first; ties broken by name.
    pub order: u32,
    /// Endpoints the policy applies to. For a namespaced policy only endpoints of that
    /// namespace are candidates.
    pub selector: Selector,
    /// For a cluster-wide policy: which namespaces' endpoints are candidates (by namespace
    /// labels). Ignored for namespaced policies.
    #[serde(default = "all_selector", skip_serializing_if = "is_all")]
    pub namespace_selector: Selector,
    /// Staged (annotation [`STAGED_ANNOTATION`] `"true"`): evaluated but not enforced. The
    /// engine leaves it out unless asked to evaluate as if staged policies were enforced; the
    /// agent reports what it would change and lets the packets go as the enforced policies say.
    #[serde(default, skip_serializing_if = "is_false")]
    pub staged: bool,
    /// Ingress rules; `None` when the policy does not apply to ingress (does not isolate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<Rule>>,
    /// Egress rules; `None` when the policy does not apply to egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<Rule>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn all_selector() -> Selector {
    Selector::All
}

fn is_all(s: &Selector) -> bool {
    *s == Selector::All
}

impl Policy {
    /// The rules for a direction, or `None` if the policy does not apply to it.
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// Whether the policy selects this endpoint (ignoring direction), given the labels of the
    /// endpoint's namespace.
    pub fn selects(&self, endpoint: &Endpoint, namespace_labels: &crate::Labels) -> bool {
        self.selects_pod(&endpoint.id.namespace, &endpoint.labels, namespace_labels)
    }

    /// [`Policy::selects`] for a pod given by its namespace and labels.
    pub fn selects_pod(
        &self,
        namespace: &str,
        labels: &crate::Labels,
        namespace_labels: &crate::Labels,
    ) -> bool {
        let in_scope = match &self.id.namespace {
            Some(ns) => ns == namespace,
            None => self.namespace_selector.matches(namespace_labels),
        };
        in_scope && self.selector.matches(labels)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Action {
    Allow,
    Deny,
    /// Skip the rest of this tier and go on with the next one.
    Pass,
    /// Record the flow and go on with the next rule.
    Log,
}

/// One rule: it matches a flow iff a peer matches (or `peers` is empty) and a port spec
/// matches (or `ports` is empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub action: Action,
    /// The other side of the flow (source for ingress, destination for egress). Empty: any.
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// Ports on the destination. Empty: every port and protocol.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
}

/// The other side of a flow, as a rule names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Peer {
    /// Endpoints chosen by namespace and pod labels.
    Endpoints(EndpointPeer),
    /// Addresses in `cidr` and in none of `except` (pod IPs included).
    Cidr {
        cidr: IpNet,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        except: Vec<IpNet>,
    },
    /// The addresses (`status.addresses`) of the nodes whose labels match (a
    /// ClusterNetworkPolicy `nodes` peer); a host-networked pod has its node's address.
    Nodes(Selector),
    /// Domain names (a ClusterNetworkPolicy `domainNames` peer). Address-based enforcement
    /// cannot see names: such a peer matches no flow.
    DomainNames(Vec<String>),
}

/// Pods matching `pods` in the namespaces that `namespaces` names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointPeer {
    pub namespaces: NamespaceMatch,
    pub pods: Selector,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NamespaceMatch {
    /// Exactly this namespace (a Kubernetes `podSelector` alone: the policy's namespace).
    Name(String),
    /// Namespaces whose labels match.
    Selector(Selector),
}

impl Peer {
    /// Whether the peer's CIDR (and excepts) admit `ip`. Families must agree.
    pub fn cidr_contains(cidr: &IpNet, except: &[IpNet], ip: IpAddr) -> bool {
        cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
}

impl Protocol {
    /// Parses `TCP`, `UDP`, `SCTP`, `ICMP` (any case).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            "ICMP" => Some(Protocol::Icmp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Icmp => "ICMP",
        }
    }

    /// Whether flows of this protocol have port numbers.
    pub fn has_ports(self) -> bool {
        !matches!(self, Protocol::Icmp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol and the destination ports of it a rule admits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub port: PortMatch,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PortMatch {
    /// Every port of the protocol.
    Any,
    /// `start..=end` (a single port has `start == end`).
    Range { start: u16, end: u16 },
    /// A container port name, resolved on the destination endpoint.
    Named(String),
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.port {
            PortMatch::Any => write!(f, "any/{}", self.protocol),
            PortMatch::Range { start, end } if start == end => {
                write!(f, "{start}/{}", self.protocol)
            }
            PortMatch::Range { start, end } => write!(f, "{start}-{end}/{}", self.protocol),
            PortMatch::Named(n) => write!(f, "{n}/{}", self.protocol),
        }
    }
}
