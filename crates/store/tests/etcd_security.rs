//! TLS with client certificates and username/password against a real etcd.

use std::time::{Duration, Instant};

use palisade_store::testing::suite::next_event;
use palisade_store::testing::EtcdServer;
use palisade_store::{Datastore, EtcdStore, StoreError};

fn openssl_available() -> bool {
    std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    if !openssl_available() {
        eprintln!("skipping: no openssl command to make test certificates");
        return;
    }
    let server = EtcdServer::start_tls().unwrap();
    let store = server.connect().await.unwrap();
    let mut w = store.watch("/tls/", 0).await.unwrap();
    let r = store.put("/tls/a", b"1".to_vec()).await.unwrap();
    assert_eq!(store.get("/tls/a").await.unwrap().unwrap().mod_revision, r);
    assert_eq!(next_event(&mut w).await.unwrap().revision(), r);

    // Without the client certificate the server refuses, quickly and clearly.
    let mut cfg = server.config();
    cfg.cert_file = None;
    cfg.key_file = None;
    let started = Instant::now();
    let err = EtcdStore::connect(cfg).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(9));
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    // A certificate without its key is a configuration error.
    let mut cfg = server.config();
    cfg.key_file = None;
    let err = EtcdStore::connect(cfg).await.unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    // Plain text against a TLS server fails too.
    let mut cfg = server.config();
    cfg.ca_file = None;
    cfg.cert_file = None;
    cfg.key_file = None;
    assert!(EtcdStore::connect(cfg).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password() {
    let server = EtcdServer::start().unwrap();
    server.enable_auth("s3cret").unwrap();
    let mut cfg = server.config();
    cfg.username = Some("root".into());
    cfg.password = Some("s3cret".into());
    let store = EtcdStore::connect(cfg.clone()).await.unwrap();
    store.put("/auth/a", b"1".to_vec()).await.unwrap();
    assert!(store.get("/auth/a").await.unwrap().is_some());

    cfg.password = Some("wrong".into());
    let err = EtcdStore::connect(cfg).await.unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");
    // No credentials at all: the server refuses the read.
    let err = server.connect().await.unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");
}
