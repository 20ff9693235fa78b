//! The agent's HTTP endpoints (axum) on the metrics address:
//!
//! * `/metrics`: Prometheus (OpenMetrics text) of [`crate::metrics::Metrics`];
//! * `/healthz`: 200 while the process runs;
//! * `/readyz`: 200 when the datastore is in sync and the last apply succeeded, else 503 and why;
//! * `/counters`: JSON [`crate::report::CountersReport`] read from the kernel;
//! * `/drops`: the latest attributed drops, one JSON [`crate::drops::DropRecord`] a line,
//!   oldest first; `/drops?follow` then keeps the connection open and streams new ones; 503
//!   and why when the agent does not read drops (logging off, NFLOG group taken).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::shared::Shared;

/// The router over `shared`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/counters", get(counters))
        .route("/drops", get(drops))
        .with_state(shared)
}

/// Binds `addr` (port 0: any free port); the listener's `local_addr` says which.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.progress().not_ready_reason() {
        None => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn counters(State(shared): State<Arc<Shared>>) -> Response {
    let result = tokio::task::spawn_blocking(move || shared.counters_blocking()).await;
    match result {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read counters from the dataplane: {e}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("counter task failed: {e}\n"),
        )
            .into_response(),
    }
}

async fn drops(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let follow = query.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "follow" || (p.starts_with("follow=") && p != "follow=false"))
    });
    if let Some(why) = shared.drops.reader_error() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("drops are not read on this node: {why}\n"),
        )
            .into_response();
    }
    let headers = [(header::CONTENT_TYPE, "application/x-ndjson")];
    if !follow {
        let mut body = String::new();
        for (_, line) in shared.drops.recent() {
            body.push_str(&line);
            body.push('\n');
        }
        return (headers, body).into_response();
    }
    // Subscribe before taking the ring, then skip what the ring already had.
    let rx = shared.drops.subscribe();
    let recent = shared.drops.recent();
    let last = recent.last().map_or(0, |(seq, _)| *seq);
    let mut first = String::new();
    for (_, line) in &recent {
        first.push_str(line);
        first.push('\n');
    }
    let head =
        futures_util::stream::iter([Ok::<Bytes, std::convert::Infallible>(Bytes::from(first))]);
    let tail = futures_util::stream::unfold(rx, move |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok((seq, line)) if seq > last => {
                    let mut text = String::with_capacity(line.len() + 1);
                    text.push_str(&line);
                    text.push('\n');
                    return Some((Ok(Bytes::from(text)), rx));
                }
                Ok(_) => continue,
                // A slow follower misses what it could not keep up with.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    use futures_util::StreamExt as _;
    (headers, Body::from_stream(head.chain(tail))).into_response()
}
