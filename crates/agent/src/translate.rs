//! Datastore events → calculation updates. A [`Translator`] turns each
//! [`palisade_store::SyncEvent`] into at most one [`palisade_calc::Update`], ignoring what the
//! calculation does not need (agent status, configuration). It remembers under which key each
//! endpoint was last seen, so that when a pod moves between nodes (a put at the new node's key
//! and a delete at the old one, in either order) the late delete does not remove it.

use std::collections::HashMap;

use palisade_calc::Update;
use palisade_model::{EndpointId, PolicyId};
use palisade_store::keys::Key;
use palisade_store::{Revision, StoredObject, SyncEvent};

/// What one sync event means to the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Translated {
    /// Feed this to the calculator.
    Update(Update),
    /// Nothing the calculation uses (status, config, a stale delete).
    Ignore,
    /// A key whose value cannot be decoded: treated as deleted (the update, if any, does
    /// that); `error` says why, for logs and the error metric.
    Invalid {
        update: Option<Update>,
        key: String,
        error: String,
    },
    /// Every change up to `revision` has been delivered.
    InSync(Revision),
    /// The datastore is unreachable.
    OutOfSync(String),
}

/// Translates sync events; see the module docs.
#[derive(Debug, Default)]
pub struct Translator {
    /// The node (an index into `nodes`) under whose key each endpoint was last seen, by
    /// `namespace/pod`: one small string per pod instead of its id and full key (an agent
    /// holds one entry per pod of the cluster).
    endpoint_nodes: HashMap<Box<str>, u32>,
    /// Node names (`None`: unscheduled), each once, and their indexes.
    nodes: Vec<Option<String>>,
    node_ids: HashMap<Option<String>, u32>,
}

/// `namespace/pod` (neither may contain a `/`).
fn endpoint_name(namespace: &str, pod: &str) -> Box<str> {
    format!("{namespace}/{pod}").into_boxed_str()
}

impl Translator {
    pub fn new() -> Self {
        Self::default()
    }

    /// The revision an event carries, if any.
    pub fn revision(ev: &SyncEvent) -> Option<Revision> {
        match ev {
            SyncEvent::Update { revision, .. } | SyncEvent::Invalid { revision, .. } => {
                Some(*revision)
            }
            SyncEvent::InSync { revision } => Some(*revision),
            SyncEvent::OutOfSync { .. } => None,
        }
    }

    pub fn translate(&mut self, ev: SyncEvent) -> Translated {
        match ev {
            SyncEvent::Update {
                key,
                value: Some(record),
                ..
            } => match record.object {
                StoredObject::Namespace(ns) => Translated::Update(Update::NamespaceUpsert(ns)),
                StoredObject::Endpoint(ep) => {
                    // The record was decoded at this key, so it parses as an endpoint key.
                    if let Ok(Key::Endpoint { node, .. }) = Key::parse(&key) {
                        let node = self.node_index(node);
                        self.endpoint_nodes
                            .insert(endpoint_name(&ep.id.namespace, &ep.id.name), node);
                    }
                    Translated::Update(Update::EndpointUpsert(ep))
                }
                // Rule names are for explanations; the dataplane does not need them.
                StoredObject::Policy(p) | StoredObject::NamedPolicy(p, _) => {
                    Translated::Update(Update::PolicyUpsert(p))
                }
                StoredObject::Node(n) => Translated::Update(Update::NodeUpsert(n)),
                // A host-networked pod is never a local workload endpoint, a subject or a pod
                // peer: its traffic is its node's, which `nodes` peers match by the Node's
                // addresses.
                StoredObject::HostEndpoint(_) | StoredObject::Status(_) => Translated::Ignore,
            },
            SyncEvent::Update {
                key, value: None, ..
            } => match self.removal(&key) {
                Some(u) => Translated::Update(u),
                None => Translated::Ignore,
            },
            SyncEvent::Invalid { key, error, .. } => Translated::Invalid {
                update: self.removal(&key),
                key,
                error: error.to_string(),
            },
            SyncEvent::InSync { revision } => Translated::InSync(revision),
            SyncEvent::OutOfSync { reason } => Translated::OutOfSync(reason),
        }
    }

