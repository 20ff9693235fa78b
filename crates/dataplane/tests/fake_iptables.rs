//! The iptables + ipset reconciler against the in-memory fake kernel (no root needed).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use palisade_calc::{IpSetId, RulePort};
use palisade_dataplane::fake::FakeKernel;
use palisade_dataplane::ipt::Family;
use palisade_dataplane::{
    iptables_dataplane, CounterKind, Dataplane, DataplaneError, RecordingSleeper, RetryPolicy,
    StateDataplane,
};
use palisade_model::{Direction, EndpointId, Protocol};
use palisade_render::RenderConfig;

fn setup(
    retry: RetryPolicy,
) -> (
    Arc<FakeKernel>,
    Arc<RecordingSleeper>,
    StateDataplane<palisade_dataplane::ipt::IptablesBackend>,
) {
    let kernel = Arc::new(FakeKernel::new());
    let sleeper = Arc::new(RecordingSleeper::new());
    let dp = iptables_dataplane(
        RenderConfig::default(),
        kernel.clone(),
        sleeper.clone(),
        retry,
    );
    (kernel, sleeper, dp)
}

fn programs(kernel: &FakeKernel) -> Vec<String> {
    kernel.writes().iter().map(|c| c.program.clone()).collect()
}

#[test]
fn first_apply_writes_everything_second_writes_nothing() {
    let (kernel, _, mut dp) = setup(RetryPolicy::none());
    let r = dp.apply_state(&state()).unwrap();
    assert!(
        r.sets_created.len() >= 3,
        "web v4, web v6, the ipBlock set: {:?}",
        r.sets_created
    );
    assert!(r.chains_rewritten.iter().any(|c| c == "pal-FORWARD"));
    assert_eq!(
        r.jumps_written,
        vec!["FORWARD", "INPUT", "OUTPUT", "FORWARD", "INPUT", "OUTPUT"],
        "one per kernel chain (a node's own traffic to and from its pods too) and family"
    );
    assert_eq!(
        programs(&kernel),
        vec!["ipset", "iptables-restore", "ip6tables-restore"]
    );
    let st = kernel.state();
    assert!(st.v4.chains["FORWARD"][0].spec.ends_with("-j pal-FORWARD"));
    assert!(st.v6.chains["FORWARD"][0].spec.ends_with("-j pal-FORWARD"));
    let web4 =
        palisade_render::names::set_name(palisade_render::ir::Family::V4, &IpSetId("web".into()));
    assert_eq!(
        st.ipsets.sets[&web4]
            .members
            .iter()
            .cloned()
            .collect::<Vec<_>>(),
        vec!["10.0.1.1", "10.0.1.2"]
    );

    kernel.clear_calls();
    let r = dp.apply_state(&state()).unwrap();
    assert!(r.wrote_nothing(), "{r:?}");
    assert!(kernel.writes().is_empty());
    // The cached view is used: not even a read.
    assert!(kernel.calls().is_empty());

    // A resync reads everything back and still finds nothing to do.
    let r = dp.resync().unwrap();
    assert!(r.wrote_nothing(), "{r:?}");
    assert!(kernel.writes().is_empty());
}

