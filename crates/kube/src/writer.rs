//! The datastore side of the controller: a mirror of what the datastore holds under the
//! controller's prefixes, and the execution of [`reconcile::plan`]s against it in batches.
//!
//! The mirror saves a read per event. It can go stale only when someone else writes the
//! same keys; every write carries a precondition, so a stale mirror makes a batch fail
//! instead of overwriting anything. Then the batch's keys are read again and their objects
//! are planned again on the next round. A full resync (relist of the datastore) runs on
//! start, on leadership, after every Kubernetes relist, and on a timer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use palisade_store::{keys, Datastore, StoreError, StoredObject};
use tracing::{debug, warn};

use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::objects::ObjectId;
use crate::reconcile::{self, Action, Current, Plan};

/// The prefixes the controller writes under.
pub const PREFIXES: [&str; 5] = [
    keys::NAMESPACES,
    keys::ENDPOINTS,
    keys::HOST_ENDPOINTS,
    keys::POLICIES,
    keys::NODES,
];

/// What one round wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub writes: usize,
    pub conflicts: usize,
    /// Objects whose batch hit a stale precondition: plan them again.
    pub retry: Vec<ObjectId>,
    /// A stale key outside any object: resync everything.
    pub resync: bool,
}

pub struct Writer {
    store: Arc<dyn Datastore>,
    metrics: Arc<Metrics>,
    mirror: BTreeMap<String, Current>,
    index: HashMap<ObjectId, BTreeSet<String>>,
    /// Operations per datastore transaction (etcd's default limit is 128).
    pub max_batch: usize,
}

impl Writer {
    pub fn new(store: Arc<dyn Datastore>, metrics: Arc<Metrics>) -> Self {
        Writer {
            store,
            metrics,
            mirror: BTreeMap::new(),
            index: HashMap::new(),
            max_batch: 100,
        }
    }

    /// What the mirror holds (for tests).
    pub fn mirror(&self) -> &BTreeMap<String, Current> {
        &self.mirror
    }

    fn insert(&mut self, key: String, current: Current) {
        if let Some(id) = ObjectId::of_key(&key) {
            self.index.entry(id).or_default().insert(key.clone());
        }
        self.mirror.insert(key, current);
    }

    fn remove(&mut self, key: &str) {
        self.mirror.remove(key);
        if let Some(id) = ObjectId::of_key(key) {
            if let Some(set) = self.index.get_mut(&id) {
                set.remove(key);
                if set.is_empty() {
                    self.index.remove(&id);
                }
            }
        }
    }

    /// Reads everything under the controller's prefixes into the mirror.
    pub async fn load(&mut self) -> Result<(), StoreError> {
        self.mirror.clear();
        self.index.clear();
        for prefix in PREFIXES {
            let listing = self.store.list(prefix).await?;
            for kv in listing.items {
                let cur = Current::decode(&kv.key, &kv.value, kv.mod_revision);
                self.insert(kv.key, cur);
            }
        }
        Ok(())
    }

    /// Relists the datastore and makes all of it match the cache.
    pub async fn full(&mut self, cache: &Cache) -> Result<Outcome, StoreError> {
        self.load().await?;
        self.metrics.full_resyncs.inc();
        let plan = reconcile::plan(&cache.desired_all(), &self.mirror);
        self.execute(plan).await
    }

    /// Makes the datastore match the cache for these objects only.
    pub async fn partial(
        &mut self,
        cache: &Cache,
        ids: impl IntoIterator<Item = &ObjectId>,
    ) -> Result<Outcome, StoreError> {
        let mut desired = BTreeMap::new();
        let mut current = BTreeMap::new();
        for id in ids {
            if let Some((k, o)) = cache.desired(id) {
                desired.insert(k, o);
            }
            for k in self.index.get(id).into_iter().flatten() {
                if let Some(c) = self.mirror.get(k) {
                    current.insert(k.clone(), c.clone());
                }
            }
        }
        // A desired key may be in the mirror under another object's index only if the
        // layout were ambiguous; look it up directly too.
        for k in desired.keys() {
            if let Some(c) = self.mirror.get(k) {
                current.entry(k.clone()).or_insert_with(|| c.clone());
            }
        }
        let plan = reconcile::plan(&desired, &current);
        self.execute(plan).await
    }

    async fn execute(&mut self, plan: Plan) -> Result<Outcome, StoreError> {
        let mut out = Outcome::default();
        for c in &plan.conflicts {
            warn!(key = %c.key, holder = %c.holder, "not writing: the key belongs to someone else");
            self.metrics.conflicts.inc();
            out.conflicts += 1;
        }
        let max = self.max_batch.max(1);
        for chunk in plan.actions.chunks(max) {
            let mut ops = Vec::with_capacity(chunk.len());
            let mut sent: Vec<&Action> = Vec::with_capacity(chunk.len());
            for action in chunk {
                match action.to_op() {
                    Ok(op) => {
                        ops.push(op);
                        sent.push(action);
                    }
                    Err(e) => warn!(key = %action.key(), error = %e, "cannot encode; skipped"),
                }
            }
            match self.store.apply_batch(ops).await {
                Ok(revision) => {
                    for action in sent {
                        self.metrics.write(action.verb());
                        out.writes += 1;
                        match action {
                            Action::Create { key, object } | Action::Update { key, object, .. } => {
                                self.insert(key.clone(), owned(object.clone(), revision));
                            }
                            Action::Delete { key, .. } => self.remove(key),
                        }
                    }
                }
                Err(
                    e @ (StoreError::Conflict { .. }
                    | StoreError::AlreadyExists { .. }
                    | StoreError::NotFound { .. }),
                ) => {
                    debug!(error = %e, "stale precondition; rereading the batch's keys");
                    self.metrics.write_errors.inc();
                    for action in sent {
                        self.refresh(action.key()).await?;
                        match ObjectId::of_key(action.key()) {
                            Some(id) => out.retry.push(id),
                            None => out.resync = true,
                        }
                    }
                }
                Err(e) => {
                    self.metrics.write_errors.inc();
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Rereads one key into the mirror.
    async fn refresh(&mut self, key: &str) -> Result<(), StoreError> {
        match self.store.get(key).await? {
            Some(kv) => {
                let cur = Current::decode(&kv.key, &kv.value, kv.mod_revision);
                self.insert(kv.key, cur);
            }
            None => self.remove(key),
        }
        Ok(())
    }
}

fn owned(object: StoredObject, revision: palisade_store::Revision) -> Current {
    Current {
        mod_revision: revision,
        state: reconcile::CurrentState::Owned(object),
    }
}