    /// The index of a node name, added the first time it is seen.
    fn node_index(&mut self, node: Option<String>) -> u32 {
        if let Some(&i) = self.node_ids.get(&node) {
            return i;
        }
        let i = self.nodes.len() as u32;
        self.nodes.push(node.clone());
        self.node_ids.insert(node, i);
        i
    }

    /// The update that removes whatever was stored at `key`.
    fn removal(&mut self, key: &str) -> Option<Update> {
        match Key::parse(key).ok()? {
            Key::Namespace { name } => Some(Update::NamespaceRemove(name)),
            Key::Endpoint {
                node,
                namespace,
                pod,
            } => {
                let name = endpoint_name(&namespace, &pod);
                let id = EndpointId::new(namespace, pod);
                match self.endpoint_nodes.get(&name) {
                    // The pod lives under another node's key now (it moved): keep it.
                    Some(&current) if self.nodes[current as usize] != node => None,
                    Some(_) => {
                        self.endpoint_nodes.remove(&name);
                        Some(Update::EndpointRemove(id))
                    }
                    // Never seen (or already removed): removing again is harmless.
                    None => Some(Update::EndpointRemove(id)),
                }
            }
            Key::Policy {
                tier,
                namespace,
                name,
            } => Some(Update::PolicyRemove(PolicyId {
                tier,
                namespace,
                name,
            })),
            Key::Node { name } => Some(Update::NodeRemove(name)),
            Key::Config { .. } | Key::Status { .. } | Key::HostEndpoint { .. } => None,
        }
    }
}

