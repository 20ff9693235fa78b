//! `palisade matrix --what-if-f` / `--delete`, run as a real process on the seed example: the
//! JSON shape, that exactly the pairs whose matrix cell flips are listed (checked against two
//! plain `palisade matrix` runs), and the errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run palisade")
}

fn seed(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/seed")
        .join(file)
}

/// The seed without `web-deny-all`, in a temporary directory.
fn seed_without_deny() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for f in [
        "namespaces.yaml",
        "pods.yaml",
        "backend-allow-frontend.yaml",
        "frontend-allow-bob.yaml",
    ] {
        std::fs::copy(seed(f), dir.path().join(f)).expect("copy seed file");
    }
    dir
}

fn json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "palisade failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("valid JSON on stdout")
}

/// Every (from, to, port, protocol, allowed) of a `palisade matrix -o json` output.
fn cells(v: &Value) -> Vec<(String, String, u64, String, bool)> {
    let pods: Vec<String> = v["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .map(|p| p.as_str().expect("pod").to_string())
        .collect();
    let mut out = Vec::new();
    for probe in v["probes"].as_array().expect("probes") {
        let port = probe["port"].as_u64().expect("port");
        let proto = probe["protocol"].as_str().expect("protocol").to_string();
        for (i, row) in probe["allowed"]
            .as_array()
            .expect("rows")
            .iter()
            .enumerate()
        {
            for (j, c) in row.as_array().expect("row").iter().enumerate() {
                let allowed = c.as_bool().expect("bool");
                out.push((
                    pods[i].clone(),
                    pods[j].clone(),
                    port,
                    proto.clone(),
                    allowed,
                ));
            }
        }
    }
    out
}

#[test]
fn what_if_lists_exactly_the_cells_that_flip() {
    let dir = seed_without_deny();
    let current = dir.path().to_str().expect("utf-8 path");
    let deny = seed("web-deny-all.yaml");
    let deny = deny.to_str().expect("utf-8 path");
    let probes = ["--probe", "80/TCP", "--probe", "6379/TCP"];

    let mut args = vec!["matrix", "-f", current, "--what-if-f", deny, "-o", "json"];
    args.extend(probes);
    let w = json(&palisade(&args));

    let mut before = vec!["matrix", "-f", current, "-o", "json"];
    before.extend(probes);
    let mut after = vec!["matrix", "-f", current, deny, "-o", "json"];
    after.extend(probes);
    let (a, b) = (
        cells(&json(&palisade(&before))),
        cells(&json(&palisade(&after))),
    );
    let expected: Vec<(String, String, u64, String, bool, bool)> = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.4 != y.4)
        .map(|(x, y)| (x.0.clone(), x.1.clone(), x.2, x.3.clone(), x.4, y.4))
        .collect();
    assert!(!expected.is_empty(), "web-deny-all changes the seed");

    let changes = w["changes"].as_array().expect("changes");
    let got: Vec<(String, String, u64, String, bool, bool)> = changes
        .iter()
        .map(|c| {
            (
                c["from"].as_str().expect("from").to_string(),
                c["to"].as_str().expect("to").to_string(),
                c["port"].as_u64().expect("port"),
                c["protocol"].as_str().expect("protocol").to_string(),
                c["now"].as_bool().expect("now"),
                c["then"].as_bool().expect("then"),
            )
        })
        .collect();
    let mut sorted_expected = expected.clone();
    sorted_expected.sort();
    let mut sorted_got = got.clone();
    sorted_got.sort();
    assert_eq!(sorted_got, sorted_expected);
    for c in changes {
        let because = c["because"].as_str().expect("because");
        assert!(because.contains("default/web-deny-all"), "{because}");
    }
    assert_eq!(w["newly_denied"], expected.len());
    assert_eq!(w["newly_allowed"], 0);
}

