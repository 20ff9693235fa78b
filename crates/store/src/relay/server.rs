//! The relay server: one list and one watch of a prefix upstream, served to many clients.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};

use super::wire::{self, Request};
use crate::backoff::Backoff;
use crate::datastore::{Datastore, KeyValue, Revision, WatchEvent};
use crate::error::StoreError;

/// Groups a slow client may fall behind before it is told to relist.
const CLIENT_LAG_GROUPS: usize = 8192;

/// How a relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The prefix relayed (clients may list and watch it or anything under it).
    pub prefix: String,
    /// Watch events kept for clients that resume a watch from an older revision.
    pub history_events: usize,
}

impl RelayConfig {
    pub fn new(prefix: impl Into<String>) -> Self {
        RelayConfig {
            prefix: prefix.into(),
            history_events: 100_000,
        }
    }
}

/// A group of events of whole revisions, encoded once for every client of the full prefix.
struct Group {
    first: Revision,
    last: Revision,
    events: Vec<WatchEvent>,
    frame: Arc<Vec<u8>>,
}

/// What clients are sent: a group, or "the relay relisted: relist too".
#[derive(Clone)]
enum Message {
    Group(Arc<Group>),
    Reset(Revision),
}

/// The relay's copy of the prefix, its recent history and its clients' channel.
struct Hub {
    /// `None` until the first upstream list.
    snapshot: Option<BTreeMap<String, KeyValue>>,
    revision: Revision,
    /// Every event with a revision at or above `history_from` is in `history`.
    history: VecDeque<Arc<Group>>,
    history_events: usize,
    history_from: Revision,
    /// The encoded listing of the whole prefix at `revision`, built on the first request.
    listing: Option<(Revision, Arc<Vec<u8>>)>,
    tx: broadcast::Sender<Message>,
}

/// Figures a relay reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub revision: Revision,
    pub keys: usize,
    pub upstream_lists: u64,
    pub lists_served: u64,
    pub watches_served: u64,
}

struct Shared {
    config: RelayConfig,
    hub: Mutex<Hub>,
    ready: watch::Sender<bool>,
    stats: Mutex<RelayStats>,
}

/// A running relay; see the module docs. Dropping it does not stop it: abort the tasks of
/// [`Relay::serve`] and [`Relay::follow`] (or end the process).
#[derive(Clone)]
pub struct Relay {
    shared: Arc<Shared>,
}

impl Relay {
    pub fn new(config: RelayConfig) -> Self {
        let (tx, _) = broadcast::channel(CLIENT_LAG_GROUPS);
        let (ready, _) = watch::channel(false);
        Relay {
            shared: Arc::new(Shared {
                config,
                hub: Mutex::new(Hub {
                    snapshot: None,
                    revision: 0,
                    history: VecDeque::new(),
                    history_events: 0,
                    history_from: 0,
                    listing: None,
                    tx,
                }),
                ready,
                stats: Mutex::new(RelayStats::default()),
            }),
        }
    }

    pub fn stats(&self) -> RelayStats {
        let mut s = *self.shared.stats.lock().expect("stats lock");
        let hub = self.shared.hub.lock().expect("hub lock");
        s.revision = hub.revision;
        s.keys = hub.snapshot.as_ref().map_or(0, |m| m.len());
        s
    }

    /// Waits until the relay holds its first upstream listing.
    pub async fn ready(&self) {
        let mut rx = self.shared.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Keeps the relay's copy of the prefix current from `upstream`, forever: list, watch,
    /// and on compaction or an outage list again (after a backoff) and tell every client to
    /// relist.
    pub async fn follow(&self, upstream: Arc<dyn Datastore>) {
        let prefix = self.shared.config.prefix.clone();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let error = match self.follow_once(upstream.as_ref(), &prefix).await {
                Ok(e) | Err(e) => e,
            };
            tracing::warn!(%prefix, %error, "relay upstream failed; relisting");
            if !matches!(error, StoreError::Compacted { .. }) {
                tokio::time::sleep(backoff.next_delay()).await;
            } else {
                backoff.reset();
            }
        }
    }

