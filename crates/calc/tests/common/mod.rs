//! Shared test support: builders for model objects, and a [`Harness`] that feeds updates to a
//! [`Calculator`] and to a plain [`Cluster`] side by side, and after every batch checks that
//! the incremental state equals `compute_full`, and that replaying the deltas onto a
//! [`Mirror`] is legal at every step and reproduces the state.

#![allow(dead_code)]

use palisade_calc::{compute_full, CalcConfig, Calculator, Delta, Mirror, Update};
use palisade_model::labels::NAMESPACE_NAME_LABEL;
use palisade_model::{
    Action, Cluster, Endpoint, EndpointId, EndpointPeer, Labels, NamedPort, Namespace,
    NamespaceMatch, Peer, Policy, PolicyId, PortMatch, PortSpec, Protocol, Rule, Selector,
};

pub const NODE: &str = "n1";

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn sel(text: &str) -> Selector {
    Selector::parse(text).unwrap_or_else(|e| panic!("selector {text:?}: {e}"))
}

pub fn namespace(name: &str, pairs: &[(&str, &str)]) -> Namespace {
    let mut l = labels(pairs);
    l.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
    Namespace {
        name: name.to_string(),
        labels: l,
    }
}

pub fn endpoint(id: &str, node: &str, pairs: &[(&str, &str)], ip: &str) -> Endpoint {
    let (ns, name) = id.split_once('/').unwrap_or(("default", id));
    Endpoint {
        id: EndpointId::new(ns, name),
        node: Some(node.to_string()),
        labels: labels(pairs),
        ips: vec![ip.parse().unwrap()],
        ports: Vec::new(),
    }
}

pub fn with_port(mut ep: Endpoint, name: &str, protocol: Protocol, port: u16) -> Endpoint {
    ep.ports.push(NamedPort {
        name: name.to_string(),
        protocol,
        port,
    });
    ep
}

pub fn eid(id: &str) -> EndpointId {
    let (ns, name) = id.split_once('/').unwrap_or(("default", id));
    EndpointId::new(ns, name)
}

pub fn pid(ns: &str, name: &str) -> PolicyId {
    PolicyId {
        tier: "default".into(),
        namespace: Some(ns.into()),
        name: name.into(),
    }
}

/// A namespaced default-tier policy with the given ingress rules (`None`: no ingress).
pub fn policy(ns: &str, name: &str, selector: &str, ingress: Option<Vec<Rule>>) -> Policy {
    Policy {
        id: pid(ns, name),
        order: 1000,
        selector: sel(selector),
        namespace_selector: Selector::All,
        staged: false,
        ingress,
        egress: None,
    }
}

pub fn allow_from(peers: Vec<Peer>, ports: Vec<PortSpec>) -> Rule {
    Rule {
        action: Action::Allow,
        peers,
        ports,
    }
}

/// Pods of namespace `ns` matching `pods`.
pub fn pods_in(ns: &str, pods: &str) -> Peer {
    Peer::Endpoints(EndpointPeer {
        namespaces: NamespaceMatch::Name(ns.into()),
        pods: sel(pods),
    })
}

/// Pods matching `pods` in namespaces matching `namespaces`.
pub fn pods_where(namespaces: &str, pods: &str) -> Peer {
    Peer::Endpoints(EndpointPeer {
        namespaces: NamespaceMatch::Selector(sel(namespaces)),
        pods: sel(pods),
    })
}

pub fn named(name: &str, protocol: Protocol) -> PortSpec {
    PortSpec {
        protocol,
        port: PortMatch::Named(name.into()),
    }
}

/// Applies an update to a plain cluster, the way the datastore would hold it.
pub fn apply_to_cluster(cluster: &mut Cluster, update: &Update) {
    match update.clone() {
        Update::NamespaceUpsert(ns) => cluster.upsert_namespace(ns),
        Update::NamespaceRemove(name) => {
            cluster.namespaces.remove(&name);
        }
        Update::EndpointUpsert(ep) => cluster.upsert_endpoint(ep),
        Update::EndpointRemove(id) => cluster.endpoints.retain(|e| e.id != id),
        Update::PolicyUpsert(p) => cluster.upsert_policy(p),
        Update::PolicyRemove(id) => cluster.policies.retain(|p| p.id != id),
        Update::TierUpsert(tier) => match cluster.tiers.iter_mut().find(|t| t.name == tier.name) {
            Some(t) => *t = tier,
            None => cluster.tiers.push(tier),
        },
        Update::NodeUpsert(n) => cluster.upsert_node(n),
        Update::NodeRemove(name) => {
            cluster.nodes.remove(&name);
        }
    }
}

pub struct Harness {
    pub config: CalcConfig,
    pub calc: Calculator,
    pub cluster: Cluster,
    pub mirror: Mirror,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(CalcConfig::new(NODE))
    }

    /// A harness for `config` (e.g. several interface prefixes).
    pub fn with_config(config: CalcConfig) -> Self {
        Harness {
            calc: Calculator::new(config.clone()),
            config,
            cluster: Cluster::new(),
            mirror: Mirror::new(),
        }
    }

    pub fn apply(&mut self, update: Update) -> Vec<Delta> {
        self.apply_all(vec![update])
    }

    pub fn apply_all(&mut self, updates: Vec<Update>) -> Vec<Delta> {
        for u in &updates {
            apply_to_cluster(&mut self.cluster, u);
        }
        let deltas = if updates.len() == 1 {
            self.calc.apply(updates.into_iter().next().unwrap())
        } else {
            self.calc.apply_all(updates)
        };
        self.check(&deltas);
        deltas
    }

    /// The invariants: incremental == full, and the deltas replay legally onto the mirror.
    pub fn check(&mut self, deltas: &[Delta]) {
        let state = self.calc.state();
        let full = compute_full(&self.config, &self.cluster);
        assert_eq!(*state, full, "incremental state differs from compute_full");
        if let Err(e) = self.mirror.apply_all(deltas, state) {
            panic!("delta replay failed: {e}\ndeltas: {deltas:#?}");
        }
        assert_eq!(
            self.mirror.state, *state,
            "mirror differs from state after deltas {deltas:#?}"
        );
    }
}
