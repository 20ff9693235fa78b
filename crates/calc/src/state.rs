//! The types that cross from `calc` to `render`: the node's [`DesiredState`], the [`Delta`]s
//! between two states, and the [`Update`]s that drive the calculation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use palisade_model::{
    Action, Direction, Endpoint, EndpointId, Namespace, Node, Policy, PolicyId, Protocol, Tier,
    TierAction,
};
use serde::{Deserialize, Serialize};

/// One change to the cluster view, as the agent reads it from the datastore.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    NamespaceUpsert(Namespace),
    NamespaceRemove(String),
    EndpointUpsert(Endpoint),
    EndpointRemove(EndpointId),
    PolicyUpsert(Policy),
    PolicyRemove(PolicyId),
    TierUpsert(Tier),
    /// A node's labels and addresses (for ClusterNetworkPolicy `nodes` peers).
    NodeUpsert(Node),
    NodeRemove(String),
}

/// Stable name of an IP set, derived from what it means (a hash of the selector, or of the
/// named port), so identical selectors share one set and names survive restarts. Short
/// enough for every backend once the renderer adds its prefix (`pal4-`, `pal6-`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IpSetId(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IpSetKind {
    /// Addresses (`hash:net`).
    Net,
    /// Address, protocol and port (`hash:ip,port`): named ports.
    NetPort,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IpSetMember {
    Net(IpNet),
    NetPort {
        ip: IpAddr,
        protocol: Protocol,
        port: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpSet {
    pub id: IpSetId,
    pub kind: IpSetKind,
    /// What the set stands for, for humans (the selector text or `named port http/TCP`).
    pub description: String,
    /// Both families; the renderer splits them.
    pub members: BTreeSet<IpSetMember>,
}

/// The other side of a flow in a compiled rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RulePeer {
    /// Addresses of the endpoints matching a selector (namespace part included).
    Set(IpSetId),
    /// An ipBlock, kept inline: the renderer decides how to express `except`.
    Cidr { cidr: IpNet, except: Vec<IpNet> },
}

/// Destination ports in a compiled rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RulePort {
    /// Every port of the protocol.
    Protocol(Protocol),
    /// `start..=end` of the protocol.
    Range {
        protocol: Protocol,
        start: u16,
        end: u16,
    },
    /// Destination (address, protocol, port) is in the set: every endpoint in the cluster
    /// that declares a container port with this name and protocol contributes its addresses
    /// with that port. This resolves the name on the destination pod, for ingress and egress.
    Named {
        protocol: Protocol,
        name: String,
        set: IpSetId,
    },
}

/// A model rule with selectors replaced by set ids. Empty `peers`: any peer; empty `ports`:
/// any port and protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledRule {
    pub action: Action,
    pub peers: Vec<RulePeer>,
    pub ports: Vec<RulePort>,
}

/// A policy that selects at least one local endpoint, compiled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivePolicy {
    pub id: PolicyId,
    pub order: u32,
    /// Staged: evaluated (in the staged tiers of the endpoints it selects), never enforced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub staged: bool,
    /// `None` when the policy does not apply to ingress.
    pub ingress: Option<Vec<CompiledRule>>,
    pub egress: Option<Vec<CompiledRule>>,
}

/// The policies of one tier that apply to an endpoint in one direction, in evaluation order
/// (order, then name). Never empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierPolicies {
    pub tier: String,
    pub policies: Vec<PolicyId>,
    /// What a flow these policies select but no rule decides gets: Deny (the NetworkPolicy
    /// tier), or Pass on to the next tier (the ClusterNetworkPolicy tiers).
    #[serde(default, skip_serializing_if = "TierAction::is_deny")]
    pub default_action: TierAction,
}

/// Tiers in order, per direction. An empty list means no policy selects the endpoint in that
/// direction: it is open (Kubernetes' default-allow).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointTiers {
    pub ingress: Vec<TierPolicies>,
    pub egress: Vec<TierPolicies>,
    /// When a staged policy selects the endpoint for ingress: the ingress tiers as if staged
    /// policies were enforced (what the dataplane evaluates alongside, to report differences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_ingress: Option<Vec<TierPolicies>>,
    /// The same for egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_egress: Option<Vec<TierPolicies>>,
}

impl EndpointTiers {
    /// The enforced tiers of a direction.
    pub fn of(&self, direction: Direction) -> &[TierPolicies] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// The staged tiers of a direction, when a staged policy applies there.
    pub fn staged(&self, direction: Direction) -> Option<&[TierPolicies]> {
        match direction {
            Direction::Ingress => self.staged_ingress.as_deref(),
            Direction::Egress => self.staged_egress.as_deref(),
        }
    }
}

/// An endpoint on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalEndpoint {
    pub id: EndpointId,
    /// Host-side interface (`palisade_model::endpoint::interface_name`) under the primary
    /// prefix; the endpoint's chains are named from it.
    pub iface: String,
    /// The same interface's names under the other configured prefixes
    /// ([`crate::CalcConfig::extra_iface_prefixes`]): traffic on any of them is dispatched to
    /// the endpoint's chains too. Empty with one prefix (and then not serialized).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iface_aliases: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub tiers: EndpointTiers,
}

/// Everything one node's kernel must enforce.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Sets referenced by at least one active policy, with their members.
    pub ip_sets: BTreeMap<IpSetId, IpSet>,
    /// Policies that select at least one local endpoint.
    pub policies: BTreeMap<PolicyId, ActivePolicy>,
    /// The endpoints on this node.
    pub endpoints: BTreeMap<EndpointId, LocalEndpoint>,
}

/// One change to the [`DesiredState`]. A batch of deltas is in dependency-safe order: a set is
/// created (and filled) before any policy that refers to it changes, and removed only after
/// the last policy referring to it is removed or changed; a policy exists before an endpoint
/// refers to it and is removed after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delta {
    SetCreated { id: IpSetId, kind: IpSetKind },
    SetMemberAdded { id: IpSetId, member: IpSetMember },
    SetMemberRemoved { id: IpSetId, member: IpSetMember },
    SetRemoved { id: IpSetId },
    PolicyChanged { id: PolicyId },
    PolicyRemoved { id: PolicyId },
    EndpointChanged { id: EndpointId },
    EndpointRemoved { id: EndpointId },
}

impl Delta {
    /// A change of an IP set (creation, members, removal), not of a local endpoint or an
    /// active policy.
    pub fn is_set_change(&self) -> bool {
        matches!(
            self,
            Delta::SetCreated { .. }
                | Delta::SetMemberAdded { .. }
                | Delta::SetMemberRemoved { .. }
                | Delta::SetRemoved { .. }
        )
    }
}