#[test]
fn one_member_change_is_one_ipset_add_line() {
    let (kernel, _, mut dp) = setup(RetryPolicy::none());
    let mut s = state();
    dp.apply_state(&s).unwrap();
    kernel.clear_calls();
    s.ip_sets
        .get_mut(&IpSetId("web".into()))
        .unwrap()
        .members
        .insert(net("10.0.1.3/32"));
    let r = dp.apply_state(&s).unwrap();
    let writes = kernel.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].program, "ipset");
    let text = writes[0].stdin.clone().unwrap();
    let web4 =
        palisade_render::names::set_name(palisade_render::ir::Family::V4, &IpSetId("web".into()));
    assert_eq!(text, format!("add {web4} 10.0.1.3\n"));
    assert_eq!((r.members_added, r.members_removed), (1, 0));
    assert!(r.chains_rewritten.is_empty());

    kernel.clear_calls();
    s.ip_sets
        .get_mut(&IpSetId("web".into()))
        .unwrap()
        .members
        .remove(&net("10.0.1.1/32"));
    dp.apply_state(&s).unwrap();
    let writes = kernel.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        writes[0].stdin.as_deref(),
        Some(format!("del {web4} 10.0.1.1\n").as_str())
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
    assert_eq!(
        r.chains_rewritten,
        vec![chain.clone(), chain.clone()],
        "v4 and v6"
    );
    assert!(r.sets_created.is_empty() && r.sets_updated.is_empty());
    assert_eq!(
        programs(&kernel),
        vec!["iptables-restore", "ip6tables-restore"]
    );
    for w in kernel.writes() {
        let text = w.stdin.unwrap();
        let declared: Vec<&str> = text.lines().filter(|l| l.starts_with(':')).collect();
        assert_eq!(declared, vec![format!(":{chain} - [0:0]")]);
        assert!(text
            .lines()
            .filter(|l| l.starts_with("-A"))
            .all(|l| l.starts_with(&format!("-A {chain} "))));
        assert!(text.contains("--dport 8080"));
    }
}

#[test]
fn foreign_rules_chains_and_sets_are_never_touched() {
    let (kernel, _, mut dp) = setup(RetryPolicy::none());
    let foreign = "*filter\n:DOCKER - [0:0]\n-A DOCKER -s 192.0.2.7/32 -j DROP\n-A FORWARD -s 192.0.2.1/32 -j DROP\n-A FORWARD -j DOCKER\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";
    for p in ["iptables-restore", "ip6tables-restore"] {
        let f = if p == "iptables-restore" {
            foreign.to_string()
        } else {
            foreign
                .replace("192.0.2.7/32", "2001:db8::7/128")
                .replace("192.0.2.1/32", "2001:db8::1/128")
        };
        assert!(kernel.external(p, &["--noflush"], Some(&f)).success());
    }
    assert!(kernel
        .external("ipset", &["create", "other", "hash:ip"], None)
        .success());
    assert!(kernel
        .external("ipset", &["create", "palisade-like", "hash:net"], None)
        .success());
    let before = kernel.state();

    let mut s = state();
    dp.apply_state(&s).unwrap();
    s.policies.remove(&pid("ns1", "deny-block"));
    for ep in s.endpoints.values_mut() {
        ep.tiers
            .ingress
            .iter_mut()
            .for_each(|t| t.policies.retain(|p| p.name != "deny-block"));
    }
    dp.apply_state(&s).unwrap();
    dp.resync().unwrap();
    let mid = kernel.state();
    // Our jump is first; the foreign rules follow, unchanged and in order.
    let fwd: Vec<&str> = mid.v4.chains["FORWARD"]
        .iter()
        .map(|r| r.spec.as_str())
        .collect();
    assert!(fwd[0].ends_with("-j pal-FORWARD"));
    assert_eq!(
        &fwd[1..],
        before.v4.chains["FORWARD"]
            .iter()
            .map(|r| r.spec.as_str())
            .collect::<Vec<_>>()
            .as_slice()
    );

    // Removing everything removes only ours.
    dp.remove_all().unwrap();
    let after = kernel.state();
    assert_eq!(after.v4, before.v4);
    assert_eq!(after.v6, before.v6);
    assert_eq!(after.ipsets, before.ipsets);
    // And no command ever named a foreign object.
    for c in kernel.calls() {
        let text = format!("{} {}", c.args.join(" "), c.stdin.unwrap_or_default());
        for name in ["DOCKER", "192.0.2.1", "other", "palisade-like", "dport 22"] {
            assert!(!text.contains(name), "{name} in {text}");
        }
    }
}

