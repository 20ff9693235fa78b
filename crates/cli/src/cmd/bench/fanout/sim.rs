//! One simulated agent: the datastore-to-`DesiredState` half of the real agent (its own
//! etcd client, `store::Syncer`, `agent::translate::Translator`, `calc::Calculator`), without
//! the kernel. After every apply it publishes what the bench checks: the highest revision it
//! has applied, when its state last changed, and the two facts the trials change (the port
//! of the bench policy's rule and the members of its peer set).
//!
//! Without the calculator ([`Pipeline::Delivery`]) an agent is its syncer and translator
//! only, and reads the same facts from the updates it receives (the bench policy's port, the
//! pods carrying the peer label, its node's pods): what it costs to deliver the datastore to
//! many agents, at sizes whose calculators would not fit in one machine's memory.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use palisade_agent::translate::{Translated, Translator};
use palisade_calc::{CalcConfig, Calculator, DesiredState, RulePeer, RulePort, Update};
use palisade_model::{EndpointId, PolicyId};
use palisade_store::{keys, Datastore, Revision, Syncer};
use tokio::sync::watch;

/// What one agent has applied so far.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Highest revision applied (0 before the first apply).
    pub revision: Revision,
    /// The highest revision of the last apply that changed the state, and when it ended.
    pub changed: Option<(Revision, Instant)>,
    /// When the first apply after the initial sync ended.
    pub ready_at: Option<Instant>,
    pub local_endpoints: usize,
    /// The first port of the bench policy's first ingress rule, if the policy is active.
    pub bench_port: Option<u16>,
    /// Members of that rule's peer set.
    pub bench_peers: usize,
    /// Why the agent stopped, if it did.
    pub error: Option<String>,
}

/// What an agent runs after its syncer and translator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipeline {
    /// The calculator, as the real agent.
    Calc,
    /// Nothing: the facts are read from the updates themselves.
    Delivery,
}

/// The facts of a delivery-only agent.
#[derive(Default)]
struct Delivered {
    local: HashSet<EndpointId>,
    peers: HashSet<EndpointId>,
    port: Option<u16>,
}

impl Delivered {
    fn apply(&mut self, u: &Update, node: &str, bench_policy: &PolicyId, peer_label: &str) {
        match u {
            Update::EndpointUpsert(ep) => {
                if ep.node.as_deref() == Some(node) {
                    self.local.insert(ep.id.clone());
                } else {
                    self.local.remove(&ep.id);
                }
                if ep.labels.get(peer_label).map(String::as_str) == Some("peer") {
                    self.peers.insert(ep.id.clone());
                } else {
                    self.peers.remove(&ep.id);
                }
            }
            Update::EndpointRemove(id) => {
                self.local.remove(id);
                self.peers.remove(id);
            }
            Update::PolicyUpsert(p) if p.id == *bench_policy => {
                self.port = p
                    .ingress
                    .as_ref()
                    .and_then(|rules| rules.first())
                    .and_then(|r| r.ports.first())
                    .and_then(|p| match p.port {
                        palisade_model::PortMatch::Range { start, .. } => Some(start),
                        _ => None,
                    });
            }
            Update::PolicyRemove(id) if id == bench_policy => self.port = None,
            _ => {}
        }
    }
}

/// Runs one agent for `node` until the receiver side of `tx` is gone. `connect` makes its
/// own datastore client; `peer_label` is the label of the bench policy's peers.
pub async fn run<F, Fut>(
    node: String,
    bench_policy: PolicyId,
    peer_label: &'static str,
    pipeline: Pipeline,
    connect: F,
    tx: watch::Sender<View>,
) where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Arc<dyn Datastore>>>,
{
    let store = match connect().await {
        Ok(s) => s,
        Err(e) => {
            tx.send_modify(|v| v.error = Some(format!("{node}: {e:#}")));
            return;
        }
    };
    let mut sync = Syncer::new(store, keys::ROOT).start();
    let mut translator = Translator::new();
    let mut calc =
        (pipeline == Pipeline::Calc).then(|| Calculator::new(CalcConfig::new(node.clone())));
    let mut delivered = Delivered::default();
    let mut queue: Vec<Update> = Vec::new();
    let (mut in_sync, mut seen) = (false, 0);
    loop {
        let batch = tokio::select! {
            b = sync.recv_batch(4096) => b,
            _ = tx.closed() => return,
        };
        let Some(batch) = batch else {
            tx.send_modify(|v| v.error = Some(format!("{node}: the syncer stopped")));
            return;
        };
        for ev in batch {
            if let Some(r) = Translator::revision(&ev) {
                seen = seen.max(r);
            }
            match translator.translate(ev) {
                Translated::Update(u) => queue.push(u),
                Translated::Invalid { update, .. } => queue.extend(update),
                Translated::InSync(_) => in_sync = true,
                Translated::OutOfSync(_) => in_sync = false,
                Translated::Ignore => {}
            }
        }
        if !in_sync {
            continue;
        }
        let updates = std::mem::take(&mut queue);
        let (changed, local, (port, peers)) = match calc.as_mut() {
            Some(calc) => {
                let changed = !calc.apply_all(updates).is_empty();
                let state = calc.state();
                (
                    changed,
                    state.endpoints.len(),
                    bench_facts(state, &bench_policy),
                )
            }
            None => {
                for u in &updates {
                    delivered.apply(u, &node, &bench_policy, peer_label);
                }
                let d = &delivered;
                (!updates.is_empty(), d.local.len(), (d.port, d.peers.len()))
            }
        };
        let now = Instant::now();
        tx.send_modify(|v| {
            v.revision = v.revision.max(seen);
            if changed {
                v.changed = Some((seen, now));
            }
            v.ready_at.get_or_insert(now);
            v.local_endpoints = local;
            v.bench_port = port;
            v.bench_peers = peers;
        });
    }
}

/// The bench policy's first ingress port and the size of its first peer set.
fn bench_facts(state: &DesiredState, id: &PolicyId) -> (Option<u16>, usize) {
    let Some(rule) = state
        .policies
        .get(id)
        .and_then(|p| p.ingress.as_ref())
        .and_then(|rules| rules.first())
    else {
        return (None, 0);
    };
    let port = rule.ports.iter().find_map(|p| match p {
        RulePort::Range { start, .. } => Some(*start),
        _ => None,
    });
    let peers = rule
        .peers
        .iter()
        .find_map(|p| match p {
            RulePeer::Set(set) => state.ip_sets.get(set).map(|s| s.members.len()),
            RulePeer::Cidr { .. } => None,
        })
        .unwrap_or(0);
    (port, peers)
}
