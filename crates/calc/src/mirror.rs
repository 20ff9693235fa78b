//! [`Mirror`]: a [`DesiredState`] rebuilt from [`Delta`]s alone, checking after every delta
//! that each reference is valid (policies refer only to existing sets, endpoints only to
//! existing policies). A renderer applying deltas in order relies on exactly this; tests use
//! it to hold the calculator's delta order to the promise in [`Delta`]'s docs.

use std::collections::BTreeSet;

use palisade_model::{EndpointId, PolicyId};
use thiserror::Error;

use crate::state::{
    ActivePolicy, Delta, DesiredState, IpSet, IpSetId, IpSetMember, LocalEndpoint, RulePeer,
    RulePort,
};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MirrorError {
    #[error("set {0:?} created twice")]
    SetExists(IpSetId),
    #[error("set {0:?} used before it was created or after it was removed")]
    NoSuchSet(IpSetId),
    #[error("set {id:?}: member {member:?} added twice")]
    MemberExists { id: IpSetId, member: IpSetMember },
    #[error("set {id:?}: member {member:?} removed but not present")]
    NoSuchMember { id: IpSetId, member: IpSetMember },
    #[error("set {set:?} removed while policy {policy} still refers to it")]
    SetInUse { set: IpSetId, policy: PolicyId },
    #[error("policy {0} changed but absent from the final state")]
    PolicyNotInSource(PolicyId),
    #[error("policy {policy} refers to set {set:?}, which does not exist")]
    DanglingSet { policy: PolicyId, set: IpSetId },
    #[error("policy {0} removed but not present")]
    NoSuchPolicy(PolicyId),
    #[error("policy {policy} removed while endpoint {endpoint} still refers to it")]
    PolicyInUse {
        policy: PolicyId,
        endpoint: EndpointId,
    },
    #[error("endpoint {0} changed but absent from the final state")]
    EndpointNotInSource(EndpointId),
    #[error("endpoint {endpoint} refers to policy {policy}, which does not exist")]
    DanglingPolicy {
        endpoint: EndpointId,
        policy: PolicyId,
    },
    #[error("endpoint {0} removed but not present")]
    NoSuchEndpoint(EndpointId),
}

/// The sets a compiled policy refers to.
pub fn policy_sets(policy: &ActivePolicy) -> BTreeSet<&IpSetId> {
    let rules = policy.ingress.iter().chain(&policy.egress).flatten();
    let mut out = BTreeSet::new();
    for rule in rules {
        for peer in &rule.peers {
            if let RulePeer::Set(id) = peer {
                out.insert(id);
            }
        }
        for port in &rule.ports {
            if let RulePort::Named { set, .. } = port {
                out.insert(set);
            }
        }
    }
    out
}

/// The policies an endpoint refers to, both directions.
pub fn endpoint_policies(endpoint: &LocalEndpoint) -> BTreeSet<&PolicyId> {
    let tiers = endpoint.tiers.ingress.iter().chain(&endpoint.tiers.egress);
    tiers.flat_map(|t| &t.policies).collect()
}

/// A state rebuilt from deltas. Deltas carry ids only; the contents of changed policies and
/// endpoints (and set descriptions) are read from the state the deltas lead to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirror {
    pub state: DesiredState,
}

impl Mirror {
    pub fn new() -> Self {
        Mirror::default()
    }