#[test]
fn drift_is_repaired_on_resync() {
    let (kernel, _, mut dp) = setup(RetryPolicy::none());
    dp.apply_state(&state()).unwrap();
    let healthy = kernel.state();

    // Someone deletes our jump, flushes pal-FORWARD, and removes a set member.
    let web4 =
        palisade_render::names::set_name(palisade_render::ir::Family::V4, &IpSetId("web".into()));
    assert!(kernel
        .external(
            "iptables-restore",
            &["--noflush"],
            Some("*filter\n-D FORWARD 1\n-F pal-FORWARD\nCOMMIT\n")
        )
        .success());
    assert!(kernel
        .external("ipset", &["del", &web4, "10.0.1.2"], None)
        .success());

    // Without a resync the reconciler trusts its view.
    kernel.clear_calls();
    assert!(dp.apply_state(&state()).unwrap().wrote_nothing());

    let r = dp.resync().unwrap();
    assert_eq!(r.jumps_written, vec!["FORWARD"]);
    assert_eq!(r.chains_rewritten, vec!["pal-FORWARD"]);
    assert_eq!(r.sets_updated, vec![web4.clone()]);
    assert_eq!(r.members_added, 1);
    assert_eq!(kernel.state().v4, healthy.v4);
    assert_eq!(kernel.state().ipsets, healthy.ipsets);
}

#[test]
fn duplicated_or_displaced_jumps_are_fixed() {
    let (kernel, _, mut dp) = setup(RetryPolicy::none());
    dp.apply_state(&state()).unwrap();
    let jump = kernel.state().v4.chains["FORWARD"][0].spec.clone();
    // A second copy at the end, and a foreign rule inserted above ours.
    let edit =
        format!("*filter\n-A FORWARD {jump}\n-I FORWARD 1 -s 192.0.2.9/32 -j DROP\nCOMMIT\n");
    assert!(kernel
        .external("iptables-restore", &["--noflush"], Some(&edit))
        .success());
    let r = dp.resync().unwrap();
    assert_eq!(r.jumps_written, vec!["FORWARD"]);
    let fwd: Vec<String> = kernel.state().v4.chains["FORWARD"]
        .iter()
        .map(|r| r.spec.clone())
        .collect();
    assert_eq!(fwd, vec![jump, "-s 192.0.2.9/32 -j DROP".to_string()]);
}

#[test]
fn failures_are_retried_on_the_schedule_then_everything_is_rewritten() {
    let retry = RetryPolicy {
        backoff: vec![
            Duration::from_millis(10),
            Duration::from_millis(20),
            Duration::from_millis(40),
        ],
        full_rewrite_after: 2,
    };
    let (kernel, sleeper, mut dp) = setup(retry);
    dp.apply_state(&state()).unwrap();
    kernel.clear_calls();
    kernel.fail_next("ip6tables-restore", 2);
    let mut s = state();
    s.policies
        .get_mut(&pid("ns1", "allow-web"))
        .unwrap()
        .ingress
        .as_mut()
        .unwrap()[0]
        .ports = vec![];
    let r = dp.apply_state(&s).unwrap();
    assert_eq!(r.attempts, 3);
    assert_eq!(
        sleeper.slept(),
        vec![Duration::from_millis(10), Duration::from_millis(20)]
    );
    assert!(r.full_rewrite, "the third attempt rewrites all");
    // Each retry re-read the kernel before writing.
    let saves = kernel
        .calls()
        .iter()
        .filter(|c| c.program == "iptables-save")
        .count();
    assert_eq!(saves, 2);
    // The full rewrite rewrote every chain and swapped every set in.
    assert!(r.chains_rewritten.len() > 4);
    assert!(r
        .writes()
        .iter()
        .any(|c| c.stdin.as_deref().unwrap_or("").contains("swap pal-tmp")));
    // The kernel ends where a clean apply would have put it.
    let (k2, _, mut dp2) = setup(RetryPolicy::none());
    dp2.apply_state(&s).unwrap();
    assert_eq!(kernel.state().v4, k2.state().v4);
    assert_eq!(kernel.state().v6, k2.state().v6);
    assert_eq!(kernel.state().ipsets, k2.state().ipsets);
}

