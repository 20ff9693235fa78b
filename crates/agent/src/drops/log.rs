//! [`DropLog`]: what the reader publishes and `/drops` serves: a bounded ring of the latest
//! drops (as JSON lines), a broadcast of new ones for followers, and the current drop index
//! and address book the reader attributes with.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use palisade_model::Endpoint;
use palisade_model::EndpointId;

use super::attribution::{AddressBook, DropIndex};
use super::record::DropRecord;

/// Drops the ring keeps by default.
pub const DEFAULT_RING: usize = 1024;

/// One drop as served: its sequence number and its JSON line (without the newline).
pub type Line = (u64, Arc<str>);

pub struct DropLog {
    capacity: usize,
    ring: Mutex<(u64, VecDeque<Line>)>,
    tx: tokio::sync::broadcast::Sender<Line>,
    index: RwLock<Arc<DropIndex>>,
    book: RwLock<AddressBook>,
    /// Why the reader is not running, if it is not.
    reader_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for DropLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropLog")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DropLog {
    pub fn new(capacity: usize) -> DropLog {
        DropLog {
            capacity: capacity.max(1),
            ring: Mutex::new((0, VecDeque::new())),
            tx: tokio::sync::broadcast::Sender::new(256),
            index: RwLock::new(Arc::new(DropIndex::default())),
            book: RwLock::new(AddressBook::default()),
            reader_error: Mutex::new(None),
        }
    }

    /// Adds a drop (the oldest goes when the ring is full) and hands it to followers.
    pub fn push(&self, record: &DropRecord) {
        self.push_line(record);
    }

    /// Adds any record of the stream (a drop, a revocation) as one JSON line.
    pub fn push_line<T: serde::Serialize>(&self, record: &T) {
        let Ok(json) = serde_json::to_string(record) else {
            return;
        };
        let line: Arc<str> = json.into();
        let seq = {
            let mut ring = lock(&self.ring);
            ring.0 += 1;
            let seq = ring.0;
            if ring.1.len() == self.capacity {
                ring.1.pop_front();
            }
            ring.1.push_back((seq, Arc::clone(&line)));
            seq
        };
        let _ = self.tx.send((seq, line));
    }

    /// The drops in the ring, oldest first.
    pub fn recent(&self) -> Vec<Line> {
        lock(&self.ring).1.iter().cloned().collect()
    }

    /// Drops added from now on (a follower that falls behind misses some).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Line> {
        self.tx.subscribe()
    }

    /// Drops seen since the start.
    pub fn total(&self) -> u64 {
        lock(&self.ring).0
    }

    pub fn index(&self) -> Arc<DropIndex> {
        Arc::clone(&self.index.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The index of the program just applied.
    pub fn set_index(&self, index: DropIndex) {
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
    }

    pub fn with_book<T>(&self, f: impl FnOnce(&AddressBook) -> T) -> T {
        f(&self.book.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn endpoint_upsert(&self, ep: &Endpoint) {
        self.book
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .upsert(ep);
    }

    pub fn endpoint_remove(&self, id: &EndpointId) {
        self.book
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    pub fn set_reader_error(&self, error: Option<String>) {
        *lock(&self.reader_error) = error;
    }

    pub fn reader_error(&self) -> Option<String> {
        lock(&self.reader_error).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drops::record::PolicyNames;

    fn record(port: u16) -> DropRecord {
        DropRecord {
            time: "2026-01-01T00:00:00.000Z".into(),
            node: "n1".into(),
            from: "bob/client".into(),
            to: "default/app-web".into(),
            protocol: "TCP".into(),
            port: Some(port),
            direction: "ingress".into(),
            tier: "default".into(),
            policy: PolicyNames::Many(vec!["default/web-deny-all".into()]),
            rule: None,
            endpoint: "default/app-web".into(),
            staged: false,
            staged_allow: false,
        }
    }

    #[test]
    fn the_ring_keeps_the_latest_and_followers_get_new_ones() {
        let log = DropLog::new(3);
        let mut rx = log.subscribe();
        for p in 1..=5 {
            log.push(&record(p));
        }
        let ports: Vec<u16> = log
            .recent()
            .iter()
            .map(|(_, l)| serde_json::from_str::<DropRecord>(l).unwrap().port.unwrap())
            .collect();
        assert_eq!(ports, vec![3, 4, 5]);
        assert_eq!(log.total(), 5);
        assert_eq!(rx.try_recv().unwrap().0, 1);
        let v: serde_json::Value = serde_json::from_str(&log.recent()[0].1).unwrap();
        assert_eq!(v["rule"], serde_json::Value::Null);
        assert_eq!(v["policy"][0], "default/web-deny-all");
    }
}
