//! Root test: an agent started with `--iface-prefix pal,cali` enforces policy on pods whose
//! host-side veth is named with the second prefix (`cali<hash>`, as a CNI being migrated
//! away from would name it), ingress and egress, on iptables and nftables, at start and
//! through incremental applies. Without root, or without a tool, it prints why and passes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::lab::{connects, sh, skip_reason, Listener};
use common::*;
use palisade_agent::run::build_dataplane;
use palisade_agent::{Agent, DataplaneKind};
use palisade_dataplane::netns::NetnsGuard;
use palisade_model::endpoint::interface_name;
use palisade_model::{Endpoint, Policy, Selector};
use palisade_store::{Datastore, EmbeddedStore, StoredObject};

const T: Duration = Duration::from_secs(20);
const PREFIXES: [&str; 2] = ["pal", "cali"];

/// A pod on a veth named under `prefix`, with that interface name.
fn veth_pod(node: &NetnsGuard, prefix: &str, ep: &Endpoint) -> (NetnsGuard, String) {
    (
        common::lab::veth_pod(node, prefix, ep),
        interface_name(prefix, &ep.id),
    )
}

/// `other` may send nothing (egress isolation).
fn other_egress_denied() -> Policy {
    Policy {
        id: pid("prod", "other-no-egress"),
        order: palisade_model::KUBERNETES_POLICY_ORDER,
        selector: Selector::parse("app == 'other'").unwrap(),
        namespace_selector: Selector::All,
        staged: false,
        ingress: None,
        egress: Some(vec![]),
    }
}

/// Polls `connects` until it gives `want` (a blocked probe takes its one-second timeout).
async fn eventually(what: &str, from: &NetnsGuard, addr: &str, want: bool) {
    let deadline = tokio::time::Instant::now() + T;
    while connects(from, addr, 80) != want {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn dump(node: &NetnsGuard, kind: DataplaneKind) -> String {
    match kind {
        DataplaneKind::Iptables => sh(node, "iptables-save", &["-c"]),
        DataplaneKind::Nftables => sh(node, "nft", &["list", "ruleset"]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_the_second_prefix_are_enforced() {
    if let Some(why) = skip_reason(&["iptables-save", "ipset", "nft", "nc", "ss"]) {
        eprintln!("skipped: {why}");
        return;
    }
    for kind in [DataplaneKind::Iptables, DataplaneKind::Nftables] {
        let objs = objects();
        let ep = |name: &str| {
            objs.iter()
                .find_map(|o| match o {
                    StoredObject::Endpoint(e) if e.id.name == name => Some(e.clone()),
                    _ => None,
                })
                .unwrap()
        };
        let node = NetnsGuard::new("pfx").unwrap();
        sh(&node, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        // web and other on the SECOND prefix, client on the first.
        let (web, web_if) = veth_pod(&node, PREFIXES[1], &ep("web"));
        let (client, _) = veth_pod(&node, PREFIXES[0], &ep("client"));
        let (other, other_if) = veth_pod(&node, PREFIXES[1], &ep("other"));
        assert!(web_if.starts_with("cali") && other_if.starts_with("cali"));
        let _lweb = Listener::start(&web, 80);
        let _lcl = Listener::start(&client, 80);
        for (from, addr) in [
            (&client, "10.0.0.1"),
            (&other, "10.0.0.1"),
            (&web, "10.0.0.2"),
        ] {
            eventually(&format!("{kind}: open before the agent"), from, addr, true).await;
        }

        // Everything but `other` in the store at start: web's ingress policy is enforced
        // on its cali veth by the first full apply.
        let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
        let start: Vec<StoredObject> = objs
            .iter()
            .filter(|o| !matches!(o, StoredObject::Endpoint(e) if e.id.name == "other"))
            .cloned()
            .collect();
        put_all(store.as_ref(), &start).await;
        let mut cfg = config(kind);
        cfg.render.endpoint_match = palisade_agent::config::EndpointMatch::Interface;
        cfg.iface_prefixes = PREFIXES.iter().map(|p| p.to_string()).collect();
        cfg.netns = Some(node.name().to_string());
        let dp = build_dataplane(&cfg, Arc::new(node.runner()));
        let run = Running::start(
            Agent::new(cfg, store.clone(), dp)
                .unwrap()
                .with_sync_backoff(Duration::from_millis(50), Duration::from_millis(500)),
        );
        run.wait_ready(T).await;
        let rules = dump(&node, kind);
        assert!(
            rules.contains(&web_if),
            "{kind}: {web_if} not dispatched:\n{rules}"
        );
        assert!(
            connects(&client, "10.0.0.1", 80),
            "{kind}: client -> web (cali veth) is allowed\n{rules}"
        );
        // `other` is not in the store yet: its traffic is not ours, web's ingress still is.
        assert!(
            !connects(&other, "10.0.0.1", 80),
            "{kind}: other -> web must be dropped at web's cali veth\n{rules}"
        );
        assert!(
            connects(&other, "10.0.0.2", 80),
            "{kind}: other -> client open"
        );
        // `palisade counters --netns … --iface-prefix pal,cali` reads the same kernel
        // directly: the drops of web's ingress on its cali veth are attributed to web.
        let web_drops = |r: &palisade_agent::CountersReport| -> u64 {
            r.drops
                .iter()
                .filter(|d| d.endpoint.as_deref() == Some("prod/web") && d.direction == "ingress")
                .map(|d| d.packets)
                .sum()
        };
        let mut direct_cfg = config(kind);
        direct_cfg.render.endpoint_match = palisade_agent::config::EndpointMatch::Interface;
        direct_cfg.iface_prefixes = PREFIXES.iter().map(|p| p.to_string()).collect();
        let direct =
            palisade_agent::direct::report(&direct_cfg, store.as_ref(), Arc::new(node.runner()))
                .await
                .expect("counters read from the kernel");
        assert!(
            web_drops(&direct) > 0,
            "{kind}: other -> web drops not counted for web: {direct:?}"
        );

        // Incremental: `other` appears (dispatch entries for both of its names) with an
        // egress deny-all; its packets arrive on its cali veth.
        let s = run.shared.clone();
        let mut rev = put(store.as_ref(), &StoredObject::Endpoint(ep("other"))).await;
        rev = rev.max(put(store.as_ref(), &StoredObject::Policy(other_egress_denied())).await);
        wait_for("other and its policy applied", T, || {
            s.progress().revision >= rev && s.ready()
        })
        .await;
        let what = format!("{kind}: other's egress (cali veth) is denied");
        eventually(&what, &other, "10.0.0.2", false).await;
        assert!(
            connects(&client, "10.0.0.1", 80),
            "{kind}: client -> web still allowed"
        );
        // And client (first prefix) gets isolated for ingress: web (cali) can no longer reach it.
        let rev = put(store.as_ref(), &StoredObject::Policy(deny_to_client())).await;
        wait_for("deny-all applied", T, || {
            s.progress().revision >= rev && s.ready()
        })
        .await;
        assert!(
            !connects(&web, "10.0.0.2", 80),
            "{kind}: client is isolated\n{}",
            dump(&node, kind)
        );
        run.stop().await;
    }
}