#[test]
fn giving_up_leaves_the_next_apply_rewriting_everything() {
    let retry = RetryPolicy {
        backoff: vec![Duration::from_millis(5)],
        full_rewrite_after: 5,
    };
    let (kernel, sleeper, mut dp) = setup(retry);
    kernel.fail_next("ipset", 2);
    let err = dp.apply_state(&state()).unwrap_err();
    assert!(
        matches!(err, DataplaneError::GaveUp { attempts: 2, .. }),
        "{err}"
    );
    assert_eq!(sleeper.slept(), vec![Duration::from_millis(5)]);
    // The ipset step failed first: no rule was written.
    assert!(kernel
        .calls()
        .iter()
        .all(|c| c.program != "iptables-restore"));
    let r = dp.apply_state(&state()).unwrap();
    assert!(r.full_rewrite);
    assert_eq!(r.attempts, 1);
}

#[test]
fn hostile_names_reach_commands_only_as_hashes() {
    let hostile_ns = "ns\"; iptables -F; echo \"";
    let hostile_pol = "$(reboot)\n-A INPUT -j ACCEPT";
    let mut s = state();
    let mut p = allow_web();
    p.id = pid(hostile_ns, hostile_pol);
    s.policies.insert(p.id.clone(), p.clone());
    let mut ep = endpoint(
        hostile_ns,
        "`rm -rf /`",
        "pala0000000003",
        "10.0.0.3",
        &[p.id.clone()],
    );
    ep.id = EndpointId::new(hostile_ns, "`rm -rf /`");
    s.endpoints.insert(ep.id.clone(), ep);
    let set = s.ip_sets.get_mut(&IpSetId("web".into())).unwrap();
    set.description = "x\"; flush ruleset; \"".into();
    let (kernel, _, mut dp) = setup(RetryPolicy::none());
    dp.apply_state(&s).unwrap();
    for c in kernel.calls() {
        let text = format!("{} {}", c.args.join(" "), c.stdin.unwrap_or_default());
        for bad in [
            "iptables -F",
            "reboot",
            "rm -rf",
            "flush ruleset",
            "-A INPUT -j ACCEPT",
            hostile_ns,
        ] {
            assert!(!text.contains(bad), "{bad:?} reached a command: {text}");
        }
    }
}

#[test]
fn counters_are_attributed_to_policy_rules_and_endpoint_drops() {
    let (kernel, _, mut dp) = setup(RetryPolicy::none());
    let s = state();
    dp.apply_state(&s).unwrap();
    let allow = palisade_render::names::policy_chain(Direction::Ingress, &pid("ns1", "allow-web"));
    let deny = palisade_render::names::policy_chain(Direction::Ingress, &pid("ns1", "deny-block"));
    let tw = palisade_render::names::endpoint_chain(Direction::Ingress, "pala0000000001");
    kernel.edit(|st| {
        for (fam, n) in [(Family::V4, 1), (Family::V6, 10)] {
            let f = st.filter(fam);
            if let Some(r) = f.chains.get_mut(&allow).and_then(|c| c.first_mut()) {
                r.packets = 5 * n;
                r.bytes = 300 * n;
            }
            // The UDP allow is the second compiled rule of deny-block.
            if let Some(r) = f
                .chains
                .get_mut(&deny)
                .and_then(|c| c.iter_mut().find(|r| r.spec.contains("-p udp")))
            {
                r.packets = 7;
                r.bytes = 70;
            }
            if let Some(r) = f
                .chains
                .get_mut(&tw)
                .and_then(|c| c.iter_mut().find(|r| r.spec.ends_with("-j DROP")))
            {
                r.packets = 2;
                r.bytes = 120;
            }
        }
    });
    let counters = dp.counters().unwrap();
    let find = |kind: CounterKind, policy: Option<&str>, idx: Option<usize>| {
        counters
            .iter()
            .find(|c| {
                c.kind == kind
                    && c.policy.as_ref().map(|p| p.name.as_str()) == policy
                    && c.rule_index == idx
            })
            .unwrap_or_else(|| panic!("no counter {kind:?} {policy:?} {idx:?} in {counters:?}"))
    };
    let a = find(CounterKind::PolicyRule, Some("allow-web"), Some(0));
    assert_eq!((a.packets, a.bytes), (55, 3300), "v4 and v6 summed");
    assert_eq!(a.direction, Direction::Ingress);
    let u = find(CounterKind::PolicyRule, Some("deny-block"), Some(1));
    assert_eq!(u.packets, 14);
    let d = find(CounterKind::EndpointDrop, None, None);
    assert_eq!(d.endpoint, Some(EndpointId::new("ns1", "a")));
    assert_eq!(d.packets, 4);
    assert_eq!(
        find(CounterKind::PolicyRule, Some("deny-block"), Some(0)).packets,
        0
    );
}

