//! One simulated agent: the datastore-to-`DesiredState` half of the real agent (its own
//! etcd client, `store::Syncer`, `agent::translate::Translator`, `calc::Calculator`), without
//! the kernel. After every apply it publishes what the bench checks: the highest revision it
//! has applied, when its state last changed, and the two facts the trials change (the port
//! of the bench policy's rule and the members of its peer set).

use std::sync::Arc;
use std::time::Instant;

use palisade_agent::translate::{Translated, Translator};
use palisade_calc::{CalcConfig, Calculator, DesiredState, RulePeer, RulePort, Update};
use palisade_model::PolicyId;
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

/// Runs one agent for `node` until the receiver side of `tx` is gone. `connect` makes its
/// own datastore client.
pub async fn run<F, Fut>(node: String, bench_policy: PolicyId, connect: F, tx: watch::Sender<View>)
where
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
    let mut calc = Calculator::new(CalcConfig::new(node.clone()));
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
        let deltas = calc.apply_all(std::mem::take(&mut queue));
        let now = Instant::now();
        let state = calc.state();
        let (port, peers) = bench_facts(state, &bench_policy);
        tx.send_modify(|v| {
            v.revision = v.revision.max(seen);
            if !deltas.is_empty() {
                v.changed = Some((seen, now));
            }
            v.ready_at.get_or_insert(now);
            v.local_endpoints = state.endpoints.len();
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
