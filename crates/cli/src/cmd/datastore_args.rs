//! What `apply`, `delete` and `get` share: the datastore options (`--datastore` and the etcd
//! TLS/auth flags), connecting within a few seconds, and the names of stored objects as the
//! user writes them (`networkpolicy myns/foo`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use palisade_store::keys::{self, Key};
use palisade_store::{Datastore, DatastoreUrl, EtcdConfig, KeyValue, Record, StoredObject};

/// Where the datastore is and how to log in.
#[derive(clap::Args, Debug, Clone)]
pub struct DatastoreArgs {
    /// Datastore URL: etcd://HOST:PORT[,HOST:PORT...]; `embedded:` is an in-process store
    /// that vanishes when the command ends (for trying things out). Required, except by
    /// `counters` and `agent status`, which without it ask the running lab.
    #[arg(long, env = "PALISADE_DATASTORE", value_name = "URL")]
    pub datastore: Option<String>,
    /// PEM CA bundle to verify etcd's certificate (turns TLS on).
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate, for etcd's --client-cert-auth (with --etcd-key).
    #[arg(long, value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM key of the client certificate.
    #[arg(long, value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user name (the password comes from --etcd-password or PALISADE_ETCD_PASSWORD).
    #[arg(long, value_name = "NAME")]
    pub etcd_user: Option<String>,
    /// etcd password.
    #[arg(
        long,
        env = "PALISADE_ETCD_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub etcd_password: Option<String>,
    /// Seconds to wait for etcd before giving up.
    #[arg(long, default_value_t = 3, value_name = "SECONDS")]
    pub etcd_timeout: u64,
}

/// A command was run without the datastore it needs: a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("no datastore given: pass --datastore URL (etcd://HOST:PORT) or set PALISADE_DATASTORE")]
pub struct NoDatastore;

impl DatastoreArgs {
    /// The datastore URL, or [`NoDatastore`] when none was given.
    pub fn url(&self) -> Result<DatastoreUrl> {
        let text = self.datastore.as_deref().ok_or(NoDatastore)?;
        Ok(text.parse()?)
    }

    /// Connects, failing with a clear message (and within about `2 × --etcd-timeout`) if the
    /// datastore cannot be reached.
    pub async fn connect(&self) -> Result<Arc<dyn Datastore>> {
        let url = self.url()?;
        let mut cfg = EtcdConfig::new(Vec::<String>::new());
        cfg.ca_file = self.etcd_ca.clone();
        cfg.cert_file = self.etcd_cert.clone();
        cfg.key_file = self.etcd_key.clone();
        cfg.username = self.etcd_user.clone();
        cfg.password = self.etcd_password.clone();
        let t = Duration::from_secs(self.etcd_timeout.max(1));
        cfg.connect_timeout = t;
        cfg.request_timeout = t;
        palisade_store::connect(&url, cfg)
            .await
            .with_context(|| format!("cannot use the datastore at {url}"))
    }
}

/// A tokio runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Whether a stored policy is a ClusterNetworkPolicy: cluster-wide, in the admin or
/// baseline tier.
pub fn is_cluster_network_policy(tier: &str, namespace: Option<&str>) -> bool {
    namespace.is_none()
        && (tier == palisade_model::ADMIN_TIER || tier == palisade_model::BASELINE_TIER)
}

/// The user's word for a kind of object.
pub fn kind_word(object: &StoredObject) -> &'static str {
    match object {
        StoredObject::Namespace(_) => "namespace",
        StoredObject::Endpoint(_) | StoredObject::HostEndpoint(_) => "pod",
        StoredObject::Policy(p) | StoredObject::NamedPolicy(p, _)
            if is_cluster_network_policy(&p.id.tier, p.id.namespace.as_deref()) =>
        {
            "clusternetworkpolicy"
        }
        StoredObject::Policy(_) | StoredObject::NamedPolicy(..) => "networkpolicy",
        StoredObject::Status(_) => "status",
        StoredObject::Node(_) => "node",
    }
}