#[test]
fn sets_are_created_before_the_rules_and_destroyed_after() {
    let (kernel, _, mut dp) = setup(RetryPolicy::none());
    let base = state();
    let mut without = base.clone();
    without.policies.remove(&pid("ns1", "deny-block"));
    for ep in without.endpoints.values_mut() {
        ep.tiers
            .ingress
            .iter_mut()
            .for_each(|t| t.policies.retain(|p| p.name != "deny-block"));
    }
    dp.apply_state(&without).unwrap();
    // Adding deny-block brings its ipBlock set: created first, then the rules that use it.
    kernel.clear_calls();
    let r = dp.apply_state(&base).unwrap();
    assert_eq!(r.sets_created.len(), 1, "{r:?}");
    assert_eq!(
        programs(&kernel),
        vec!["ipset", "iptables-restore", "ip6tables-restore"]
    );
    assert!(kernel.writes()[0]
        .stdin
        .as_deref()
        .unwrap()
        .starts_with("create "));
    // Removing it: rules first, then the set is destroyed.
    kernel.clear_calls();
    let r = dp.apply_state(&without).unwrap();
    assert_eq!(r.sets_deleted.len(), 1);
    assert_eq!(
        programs(&kernel),
        vec!["iptables-restore", "ip6tables-restore", "ipset"]
    );
    assert!(kernel.writes()[2]
        .stdin
        .as_deref()
        .unwrap()
        .starts_with("destroy "));
    // The fake kernel refuses a destroy of a set in use and a rule on a missing set, so the
    // order is also what made both applies succeed.
    let web4 =
        palisade_render::names::set_name(palisade_render::ir::Family::V4, &IpSetId("web".into()));
    assert!(!kernel
        .external("ipset", &["destroy", &web4], None)
        .success());
}

#[test]
fn logged_endpoint_drops_keep_their_counters() {
    let kernel = Arc::new(FakeKernel::new());
    let cfg = RenderConfig {
        drop_log_group: Some(5),
        ..RenderConfig::default()
    };
    let mut dp = iptables_dataplane(
        cfg,
        kernel.clone(),
        Arc::new(RecordingSleeper::new()),
        RetryPolicy::none(),
    );
    dp.apply_state(&state()).unwrap();
    let tw = palisade_render::names::endpoint_chain(Direction::Ingress, "pala0000000001");
    kernel.edit(|st| {
        let rules = st.filter(Family::V4).chains.get_mut(&tw).unwrap();
        assert!(rules
            .iter()
            .any(|r| r.spec.contains("NFLOG --nflog-group 5")));
        for r in rules.iter_mut() {
            // The log rule and the drop see the same packets; only the drop is counted.
            if r.spec.contains("NFLOG") || r.spec.ends_with("-j DROP") {
                r.packets = 3;
                r.bytes = 180;
            }
        }
    });
    let drops: Vec<_> = dp
        .counters()
        .unwrap()
        .into_iter()
        .filter(|c| c.kind == CounterKind::EndpointDrop)
        .collect();
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert_eq!(drops[0].endpoint, Some(EndpointId::new("ns1", "a")));
    assert_eq!(drops[0].direction, Direction::Ingress);
    assert_eq!((drops[0].packets, drops[0].bytes), (3, 180));
}
