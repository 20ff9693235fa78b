//! The relay client: a read-only [`Datastore`] whose lists and watches come from a relay
//! (writes go to an optional upstream store, else fail).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::BufReader;
use tokio::net::TcpStream;

use super::wire::{self, Reply, Request};
use crate::datastore::{watch_stream, Datastore, KeyValue, Listing, Op, Revision, WatchStream};
use crate::error::{Result, StoreError};

/// Lists and watches through relays at `addrs` (`host:port`), trying them in turn from
/// `first` (spread clients over relays by giving each a different `first`).
#[derive(Debug, Clone)]
pub struct RelayStore {
    addrs: Vec<String>,
    first: usize,
    connect_timeout: Duration,
    request_timeout: Duration,
    writes: Option<Arc<dyn Datastore>>,
}

impl RelayStore {
    pub fn new(addrs: Vec<String>, first: usize) -> Self {
        RelayStore {
            addrs,
            first,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            writes: None,
        }
    }

    /// How long to wait for a connection, and for a list's answer.
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self
    }

    /// Sends writes, gets, compactions and revision queries to `store` (the relay only
    /// lists and watches).
    pub fn with_writes(mut self, store: Arc<dyn Datastore>) -> Self {
        self.writes = Some(store);
        self
    }

    fn unavailable(&self, reason: String) -> StoreError {
        StoreError::Unavailable {
            endpoints: self.describe(),
            reason,
        }
    }

    /// Connects to the first relay that answers and sends `req`.
    async fn open(&self, req: &Request) -> Result<BufReader<TcpStream>> {
        if self.addrs.is_empty() {
            return Err(StoreError::Config("no relay address".into()));
        }
        let mut last = String::new();
        for i in 0..self.addrs.len() {
            let addr = &self.addrs[(self.first + i) % self.addrs.len()];
            let conn = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await;
            let mut sock = match conn {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    last = format!("{addr}: {e}");
                    continue;
                }
                Err(_) => {
                    last = format!("{addr}: no answer within {:?}", self.connect_timeout);
                    continue;
                }
            };
            let _ = sock.set_nodelay(true);
            if let Err(e) = wire::write_frame(&mut sock, &wire::encode_request(req)).await {
                last = format!("{addr}: {e}");
                continue;
            }
            return Ok(BufReader::with_capacity(64 * 1024, sock));
        }
        Err(self.unavailable(last))
    }

    fn writer(&self, what: &str) -> Result<&Arc<dyn Datastore>> {
        self.writes.as_ref().ok_or_else(|| {
            StoreError::Config(format!(
                "{what} through a relay: the relay only lists and watches"
            ))
        })
    }
}

/// Reads one reply; the end of the stream is an outage.
async fn reply(r: &mut BufReader<TcpStream>, endpoints: &str) -> Result<Reply> {
    let gone = |reason: String| StoreError::Unavailable {
        endpoints: endpoints.to_string(),
        reason,
    };
    match wire::read_frame(r).await {
        Ok(Some(payload)) => wire::decode_reply(&payload),
        Ok(None) => Err(gone("the relay closed the connection".into())),
        Err(e) => Err(gone(e.to_string())),
    }
}

#[async_trait]
impl Datastore for RelayStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        if let Some(w) = &self.writes {
            return w.get(key).await;
        }
        Ok(self
            .list(key)
            .await?
            .items
            .into_iter()
            .find(|kv| kv.key == key))
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let describe = self.describe();
        let ask = async {
            let mut conn = self
                .open(&Request::List {
                    prefix: prefix.to_string(),
                })
                .await?;
            match reply(&mut conn, &describe).await? {
                Reply::Listing(l) => Ok(l),
                Reply::Error(e) => Err(e),
                Reply::Events(_) => Err(StoreError::Backend {
                    endpoints: describe.clone(),
                    reason: "the relay answered a list with events".into(),
                }),
            }
        };
        match tokio::time::timeout(self.request_timeout, ask).await {
            Ok(r) => r,
            Err(_) => {
                Err(self.unavailable(format!("no listing within {:?}", self.request_timeout)))
            }
        }
    }

    async fn apply_batch(&self, ops: Vec<Op>) -> Result<Revision> {
        self.writer("writing")?.apply_batch(ops).await
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream> {
        let conn = self
            .open(&Request::Watch {
                prefix: prefix.to_string(),
                from: from_revision,
            })
            .await?;
        let describe = self.describe();
        // Each frame is one group of whole revisions; an error frame or the end of the
        // connection is the stream's last item.
        let groups = futures::stream::unfold(Some(conn), move |conn| {
            let describe = describe.clone();
            async move {
                let mut conn = conn?;
                match reply(&mut conn, &describe).await {
                    Ok(Reply::Events(events)) => Some((Ok(events), Some(conn))),
                    Ok(Reply::Error(e)) | Err(e) => Some((Err(e), None)),
                    Ok(Reply::Listing(_)) => Some((
                        Err(StoreError::Backend {
                            endpoints: describe,
                            reason: "the relay answered a watch with a listing".into(),
                        }),
                        None,
                    )),
                }
            }
        });
        Ok(watch_stream(groups))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.writer("compacting")?.compact(revision).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.writer("reading the revision")?
            .current_revision()
            .await
    }

    fn describe(&self) -> String {
        format!("relay {}", self.addrs.join(","))
    }
}