/// `ns/name` (or `name`, or `tier:ns/name` outside the default tier; a ClusterNetworkPolicy's
/// bare name) of an object.
pub fn object_name(object: &StoredObject) -> String {
    match object {
        StoredObject::Namespace(n) => n.name.clone(),
        StoredObject::Endpoint(e) | StoredObject::HostEndpoint(e) => e.id.to_string(),
        StoredObject::Policy(p) | StoredObject::NamedPolicy(p, _)
            if is_cluster_network_policy(&p.id.tier, p.id.namespace.as_deref()) =>
        {
            p.id.name.clone()
        }
        StoredObject::Policy(p) | StoredObject::NamedPolicy(p, _) => p.id.to_string(),
        StoredObject::Status(s) => s.node.clone(),
        StoredObject::Node(n) => n.name.clone(),
    }
}

/// `kind name` for a parsed key (for keys whose value is unreadable).
pub fn describe_key(key: &str) -> String {
    match Key::parse(key) {
        Ok(Key::Namespace { name }) => format!("namespace {name}"),
        Ok(Key::Endpoint { namespace, pod, .. }) => format!("pod {namespace}/{pod}"),
        Ok(Key::HostEndpoint { namespace, pod }) => {
            format!("pod {namespace}/{pod} (hostNetwork)")
        }
        Ok(Key::Policy {
            tier,
            namespace,
            name,
        }) => {
            if is_cluster_network_policy(&tier, namespace.as_deref()) {
                return format!("clusternetworkpolicy {name} (tier {tier})");
            }
            let ns = namespace.map(|n| format!("{n}/")).unwrap_or_default();
            if tier == palisade_model::DEFAULT_TIER {
                format!("networkpolicy {ns}{name}")
            } else {
                format!("networkpolicy {tier}:{ns}{name}")
            }
        }
        Ok(Key::Config { name }) => format!("config {name}"),
        Ok(Key::Node { name }) => format!("node {name}"),
        Ok(Key::Status { node }) => format!("status {node}"),
        Err(_) => key.to_string(),
    }
}

/// A stored object with its key, revision and owner.
#[derive(Debug, Clone)]
pub struct Stored {
    pub kv: KeyValue,
    pub record: Record,
}

/// Every decodable object under `prefix`; undecodable values are reported on stderr and
/// skipped.
pub async fn list_objects(store: &dyn Datastore, prefix: &str) -> Result<Vec<Stored>> {
    let listing = store
        .list(prefix)
        .await
        .with_context(|| format!("cannot list {prefix} in {}", store.describe()))?;
    let mut out = Vec::with_capacity(listing.items.len());
    for kv in listing.items {
        match Record::decode(&kv.key, &kv.value) {
            Ok(record) => out.push(Stored { kv, record }),
            Err(e) => eprintln!("warning: skipping {}: {e}", describe_key(&kv.key)),
        }
    }
    Ok(out)
}

/// The keys of pod `namespace/pod`: its endpoint keys under any node (a pod that moved may
/// have left one) and its host endpoint key (a host-networked pod).
pub fn endpoint_keys_of(all_endpoints: &[KeyValue], namespace: &str, pod: &str) -> Vec<KeyValue> {
    all_endpoints
        .iter()
        .filter(|kv| match Key::parse(&kv.key) {
            Ok(Key::Endpoint {
                namespace: n,
                pod: p,
                ..
            })
            | Ok(Key::HostEndpoint {
                namespace: n,
                pod: p,
            }) => n == namespace && p == pod,
            _ => false,
        })
        .cloned()
        .collect()
}

/// Lists the raw keys of pods: endpoints (all nodes) and host endpoints.
pub async fn list_endpoint_keys(store: &dyn Datastore) -> Result<Vec<KeyValue>> {
    let mut out = Vec::new();
    for prefix in [keys::ENDPOINTS, keys::HOST_ENDPOINTS] {
        out.extend(
            store
                .list(prefix)
                .await
                .with_context(|| format!("cannot list {prefix} in {}", store.describe()))?
                .items,
        );
    }
    Ok(out)
}
