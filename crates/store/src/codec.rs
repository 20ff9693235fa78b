//! Values: one JSON object per key, in an envelope that names its version, kind and owner:
//!
//! ```json
//! {"apiVersion":"palisade/v1","kind":"Endpoint","owner":"palisade-apply","spec":{ ... }}
//! ```
//!
//! `spec` is the model type (`palisade_model::{Namespace, Endpoint, Policy}`) or
//! [`AgentStatus`]. The owner says who wrote the object: [`OWNER_APPLY`] for `palisade apply`,
//! [`OWNER_CONTROLLER`] for the Kubernetes controller, which never touches objects it does
//! not own. Decoding checks the version, the kind, and that the key is where the object
//! belongs, and names the key in every error.

use palisade_model::{Endpoint, Namespace, Node, Policy};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::keys::{self, Key};
use crate::Revision;

/// The `apiVersion` of every value.
pub const API_VERSION: &str = "palisade/v1";
/// Owner of objects written by `palisade apply`.
pub const OWNER_APPLY: &str = "palisade-apply";
/// Owner of objects written by the Kubernetes controller.
pub const OWNER_CONTROLLER: &str = "palisade-controller";
/// Owner of agent status objects.
pub const OWNER_AGENT: &str = "palisade-agent";

/// An agent's report of how far it got, stored at `/palisade/v1/status/<node>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub node: String,
    /// Whether the dataplane matches the datastore as of `revision`.
    pub in_sync: bool,
    /// The datastore revision the dataplane was last programmed from.
    pub revision: Revision,
    /// The last error programming the dataplane, if the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When this status was written, in milliseconds since the Unix epoch.
    pub updated: u64,
}

/// Everything Palisade stores, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredObject {
    Namespace(Namespace),
    Endpoint(Endpoint),
    Policy(Policy),
    Status(AgentStatus),
    /// A node's labels and addresses (ClusterNetworkPolicy `nodes` peers).
    Node(Node),
}

impl StoredObject {
    /// The envelope `kind` of this object.
    pub fn kind(&self) -> &'static str {
        match self {
            StoredObject::Namespace(_) => "Namespace",
            StoredObject::Endpoint(_) => "Endpoint",
            StoredObject::Policy(_) => "Policy",
            StoredObject::Status(_) => "AgentStatus",
            StoredObject::Node(_) => "Node",
        }
    }

    /// The parsed key this object is stored under.
    pub fn key_of(&self) -> Key {
        match self {
            StoredObject::Namespace(ns) => Key::Namespace {
                name: ns.name.clone(),
            },
            StoredObject::Endpoint(ep) => Key::Endpoint {
                node: ep.node.clone(),
                namespace: ep.id.namespace.clone(),
                pod: ep.id.name.clone(),
            },
            StoredObject::Policy(p) => Key::Policy {
                tier: p.id.tier.clone(),
                namespace: p.id.namespace.clone(),
                name: p.id.name.clone(),
            },
            StoredObject::Status(s) => Key::Status {
                node: s.node.clone(),
            },
            StoredObject::Node(n) => Key::Node {
                name: n.name.clone(),
            },
        }
    }

    /// The key this object is stored under; fails for names that cannot be key segments.
    pub fn key(&self) -> Result<String> {
        self.key_of().to_key()
    }

    /// Decodes the value at `key`, dropping the owner (see [`Record::decode`]).
    pub fn decode(key: &str, value: &[u8]) -> Result<StoredObject> {
        Record::decode(key, value).map(|r| r.object)
    }

    /// The JSON value for this object with its owner (see the module docs).
    pub fn encode(&self, owner: &str) -> Result<Vec<u8>> {
        let key = self.key()?;
        let spec = match self {
            StoredObject::Namespace(o) => serde_json::to_value(o),
            StoredObject::Endpoint(o) => serde_json::to_value(o),
            StoredObject::Policy(o) => serde_json::to_value(o),
            StoredObject::Status(o) => serde_json::to_value(o),
            StoredObject::Node(o) => serde_json::to_value(o),
        }
        .map_err(|e| codec_error(&key, e))?;
        let envelope = Envelope {
            api_version: API_VERSION.to_string(),
            kind: self.kind().to_string(),
            owner: owner.to_string(),
            spec,
        };
        serde_json::to_vec(&envelope).map_err(|e| codec_error(&key, e))
    }
}

/// A decoded value: the object and who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub owner: String,
    pub object: StoredObject,
}

impl Record {
    pub fn new(owner: impl Into<String>, object: StoredObject) -> Self {
        Record {
            owner: owner.into(),
            object,
        }
    }

