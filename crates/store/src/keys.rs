//! The key layout (ARCHITECTURE.md, "Datastore"). Every key starts with [`ROOT`]; the version
//! in the prefix lets the layout evolve. Segments never contain `/`; the reserved segments
//! `_unscheduled` (endpoint without a node) and `_global` (cluster-wide policy) start with `_`,
//! which no Kubernetes name can.

use std::fmt;

use crate::error::{Result, StoreError};

/// Prefix of everything Palisade stores.
pub const ROOT: &str = "/palisade/v1/";
/// Prefix of namespaces: `/palisade/v1/namespaces/<name>`.
pub const NAMESPACES: &str = "/palisade/v1/namespaces/";
/// Prefix of endpoints: `/palisade/v1/endpoints/<node>/<namespace>/<pod>`.
pub const ENDPOINTS: &str = "/palisade/v1/endpoints/";
/// Prefix of policies: `/palisade/v1/policies/<tier>/<namespace or _global>/<name>`.
pub const POLICIES: &str = "/palisade/v1/policies/";
/// Prefix of host-networked pods (flow ends with their node's address, never workload
/// endpoints): `/palisade/v1/hostendpoints/<namespace>/<pod>`.
pub const HOST_ENDPOINTS: &str = "/palisade/v1/hostendpoints/";
/// Prefix of nodes (labels and addresses, for ClusterNetworkPolicy `nodes` peers):
/// `/palisade/v1/nodes/<name>`.
pub const NODES: &str = "/palisade/v1/nodes/";
/// Prefix of configuration: `/palisade/v1/config/<name>`.
pub const CONFIG: &str = "/palisade/v1/config/";
/// Prefix of agent status: `/palisade/v1/status/<node>`.
pub const STATUS: &str = "/palisade/v1/status/";
/// Node segment of an endpoint whose pod has no node yet.
pub const UNSCHEDULED: &str = "_unscheduled";
/// Namespace segment of a cluster-wide policy.
pub const GLOBAL: &str = "_global";

/// A parsed Palisade key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Namespace {
        name: String,
    },
    Endpoint {
        /// `None` for an unscheduled pod.
        node: Option<String>,
        namespace: String,
        pod: String,
    },
    Policy {
        tier: String,
        /// `None` for a cluster-wide policy.
        namespace: Option<String>,
        name: String,
    },
    Config {
        name: String,
    },
    Status {
        node: String,
    },
    Node {
        name: String,
    },
    /// A host-networked pod (its node is in the value: it never changes the key).
    HostEndpoint {
        namespace: String,
        pod: String,
    },
}

impl Key {
    /// Parses a key; anything outside the layout is an [`StoreError::InvalidKey`].
    pub fn parse(key: &str) -> Result<Key> {
        let bad = |reason: &str| StoreError::InvalidKey {
            key: key.to_string(),
            reason: reason.to_string(),
        };
        let rest = key
            .strip_prefix(ROOT)
            .ok_or_else(|| bad("not under /palisade/v1/"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad("empty segment"));
        }
        let own = |s: &str| s.to_string();
        match parts.as_slice() {
            ["namespaces", name] => Ok(Key::Namespace { name: own(name) }),
            ["endpoints", node, ns, pod] => Ok(Key::Endpoint {
                node: (*node != UNSCHEDULED).then(|| own(node)),
                namespace: own(ns),
                pod: own(pod),
            }),
            ["policies", tier, ns, name] => Ok(Key::Policy {
                tier: own(tier),
                namespace: (*ns != GLOBAL).then(|| own(ns)),
                name: own(name),
            }),
            ["config", name] => Ok(Key::Config { name: own(name) }),
            ["status", node] => Ok(Key::Status { node: own(node) }),
            ["nodes", name] => Ok(Key::Node { name: own(name) }),
            ["hostendpoints", ns, pod] => Ok(Key::HostEndpoint {
                namespace: own(ns),
                pod: own(pod),
            }),
            _ => Err(bad(
                "expected namespaces/<name>, endpoints/<node>/<ns>/<pod>, \
                 hostendpoints/<ns>/<pod>, policies/<tier>/<ns>/<name>, nodes/<name>, \
                 config/<name> or status/<node>",
            )),
        }
    }

