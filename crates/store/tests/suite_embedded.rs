//! The behavioural suite on the embedded backend.

use std::sync::Arc;

use palisade_store::{Datastore, EmbeddedStore};

palisade_store::datastore_suite!(async {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    ((), store)
});

/// History beyond the limit is compacted away, and watchers from there are told so.
#[tokio::test]
async fn bounded_history_reports_compaction() {
    let store = EmbeddedStore::with_history(3);
    let first = store.put("/h/a", b"1".to_vec()).await.unwrap();
    for i in 0..5 {
        store.put("/h/a", vec![i]).await.unwrap();
    }
    let mut w = store.watch("/h/", first).await.unwrap();
    let err = palisade_store::testing::suite::next_event(&mut w)
        .await
        .unwrap_err();
    assert!(
        matches!(err, palisade_store::StoreError::Compacted { .. }),
        "{err:?}"
    );
}
