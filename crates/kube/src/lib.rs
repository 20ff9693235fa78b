//! # palisade-kube — the Kubernetes controller
//!
//! The stage before the datastore: kube-runtime watchers of Namespace, Pod, NetworkPolicy,
//! ClusterNetworkPolicy (a CRD that may be absent) and Node
//! feed a trimmed cache; from it, the desired datastore contents; a pure plan makes the
//! datastore match, and only the elected leader writes it.
//!
//! ```text
//!  Kubernetes API ─ watcher ─► objects (k8s-openapi → palisade_model::k8s → convert)
//!                                 ▼ Change
//!                               cache (the reflector: converted objects per kind)
//!                                 ▼ desired keys
//!  datastore listing ─► writer ─► reconcile::plan (pure) ─► batches with preconditions
//!                                 ▲
//!                  election (Lease) says who may write
//! ```
//!
//! * [`objects`]: the conversion, the same as `palisade apply`'s.
//! * [`crd`]: the ClusterNetworkPolicy resource: the raw type watched, and the schema the
//!   CRD manifest in `deploy/` is generated from.
//! * [`cache`]: the reflector, with kube-runtime's Init/InitApply/InitDone relist protocol.
//! * [`reconcile`]: the pure plan from desired and current state.
//! * [`writer`]: executes plans against a [`palisade_store::Datastore`].
//! * [`controller`]: the async loop around them.
//! * [`election`]: leader election through a `coordination.k8s.io/v1` Lease.
//! * [`metrics`]: Prometheus metrics, `/healthz`, `/readyz`.
//! * [`connect`]: the Kubernetes client (kubeconfig or in-cluster).
//! * [`startup`]: what the controller cannot work without (RBAC, the lease namespace),
//!   checked once before it starts.
//! * `fake_api` (feature `testing`): an in-process fake API server behind a `kube::Client`,
//!   for tests and `examples/controller_bench.rs`.
//!
//! Invalid objects are logged, counted, reported as Warning Events by the leader, and not
//! stored (a previously stored version is removed): see `docs/deploy.md`.
//!
//! Ownership: the controller writes values with owner `palisade-controller` and touches no
//! key owned by anyone else (`palisade apply` writes `palisade-apply`).

pub mod cache;
pub mod connect;
pub mod controller;
pub mod crd;
pub mod election;
pub mod metrics;
pub mod objects;
pub mod reconcile;
pub mod startup;
pub mod writer;

#[cfg(feature = "testing")]
pub mod fake_api;

pub use controller::{run, ControllerConfig, Reconciler};
pub use election::{ElectionConfig, Elector};
pub use metrics::Metrics;
