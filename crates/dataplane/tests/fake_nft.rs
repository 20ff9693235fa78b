//! The nftables reconciler against the in-memory fake kernel (no root needed).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use palisade_calc::{IpSetId, RulePort};
use palisade_dataplane::fake::FakeKernel;
use palisade_dataplane::nft::NftBackend;
use palisade_dataplane::{
    nft_dataplane, CounterKind, Dataplane, RecordingSleeper, RetryPolicy, StateDataplane,
};
use palisade_model::{Direction, EndpointId, Protocol};
use palisade_render::RenderConfig;

fn setup(
    retry: RetryPolicy,
) -> (
    Arc<FakeKernel>,
    Arc<RecordingSleeper>,
    StateDataplane<NftBackend>,
) {
    let kernel = Arc::new(FakeKernel::new());
    let sleeper = Arc::new(RecordingSleeper::new());
    let dp = nft_dataplane(
        RenderConfig::default(),
        kernel.clone(),
        sleeper.clone(),
        retry,
    );
    (kernel, sleeper, dp)
}

fn web4() -> String {
    palisade_render::names::set_name(palisade_render::ir::Family::V4, &IpSetId("web".into()))
}

#[test]
fn first_apply_writes_everything_in_one_transaction_second_nothing() {
    let (kernel, _, mut dp) = setup(RetryPolicy::none());
    let r = dp.apply_state(&state()).unwrap();
    let writes = kernel.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].args, vec!["-f", "-"]);
    assert!(r.chains_rewritten.iter().any(|c| c == "pal-FORWARD"));
    let t = kernel.state().nft.unwrap();
    assert_eq!(
        t.chains["pal-FORWARD"].base.as_ref().unwrap().hook,
        "forward"
    );
    assert!(t.sets[&web4()].elements.contains("10.0.1.1"));
    // Address matching (the default): the pod's address keys the ingress map.
    assert!(
        t.sets["pal-tw-map4"]
            .elements
            .iter()
            .any(|e| e.starts_with("10.0.0.1 : jump pal-tw-pala0000000001")),
        "{:?}",
        t.sets["pal-tw-map4"]
    );

    kernel.clear_calls();
    assert!(dp.apply_state(&state()).unwrap().wrote_nothing());
    assert!(kernel.calls().is_empty());
    let r = dp.resync().unwrap();
    assert!(r.wrote_nothing(), "{r:?}");
    assert!(kernel.writes().is_empty());
}

#[test]
fn one_member_change_is_one_element_line() {
    let (kernel, _, mut dp) = setup(RetryPolicy::none());
    let mut s = state();
    dp.apply_state(&s).unwrap();
    kernel.clear_calls();
    s.ip_sets
        .get_mut(&IpSetId("web".into()))
        .unwrap()
        .members
        .insert(net("10.0.1.3/32"));
    dp.apply_state(&s).unwrap();
    let w = kernel.writes();
    assert_eq!(w.len(), 1);
    assert_eq!(
        w[0].stdin.as_deref(),
        Some(format!("add element inet palisade {} {{ 10.0.1.3 }}\n", web4()).as_str())
    );
}

#[test]
fn a_policy_change_rewrites_only_that_chain() {
    let (kernel, _, mut dp) = setup(RetryPolicy::none());
    let mut s = state();
    dp.apply_state(&s).unwrap();
    kernel.clear_calls();
    let id = pid("ns1", "allow-web");
    s.policies.get_mut(&id).unwrap().ingress.as_mut().unwrap()[0].ports = vec![RulePort::Range {
        protocol: Protocol::Tcp,
        start: 8080,
        end: 8080,
    }];
    let r = dp.apply_state(&s).unwrap();
    let chain = palisade_render::names::policy_chain(Direction::Ingress, &id);
    assert_eq!(r.chains_rewritten, vec![chain.clone()]);
    let text = kernel.writes()[0].stdin.clone().unwrap();
    assert!(text.starts_with(&format!("flush chain inet palisade {chain}\n")));
    assert!(text
        .lines()
        .skip(1)
        .all(|l| l.starts_with(&format!("add rule inet palisade {chain} "))));
}

#[test]
fn drift_is_repaired_on_resync() {
    let (kernel, _, mut dp) = setup(RetryPolicy::none());
    dp.apply_state(&state()).unwrap();
    let healthy = kernel.state().nft;
    let tw = palisade_render::names::endpoint_chain(Direction::Ingress, "pala0000000001");
    kernel.edit(|st| {
        let t = st.nft.as_mut().unwrap();
        t.chains.get_mut(&tw).unwrap().rules.remove(1);
        t.sets.get_mut(&web4()).unwrap().elements.remove("10.0.1.2");
    });
    let r = dp.resync().unwrap();
    assert_eq!(r.chains_rewritten, vec![tw]);
    assert_eq!(r.sets_updated, vec![web4()]);
    assert_eq!(kernel.state().nft, healthy);

    // Someone deletes the whole table: one transaction brings it back.
    assert!(kernel
        .external("nft", &["-f", "-"], Some("delete table inet palisade\n"))
        .success());
    let r = dp.resync().unwrap();
    assert!(r.full_rewrite || !r.chains_rewritten.is_empty());
    assert_eq!(kernel.state().nft, healthy);
}

