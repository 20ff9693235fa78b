//! Realization: on how many of the nodes that host a pod a policy selects the policy is
//! programmed, at the policy's current revision (Antrea's "enforced on N of M nodes"). Each
//! agent's status names the revision of every policy active on its node
//! ([`crate::NodeStatus::policies`]); this compares them with the stored policy.

use std::collections::{BTreeMap, BTreeSet};

use palisade_model::{Cluster, Policy};
use palisade_store::Revision;
use serde::Serialize;

use crate::NodeStatus;

/// How far one policy is programmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Realization {
    /// The policy's revision in the datastore: what the nodes must have programmed.
    pub revision: Revision,
    /// Nodes that host a pod the policy selects.
    pub nodes: Vec<String>,
    /// Of those, the nodes whose agent programmed this revision (or a later one).
    pub programmed: Vec<String>,
    /// Of those, the others, with the revision they have programmed (`None`: none, or no
    /// status from the agent).
    pub pending: BTreeMap<String, Option<Revision>>,
}

impl Realization {
    /// `2/3`: programmed nodes of all nodes; `-` when no node hosts a selected pod.
    pub fn ratio(&self) -> String {
        if self.nodes.is_empty() {
            "-".to_string()
        } else {
            format!("{}/{}", self.programmed.len(), self.nodes.len())
        }
    }
}

/// The realization of `policy`, stored at `revision`, given the cluster's namespaces and
/// endpoints and the agents' statuses.
pub fn realization(
    policy: &Policy,
    revision: Revision,
    cluster: &Cluster,
    statuses: &[NodeStatus],
) -> Realization {
    let nodes: BTreeSet<String> = if policy.ingress.is_none() && policy.egress.is_none() {
        BTreeSet::new() // applies to no direction: programmed nowhere
    } else {
        cluster
            .endpoints
            .iter()
            // A host-networked pod is never selected: no agent programs anything for it.
            .filter(|e| !cluster.is_host_network(&e.id))
            .filter(|e| policy.selects(e, &cluster.namespace_labels(&e.id.namespace)))
            .filter_map(|e| e.node.clone())
            .filter(|n| n != palisade_store::keys::UNSCHEDULED)
            .collect()
    };
    let id = policy.id.to_string();
    let mut programmed = Vec::new();
    let mut pending = BTreeMap::new();
    for node in &nodes {
        let has = statuses
            .iter()
            .find(|s| s.node == *node)
            .and_then(|s| s.policies.get(&id).copied());
        match has {
            Some(r) if r >= revision => programmed.push(node.clone()),
            other => {
                pending.insert(node.clone(), other);
            }
        }
    }
    Realization {
        revision,
        nodes: nodes.into_iter().collect(),
        programmed,
        pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::{Endpoint, EndpointId, Labels, PolicyId, Rule, Selector};

    fn web(name: &str, node: &str) -> Endpoint {
        let mut labels = Labels::new();
        labels.insert("app".into(), "web".into());
        Endpoint {
            id: EndpointId::new("prod", name),
            node: Some(node.into()),
            labels,
            ips: vec!["10.0.0.1".parse().unwrap()],
            ports: vec![],
        }
    }

    /// A host-networked pod the policy's selector matches is still not selected: its node
    /// does not count.
    #[test]
    fn host_networked_pods_put_no_node_in_the_count() {
        let mut cluster = Cluster::new();
        cluster.upsert_endpoint(web("web-0", "n1"));
        cluster.upsert_host_network(web("exporter", "n2"));
        let policy = Policy {
            id: PolicyId {
                tier: palisade_model::DEFAULT_TIER.into(),
                namespace: Some("prod".into()),
                name: "web".into(),
            },
            order: palisade_model::KUBERNETES_POLICY_ORDER,
            selector: Selector::Eq("app".into(), "web".into()),
            namespace_selector: Selector::All,
            staged: false,
            ingress: Some(vec![Rule {
                action: palisade_model::Action::Allow,
                peers: vec![],
                ports: vec![],
            }]),
            egress: None,
        };
        let r = realization(&policy, 5, &cluster, &[]);
        assert_eq!(r.nodes, vec!["n1".to_string()]);
        assert_eq!(r.ratio(), "0/1");
    }
}