/// Whether a key is one the calculation reads (namespaces, endpoints, policies, nodes).
pub fn is_relevant(key: &str) -> bool {
    use palisade_store::keys::{ENDPOINTS, NAMESPACES, NODES, POLICIES};
    key.starts_with(NAMESPACES)
        || key.starts_with(ENDPOINTS)
        || key.starts_with(POLICIES)
        || key.starts_with(NODES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::{Endpoint, Labels, Namespace, Policy, Selector};
    use palisade_store::{AgentStatus, Record, StoreError};

    fn ep(node: &str) -> Endpoint {
        Endpoint {
            id: EndpointId::new("prod", "web-0"),
            node: Some(node.into()),
            labels: Labels::new(),
            ips: vec!["10.0.0.5".parse().unwrap()],
            ports: vec![],
        }
    }

    fn put(object: StoredObject) -> SyncEvent {
        SyncEvent::Update {
            key: object.key().unwrap(),
            value: Some(Record::new("test", object)),
            revision: 7,
        }
    }

    fn del(key: &str) -> SyncEvent {
        SyncEvent::Update {
            key: key.into(),
            value: None,
            revision: 8,
        }
    }

    fn policy() -> Policy {
        Policy {
            id: PolicyId {
                tier: "default".into(),
                namespace: Some("prod".into()),
                name: "deny".into(),
            },
            order: 1000,
            selector: Selector::All,
            namespace_selector: Selector::All,
            staged: false,
            ingress: Some(vec![]),
            egress: None,
        }
    }

    #[test]
    fn puts_become_upserts() {
        let mut t = Translator::new();
        let ns = Namespace::implicit("prod");
        assert_eq!(
            t.translate(put(StoredObject::Namespace(ns.clone()))),
            Translated::Update(Update::NamespaceUpsert(ns))
        );
        assert_eq!(
            t.translate(put(StoredObject::Endpoint(ep("n1")))),
            Translated::Update(Update::EndpointUpsert(ep("n1")))
        );
        assert_eq!(
            t.translate(put(StoredObject::Policy(policy()))),
            Translated::Update(Update::PolicyUpsert(policy()))
        );
    }

    /// A host-networked pod is no workload endpoint of any node (not even its own): putting
    /// or deleting it changes nothing the calculation sees, and its key is not one the
    /// calculation reads. A named policy is the policy, names dropped.
    #[test]
    fn host_endpoints_are_ignored_and_rule_names_dropped() {
        let mut t = Translator::new();
        let host = StoredObject::HostEndpoint(ep("n1"));
        let key = host.key().unwrap();
        assert_eq!(key, "/palisade/v1/hostendpoints/prod/web-0");
        assert!(!is_relevant(&key));
        assert_eq!(t.translate(put(host)), Translated::Ignore);
        assert_eq!(t.translate(del(&key)), Translated::Ignore);
        let names = palisade_model::RuleNames {
            ingress: vec!["allow-web".into()],
            egress: vec![],
        };
        assert_eq!(
            t.translate(put(StoredObject::NamedPolicy(policy(), names))),
            Translated::Update(Update::PolicyUpsert(policy()))
        );
    }

    #[test]
    fn deletes_become_removals_by_key() {
        let mut t = Translator::new();
        assert_eq!(
            t.translate(del("/palisade/v1/namespaces/prod")),
            Translated::Update(Update::NamespaceRemove("prod".into()))
        );
        assert_eq!(
            t.translate(del("/palisade/v1/policies/default/prod/deny")),
            Translated::Update(Update::PolicyRemove(policy().id))
        );
        assert_eq!(
            t.translate(del("/palisade/v1/policies/admin/_global/base")),
            Translated::Update(Update::PolicyRemove(PolicyId {
                tier: "admin".into(),
                namespace: None,
                name: "base".into()
            }))
        );
        assert_eq!(
            t.translate(del("/palisade/v1/endpoints/n1/prod/web-0")),
            Translated::Update(Update::EndpointRemove(EndpointId::new("prod", "web-0")))
        );
    }

    #[test]
    fn status_and_config_are_ignored() {
        let mut t = Translator::new();
        let status = StoredObject::Status(AgentStatus {
            node: "n1".into(),
            in_sync: true,
            revision: 1,
            last_error: None,
            updated: 0,
        });
        assert_eq!(t.translate(put(status)), Translated::Ignore);
        assert_eq!(
            t.translate(del("/palisade/v1/status/n1")),
            Translated::Ignore
        );
        assert_eq!(
            t.translate(del("/palisade/v1/config/x")),
            Translated::Ignore
        );
        assert!(!is_relevant("/palisade/v1/status/n1"));
        assert!(is_relevant("/palisade/v1/endpoints/n1/a/b"));
        assert!(is_relevant("/palisade/v1/nodes/n1"));
    }

    #[test]
    fn a_moved_pod_survives_the_late_delete_of_its_old_key() {
        let mut t = Translator::new();
        t.translate(put(StoredObject::Endpoint(ep("n1"))));
        // Put at the new node first, then the old key goes.
        assert_eq!(
            t.translate(put(StoredObject::Endpoint(ep("n2")))),
            Translated::Update(Update::EndpointUpsert(ep("n2")))
        );
        assert_eq!(
            t.translate(del("/palisade/v1/endpoints/n1/prod/web-0")),
            Translated::Ignore
        );
        // Deleting the current key removes it.
        assert_eq!(
            t.translate(del("/palisade/v1/endpoints/n2/prod/web-0")),
            Translated::Update(Update::EndpointRemove(ep("n2").id))
        );
    }

    #[test]
    fn invalid_values_remove_what_was_there() {
        let mut t = Translator::new();
        let ev = SyncEvent::Invalid {
            key: "/palisade/v1/policies/default/prod/deny".into(),
            error: StoreError::Codec {
                key: "/palisade/v1/policies/default/prod/deny".into(),
                reason: "bad json".into(),
            },
            revision: 3,
        };
        match t.translate(ev) {
            Translated::Invalid { update, error, .. } => {
                assert_eq!(update, Some(Update::PolicyRemove(policy().id)));
                assert!(error.contains("bad json"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            t.translate(SyncEvent::InSync { revision: 9 }),
            Translated::InSync(9)
        );
    }
}