    /// One list and watch; returns why the watch ended (`Err`: the list or watch call).
    async fn follow_once(
        &self,
        upstream: &dyn Datastore,
        prefix: &str,
    ) -> Result<StoreError, StoreError> {
        let listing = upstream.list(prefix).await?;
        let mut stream = upstream.watch(prefix, listing.revision + 1).await?;
        self.shared.stats.lock().expect("stats lock").upstream_lists += 1;
        {
            let mut hub = self.shared.hub.lock().expect("hub lock");
            let had = hub.snapshot.is_some();
            hub.snapshot = Some(
                listing
                    .items
                    .into_iter()
                    .map(|kv| (kv.key.clone(), kv))
                    .collect(),
            );
            hub.revision = listing.revision;
            hub.history.clear();
            hub.history_events = 0;
            hub.history_from = listing.revision + 1;
            hub.listing = None;
            if had {
                let _ = hub.tx.send(Message::Reset(listing.revision));
            }
        }
        self.shared.ready.send_replace(true);
        loop {
            let mut events = Vec::new();
            match stream.next().await {
                Some(Ok(ev)) => events.push(ev),
                Some(Err(e)) => return Ok(e),
                None => {
                    return Ok(StoreError::Unavailable {
                        endpoints: upstream.describe(),
                        reason: "watch ended".into(),
                    })
                }
            }
            // Everything ready: whole revisions (the WatchStream contract).
            let mut error = None;
            while let Some(next) = stream.next().now_or_never() {
                match next {
                    Some(Ok(ev)) => events.push(ev),
                    Some(Err(e)) => {
                        error = Some(e);
                        break;
                    }
                    None => break,
                }
            }
            self.publish(events);
            if let Some(e) = error {
                return Ok(e);
            }
        }
    }

    /// Applies a group to the copy, keeps it in the history and sends it to every client.
    fn publish(&self, events: Vec<WatchEvent>) {
        let first = events.first().map_or(0, WatchEvent::revision);
        let last = events.last().map_or(0, WatchEvent::revision);
        let frame = Arc::new(wire::encode_events(events.len(), events.iter()));
        let mut hub = self.shared.hub.lock().expect("hub lock");
        if let Some(snapshot) = hub.snapshot.as_mut() {
            for ev in &events {
                match ev {
                    WatchEvent::Put(kv) => {
                        snapshot.insert(kv.key.clone(), kv.clone());
                    }
                    WatchEvent::Delete { key, .. } => {
                        snapshot.remove(key);
                    }
                }
            }
        }
        hub.revision = hub.revision.max(last);
        hub.history_events += events.len();
        let group = Arc::new(Group {
            first,
            last,
            events,
            frame,
        });
        hub.history.push_back(group.clone());
        while hub.history_events > self.shared.config.history_events && hub.history.len() > 1 {
            let old = hub.history.pop_front().expect("non-empty");
            hub.history_events -= old.events.len();
            hub.history_from = old.last + 1;
        }
        let _ = hub.tx.send(Message::Group(group));
    }

