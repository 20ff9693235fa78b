//! `palisade bench fanout` at a small size, as a real process: every simulated agent must
//! reach every state the bench changes (the timings are not checked here).

use std::process::{Command, Output, Stdio};

use palisade_store::testing::{etcd_available, EtcdServer};
use palisade_store::{keys, Datastore, Record, StoredObject};
use serde_json::Value;

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .env_remove("PALISADE_DATASTORE")
        .stdin(Stdio::null())
        .output()
        .expect("run palisade")
}

fn json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON report")
}

#[test]
fn twenty_agents_all_reach_every_change() {
    if !etcd_available() {
        eprintln!("skipped: no etcd binary");
        return;
    }
    let out = palisade(&[
        "bench",
        "fanout",
        "--agents",
        "20",
        "--pods",
        "300",
        "--policies",
        "60",
        "--changes",
        "5",
        "-o",
        "json",
    ]);
    let r = json(&out);
    assert_eq!(r["agents"], 20);
    assert_eq!(r["pods"], 300);
    assert_eq!(r["local_pods_per_agent_max"], 15);
    assert_eq!(r["etcd_started_by_bench"], true);
    assert_eq!(r["pipeline"], "calc");
    assert_eq!(r["all_agents_reached_state"], true, "{r:#}");
    for trial in ["policy_change", "label_change"] {
        assert_eq!(r[trial]["changes"], 5, "{trial}: {r:#}");
        let p50 = r[trial]["p50_ms"].as_f64().unwrap();
        let p99 = r[trial]["p99_ms"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= p99, "{trial}: {r:#}");
    }
    assert!(r["startup_ms"].as_f64().unwrap() > 0.0);
    // Twenty initial lists of the whole cluster went out of etcd.
    let sent = r["startup_cost"]["etcd_sent_bytes"].as_f64().unwrap();
    assert!(sent > 20.0 * 300.0 * 100.0, "etcd sent only {sent} bytes");
    assert!(r["etcd"]["rss_kib"].as_u64().unwrap() > 0);
}

/// `--relays 2 --compare`: the same run measures the agents directly on etcd, then through
/// two `palisade relay` processes; through them etcd sends the cluster twice (one list per
/// relay), not once per agent, and every agent still reaches every state.
#[test]
fn twenty_agents_directly_and_through_relays() {
    if !etcd_available() {
        eprintln!("skipped: no etcd binary");
        return;
    }
    let out = palisade(&[
        "bench",
        "fanout",
        "--agents",
        "20",
        "--pods",
        "300",
        "--policies",
        "60",
        "--changes",
        "5",
        "--relays",
        "2",
        "--compare",
        "-o",
        "json",
    ]);
    let r = json(&out);
    assert_eq!(r["all_agents_reached_state"], true, "{r:#}");
    assert_eq!(r["relays"], 0, "the first pass is direct: {r:#}");
    let relayed = &r["through_relays"];
    assert_eq!(relayed["relays"], 2, "{r:#}");
    for trial in ["policy_change", "label_change"] {
        assert_eq!(relayed[trial]["changes"], 5, "{trial}: {r:#}");
        assert!(relayed[trial]["p50_ms"].as_f64().unwrap() > 0.0, "{r:#}");
    }
    let direct_sent = r["startup_cost"]["etcd_sent_bytes"].as_f64().unwrap();
    let relayed_sent = relayed["startup_cost"]["etcd_sent_bytes"].as_f64().unwrap();
    assert!(
        relayed_sent * 5.0 < direct_sent,
        "etcd sent {relayed_sent} bytes with relays against {direct_sent} without"
    );
    // Each change went out of etcd to two relays instead of twenty agents.
    let per_change = |p: &Value| {
        p["policy_changes_cost"]["etcd_sent_bytes"]
            .as_f64()
            .unwrap()
    };
    assert!(
        per_change(relayed) * 3.0 < per_change(&r),
        "{} against {}",
        per_change(relayed),
        per_change(&r)
    );
    assert!(relayed["relay_processes"]["rss_kib"].as_u64().unwrap() > 0);
    assert!(relayed["startup_cost"]["relays_cpu_seconds"]
        .as_f64()
        .is_some());
}

/// `--pipeline delivery`: agents without calculators still see every change (the facts
/// come from the updates they receive).
#[test]
fn delivery_only_agents_reach_every_change() {
    if !etcd_available() {
        eprintln!("skipped: no etcd binary");
        return;
    }
    let out = palisade(&[
        "bench",
        "fanout",
        "--agents",
        "10",
        "--pods",
        "200",
        "--policies",
        "20",
        "--changes",
        "4",
        "--pipeline",
        "delivery",
        "--relays",
        "1",
        "-o",
        "json",
    ]);
    let r = json(&out);
    assert_eq!(r["pipeline"], "delivery");
    assert_eq!(r["relays"], 1);
    assert!(r["through_relays"].is_null());
    assert_eq!(r["all_agents_reached_state"], true, "{r:#}");
    assert_eq!(r["label_change"]["changes"], 4, "{r:#}");
}

/// With --datastore the bench uses that etcd (and leaves the last change there), and it
/// refuses one that already holds objects.
#[test]
fn uses_the_given_etcd_and_refuses_a_non_empty_one() {
    if !etcd_available() {
        eprintln!("skipped: no etcd binary");
        return;
    }
    let etcd = EtcdServer::start().expect("start etcd");
    let url = etcd.url();
    let out = palisade(&[
        "bench",
        "fanout",
        "--agents",
        "4",
        "--pods",
        "80",
        "--policies",
        "10",
        "--changes",
        "3",
        "--datastore",
        &url,
        "-o",
        "json",
    ]);
    let r = json(&out);
    assert_eq!(r["etcd_started_by_bench"], false);
    assert_eq!(r["datastore"], url.as_str());
    assert_eq!(r["all_agents_reached_state"], true, "{r:#}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listing = rt.block_on(async {
        let store = etcd.connect().await.unwrap();
        store.list(keys::ROOT).await.unwrap()
    });
    let bench_policy = listing
        .items
        .iter()
        .filter_map(|kv| Record::decode(&kv.key, &kv.value).ok())
        .find_map(|rec| match rec.object {
            StoredObject::Policy(p) if p.id.name == "palisade-fanout-bench" => Some(p),
            _ => None,
        })
        .expect("the bench policy is stored");
    let port = format!("{:?}", bench_policy.ingress.unwrap()[0].ports[0].port);
    assert!(
        port.contains("20003"),
        "the third change is the last: {port}"
    );

    let again = palisade(&[
        "bench",
        "fanout",
        "--agents",
        "2",
        "--pods",
        "10",
        "--changes",
        "1",
        "--datastore",
        &url,
    ]);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already holds objects"), "{err}");
}