    /// Applies a batch of deltas that lead to `target`, checking every step.
    pub fn apply_all<'a>(
        &mut self,
        deltas: impl IntoIterator<Item = &'a Delta>,
        target: &DesiredState,
    ) -> Result<(), MirrorError> {
        deltas.into_iter().try_for_each(|d| self.apply(d, target))
    }

    /// Applies one delta, checking that it is legal and leaves every reference valid.
    pub fn apply(&mut self, delta: &Delta, target: &DesiredState) -> Result<(), MirrorError> {
        let state = &mut self.state;
        match delta {
            Delta::SetCreated { id, kind } => {
                if state.ip_sets.contains_key(id) {
                    return Err(MirrorError::SetExists(id.clone()));
                }
                let description = target
                    .ip_sets
                    .get(id)
                    .map(|s| s.description.clone())
                    .unwrap_or_default();
                state.ip_sets.insert(
                    id.clone(),
                    IpSet {
                        id: id.clone(),
                        kind: *kind,
                        description,
                        members: BTreeSet::new(),
                    },
                );
            }
            Delta::SetMemberAdded { id, member } => {
                let set = state
                    .ip_sets
                    .get_mut(id)
                    .ok_or_else(|| MirrorError::NoSuchSet(id.clone()))?;
                if !set.members.insert(member.clone()) {
                    return Err(MirrorError::MemberExists {
                        id: id.clone(),
                        member: member.clone(),
                    });
                }
            }
            Delta::SetMemberRemoved { id, member } => {
                let set = state
                    .ip_sets
                    .get_mut(id)
                    .ok_or_else(|| MirrorError::NoSuchSet(id.clone()))?;
                if !set.members.remove(member) {
                    return Err(MirrorError::NoSuchMember {
                        id: id.clone(),
                        member: member.clone(),
                    });
                }
            }
            Delta::SetRemoved { id } => {
                if state.ip_sets.remove(id).is_none() {
                    return Err(MirrorError::NoSuchSet(id.clone()));
                }
                if let Some(p) = state
                    .policies
                    .values()
                    .find(|p| policy_sets(p).contains(id))
                {
                    return Err(MirrorError::SetInUse {
                        set: id.clone(),
                        policy: p.id.clone(),
                    });
                }
            }
            Delta::PolicyChanged { id } => {
                let policy = target
                    .policies
                    .get(id)
                    .ok_or_else(|| MirrorError::PolicyNotInSource(id.clone()))?;
                if let Some(set) = policy_sets(policy)
                    .into_iter()
                    .find(|s| !state.ip_sets.contains_key(*s))
                {
                    return Err(MirrorError::DanglingSet {
                        policy: id.clone(),
                        set: set.clone(),
                    });
                }
                state.policies.insert(id.clone(), policy.clone());
            }
            Delta::PolicyRemoved { id } => {
                if state.policies.remove(id).is_none() {
                    return Err(MirrorError::NoSuchPolicy(id.clone()));
                }
                if let Some(e) = state
                    .endpoints
                    .values()
                    .find(|e| endpoint_policies(e).contains(id))
                {
                    return Err(MirrorError::PolicyInUse {
                        policy: id.clone(),
                        endpoint: e.id.clone(),
                    });
                }
            }
            Delta::EndpointChanged { id } => {
                let endpoint = target
                    .endpoints
                    .get(id)
                    .ok_or_else(|| MirrorError::EndpointNotInSource(id.clone()))?;
                if let Some(p) = endpoint_policies(endpoint)
                    .into_iter()
                    .find(|p| !state.policies.contains_key(*p))
                {
                    return Err(MirrorError::DanglingPolicy {
                        endpoint: id.clone(),
                        policy: p.clone(),
                    });
                }
                state.endpoints.insert(id.clone(), endpoint.clone());
            }
            Delta::EndpointRemoved { id } => {
                if state.endpoints.remove(id).is_none() {
                    return Err(MirrorError::NoSuchEndpoint(id.clone()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{CompiledRule, EndpointTiers, IpSetKind, TierPolicies};
    use palisade_model::Action;

    fn target() -> (DesiredState, IpSetId, PolicyId, EndpointId) {
        let set = IpSetId("s:1".into());
        let pid = PolicyId {
            tier: "default".into(),
            namespace: Some("a".into()),
            name: "p".into(),
        };
        let eid = EndpointId::new("a", "web");
        let mut state = DesiredState::default();
        state.ip_sets.insert(
            set.clone(),
            IpSet {
                id: set.clone(),
                kind: IpSetKind::Net,
                description: "test".into(),
                members: [IpSetMember::Net("10.0.0.1/32".parse().unwrap())].into(),
            },
        );
        state.policies.insert(
            pid.clone(),
            ActivePolicy {
                id: pid.clone(),
                order: 1,
                staged: false,
                ingress: Some(vec![CompiledRule {
                    action: Action::Allow,
                    peers: vec![RulePeer::Set(set.clone())],
                    ports: vec![],
                }]),
                egress: None,
            },
        );
        state.endpoints.insert(
            eid.clone(),
            LocalEndpoint {
                id: eid.clone(),
                iface: "pal0".into(),
                iface_aliases: vec![],
                ips: vec![],
                tiers: EndpointTiers {
                    ingress: vec![TierPolicies {
                        tier: "default".into(),
                        policies: vec![pid.clone()],
                        default_action: Default::default(),
                    }],
                    egress: vec![],
                    ..Default::default()
                },
            },
        );
        (state, set, pid, eid)
    }

    #[test]
    fn accepts_dependency_order_and_rebuilds_the_state() {
        let (t, set, pid, eid) = target();
        let mut m = Mirror::new();
        let deltas = [
            Delta::SetCreated {
                id: set.clone(),
                kind: IpSetKind::Net,
            },
            Delta::SetMemberAdded {
                id: set.clone(),
                member: IpSetMember::Net("10.0.0.1/32".parse().unwrap()),
            },
            Delta::PolicyChanged { id: pid.clone() },
            Delta::EndpointChanged { id: eid.clone() },
        ];
        m.apply_all(&deltas, &t).unwrap();
        assert_eq!(m.state, t);
        let removals = [
            Delta::EndpointRemoved { id: eid },
            Delta::PolicyRemoved { id: pid },
            Delta::SetRemoved { id: set },
        ];
        m.apply_all(&removals, &DesiredState::default()).unwrap();
        assert_eq!(m.state, DesiredState::default());
    }

    #[test]
    fn rejects_references_to_missing_objects() {
        let (t, set, pid, eid) = target();
        let mut m = Mirror::new();
        assert_eq!(
            m.apply(&Delta::PolicyChanged { id: pid.clone() }, &t),
            Err(MirrorError::DanglingSet {
                policy: pid.clone(),
                set: set.clone()
            })
        );
        assert_eq!(
            m.apply(&Delta::EndpointChanged { id: eid.clone() }, &t),
            Err(MirrorError::DanglingPolicy {
                endpoint: eid.clone(),
                policy: pid.clone()
            })
        );
        let mut m = Mirror { state: t.clone() };
        assert!(matches!(
            m.clone().apply(&Delta::SetRemoved { id: set.clone() }, &t),
            Err(MirrorError::SetInUse { .. })
        ));
        assert!(matches!(
            m.apply(&Delta::PolicyRemoved { id: pid }, &t),
            Err(MirrorError::PolicyInUse { .. })
        ));
        let member = IpSetMember::Net("10.0.0.1/32".parse().unwrap());
        let mut m = Mirror { state: t.clone() };
        assert!(matches!(
            m.apply(
                &Delta::SetMemberAdded {
                    id: set.clone(),
                    member: member.clone()
                },
                &t
            ),
            Err(MirrorError::MemberExists { .. })
        ));
        assert_eq!(
            m.apply(
                &Delta::SetCreated {
                    id: set.clone(),
                    kind: IpSetKind::Net
                },
                &t
            ),
            Err(MirrorError::SetExists(set))
        );
    }
}