    /// Accepts clients on `listener` forever, one task each.
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (sock, _) = listener.accept().await?;
            let _ = sock.set_nodelay(true);
            let relay = self.clone();
            tokio::spawn(async move {
                if let Err(e) = relay.client(sock).await {
                    tracing::debug!(error = %e, "relay client ended");
                }
            });
        }
    }

    async fn client(&self, sock: TcpStream) -> std::io::Result<()> {
        let (mut rd, wr) = sock.into_split();
        let mut wr = BufWriter::with_capacity(64 * 1024, wr);
        let Some(payload) = wire::read_frame(&mut rd).await? else {
            return Ok(());
        };
        let request = match wire::decode_request(&payload) {
            Ok(r) => r,
            Err(e) => return wire::write_frame(&mut wr, &wire::encode_error(&e)).await,
        };
        let prefix = match &request {
            Request::List { prefix } | Request::Watch { prefix, .. } => prefix,
        };
        if !prefix.starts_with(&self.shared.config.prefix) {
            let e = StoreError::Config(format!(
                "this relay serves {} only, not {prefix}",
                self.shared.config.prefix
            ));
            return wire::write_frame(&mut wr, &wire::encode_error(&e)).await;
        }
        self.ready().await;
        match request {
            Request::List { prefix } => {
                self.shared.stats.lock().expect("stats lock").lists_served += 1;
                let frame = self.listing(&prefix);
                wire::write_frame(&mut wr, &frame).await
            }
            Request::Watch { prefix, from } => {
                self.shared.stats.lock().expect("stats lock").watches_served += 1;
                let whole = prefix == self.shared.config.prefix;
                let (backlog, mut rx, from) = match self.subscribe(from) {
                    Ok(s) => s,
                    Err(e) => return wire::write_frame(&mut wr, &wire::encode_error(&e)).await,
                };
                for g in backlog {
                    send_group(&mut wr, &g, &prefix, whole, from).await?;
                }
                loop {
                    let mut eof = [0u8; 1];
                    let msg = tokio::select! {
                        m = rx.recv() => m,
                        // The client sends nothing more: a read ends only when it is gone.
                        _ = rd.read(&mut eof) => return Ok(()),
                    };
                    let error = match msg {
                        Ok(Message::Group(g)) => {
                            send_group(&mut wr, &g, &prefix, whole, from).await?;
                            continue;
                        }
                        Ok(Message::Reset(revision)) => StoreError::Compacted {
                            revision,
                            requested: from,
                        },
                        Err(broadcast::error::RecvError::Lagged(_)) => StoreError::Compacted {
                            revision: self.shared.hub.lock().expect("hub lock").history_from,
                            requested: from,
                        },
                        Err(broadcast::error::RecvError::Closed) => StoreError::Unavailable {
                            endpoints: "relay".into(),
                            reason: "relay stopping".into(),
                        },
                    };
                    return wire::write_frame(&mut wr, &wire::encode_error(&error)).await;
                }
            }
        }
    }

    /// The listing frame of `prefix` at the relay's revision; the whole prefix's is encoded
    /// once per revision and shared.
    fn listing(&self, prefix: &str) -> Arc<Vec<u8>> {
        let mut hub = self.shared.hub.lock().expect("hub lock");
        let revision = hub.revision;
        if prefix == self.shared.config.prefix {
            if let Some((r, frame)) = &hub.listing {
                if *r == revision {
                    return frame.clone();
                }
            }
        }
        let snapshot = hub.snapshot.as_ref().expect("ready");
        let items: Vec<&KeyValue> = snapshot
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv)
            .collect();
        let frame = Arc::new(wire::encode_listing(
            revision,
            items.len(),
            items.into_iter(),
        ));
        if prefix == self.shared.config.prefix {
            hub.listing = Some((revision, frame.clone()));
        }
        frame
    }

    /// The history a watch from `from` needs, and a receiver of everything after it (taken
    /// under the same lock: nothing is missed or sent twice). `from` 0 means "from now".
    #[allow(clippy::type_complexity)]
    fn subscribe(
        &self,
        from: Revision,
    ) -> Result<(Vec<Arc<Group>>, broadcast::Receiver<Message>, Revision), StoreError> {
        let hub = self.shared.hub.lock().expect("hub lock");
        let from = if from <= 0 { hub.revision + 1 } else { from };
        if from <= hub.revision && from < hub.history_from {
            return Err(StoreError::Compacted {
                revision: hub.history_from,
                requested: from,
            });
        }
        let backlog = hub
            .history
            .iter()
            .filter(|g| g.last >= from)
            .cloned()
            .collect();
        Ok((backlog, hub.tx.subscribe(), from))
    }
}

/// Writes a group's events at or after `from` under `prefix`: the shared frame when that is
/// all of them.
async fn send_group<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    g: &Group,
    prefix: &str,
    whole: bool,
    from: Revision,
) -> std::io::Result<()> {
    if whole && g.first >= from {
        return wire::write_frame(wr, &g.frame).await;
    }
    let keep: Vec<&WatchEvent> = g
        .events
        .iter()
        .filter(|e| e.revision() >= from && e.key().starts_with(prefix))
        .collect();
    if keep.is_empty() {
        return Ok(());
    }
    wire::write_frame(wr, &wire::encode_events(keep.len(), keep.into_iter())).await
}