#[test]
fn failures_are_retried_then_the_table_is_rewritten() {
    let retry = RetryPolicy {
        backoff: vec![Duration::from_millis(1), Duration::from_millis(2)],
        full_rewrite_after: 1,
    };
    let (kernel, sleeper, mut dp) = setup(retry);
    dp.apply_state(&state()).unwrap();
    kernel.fail_next("nft", 2);
    let mut s = state();
    s.ip_sets
        .get_mut(&IpSetId("web".into()))
        .unwrap()
        .members
        .insert(net("10.0.1.9/32"));
    let r = dp.apply_state(&s).unwrap();
    // Write fails, the re-read fails, then a full rewrite succeeds.
    assert_eq!(r.attempts, 3);
    assert_eq!(
        sleeper.slept(),
        vec![Duration::from_millis(1), Duration::from_millis(2)]
    );
    assert!(r.full_rewrite);
    assert!(kernel.state().nft.unwrap().sets[&web4()]
        .elements
        .contains("10.0.1.9"));
}

#[test]
fn removing_everything_leaves_an_empty_table_and_other_tables_alone() {
    let (kernel, _, mut dp) = setup(RetryPolicy::none());
    dp.apply_state(&state()).unwrap();
    let before_v4 = kernel.state().v4;
    dp.remove_all().unwrap();
    let t = kernel.state().nft.unwrap();
    assert!(t.chains.is_empty() && t.sets.is_empty());
    assert_eq!(kernel.state().v4, before_v4);
}

#[test]
fn hostile_names_reach_commands_only_as_hashes() {
    let hostile_ns = "ns\"; flush ruleset; \"";
    let mut s = state();
    let mut p = allow_web();
    p.id = pid(hostile_ns, "} ; delete table inet filter ; {");
    s.policies.insert(p.id.clone(), p.clone());
    let ep = endpoint(
        hostile_ns,
        "$(reboot)",
        "pala0000000003",
        "10.0.0.3",
        &[p.id.clone()],
    );
    s.endpoints.insert(ep.id.clone(), ep);
    let (kernel, _, mut dp) = setup(RetryPolicy::none());
    dp.apply_state(&s).unwrap();
    for c in kernel.calls() {
        let text = c.stdin.unwrap_or_default();
        for bad in [
            "flush ruleset",
            "delete table inet filter",
            "reboot",
            hostile_ns,
        ] {
            assert!(!text.contains(bad), "{bad:?} reached nft: {text}");
        }
    }
}

#[test]
fn counters_come_from_counter_statements() {
    let (kernel, _, mut dp) = setup(RetryPolicy::none());
    dp.apply_state(&state()).unwrap();
    let allow = palisade_render::names::policy_chain(Direction::Ingress, &pid("ns1", "allow-web"));
    let tw = palisade_render::names::endpoint_chain(Direction::Ingress, "pala0000000001");
    kernel.edit(|st| {
        let t = st.nft.as_mut().unwrap();
        for r in t
            .chains
            .get_mut(&allow)
            .unwrap()
            .rules
            .iter_mut()
            .filter(|r| r.body.contains("th dport 80"))
        {
            r.packets += 3;
            r.bytes += 180;
        }
        let drop = t
            .chains
            .get_mut(&tw)
            .unwrap()
            .rules
            .iter_mut()
            .find(|r| r.body.ends_with(" drop"))
            .unwrap();
        drop.packets = 1;
        drop.bytes = 60;
    });
    let c = dp.counters().unwrap();
    let a = c
        .iter()
        .find(|c| {
            c.kind == CounterKind::PolicyRule
                && c.rule_index == Some(0)
                && c.policy.as_ref().is_some_and(|p| p.name == "allow-web")
        })
        .unwrap();
    assert_eq!(
        (a.packets, a.bytes),
        (6, 360),
        "v4 and v6 alternatives summed"
    );
    let d = c
        .iter()
        .find(|c| c.kind == CounterKind::EndpointDrop)
        .unwrap();
    assert_eq!(
        (d.endpoint.clone(), d.direction, d.packets),
        (Some(EndpointId::new("ns1", "a")), Direction::Ingress, 1)
    );
}
