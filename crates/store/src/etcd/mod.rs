//! The etcd v3 backend, on the `etcd-client` crate. Several endpoints (load-balanced by the
//! client), TLS (CA, client certificate and key), username/password, a connect timeout and a
//! request timeout, so an unreachable etcd is a clear [`StoreError::Unavailable`] within a few
//! seconds rather than a hang.
//!
//! Watches reconnect by themselves with exponential backoff and resume from the revision
//! after the last one they delivered, so a restart of etcd, or the loss of one member of a
//! cluster, loses and repeats nothing. A watch gives up (its last item is `Unavailable`) only
//! after `watch_give_up` of continuous failure, and ends with `Compacted` if the history it
//! needs is gone; the [`crate::Syncer`] then relists.

mod config;
mod errors;
mod watch;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse, WatchClient,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub use config::EtcdConfig;
use errors::{map_error, unavailable};
use watch::watch_loop;

use crate::datastore::{
    check_precondition, watch_stream, Datastore, KeyValue, Listing, Op, Precondition, Revision,
    WatchStream,
};
use crate::error::{Result, StoreError};

/// Largest gRPC message the client accepts (a list of every endpoint of a large cluster).
const MAX_MESSAGE: usize = 512 * 1024 * 1024;

/// A datastore on etcd v3.
#[derive(Clone)]
pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    config: EtcdConfig,
    /// The cluster id of the first answer: answers from another cluster are refused.
    cluster: std::sync::Arc<std::sync::OnceLock<u64>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EtcdStore({})", self.config.describe())
    }
}

impl EtcdStore {
    /// Connects and checks that etcd answers (one read) within the timeouts, so a wrong
    /// address fails here with [`StoreError::Unavailable`], not at the first write.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore> {
        if config.endpoints.is_empty() {
            return Err(StoreError::Config("no etcd endpoints given".into()));
        }
        let opts = config.connect_options()?;
        let deadline = config.connect_timeout + config.request_timeout;
        let client = tokio::time::timeout(deadline, Client::connect(&config.endpoints, Some(opts)))
            .await
            .map_err(|_| unavailable(&config, "timed out connecting"))?
            .map_err(|e| map_error(&config, e))?;
        let store = EtcdStore {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE),
            config,
            cluster: Default::default(),
        };
        tokio::time::timeout(deadline, store.current_revision())
            .await
            .map_err(|_| unavailable(&store.config, "no answer"))??;
        Ok(store)
    }

    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// Refuses an answer from another etcd cluster than the first one that answered (an
    /// endpoint address now served by a different cluster).
    pub(crate) fn check_cluster(&self, h: Option<&etcd_client::ResponseHeader>) -> Result<()> {
        let Some(id) = h.map(|h| h.cluster_id()).filter(|id| *id != 0) else {
            return Ok(());
        };
        let expected = *self.cluster.get_or_init(|| id);
        if expected == id {
            Ok(())
        } else {
            Err(unavailable(
                &self.config,
                &format!("answered by etcd cluster {id:x}, not {expected:x}"),
            ))
        }
    }

    /// Runs one KV request. With several endpoints the client's balancer may hand it to a
    /// member that is down, and it fails before anything is sent (see [`never_sent`]): such
    /// failures are retried, within the request timeout, so that one dead member does not
    /// fail requests the others can serve. Anything else is returned as it is.
    async fn kv_request<T, F, Fut>(
        &self,
        mut request: F,
    ) -> std::result::Result<T, etcd_client::Error>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let started = tokio::time::Instant::now();
        let max_attempts = 4 * self.config.endpoints.len();
        let mut attempt = 1;
        loop {
            match request(self.kv.clone()).await {
                Err(e)
                    if never_sent(&e)
                        && attempt < max_attempts
                        && started.elapsed() < self.config.request_timeout =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// A request that failed while connecting to the member it was given to, so it never reached
/// etcd and may be sent again, even a transaction.
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable && status.message().contains("connect")
        }
        _ => false,
    }
}

fn convert_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

fn compare_for(key: &str, pre: Precondition) -> Option<Compare> {
    match pre {
        Precondition::Any => None,
        Precondition::Absent => Some(Compare::version(key, CompareOp::Equal, 0)),
        Precondition::Exists => Some(Compare::version(key, CompareOp::Greater, 0)),
        Precondition::ModRevision(r) => Some(Compare::mod_revision(key, CompareOp::Equal, r)),
    }
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map_or(0, |h| h.revision())
}