    /// Encodes the object with this record's owner.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.object.encode(&self.owner)
    }

    /// Decodes the value stored at `key`. Rejects an unknown apiVersion or kind, a spec that
    /// does not parse, and an object whose own key is not `key`, naming `key` each time.
    pub fn decode(key: &str, value: &[u8]) -> Result<Record> {
        let envelope: Envelope = serde_json::from_slice(value).map_err(|e| codec_error(key, e))?;
        if envelope.api_version != API_VERSION {
            return Err(StoreError::Codec {
                key: key.to_string(),
                reason: format!(
                    "unknown apiVersion {:?} (this Palisade reads {API_VERSION:?})",
                    envelope.api_version
                ),
            });
        }
        let spec = envelope.spec;
        let object = match envelope.kind.as_str() {
            "Namespace" => serde_json::from_value(spec).map(StoredObject::Namespace),
            "Endpoint" => serde_json::from_value(spec).map(StoredObject::Endpoint),
            "Policy" => serde_json::from_value(spec).map(StoredObject::Policy),
            "AgentStatus" => serde_json::from_value(spec).map(StoredObject::Status),
            "Node" => serde_json::from_value(spec).map(StoredObject::Node),
            other => {
                return Err(StoreError::Codec {
                    key: key.to_string(),
                    reason: format!(
                    "unknown kind {other:?} (expected Namespace, Endpoint, Policy, Node or AgentStatus)"
                ),
                })
            }
        }
        .map_err(|e| codec_error(key, format!("{} spec: {e}", envelope.kind)))?;
        let own_key = object.key()?;
        if own_key != key {
            return Err(StoreError::Codec {
                key: key.to_string(),
                reason: format!("{} belongs at {own_key}", object.kind()),
            });
        }
        // Also proves `key` is in the layout at all.
        keys::Key::parse(key)?;
        Ok(Record {
            owner: envelope.owner,
            object,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    api_version: String,
    kind: String,
    owner: String,
    spec: serde_json::Value,
}

fn codec_error(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Codec {
        key: key.to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::{EndpointId, Labels, Selector};

    fn endpoint() -> Endpoint {
        let mut labels = Labels::new();
        labels.insert("app".into(), "web".into());
        Endpoint {
            id: EndpointId::new("prod", "web-0"),
            node: Some("node-1".into()),
            labels,
            ips: vec!["10.0.0.5".parse().unwrap()],
            ports: vec![],
        }
    }

    #[test]
    fn round_trips_and_keeps_the_owner() {
        let objects = [
            StoredObject::Endpoint(endpoint()),
            StoredObject::Namespace(Namespace::implicit("prod")),
            StoredObject::Policy(Policy {
                id: palisade_model::PolicyId {
                    tier: "default".into(),
                    namespace: Some("prod".into()),
                    name: "deny-all".into(),
                },
                order: 1000,
                selector: Selector::All,
                namespace_selector: Selector::All,
                staged: false,
                ingress: Some(vec![]),
                egress: None,
            }),
            StoredObject::Status(AgentStatus {
                node: "node-1".into(),
                in_sync: true,
                revision: 42,
                last_error: None,
                updated: 1,
            }),
            StoredObject::Node(palisade_model::Node {
                name: "node-1".into(),
                labels: Labels::new(),
                addresses: vec!["10.1.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            }),
        ];
        for o in objects {
            let key = o.key().unwrap();
            let bytes = o.encode(OWNER_CONTROLLER).unwrap();
            let rec = Record::decode(&key, &bytes).unwrap();
            assert_eq!(rec.object, o);
            assert_eq!(rec.owner, OWNER_CONTROLLER);
        }
    }

    #[test]
    fn envelope_is_the_documented_one() {
        let bytes = StoredObject::Endpoint(endpoint())
            .encode(OWNER_APPLY)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["apiVersion"], "palisade/v1");
        assert_eq!(v["kind"], "Endpoint");
        assert_eq!(v["owner"], "palisade-apply");
        assert_eq!(v["spec"]["id"]["name"], "web-0");
    }

    #[test]
    fn rejects_unknown_kind_version_and_misplaced_objects() {
        let key = "/palisade/v1/namespaces/a";
        let err = Record::decode(
            key,
            br#"{"apiVersion":"palisade/v1","kind":"Widget","owner":"x","spec":{}}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&err, StoreError::Codec { key: k, reason } if k == key && reason.contains("Widget"))
        );
        let err = Record::decode(
            key,
            br#"{"apiVersion":"palisade/v9","kind":"Namespace","owner":"x","spec":{"name":"a"}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("palisade/v9"), "{err}");
        assert!(err.to_string().contains(key), "{err}");
        let err = Record::decode(
            key,
            br#"{"apiVersion":"palisade/v1","kind":"Namespace","owner":"x","spec":{"name":"b"}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("/palisade/v1/namespaces/b"),
            "{err}"
        );
        assert!(Record::decode(key, b"not json").is_err());
    }
}
