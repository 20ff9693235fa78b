//! Start-up checks: what the controller cannot work without, asked of the API server once
//! before anything starts, so that a missing lease namespace or a missing RBAC grant ends the
//! process at once with a message that says what to do, instead of a warning every few
//! seconds forever.
//!
//! * every watched kind can be listed and watched (RBAC `list` and `watch`);
//! * with leader election: the lease namespace exists and its Lease can be read (`get`).

use std::fmt::Debug;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ListParams, WatchParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::crd::RawClusterNetworkPolicy;

/// What the checks need to know.
#[derive(Debug, Clone, Default)]
pub struct Requirements {
    /// With leader election: the Lease's namespace and name.
    pub lease: Option<(String, String)>,
}

/// Why the controller cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(
        "the lease namespace {namespace:?} does not exist. Either create it \
         (kubectl create namespace {namespace}), or pass --lease-namespace NAMESPACE to use an \
         existing one, or --no-leader-election (one replica only)"
    )]
    LeaseNamespaceMissing { namespace: String },
    #[error(
        "RBAC: the controller may not {verb} {resource}{scope} (403 Forbidden: {message}). \
         Grant the verb in the controller's ClusterRole (deploy/10-rbac.yaml)"
    )]
    Forbidden {
        verb: &'static str,
        resource: String,
        scope: String,
        message: String,
    },
    #[error("cannot {verb} {resource}{scope} on the Kubernetes API server: {source}")]
    Api {
        verb: &'static str,
        resource: String,
        scope: String,
        #[source]
        source: kube::Error,
    },
}

/// Runs every check; the first failure is returned.
pub async fn check(client: &Client, req: &Requirements) -> Result<(), StartupError> {
    readable(Api::<Namespace>::all(client.clone()), "").await?;
    readable(Api::<Pod>::all(client.clone()), " in all namespaces").await?;
    readable(
        Api::<NetworkPolicy>::all(client.clone()),
        " in all namespaces",
    )
    .await?;
    readable(Api::<Node>::all(client.clone()), "").await?;
    // The ClusterNetworkPolicy CRD may be absent (the controller then goes on without it),
    // but if it is there, the controller must be allowed to read it.
    match readable(Api::<RawClusterNetworkPolicy>::all(client.clone()), "").await {
        Err(StartupError::Api {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 404 => {}
        other => other?,
    }
    if let Some((namespace, name)) = &req.lease {
        lease_namespace_exists(client, namespace).await?;
        let scope = format!(" in namespace {namespace}");
        Api::<Lease>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| classify("get", resource::<Lease>(), &scope, e))?;
    }
    Ok(())
}

/// The lease namespace, looked up by listing (which the controller may do: it watches
/// namespaces) rather than by `get`, which its role need not grant.
async fn lease_namespace_exists(client: &Client, namespace: &str) -> Result<(), StartupError> {
    let lp = ListParams::default().fields(&format!("metadata.name={namespace}"));
    let found = Api::<Namespace>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| classify("list", "namespaces".into(), "", e))?;
    if found
        .items
        .iter()
        .any(|n| n.metadata.name.as_deref() == Some(namespace))
    {
        Ok(())
    } else {
        Err(StartupError::LeaseNamespaceMissing {
            namespace: namespace.to_string(),
        })
    }
}

/// `list` (one item) and `watch` (the response head only) of a kind.
async fn readable<K>(api: Api<K>, scope: &str) -> Result<(), StartupError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + 'static,
{
    let list = api
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map_err(|e| classify("list", resource::<K>(), scope, e))?;
    let version = list.metadata.resource_version.unwrap_or_default();
    // The stream is dropped at once: the answer to the request is what is checked.
    let wp = WatchParams::default().timeout(1);
    let _ = api
        .watch_metadata(&wp, &version)
        .await
        .map_err(|e| classify("watch", resource::<K>(), scope, e))?;
    Ok(())
}

fn resource<K: Resource<DynamicType = ()>>() -> String {
    let group = K::group(&());
    if group.is_empty() {
        K::plural(&()).to_string()
    } else {
        format!("{}.{group}", K::plural(&()))
    }
}

fn classify(verb: &'static str, resource: String, scope: &str, e: kube::Error) -> StartupError {
    let scope = scope.to_string();
    match e {
        kube::Error::Api(s) if s.code == 403 => StartupError::Forbidden {
            verb,
            resource,
            scope,
            message: s.message,
        },
        source => StartupError::Api {
            verb,
            resource,
            scope,
            source,
        },
    }
}
