//! Prometheus metrics of the controller and its small HTTP server: `/metrics`, `/healthz`
//! (the process is up) and `/readyz` (every watch has listed and, on the leader, the
//! datastore has been reconciled).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::objects::{Kind, ObjectId};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub kind: String,
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrdLabels {
    pub crd: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// Every metric of the controller (names start with `palisade_controller_`).
#[derive(Debug)]
pub struct Metrics {
    pub events: Family<EventLabels, Counter>,
    pub watch_errors: Family<KindLabels, Counter>,
    pub writes: Family<OpLabels, Counter>,
    pub write_errors: Counter,
    pub conflicts: Counter,
    pub invalid_total: Family<KindLabels, Counter>,
    pub invalid_objects: Family<ObjectLabels, Gauge>,
    pub lag: Histogram,
    pub leader: Gauge,
    pub synced: Gauge,
    pub full_resyncs: Counter,
    pub initial_sync_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// 1 per optional CRD the cluster does not have (by CRD name).
    pub crd_missing: Family<CrdLabels, Gauge>,
    registry: Registry,
    ready: AtomicBool,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("palisade_controller");
        let events = Family::<EventLabels, Counter>::default();
        let watch_errors = Family::<KindLabels, Counter>::default();
        let writes = Family::<OpLabels, Counter>::default();
        let write_errors = Counter::default();
        let conflicts = Counter::default();
        let invalid_total = Family::<KindLabels, Counter>::default();
        let invalid_objects = Family::<ObjectLabels, Gauge>::default();
        let lag = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let leader = Gauge::default();
        let synced = Gauge::default();
        let full_resyncs = Counter::default();
        let initial_sync_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "watch_events",
            "Watch events received, by kind and event (init, init_apply, init_done, apply, delete)",
            events.clone(),
        );
        registry.register(
            "watch_errors",
            "Watch errors (the watcher relists or retries after each)",
            watch_errors.clone(),
        );
        registry.register(
            "datastore_writes",
            "Datastore writes by operation (create, update, delete)",
            writes.clone(),
        );
        registry.register(
            "datastore_write_errors",
            "Failed datastore batches (retried)",
            write_errors.clone(),
        );
        registry.register(
            "conflicts",
            "Desired keys held by another owner (e.g. palisade apply) and left alone",
            conflicts.clone(),
        );
        registry.register(
            "invalid_objects_seen",
            "Invalid objects received from the cluster, by kind (each is skipped)",
            invalid_total.clone(),
        );
        registry.register(
            "invalid_object",
            "1 for each cluster object that is currently invalid and skipped",
            invalid_objects.clone(),
        );
        registry.register(
            "lag_seconds",
            "Time from a watch event reaching the controller to its datastore write",
            lag.clone(),
        );
        registry.register(
            "leader",
            "Whether this replica leads (1) or stands by (0)",
            leader.clone(),
        );
        registry.register(
            "synced",
            "1 once every watch has listed and the datastore was reconciled",
            synced.clone(),
        );
        registry.register(
            "full_resyncs",
            "Full reconciles of the datastore (start, relist, leadership, timer)",
            full_resyncs.clone(),
        );
        registry.register(
            "initial_sync_seconds",
            "Seconds from start to the first complete reconcile",
            initial_sync_seconds.clone(),
        );
        let crd_missing = Family::<CrdLabels, Gauge>::default();
        registry.register(
            "crd_missing",
            "1 for each optional CRD the cluster lacks (its objects are not watched)",
            crd_missing.clone(),
        );
        Arc::new(Metrics {
            crd_missing,
            events,
            watch_errors,
            writes,
            write_errors,
            conflicts,
            invalid_total,
            invalid_objects,
            lag,
            leader,
            synced,
            full_resyncs,
            initial_sync_seconds,
            registry,
            ready: AtomicBool::new(false),
        })
    }

    pub fn event(&self, kind: Kind, event: &str) {
        self.events
            .get_or_create(&EventLabels {
                kind: kind.as_str().to_string(),
                event: event.to_string(),
            })
            .inc();
    }

    pub fn watch_error(&self, kind: Kind) {
        self.watch_errors
            .get_or_create(&KindLabels {
                kind: kind.as_str().to_string(),
            })
            .inc();
    }

    pub fn write(&self, op: &str) {
        self.writes
            .get_or_create(&OpLabels { op: op.to_string() })
            .inc();
    }

    /// Marks an object invalid (counted once per observation) or valid again.
    pub fn set_invalid(&self, id: &ObjectId, invalid: bool) {
        let labels = ObjectLabels {
            kind: id.kind.as_str().to_string(),
            namespace: id.namespace.clone(),
            name: id.name.clone(),
        };
        if invalid {
            self.invalid_total
                .get_or_create(&KindLabels {
                    kind: id.kind.as_str().to_string(),
                })
                .inc();
            self.invalid_objects.get_or_create(&labels).set(1);
        } else {
            self.invalid_objects.remove(&labels);
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
        self.synced.set(i64::from(ready));
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// A counter's value by metric line prefix, for tests and the benchmark.
    pub fn writes_total(&self) -> u64 {
        ["create", "update", "delete"]
            .iter()
            .map(|op| {
                self.writes
                    .get_or_create(&OpLabels { op: op.to_string() })
                    .get()
            })
            .sum()
    }
}

/// The HTTP router: `/metrics`, `/healthz`, `/readyz`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(metrics)
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn ready_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the initial sync\n",
        )
    }
}

/// Binds `addr` and serves until `shutdown` turns true. Returns the bound address (useful
/// with port 0) once listening.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        axum::serve(listener, router(metrics))
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await
    });
    Ok((local, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_objects_appear_and_disappear() {
        let m = Metrics::new();
        let id = ObjectId::namespaced(Kind::NetworkPolicy, "prod", "bad");
        m.set_invalid(&id, true);
        let text = m.encode();
        assert!(
            text.contains(
                "palisade_controller_invalid_object{kind=\"NetworkPolicy\",namespace=\"prod\",name=\"bad\"} 1"
            ),
            "{text}"
        );
        assert!(text
            .contains("palisade_controller_invalid_objects_seen_total{kind=\"NetworkPolicy\"} 1"));
        m.set_invalid(&id, false);
        let text = m.encode();
        assert!(!text.contains("name=\"bad\""), "{text}");
    }

    #[tokio::test]
    async fn http_endpoints_answer() {
        let m = Metrics::new();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (addr, handle) = serve("127.0.0.1:0".parse().unwrap(), m.clone(), stop_rx)
            .await
            .unwrap();
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.0 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.0 503"));
        m.set_ready(true);
        assert!(get("/readyz").await.starts_with("HTTP/1.0 200"));
        m.write("create");
        let body = get("/metrics").await;
        assert!(
            body.contains("palisade_controller_datastore_writes_total{op=\"create\"} 1"),
            "{body}"
        );
        assert!(body.contains("palisade_controller_synced 1"), "{body}");
        stop_tx.send_replace(true);
        handle.await.unwrap().unwrap();
    }
}
