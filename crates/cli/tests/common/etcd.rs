//! Helpers for the tests that run `palisade` against a real etcd (`live`, `live_cnp`).

use std::process::{Command, Output, Stdio};

use palisade_store::testing::EtcdServer;
use palisade_store::{keys, Datastore, Op};

/// `palisade ARGS`, given `datastore` through `PALISADE_DATASTORE` when there is one.
pub fn palisade(args: &[&str], datastore: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.args(args)
        .env_remove("PALISADE_DATASTORE")
        .env_remove("PALISADE_ETCD_PASSWORD")
        .stdin(Stdio::null());
    if let Some(url) = datastore {
        cmd.env("PALISADE_DATASTORE", url);
    }
    cmd.output().expect("run palisade")
}

/// The stdout of a run that must have succeeded (`what` names it in the failure).
pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes every Palisade key the server holds.
pub fn wipe(server: &EtcdServer) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let store = server.connect().await.expect("connect");
            let listing = store.list(keys::ROOT).await.expect("list");
            let ops: Vec<Op> = listing
                .items
                .into_iter()
                .map(|kv| Op::delete(kv.key))
                .collect();
            if !ops.is_empty() {
                store.apply_batch(ops).await.expect("wipe");
            }
        });
}
