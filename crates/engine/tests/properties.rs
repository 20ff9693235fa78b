//! Property tests on random clusters: the bitset matrix equals the pair-by-pair one for the
//! full model (tiers ending in Deny or Pass, Deny, Pass, Log, named ports, ipBlocks, nodes and
//! domain-name peers, host-networked pods, dual-stack), and adding a rule
//! to an all-Allow (Kubernetes-style) policy never removes reachability.
//!
//! Clusters are drawn from a seed with small vocabularies so that labels, names, ports and
//! addresses collide often; proptest shrinks the sizes.

use std::collections::BTreeSet;
use std::net::IpAddr;

use palisade_engine::synth::{generate, SynthConfig, SynthRng};
use palisade_engine::{matrix, naive_matrix, Probe};
use palisade_model::{
    Action, Cluster, Endpoint, EndpointId, EndpointPeer, NamedPort, Namespace, NamespaceMatch,
    Peer, Policy, PolicyId, PortMatch, PortSpec, Protocol, Rule, Selector,
};
use proptest::prelude::*;

const KEYS: [&str; 3] = ["app", "role", "x"];
const VALUES: [&str; 2] = ["1", "2"];

fn pick<T: Copy>(rng: &mut SynthRng, xs: &[T]) -> T {
    xs[rng.below(xs.len())]
}

fn labels(rng: &mut SynthRng) -> palisade_model::Labels {
    let mut out = palisade_model::Labels::new();
    for k in KEYS {
        if rng.one_in(2) {
            out.insert(k.to_string(), pick(rng, &VALUES).to_string());
        }
    }
    out
}

fn selector(rng: &mut SynthRng, depth: usize) -> Selector {
    let k = pick(rng, &KEYS).to_string();
    let v = pick(rng, &VALUES).to_string();
    let set: BTreeSet<String> = VALUES
        .iter()
        .filter(|_| rng.one_in(2))
        .map(|s| s.to_string())
        .collect();
    match rng.below(if depth > 1 { 7 } else { 10 }) {
        0 => Selector::All,
        1 => Selector::Eq(k, v),
        2 => Selector::NotEq(k, v),
        3 => Selector::In(k, set),
        4 => Selector::NotIn(k, set),
        5 => Selector::Has(k),
        6 => Selector::Eq(k, v),
        7 => Selector::Not(Box::new(selector(rng, depth + 1))),
        8 => Selector::And(vec![selector(rng, depth + 1), selector(rng, depth + 1)]),
        _ => Selector::Or(vec![selector(rng, depth + 1), selector(rng, depth + 1)]),
    }
}

fn ips(rng: &mut SynthRng) -> Vec<IpAddr> {
    let v4: IpAddr = format!("10.0.0.{}", rng.below(8)).parse().expect("v4");
    let v6: IpAddr = format!("fd00::{}", rng.below(8)).parse().expect("v6");
    match rng.below(6) {
        0 => vec![],
        1 => vec![v6],
        2 => vec![v4, v6],
        3 => vec![v6, v4],
        _ => vec![v4],
    }
}

fn peer(rng: &mut SynthRng, namespaces: usize) -> Peer {
    match rng.below(7) {
        5 => return Peer::Nodes(selector(rng, 0)),
        6 if rng.one_in(3) => return Peer::DomainNames(vec!["example.com".into()]),
        _ => {}
    }
    match rng.below(5) {
        0 | 1 => Peer::Endpoints(EndpointPeer {
            namespaces: NamespaceMatch::Name(format!("n{}", rng.below(namespaces))),
            pods: selector(rng, 0),
        }),
        2 | 3 => Peer::Endpoints(EndpointPeer {
            namespaces: NamespaceMatch::Selector(selector(rng, 0)),
            pods: selector(rng, 0),
        }),
        _ => {
            let (cidr, except): (&str, &[&str]) = pick(
                rng,
                &[
                    ("10.0.0.0/30", &[][..]),
                    ("10.0.0.0/29", &["10.0.0.4/31"][..]),
                    ("fd00::/126", &[][..]),
                    ("0.0.0.0/0", &["10.0.0.2/32"][..]),
                    ("::/0", &[][..]),
                ],
            );
            Peer::Cidr {
                cidr: cidr.parse().expect("cidr"),
                except: except.iter().map(|e| e.parse().expect("except")).collect(),
            }
        }
    }
}

fn port_spec(rng: &mut SynthRng) -> PortSpec {
    let protocol = pick(
        rng,
        &[Protocol::Tcp, Protocol::Tcp, Protocol::Udp, Protocol::Icmp],
    );
    let port = match rng.below(4) {
        0 => PortMatch::Any,
        1 => {
            let start = pick(rng, &[53u16, 80, 81]);
            PortMatch::Range {
                start,
                end: start + rng.below(2) as u16,
            }
        }
        _ => PortMatch::Named(pick(rng, &["http", "dns", "nope"]).into()),
    };
    PortSpec { protocol, port }
}

fn rules(rng: &mut SynthRng, namespaces: usize, k8s_style: bool) -> Option<Vec<Rule>> {
    if rng.one_in(3) {
        return None;
    }
    Some(
        (0..rng.below(4))
            .map(|_| random_rule(rng, namespaces, k8s_style))
            .collect(),
    )
}