    /// The key as a string, checking every segment (no `/`, not empty, no leading `_`).
    pub fn to_key(&self) -> Result<String> {
        match self {
            Key::Namespace { name } => {
                check_segment(name, "namespace name")?;
                Ok(format!("{NAMESPACES}{name}"))
            }
            Key::Endpoint {
                node,
                namespace,
                pod,
            } => {
                if let Some(n) = node {
                    check_segment(n, "node")?;
                }
                check_segment(namespace, "namespace")?;
                check_segment(pod, "pod")?;
                let node = node.as_deref().unwrap_or(UNSCHEDULED);
                Ok(format!("{ENDPOINTS}{node}/{namespace}/{pod}"))
            }
            Key::Policy {
                tier,
                namespace,
                name,
            } => {
                check_segment(tier, "tier")?;
                if let Some(ns) = namespace {
                    check_segment(ns, "namespace")?;
                }
                check_segment(name, "policy name")?;
                let ns = namespace.as_deref().unwrap_or(GLOBAL);
                Ok(format!("{POLICIES}{tier}/{ns}/{name}"))
            }
            Key::Config { name } => {
                check_segment(name, "config name")?;
                Ok(format!("{CONFIG}{name}"))
            }
            Key::Status { node } => {
                check_segment(node, "node")?;
                Ok(format!("{STATUS}{node}"))
            }
            Key::Node { name } => {
                check_segment(name, "node name")?;
                Ok(format!("{NODES}{name}"))
            }
            Key::HostEndpoint { namespace, pod } => {
                check_segment(namespace, "namespace")?;
                check_segment(pod, "pod")?;
                Ok(format!("{HOST_ENDPOINTS}{namespace}/{pod}"))
            }
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_key() {
            Ok(k) => f.write_str(&k),
            Err(_) => write!(f, "{self:?}"),
        }
    }
}

/// A name must be usable as one key segment.
fn check_segment(s: &str, what: &str) -> Result<()> {
    let reason = if s.is_empty() {
        Some("is empty")
    } else if s.contains('/') {
        Some("contains '/'")
    } else if s.starts_with('_') {
        Some("starts with '_' (reserved)")
    } else if s.chars().any(|c| c.is_control()) {
        Some("contains a control character")
    } else {
        None
    };
    match reason {
        Some(r) => Err(StoreError::InvalidKey {
            key: s.to_string(),
            reason: format!("{what} {r}"),
        }),
        None => Ok(()),
    }
}

/// `/palisade/v1/namespaces/<name>`.
pub fn namespace(name: &str) -> Result<String> {
    Key::Namespace { name: name.into() }.to_key()
}

/// `/palisade/v1/endpoints/<node or _unscheduled>/<namespace>/<pod>`.
pub fn endpoint(node: Option<&str>, namespace: &str, pod: &str) -> Result<String> {
    Key::Endpoint {
        node: node.map(Into::into),
        namespace: namespace.into(),
        pod: pod.into(),
    }
    .to_key()
}

/// `/palisade/v1/policies/<tier>/<namespace or _global>/<name>`.
pub fn policy(tier: &str, namespace: Option<&str>, name: &str) -> Result<String> {
    Key::Policy {
        tier: tier.into(),
        namespace: namespace.map(Into::into),
        name: name.into(),
    }
    .to_key()
}

/// `/palisade/v1/hostendpoints/<namespace>/<pod>`.
pub fn host_endpoint(namespace: &str, pod: &str) -> Result<String> {
    Key::HostEndpoint {
        namespace: namespace.into(),
        pod: pod.into(),
    }
    .to_key()
}

/// `/palisade/v1/nodes/<name>`.
pub fn node(name: &str) -> Result<String> {
    Key::Node { name: name.into() }.to_key()
}

/// `/palisade/v1/status/<node>`.
pub fn status(node: &str) -> Result<String> {
    Key::Status { node: node.into() }.to_key()
}

/// `/palisade/v1/config/<name>`.
pub fn config(name: &str) -> Result<String> {
    Key::Config { name: name.into() }.to_key()
}

/// Prefix of the endpoints of one node (`None`: unscheduled ones).
pub fn endpoints_of_node(node: Option<&str>) -> String {
    format!("{ENDPOINTS}{}/", node.unwrap_or(UNSCHEDULED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        let keys = [
            Key::Namespace {
                name: "prod".into(),
            },
            Key::Endpoint {
                node: Some("node-1".into()),
                namespace: "prod".into(),
                pod: "web-0".into(),
            },
            Key::Endpoint {
                node: None,
                namespace: "prod".into(),
                pod: "web-1".into(),
            },
            Key::Policy {
                tier: "default".into(),
                namespace: Some("prod".into()),
                name: "deny".into(),
            },
            Key::Policy {
                tier: "admin".into(),
                namespace: None,
                name: "base".into(),
            },
            Key::Config {
                name: "felix".into(),
            },
            Key::Status {
                node: "node-1".into(),
            },
            Key::Node {
                name: "node-1".into(),
            },
            Key::HostEndpoint {
                namespace: "kube-system".into(),
                pod: "node-exporter-1".into(),
            },
        ];
        for k in keys {
            let s = k.to_key().unwrap();
            assert_eq!(Key::parse(&s).unwrap(), k, "{s}");
        }
    }

    #[test]
    fn reserved_segments_are_spelled_out() {
        assert_eq!(
            endpoint(None, "a", "b").unwrap(),
            "/palisade/v1/endpoints/_unscheduled/a/b"
        );
        assert_eq!(
            policy("default", None, "p").unwrap(),
            "/palisade/v1/policies/default/_global/p"
        );
    }

    #[test]
    fn rejects_bad_segments_and_keys() {
        assert!(namespace("a/b").is_err());
        assert!(namespace("").is_err());
        assert!(namespace("_global").is_err());
        assert!(endpoint(Some("n"), "ns", "a\nb").is_err());
        assert!(Key::parse("/palisade/v2/namespaces/a").is_err());
        assert!(Key::parse("/palisade/v1/namespaces/a/b").is_err());
        assert!(Key::parse("/palisade/v1/endpoints/n//p").is_err());
        let err = Key::parse("/palisade/v1/widgets/a")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/palisade/v1/widgets/a"), "{err}");
    }
}
