//! Watches that survive: open one (waiting for etcd to confirm it), and keep it fed across
//! broken connections by reopening it from the revision after the last event delivered.
//!
//! Each etcd `WatchResponse` goes down the channel as one message, so a revision's events
//! reach the [`crate::WatchStream`] together. etcd never splits a revision across
//! responses unless the watch asks for fragmenting (`WatchCreateRequest.fragment`, which we
//! never set): the server sends one response per watcher for each write's events
//! (`watchableStore.notify`), cuts catch-up batches only where a new revision starts
//! (`eventBatch.add` in `mvcc/watcher_group.go`, after `watchBatchMaxRevs` revisions), and
//! `serverWatchStream.sendLoop` (`etcdserver/api/v3rpc/watch.go`) sends each response whole
//! unless `fragment` was requested.

use std::time::{Duration, Instant};

use etcd_client::{EventType, WatchOptions};
use tokio::sync::mpsc;

use super::errors::{map_error, unavailable};
use super::{convert_kv, EtcdStore};
use crate::backoff::Backoff;
use crate::datastore::{Revision, WatchEvent};
use crate::error::{Result, StoreError};

impl EtcdStore {
    pub(super) async fn open_watch(
        &self,
        prefix: &str,
        start: Revision,
    ) -> Result<etcd_client::WatchStream> {
        let mut opts = WatchOptions::new().with_start_revision(start);
        opts = if prefix.is_empty() {
            opts.with_all_keys()
        } else {
            opts.with_prefix()
        };
        let mut client = self.watch.clone();
        let open = async {
            let mut stream = client
                .watch(prefix, Some(opts))
                .await
                .map_err(|e| map_error(&self.config, e))?;
            // The first response confirms the watch is in place.
            match stream.message().await {
                Ok(Some(resp)) if resp.created() && !resp.canceled() => {
                    self.check_cluster(resp.header())?;
                    Ok(stream)
                }
                Ok(Some(resp)) if resp.compact_revision() > 0 => Err(StoreError::Compacted {
                    revision: resp.compact_revision(),
                    requested: start,
                }),
                Ok(Some(resp)) => Err(unavailable(
                    &self.config,
                    &format!("watch not created: {}", resp.cancel_reason()),
                )),
                Ok(None) => Err(unavailable(&self.config, "watch stream closed")),
                Err(e) => Err(map_error(&self.config, e)),
            }
        };
        tokio::time::timeout(self.config.request_timeout, open)
            .await
            .map_err(|_| unavailable(&self.config, "timed out creating a watch"))?
    }
}

/// Feeds `tx` from `stream`, reconnecting from the next revision when the stream breaks.
pub(super) async fn watch_loop(
    store: EtcdStore,
    prefix: String,
    start: Revision,
    mut stream: etcd_client::WatchStream,
    tx: mpsc::Sender<Result<Vec<WatchEvent>>>,
) {
    let mut next = start;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        // Deliver until the stream breaks.
        let reason = loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = tx.closed() => return,
            };
            let resp = match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => break "watch stream closed by the server".to_string(),
                Err(e) => break map_error(&store.config, e).to_string(),
            };
            if let Err(e) = store.check_cluster(resp.header()) {
                break e.to_string();
            }
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    let _ = tx
                        .send(Err(StoreError::Compacted {
                            revision: resp.compact_revision(),
                            requested: next,
                        }))
                        .await;
                    return;
                }
                break format!("watch canceled: {}", resp.cancel_reason());
            }
            // The response's events as one message: whole revisions, never part of one.
            let events: Vec<WatchEvent> = resp
                .events()
                .iter()
                .filter_map(|ev| {
                    let kv = ev.kv()?;
                    if kv.mod_revision() < next {
                        return None; // already delivered before a reconnect
                    }
                    Some(match ev.event_type() {
                        EventType::Put => WatchEvent::Put(convert_kv(kv)),
                        EventType::Delete => WatchEvent::Delete {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            mod_revision: kv.mod_revision(),
                        },
                    })
                })
                .collect();
            if !events.is_empty() && tx.send(Ok(events)).await.is_err() {
                return;
            }
            if let Some(last) = resp.events().last().and_then(|e| e.kv()) {
                next = next.max(last.mod_revision() + 1);
            }
            backoff.reset();
        };
        tracing::warn!(endpoints = %store.config.describe(), %reason, next, "etcd watch broke; reconnecting");
        // Reconnect from `next` until it works, the history is gone, or we give up.
        let since = Instant::now();
        stream = loop {
            if since.elapsed() >= store.config.watch_give_up {
                let _ = tx.send(Err(unavailable(&store.config, &reason))).await;
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = tx.closed() => return,
            }
            match store.open_watch(&prefix, next).await {
                Ok(s) => break s,
                Err(e @ StoreError::Compacted { .. }) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "etcd watch reconnect failed"),
            }
        };
        tracing::info!(endpoints = %store.config.describe(), next, "etcd watch resumed");
    }
}