#[async_trait]
impl Datastore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .kv_request(|mut kv| async move { kv.get(key, None).await })
            .await
            .map_err(|e| map_error(&self.config, e))?;
        self.check_cluster(resp.header())?;
        Ok(resp.kvs().first().map(convert_kv))
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let opts = if prefix.is_empty() {
            GetOptions::new().with_all_keys()
        } else {
            GetOptions::new().with_prefix()
        };
        let resp = self
            .kv_request(|mut kv| {
                let opts = opts.clone();
                async move { kv.get(prefix, Some(opts)).await }
            })
            .await
            .map_err(|e| map_error(&self.config, e))?;
        self.check_cluster(resp.header())?;
        Ok(Listing {
            items: resp.kvs().iter().map(convert_kv).collect(),
            revision: header_revision(resp.header()),
        })
    }

    async fn apply_batch(&self, ops: Vec<Op>) -> Result<Revision> {
        crate::datastore::check_unique_keys(&ops)?;
        let n = ops.len();
        let mut compares = Vec::new();
        let mut checked: Vec<(String, Precondition)> = Vec::new();
        let mut writes = Vec::with_capacity(n);
        for op in &ops {
            if let Some(c) = compare_for(op.key(), op.precondition()) {
                compares.push(c);
                checked.push((op.key().to_string(), op.precondition()));
            }
            writes.push(match op {
                Op::Put { key, value, .. } => TxnOp::put(key.as_str(), value.clone(), None),
                Op::Delete { key, .. } => TxnOp::delete(key.as_str(), None),
            });
        }
        let reads: Vec<TxnOp> = checked
            .iter()
            .map(|(k, _)| TxnOp::get(k.as_str(), Some(GetOptions::new().with_keys_only())))
            .collect();
        let txn = Txn::new().when(compares).and_then(writes).or_else(reads);
        let resp = self
            .kv_request(|mut kv| {
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await
            .map_err(|e| match map_error(&self.config, e) {
                StoreError::BatchTooLarge { reason, .. } => {
                    StoreError::BatchTooLarge { ops: n, reason }
                }
                other => other,
            })?;
        self.check_cluster(resp.header())?;
        if resp.succeeded() {
            return Ok(header_revision(resp.header()));
        }
        // Find the first failing precondition from the reads of the else branch.
        for ((key, pre), r) in checked.iter().zip(resp.op_responses()) {
            let actual = match r {
                TxnOpResponse::Get(g) => g.kvs().first().map_or(0, |kv| kv.mod_revision()),
                _ => 0,
            };
            check_precondition(key, *pre, actual)?;
        }
        Err(StoreError::Backend {
            endpoints: self.config.describe(),
            reason: "transaction refused but every precondition holds (concurrent change); retry"
                .into(),
        })
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream> {
        let start = if from_revision > 0 {
            from_revision
        } else {
            self.current_revision().await? + 1
        };
        // Each message is one whole etcd watch response (see watch.rs).
        let (tx, rx) = mpsc::channel(1024);
        match self.open_watch(prefix, start).await {
            Ok(stream) => {
                tokio::spawn(watch_loop(
                    self.clone(),
                    prefix.to_string(),
                    start,
                    stream,
                    tx,
                ));
            }
            Err(e @ StoreError::Compacted { .. }) => {
                let _ = tx.send(Err(e)).await;
            }
            Err(e) => return Err(e),
        }
        Ok(watch_stream(ReceiverStream::new(rx)))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.kv.clone().compact(revision, None).await.map_err(|e| {
            match map_error(&self.config, e) {
                StoreError::Backend { reason, .. } if reason.contains("compacted") => {
                    StoreError::Compacted {
                        revision,
                        requested: revision,
                    }
                }
                other => other,
            }
        })?;
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision> {
        let resp = self
            .kv_request(|mut kv| async move {
                kv.get("/palisade/", Some(GetOptions::new().with_count_only()))
                    .await
            })
            .await
            .map_err(|e| map_error(&self.config, e))?;
        self.check_cluster(resp.header())?;
        Ok(header_revision(resp.header()))
    }

    fn describe(&self) -> String {
        format!("etcd {}", self.config.describe())
    }
}
