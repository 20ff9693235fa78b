//! `palisade apply`, `delete` and `get` as real processes against a real etcd: validation
//! before any write, one atomic batch, created/updated/unchanged reports, deletes by name and
//! by manifest, and clear failures for bad URLs and unreachable datastores.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use palisade_store::testing::EtcdServer;
use palisade_store::{keys, Datastore};

fn palisade(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .env("PALISADE_DATASTORE", url)
        .env_remove("PALISADE_ETCD_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("run palisade")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const GOOD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: myns, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: myns, labels: {app: web}}
spec:
  nodeName: node-1
  containers:
  - name: c
    ports: [{name: http, containerPort: 80}]
status: {podIP: 10.0.0.5}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: myns}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#;

const BAD: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: myns}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 99999}]
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write manifest");
    p.display().to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn stored_keys(server: &EtcdServer) -> Vec<String> {
    runtime().block_on(async {
        let store = server.connect().await.expect("connect");
        let l = store.list(keys::ROOT).await.expect("list");
        l.items.into_iter().map(|kv| kv.key).collect()
    })
}

#[test]
fn a_batch_with_one_invalid_object_writes_nothing() {
    let server = EtcdServer::start().expect("etcd");
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.yaml", GOOD);
    let bad = write(dir.path(), "bad.yaml", BAD);
    let out = palisade(&server.url(), &["apply", "-f", &good, "-f", &bad]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("spec.ingress[0].ports[0].port"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("nothing was written"),
        "{}",
        stderr(&out)
    );
    assert!(stored_keys(&server).is_empty());

    // A dry run of the good file says what would happen and writes nothing either.
    let out = palisade(&server.url(), &["apply", "-f", &good, "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("networkpolicy myns/deny-all created (dry run)"),
        "{}",
        stdout(&out)
    );
    assert!(stored_keys(&server).is_empty());
}

#[test]
fn apply_reports_created_unchanged_updated_and_get_shows_it() {
    let server = EtcdServer::start().expect("etcd");
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.yaml", GOOD);

    let out = palisade(&url, &["apply", "-f", &good]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "namespace myns created\npod myns/web-0 created\nnetworkpolicy myns/deny-all created\n"
    );
    assert_eq!(
        stored_keys(&server),
        [
            "/palisade/v1/endpoints/node-1/myns/web-0",
            "/palisade/v1/namespaces/myns",
            "/palisade/v1/policies/default/myns/deny-all"
        ]
    );

    // Same input: unchanged, nothing written (no revision).
    let out = palisade(&url, &["apply", "-f", &good, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["revision"].is_null(), "{v}");
    assert!(
        v["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["result"] == "unchanged"),
        "{v}"
    );

    // The pod moves to another node and gets a label: updated, old key gone.
    let moved = GOOD
        .replace("node-1", "node-2")
        .replace("app: web", "app: web, v: '2'");
    let moved = write(dir.path(), "moved.yaml", &moved);
    let out = palisade(&url, &["apply", "-f", &moved]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("pod myns/web-0 updated"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("namespace myns unchanged"),
        "{}",
        stdout(&out)
    );
    let keys = stored_keys(&server);
    assert!(
        keys.contains(&"/palisade/v1/endpoints/node-2/myns/web-0".to_string()),
        "{keys:?}"
    );
    assert!(
        !keys.contains(&"/palisade/v1/endpoints/node-1/myns/web-0".to_string()),
        "{keys:?}"
    );

    let out = palisade(&url, &["get", "endpoints", "-o", "wide"]);
    let text = stdout(&out);
    assert!(text.starts_with("NAMESPACE"), "{text}");
    assert!(
        text.contains("web-0") && text.contains("node-2") && text.contains("10.0.0.5"),
        "{text}"
    );
    assert!(
        text.contains("http:80/TCP") && text.contains("v=2"),
        "{text}"
    );

    let out = palisade(
        &url,
        &["get", "networkpolicies", "-n", "myns", "-o", "json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[0]["kind"], "Policy");
    assert_eq!(v[0]["owner"], "palisade-apply");
    assert_eq!(v[0]["spec"]["id"]["name"], "deny-all");
    let out = palisade(&url, &["get", "networkpolicies", "-n", "other"]);
    assert_eq!(stdout(&out), "");

    let out = palisade(&url, &["get", "ns", "-o", "yaml"]);
    assert!(stdout(&out).contains("team: a"), "{}", stdout(&out));
}

#[test]
fn delete_by_name_and_by_manifest() {
    let server = EtcdServer::start().expect("etcd");
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.yaml", GOOD);
    assert!(palisade(&url, &["apply", "-f", &good]).status.success());

    let out = palisade(&url, &["delete", "networkpolicy", "myns/deny-all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "networkpolicy myns/deny-all deleted\n");

    // Not found: exit 1 and nothing deleted, even what exists.
    let out = palisade(&url, &["delete", "-f", &good]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("networkpolicy myns/deny-all not found"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stored_keys(&server).len(), 2);

    let out = palisade(
        &url,
        &["delete", "-f", &good, "--ignore-not-found", "-o", "json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["objects"][1]["result"], "deleted");
    assert!(stored_keys(&server).is_empty());
}

#[test]
fn bad_url_and_unreachable_datastore_fail_clearly_and_fast() {
    let out = palisade("http://127.0.0.1:2379", &["get", "ns"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("bad datastore URL"),
        "{}",
        stderr(&out)
    );

    // A port that accepts connections but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("etcd://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let out = palisade(&url, &["get", "ns", "--etcd-timeout", "2"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(stderr(&out).contains("unavailable"), "{}", stderr(&out));

    // Nothing listens at all.
    let port = palisade_store::testing::free_port().unwrap();
    let out = palisade(
        &format!("etcd://127.0.0.1:{port}"),
        &["apply", "-f", "/nonexistent"],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn etcd_user_with_password_from_the_environment_and_tls_flags() {
    let server = EtcdServer::start().expect("etcd");
    server.enable_auth("pw-from-env").expect("auth");
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.yaml", GOOD);
    let run = |password: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_palisade"));
        c.args(["apply", "-f", &good, "--etcd-user", "root"])
            .args(["--datastore", &server.url()])
            .env_remove("PALISADE_DATASTORE")
            .env_remove("PALISADE_ETCD_PASSWORD")
            .stdin(Stdio::null());
        if let Some(p) = password {
            c.env("PALISADE_ETCD_PASSWORD", p);
        }
        c.output().expect("run palisade")
    };
    let out = run(Some("pw-from-env"));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(Some("wrong"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        stderr(&out)
    );
    let out = run(None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no password"), "{}", stderr(&out));

    let openssl = Command::new("openssl").arg("version").output();
    if !openssl.is_ok_and(|o| o.status.success()) {
        eprintln!("skipping the TLS half: no openssl command");
        return;
    }
    let tls = EtcdServer::start_tls().expect("etcd with TLS");
    let certs = tls.certs().expect("certs").clone();
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["apply", "-f", &good, "--datastore", &tls.url()])
        .arg("--etcd-ca")
        .arg(&certs.ca)
        .arg("--etcd-cert")
        .arg(&certs.client_cert)
        .arg("--etcd-key")
        .arg(&certs.client_key)
        .stdin(Stdio::null())
        .output()
        .expect("run palisade");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("networkpolicy myns/deny-all created"));
}

const CNP: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: protect}
spec:
  tier: Admin
  priority: 7
  subject: {namespaces: {matchLabels: {team: a}}}
  ingress:
  - {name: deny-b, action: Deny, from: [{namespaces: {matchLabels: {team: b}}}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {role: worker}}
status:
  addresses: [{type: InternalIP, address: 10.1.0.1}, {type: Hostname, address: node-1}]
"#;

#[test]
fn cluster_network_policies_and_nodes_apply_get_and_delete() {
    let server = EtcdServer::start().expect("etcd");
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "cnp.yaml", CNP);

    let out = palisade(&url, &["apply", "-f", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "clusternetworkpolicy protect created\nnode node-1 created\n"
    );
    assert_eq!(
        stored_keys(&server),
        [
            "/palisade/v1/nodes/node-1",
            "/palisade/v1/policies/admin/_global/protect"
        ]
    );

    let out = palisade(&url, &["get", "cnp"]);
    assert_eq!(
        stdout(&out),
        "NAME      TIER    PRIORITY   INGRESS-RULES   EGRESS-RULES   STAGED\nprotect   Admin   7          1               -              false\n"
    );
    // NetworkPolicies and ClusterNetworkPolicies are listed apart.
    let out = palisade(&url, &["get", "networkpolicies"]);
    assert_eq!(stdout(&out), "");
    let out = palisade(&url, &["get", "clusternetworkpolicies", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[0]["kind"], "Policy");
    assert_eq!(v[0]["spec"]["id"]["tier"], "admin");
    assert_eq!(v[0]["spec"]["order"], 7);
    let out = palisade(&url, &["get", "nodes", "-o", "wide"]);
    let text = stdout(&out);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(
        text.contains("node-1") && text.contains("10.1.0.1") && text.contains("role=worker"),
        "{text}"
    );

    // Moving it to the Baseline tier replaces the Admin key.
    let baseline = write(
        dir.path(),
        "baseline.yaml",
        &CNP.replace("tier: Admin", "tier: Baseline"),
    );
    let out = palisade(&url, &["apply", "-f", &baseline, "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["objects"][0]["result"], "updated");
    assert_eq!(v["objects"][0]["note"], "moved from tier admin");
    assert_eq!(v["objects"][1]["result"], "unchanged");
    assert_eq!(
        stored_keys(&server),
        [
            "/palisade/v1/nodes/node-1",
            "/palisade/v1/policies/baseline/_global/protect"
        ]
    );

    let out = palisade(&url, &["delete", "cnp", "protect"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "clusternetworkpolicy protect deleted\n");
    let out = palisade(&url, &["delete", "-f", &file]);
    assert_eq!(out.status.code(), Some(1), "the CNP is gone already");
    let out = palisade(&url, &["delete", "node", "node-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stored_keys(&server).is_empty());

    // An invalid ClusterNetworkPolicy writes nothing and names its field.
    let bad = write(
        dir.path(),
        "bad.yaml",
        &CNP.replace("priority: 7", "priority: 7000"),
    );
    let out = palisade(&url, &["apply", "-f", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("ClusterNetworkPolicy protect: spec.priority: priority 7000 is out of range"),
        "{}",
        stderr(&out)
    );
    assert!(stored_keys(&server).is_empty());
}
