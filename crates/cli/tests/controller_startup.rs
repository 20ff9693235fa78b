//! `palisade controller` against an API server (a minimal HTTP stand-in) that has no lease
//! namespace: it exits 1 within seconds, naming the namespace and the ways out, and writes
//! nothing (it never gets to the datastore, which is unreachable here).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Answers every request: lists are empty, watches end at once, anything else is 404.
fn serve(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { return };
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            loop {
                let mut request = String::new();
                if reader.read_line(&mut request).unwrap_or(0) == 0 {
                    return;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (code, body) = if path.contains("watch=true") {
                    ("200 OK", String::new())
                } else if path.contains("/leases/") || !path.starts_with("/api") {
                    (
                        "404 Not Found",
                        r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"not found"}"#.to_string(),
                    )
                } else {
                    (
                        "200 OK",
                        r#"{"kind":"List","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}"#.to_string(),
                    )
                };
                let head = format!(
                    "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                if stream.write_all(head.as_bytes()).is_err()
                    || stream.write_all(body.as_bytes()).is_err()
                {
                    return;
                }
            }
        });
    }
}

#[test]
fn a_missing_lease_namespace_ends_the_controller_at_once_with_the_ways_out() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || serve(listener));
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\n\
             users:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\n\
             current-context: x\n"
        ),
    )
    .expect("write kubeconfig");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["controller", "--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--datastore",
            "etcd://127.0.0.1:1",
            "--metrics-addr",
            "127.0.0.1:0",
            "--identity",
            "live-test",
        ])
        .env_remove("POD_NAMESPACE")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run palisade");
    let elapsed = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    for part in [
        "\"palisade-system\"",
        "kubectl create namespace palisade-system",
        "--lease-namespace",
        "--no-leader-election",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    assert!(
        !err.contains("datastore"),
        "checked before the datastore: {err}"
    );
}
