//! [`compute_full`]: the node's [`DesiredState`] from a whole [`Cluster`], with no index and
//! no memory of earlier states. Slow and plain on purpose: it is the oracle the incremental
//! [`crate::Calculator`] is tested against.

use std::collections::{BTreeMap, BTreeSet};

use palisade_model::{Cluster, EndpointId, Labels, Policy};

use crate::compile::{compile_policy, endpoint_tiers};
use crate::config::CalcConfig;
use crate::setdef::{node_members, SetDef};
use crate::state::{DesiredState, IpSet, LocalEndpoint, Update};

/// Computes everything `config.node` must enforce for `cluster`. Host-networked pods are no
/// workload endpoints: they are neither enforced on nor members of selector sets.
pub fn compute_full(config: &CalcConfig, cluster: &Cluster) -> DesiredState {
    let local: Vec<_> = cluster
        .endpoints
        .iter()
        .filter(|e| !cluster.is_host_network(&e.id))
        .filter(|e| e.node.as_deref() == Some(config.node.as_str()))
        .collect();
    // Each endpoint's namespace labels, looked up once.
    let ns_labels: BTreeMap<&str, Labels> = cluster
        .endpoints
        .iter()
        .map(|e| e.id.namespace.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|ns| (ns, cluster.namespace_labels(ns)))
        .collect();
    let empty = Labels::new();
    let labels_of = |ns: &str| ns_labels.get(ns).unwrap_or(&empty);
    let mut state = DesiredState::default();
    let mut selecting: BTreeMap<&EndpointId, Vec<&Policy>> = BTreeMap::new();
    for policy in &cluster.policies {
        let selected: Vec<_> = local
            .iter()
            .filter(|e| policy.selects(e, labels_of(&e.id.namespace)))
            .collect();
        if selected.is_empty() {
            continue;
        }
        for e in selected {
            selecting.entry(&e.id).or_default().push(policy);
        }
        let compiled = compile_policy(policy);
        for (id, def) in &compiled.sets {
            if !state.ip_sets.contains_key(id) {
                state
                    .ip_sets
                    .insert(id.clone(), full_set(def, cluster, &ns_labels));
            }
        }
        state.policies.insert(policy.id.clone(), compiled.policy);
    }
    for e in local {
        let policies = selecting.get(&e.id).cloned().unwrap_or_default();
        let tiers = endpoint_tiers(policies, |t| {
            (cluster.tier_order(t), cluster.tier_action(t))
        });
        let iface = config.iface(&e.id);
        state.endpoints.insert(
            e.id.clone(),
            LocalEndpoint {
                id: e.id.clone(),
                iface_aliases: config.iface_aliases(&e.id, &iface),
                iface,
                ips: e.ips.clone(),
                tiers,
            },
        );
    }
    state
}

fn full_set(def: &SetDef, cluster: &Cluster, ns_labels: &BTreeMap<&str, Labels>) -> IpSet {
    let empty = Labels::new();
    let mut members: BTreeSet<_> = cluster
        .endpoints
        .iter()
        .filter(|e| !cluster.is_host_network(&e.id))
        .filter(|e| def.matches(*e, ns_labels.get(e.id.namespace.as_str()).unwrap_or(&empty)))
        .flat_map(|e| def.members(e))
        .collect();
    if let SetDef::Nodes(sel) = def {
        members.extend(node_members(sel, cluster.nodes.values()));
    }
    IpSet {
        id: def.id(),
        kind: def.kind(),
        description: def.description(),
        members,
    }
}

/// The whole cluster as a batch of updates (tiers, namespaces, nodes, workload endpoints,
/// policies), for a
/// fresh [`crate::Calculator`]: `calc.apply_all(cluster_updates(&cluster))` reaches
/// `compute_full(&config, &cluster)`.
pub fn cluster_updates(cluster: &Cluster) -> Vec<Update> {
    let tiers = cluster.tiers.iter().cloned().map(Update::TierUpsert);
    let namespaces = cluster
        .namespaces
        .values()
        .cloned()
        .map(Update::NamespaceUpsert);
    let endpoints = cluster
        .endpoints
        .iter()
        .filter(|e| !cluster.is_host_network(&e.id))
        .cloned()
        .map(Update::EndpointUpsert);
    let policies = cluster.policies.iter().cloned().map(Update::PolicyUpsert);
    let nodes = cluster.nodes.values().cloned().map(Update::NodeUpsert);
    tiers
        .chain(namespaces)
        .chain(nodes)
        .chain(endpoints)
        .chain(policies)
        .collect()
}
