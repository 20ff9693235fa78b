//! The reader thread: binds the NFLOG group inside the node's network namespace, then turns
//! every logged packet into an attributed [`super::DropRecord`] in the [`super::DropLog`] and
//! counts it in `policy_drops_total`. It runs until stopped; the kernel's rate limit on the log
//! rules bounds how much it has to read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use palisade_render::names::drop_key_of_prefix;

use super::attribution::attribute;
use super::nflog::{LoggedPacket, NflogSocket};
use super::packet;
use crate::shared::Shared;

/// How often the thread looks at its stop flag while no packet comes.
const POLL: Duration = Duration::from_millis(200);

/// A running reader; stops (and joins) on [`DropReader::stop`] or drop.
pub struct DropReader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DropReader {
    /// Starts reading NFLOG `group` of network namespace `netns` (or the agent's own). Waits
    /// until the group is bound, so that a drop right after this returns is not missed; an
    /// error to bind is returned (and recorded for `/drops`).
    pub fn start(
        shared: Arc<Shared>,
        netns: Option<String>,
        group: u16,
    ) -> Result<DropReader, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("palisade-drops".into())
            .spawn(move || {
                let socket = (|| {
                    if let Some(ns) = &netns {
                        palisade_dataplane::netns::enter(ns)
                            .map_err(|e| format!("cannot enter network namespace {ns}: {e}"))?;
                    }
                    NflogSocket::open(group, POLL).map_err(|e| e.to_string())
                })();
                let mut socket = match socket {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while !flag.load(Ordering::Relaxed) {
                    match socket.recv() {
                        Ok(packets) => packets.iter().for_each(|p| record(&shared, p)),
                        Err(e) => {
                            tracing::warn!(error = %e, "reading logged drops failed");
                            shared.drops.set_reader_error(Some(e.to_string()));
                            std::thread::sleep(POLL);
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the drop reader thread: {e}"))?;
        let ready = ready_rx
            .recv()
            .unwrap_or_else(|_| Err("the drop reader thread ended".into()));
        let reader = DropReader {
            stop,
            thread: Some(thread),
        };
        match ready {
            Ok(()) => Ok(reader),
            Err(e) => Err(e),
        }
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DropReader {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Attributes one logged packet and records it (packets of other prefixes are ignored).
pub fn record(shared: &Shared, logged: &LoggedPacket) {
    let Some(key) = drop_key_of_prefix(&logged.prefix) else {
        return;
    };
    let Some(headers) = packet::parse(&logged.payload) else {
        return;
    };
    let index = shared.drops.index();
    let time = super::now_rfc3339();
    let record = shared
        .drops
        .with_book(|book| attribute(&index, book, &shared.node, time, key, &headers));
    let Some(record) = record else {
        return;
    };
    let (ns, pod) = record
        .endpoint
        .split_once('/')
        .unwrap_or(("", &record.endpoint));
    if record.staged {
        shared.metrics.staged_drop(ns, pod, &record.direction);
    } else {
        shared.metrics.policy_drop(ns, pod, &record.direction);
    }
    shared.drops.push(&record);
}