#[test]
fn a_deletion_reopens_and_a_bad_deletion_is_refused() {
    let all = seed("");
    let all = all.to_str().expect("utf-8 path");
    let w = json(&palisade(&[
        "matrix",
        "-f",
        all,
        "--delete",
        "networkpolicy",
        "default/web-deny-all",
        "--probe",
        "80",
        "-o",
        "json",
    ]));
    let changes = w["changes"].as_array().expect("changes");
    assert!(!changes.is_empty());
    assert!(changes
        .iter()
        .all(|c| c["to"] == "default/app-web" && c["now"] == false && c["then"] == true));

    let o = palisade(&[
        "matrix",
        "-f",
        all,
        "--delete",
        "networkpolicy",
        "default/nope",
        "--probe",
        "80",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("NetworkPolicy default/nope"), "{err}");

    let o = palisade(&[
        "matrix",
        "-f",
        all,
        "--delete",
        "deployment",
        "x",
        "--probe",
        "80",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown kind"));
}

/// Every key under the datastore root, with its modification revision.
fn stored(server: &palisade_store::testing::EtcdServer) -> Vec<(String, i64)> {
    use palisade_store::{keys, Datastore};
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let store = server.connect().await.expect("connect");
            let l = store.list(keys::ROOT).await.expect("list");
            l.items
                .into_iter()
                .map(|kv| (kv.key, kv.mod_revision))
                .collect()
        })
}

#[test]
fn apply_dry_run_says_what_would_change_and_writes_nothing() {
    let server = palisade_store::testing::EtcdServer::start().expect("etcd");
    let url = server.url();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(args)
            .env("PALISADE_DATASTORE", &url)
            .stdin(Stdio::null())
            .output()
            .expect("run palisade")
    };
    let dir = seed_without_deny();
    let current = dir.path().to_str().expect("utf-8 path");
    let o = run(&["apply", "-f", current]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = stored(&server);

    let deny = seed("web-deny-all.yaml");
    let deny = deny.to_str().expect("utf-8 path");
    let o = run(&["apply", "-f", deny, "--dry-run", "--probe", "80"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let first = text.lines().next().unwrap_or_default();
    assert_eq!(
        first, "what-if: 4 pair(s) newly denied, 0 newly allowed (probes 80/TCP) (dry run)",
        "{text}"
    );
    assert!(
        text.contains("networkpolicy default/web-deny-all created (dry run)"),
        "{text}"
    );
    assert_eq!(stored(&server), before, "a dry run writes nothing");

    // The same in JSON, with the count matching `matrix --what-if-f` on the same files.
    let j = json(&run(&[
        "apply",
        "-f",
        deny,
        "--dry-run",
        "--probe",
        "80",
        "-o",
        "json",
    ]));
    let m = json(&palisade(&[
        "matrix",
        "-f",
        current,
        "--what-if-f",
        deny,
        "--probe",
        "80",
        "-o",
        "json",
    ]));
    assert_eq!(j["what_if"]["newly_denied"], m["newly_denied"]);
    assert_eq!(j["what_if"]["newly_allowed"], 0);
    assert_eq!(j["dry_run"], true);
    assert_eq!(stored(&server), before);
}

#[test]
fn what_if_against_the_datastore_equals_what_if_between_files() {
    let server = palisade_store::testing::EtcdServer::start().expect("etcd");
    let url = server.url();
    let dir = seed_without_deny();
    let current = dir.path().to_str().expect("utf-8 path");
    let o = palisade(&["apply", "-f", current, "--datastore", &url]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deny = seed("web-deny-all.yaml");
    let deny = deny.to_str().expect("utf-8 path");
    let probes = ["--probe", "80", "--probe", "6379"];

    let mut live = vec![
        "matrix",
        "--datastore",
        &url,
        "--what-if",
        "-f",
        deny,
        "-o",
        "json",
    ];
    live.extend(probes);
    let mut files = vec!["matrix", "-f", current, "--what-if-f", deny, "-o", "json"];
    files.extend(probes);
    let (l, f) = (json(&palisade(&live)), json(&palisade(&files)));
    assert!(l["newly_denied"].as_u64().unwrap_or(0) > 0, "{l}");
    assert_eq!(l["changes"], f["changes"]);

    // A deletion from the datastore's state.
    let mut del = vec![
        "matrix",
        "--datastore",
        &url,
        "--what-if",
        "--delete",
        "np",
        "myns/backend-allow-frontend",
        "-o",
        "json",
    ];
    del.extend(probes);
    let d = json(&palisade(&del));
    assert!(d["newly_allowed"].as_u64().unwrap_or(0) > 0, "{d}");
    assert_eq!(d["newly_denied"], 0);
    let mut bad = vec![
        "matrix",
        "--datastore",
        &url,
        "--what-if",
        "--delete",
        "np",
        "x/y",
    ];
    bad.extend(probes);
    let o = palisade(&bad);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("NetworkPolicy x/y"));

    // --what-if needs the datastore: a usage error without one.
    let o = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["matrix", "--what-if", "-f", deny, "--probe", "80"])
        .env_remove("PALISADE_DATASTORE")
        .stdin(Stdio::null())
        .output()
        .expect("run palisade");
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
