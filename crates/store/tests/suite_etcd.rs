//! The behavioural suite on a real etcd (one fresh server per test).

use std::sync::Arc;

use palisade_store::testing::EtcdServer;
use palisade_store::Datastore;

palisade_store::datastore_suite!(async {
    let server = EtcdServer::start().expect("start etcd");
    let store: Arc<dyn Datastore> = Arc::new(server.connect().await.expect("connect to etcd"));
    (server, store)
});