fn random_rule(rng: &mut SynthRng, namespaces: usize, k8s_style: bool) -> Rule {
    let action = if k8s_style {
        Action::Allow
    } else {
        pick(
            rng,
            &[
                Action::Allow,
                Action::Allow,
                Action::Deny,
                Action::Pass,
                Action::Log,
            ],
        )
    };
    Rule {
        action,
        peers: (0..rng.below(3)).map(|_| peer(rng, namespaces)).collect(),
        ports: (0..rng.below(3)).map(|_| port_spec(rng)).collect(),
    }
}

/// A random cluster; `k8s_style` keeps every policy in the default tier with Allow rules only.
fn cluster(seed: u64, namespaces: usize, pods: usize, policies: usize, k8s_style: bool) -> Cluster {
    let mut rng = SynthRng::new(seed);
    let mut c = Cluster::new();
    for k in 0..namespaces {
        let mut ns = Namespace::implicit(&format!("n{k}"));
        ns.labels.extend(labels(&mut rng));
        c.upsert_namespace(ns);
    }
    for i in 0..pods {
        let ports = (0..rng.below(3))
            .map(|_| NamedPort {
                name: pick(&mut rng, &["http", "dns", ""]).into(),
                protocol: pick(&mut rng, &[Protocol::Tcp, Protocol::Udp]),
                port: pick(&mut rng, &[53u16, 80, 81]),
            })
            .collect();
        c.upsert_endpoint(Endpoint {
            id: EndpointId::new(format!("n{}", rng.below(namespaces)), format!("p{i}")),
            // Pods share nodes with host-networked pods (their own node, not judged by the
            // NetworkPolicy tier).
            node: (!k8s_style).then(|| format!("node{}", rng.below(2))),
            labels: labels(&mut rng),
            ips: ips(&mut rng),
            ports,
        });
    }
    if !k8s_style {
        // Nodes whose addresses collide with pod addresses, and host-networked pods.
        for k in 0..rng.below(3) {
            c.upsert_node(palisade_model::Node {
                name: format!("node{k}"),
                labels: labels(&mut rng),
                addresses: ips(&mut rng),
            });
        }
        let ids: Vec<EndpointId> = c.endpoints.iter().map(|e| e.id.clone()).collect();
        for id in ids {
            if rng.one_in(4) {
                c.host_network.insert(id);
            }
        }
    }
    for _ in 0..policies {
        let namespaced = k8s_style || !rng.one_in(3);
        let tier = if k8s_style {
            "default"
        } else {
            pick(
                &mut rng,
                &["admin", "default", "default", "baseline", "undeclared"],
            )
        };
        c.upsert_policy(Policy {
            id: PolicyId {
                tier: tier.into(),
                namespace: namespaced.then(|| format!("n{}", rng.below(namespaces))),
                name: format!("pol{}", rng.below(policies.max(1) * 2)),
            },
            order: if k8s_style {
                1000
            } else {
                pick(&mut rng, &[1u32, 2, 1000])
            },
            selector: selector(&mut rng, 0),
            namespace_selector: selector(&mut rng, 0),
            staged: false,
            ingress: rules(&mut rng, namespaces, k8s_style),
            egress: rules(&mut rng, namespaces, k8s_style),
        });
    }
    c
}

fn probes() -> Vec<Probe> {
    vec![
        Probe::new(Protocol::Tcp, 80),
        Probe::new(Protocol::Tcp, 81),
        Probe::new(Protocol::Udp, 53),
        Probe::new(Protocol::Icmp, 0),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn bitset_matrix_equals_naive(seed in any::<u64>(), ns in 1usize..4, pods in 0usize..12, pols in 0usize..8) {
        let c = cluster(seed, ns, pods, pols, false);
        let p = probes();
        prop_assert_eq!(matrix(&c, &p), naive_matrix(&c, &p));
    }

    #[test]
    fn adding_an_allow_rule_never_removes_reachability(seed in any::<u64>(), ns in 1usize..4, pods in 1usize..10, pols in 1usize..6) {
        let c = cluster(seed, ns, pods, pols, true);
        let p = probes();
        let before = matrix(&c, &p);
        let mut rng = SynthRng::new(seed ^ 0x5eed);
        let mut more = c.clone();
        let target = rng.below(more.policies.len());
        let rule = random_rule(&mut rng, ns, true);
        let pol = &mut more.policies[target];
        match (pol.ingress.as_mut(), pol.egress.as_mut()) {
            (Some(r), _) if rng.one_in(2) => r.push(rule),
            (_, Some(r)) => r.push(rule),
            (Some(r), None) => r.push(rule),
            (None, None) => return Ok(()),
        }
        let after = matrix(&more, &p);
        prop_assert_eq!(&after, &naive_matrix(&more, &p));
        for (b, a) in before.probes.iter().zip(&after.probes) {
            for (rb, ra) in b.rows.iter().zip(&a.rows) {
                let mut lost = rb.clone();
                lost.difference_with(ra);
                prop_assert!(lost.is_empty(), "reachability lost for {}", b.probe);
            }
        }
    }
}

#[test]
fn synthetic_clusters_agree_with_naive() {
    for seed in 0..3 {
        let c = generate(&SynthConfig {
            namespaces: 5,
            pods: 120,
            policies: 60,
            nodes: 3,
            seed,
        });
        let p = probes();
        assert_eq!(matrix(&c, &p), naive_matrix(&c, &p), "seed {seed}");
    }
}
