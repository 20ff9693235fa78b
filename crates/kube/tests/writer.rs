//! The writer against a real (embedded) datastore that someone else writes behind the
//! controller's back: stale preconditions make a batch fail, never overwrite; the keys are
//! reread and the objects planned again.

use std::sync::Arc;

use palisade_kube::cache::{Cache, Change};
use palisade_kube::objects::{from_namespace, Converted, Kind, ObjectId};
use palisade_kube::writer::Writer;
use palisade_kube::Metrics;
use palisade_model::k8s;
use palisade_store::{
    Datastore, EmbeddedStore, Record, StoredObject, OWNER_APPLY, OWNER_CONTROLLER,
};

fn ns(name: &str, team: &str) -> Converted {
    let mut meta = k8s::ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    };
    meta.labels = Some(
        [("team".to_string(), team.to_string())]
            .into_iter()
            .collect(),
    );
    from_namespace(&k8s::Namespace { metadata: meta })
}

fn synced(items: Vec<(ObjectId, Converted)>) -> Cache {
    let mut c = Cache::new();
    for kind in Kind::ALL {
        c.apply(Change::Init(kind));
        for (id, conv) in items.iter().filter(|(id, _)| id.kind == kind) {
            c.apply(Change::InitApply(id.clone(), conv.clone()));
        }
        c.apply(Change::InitDone(kind));
    }
    c
}

async fn record(store: &Arc<dyn Datastore>, key: &str) -> Option<Record> {
    let kv = store.get(key).await.unwrap()?;
    Some(Record::decode(key, &kv.value).unwrap())
}

#[tokio::test]
async fn a_key_deleted_behind_our_back_is_recreated_after_a_reread() {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    let metrics = Metrics::new();
    let mut w = Writer::new(store.clone(), metrics.clone());
    let id = ObjectId::namespace("a");
    let mut cache = synced(vec![(id.clone(), ns("a", "x"))]);
    let out = w.full(&cache).await.unwrap();
    assert_eq!(out.writes, 1);
    let key = "/palisade/v1/namespaces/a";

    store.delete(key, None).await.unwrap();
    cache.apply(Change::Apply(id.clone(), ns("a", "y")));
    let out = w.partial(&cache, [&id]).await.unwrap();
    assert_eq!(out.writes, 0, "the update must not go through blindly");
    assert_eq!(out.retry, vec![id.clone()]);
    assert!(record(&store, key).await.is_none());

    let out = w.partial(&cache, [&id]).await.unwrap();
    assert_eq!(out.writes, 1);
    let rec = record(&store, key).await.unwrap();
    assert_eq!(rec.owner, OWNER_CONTROLLER);
    let StoredObject::Namespace(n) = rec.object else {
        panic!("namespace expected")
    };
    assert_eq!(n.labels.get("team").map(String::as_str), Some("y"));
}

#[tokio::test]
async fn a_key_taken_by_palisade_apply_meanwhile_is_left_to_it() {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    let metrics = Metrics::new();
    let mut w = Writer::new(store.clone(), metrics.clone());
    let mut cache = synced(vec![]);
    w.full(&cache).await.unwrap();

    // `palisade apply` stores namespace b by hand, then the cluster gets one too.
    let key = "/palisade/v1/namespaces/b";
    let by_hand = StoredObject::Namespace(palisade_model::Namespace::implicit("b"));
    store
        .create(key, by_hand.encode(OWNER_APPLY).unwrap())
        .await
        .unwrap();
    let id = ObjectId::namespace("b");
    cache.apply(Change::Apply(id.clone(), ns("b", "cluster")));
    let out = w.partial(&cache, [&id]).await.unwrap();
    assert_eq!(out.writes, 0);
    assert_eq!(out.retry, vec![id.clone()]);
    let out = w.partial(&cache, [&id]).await.unwrap();
    assert_eq!((out.writes, out.conflicts), (0, 1));
    let rec = record(&store, key).await.unwrap();
    assert_eq!(rec.owner, OWNER_APPLY);
    assert_eq!(rec.object, by_hand);

    // Deleting the cluster object leaves the hand-made one alone too.
    cache.apply(Change::Delete(id.clone()));
    let out = w.partial(&cache, [&id]).await.unwrap();
    assert_eq!(out.writes, 0);
    assert_eq!(record(&store, key).await.unwrap().owner, OWNER_APPLY);
}

#[tokio::test]
async fn large_plans_are_split_into_transactions() {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    let metrics = Metrics::new();
    let mut w = Writer::new(store.clone(), metrics.clone());
    w.max_batch = 7;
    let items: Vec<_> = (0..50)
        .map(|i| {
            (
                ObjectId::namespace(format!("n{i}")),
                ns(&format!("n{i}"), "t"),
            )
        })
        .collect();
    let before = store.current_revision().await.unwrap();
    let out = w.full(&synced(items)).await.unwrap();
    assert_eq!(out.writes, 50);
    let after = store.current_revision().await.unwrap();
    assert_eq!(
        after - before,
        8,
        "50 creates in batches of 7 are 8 transactions"
    );
    assert_eq!(metrics.writes_total(), 50);
}
