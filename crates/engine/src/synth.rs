//! Synthetic clusters for benchmarks and tests of every stage (engine, calc, render): pure and
//! seeded, so one [`SynthConfig`] always gives the same [`Cluster`].
//!
//! The mix imitates a real cluster: namespaces labelled `team` and `env`; pods of a few apps
//! per namespace (`app`, `role` labels), spread over `node-<i>`, with IPv4 addresses in
//! 10.0.0.0/8 (about 1 in 5 dual-stack with an `fd00::/64` address second, 1 in 50 IPv6-only,
//! 1 in 25 without an address yet) and named container ports `http`, `metrics`, `dns`.
//! Policies: first a default-deny in three namespaces of four (ingress; every other one egress
//! too, with DNS egress kept open; every fourth namespace has none, as in real clusters), then
//! a rotation of same-namespace allows by app label, namespace-selector allows, ipBlock egress
//! with `except`, named-port allows, port ranges and DNS egress; about 1 in 50 is a
//! cluster-wide policy of the `admin` tier (Deny from `env=dev` namespaces, Pass for the
//! rest) so that tiers, Deny and Pass are exercised too.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use palisade_model::{
    Action, Cluster, Endpoint, EndpointId, EndpointPeer, NamedPort, Namespace, NamespaceMatch,
    Peer, Policy, PolicyId, PortMatch, PortSpec, Protocol, Rule, Selector, DEFAULT_TIER,
    KUBERNETES_POLICY_ORDER,
};

/// What to generate. `namespaces` and `nodes` are at least 1 in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthConfig {
    pub namespaces: usize,
    pub pods: usize,
    pub policies: usize,
    pub nodes: usize,
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            namespaces: 10,
            pods: 100,
            policies: 20,
            nodes: 3,
            seed: 1,
        }
    }
}

impl SynthConfig {
    /// A config with a namespace per 50 pods (at least 1), a node per 100 pods (at least 1).
    pub fn sized(pods: usize, policies: usize, seed: u64) -> Self {
        SynthConfig {
            namespaces: (pods / 50).max(1),
            pods,
            policies,
            nodes: (pods / 100).max(1),
            seed,
        }
    }
}

/// A small, fast, seeded generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct SynthRng(u64);

impl SynthRng {
    pub fn new(seed: u64) -> Self {
        SynthRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

const TEAMS: [&str; 4] = ["payments", "search", "platform", "web"];
const ENVS: [&str; 3] = ["prod", "staging", "dev"];
const ROLES: [&str; 3] = ["frontend", "backend", "db"];

/// The generated cluster (endpoints sorted; default tiers).
pub fn generate(cfg: &SynthConfig) -> Cluster {
    let mut rng = SynthRng::new(cfg.seed);
    let namespaces = cfg.namespaces.max(1);
    let nodes = cfg.nodes.max(1);
    let apps_per_ns = (cfg.pods / namespaces / 5).clamp(1, 20);
    let mut cluster = Cluster::new();

    for k in 0..namespaces {
        let mut ns = Namespace::implicit(&ns_name(k));
        ns.labels
            .insert("team".into(), TEAMS[k % TEAMS.len()].into());
        ns.labels
            .insert("env".into(), ENVS[rng.below(ENVS.len())].into());
        cluster.upsert_namespace(ns);
    }

    let mut endpoints = Vec::with_capacity(cfg.pods);
    for i in 0..cfg.pods {
        let k = i % namespaces;
        let app = rng.below(apps_per_ns);
        let mut ep = Endpoint {
            id: EndpointId::new(ns_name(k), format!("app-{app}-{i}")),
            node: Some(format!("node-{}", i % nodes)),
            labels: Default::default(),
            ips: Vec::new(),
            ports: Vec::new(),
        };
        ep.labels.insert("app".into(), format!("app-{app}"));
        ep.labels
            .insert("role".into(), ROLES[app % ROLES.len()].into());
        if rng.one_in(3) {
            ep.labels
                .insert("version".into(), format!("v{}", rng.below(3)));
        }
        let n = i as u32 + 1;
        let v4 = IpAddr::V4(Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8));
        let v6 = IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0,
            0,
            0,
            0,
            0,
            (n >> 16) as u16,
            n as u16,
        ));
        match rng.below(100) {
            0..=3 => {}
            4..=5 => ep.ips.push(v6),
            6..=25 => ep.ips.extend([v4, v6]),
            _ => ep.ips.push(v4),
        }
        let http = if app.is_multiple_of(2) { 80 } else { 8080 };
        ep.ports.push(port("http", Protocol::Tcp, http));
        if rng.one_in(2) {
            ep.ports.push(port("metrics", Protocol::Tcp, 9090));
        }
        if app % ROLES.len() == 1 && rng.one_in(4) {
            ep.ports.push(port("dns", Protocol::Udp, 53));
        }
        endpoints.push(ep);
    }
    endpoints.sort_by(|a, b| a.id.cmp(&b.id));
    cluster.endpoints = endpoints;

    for p in 0..cfg.policies {
        let policy = if p < namespaces && p % 4 != 3 {
            default_deny(p, p % 2 == 1)
        } else if p % 50 == 49 {
            admin_policy(p, &mut rng)
        } else {
            let k = rng.below(namespaces);
            namespaced_policy(p, &ns_name(k), apps_per_ns, namespaces, &mut rng)
        };
        cluster.upsert_policy(policy);
    }
    cluster
}

fn ns_name(k: usize) -> String {
    format!("ns-{k}")
}

fn port(name: &str, protocol: Protocol, port: u16) -> NamedPort {
    NamedPort {
        name: name.into(),
        protocol,
        port,
    }
}

fn eq(k: &str, v: &str) -> Selector {
    Selector::Eq(k.into(), v.into())
}

fn tcp(p: u16) -> PortSpec {
    PortSpec {
        protocol: Protocol::Tcp,
        port: PortMatch::Range { start: p, end: p },
    }
}

fn allow(peers: Vec<Peer>, ports: Vec<PortSpec>) -> Rule {
    Rule {
        action: Action::Allow,
        peers,
        ports,
    }
}

fn pods_in(ns: NamespaceMatch, pods: Selector) -> Peer {
    Peer::Endpoints(EndpointPeer {
        namespaces: ns,
        pods,
    })
}

fn k8s_policy(ns: &str, name: String, selector: Selector) -> Policy {
    Policy {
        id: PolicyId {
            tier: DEFAULT_TIER.into(),
            namespace: Some(ns.into()),
            name,
        },
        order: KUBERNETES_POLICY_ORDER,
        selector,
        namespace_selector: Selector::All,
        staged: false,
        ingress: None,
        egress: None,
    }
}

fn default_deny(k: usize, egress: bool) -> Policy {
    let mut p = k8s_policy(&ns_name(k), "default-deny".into(), Selector::All);
    p.ingress = Some(Vec::new());
    if egress {
        // Egress default-deny, but DNS to anywhere stays allowed, as real clusters do.
        p.egress = Some(vec![allow(
            Vec::new(),
            vec![PortSpec {
                protocol: Protocol::Udp,
                port: PortMatch::Range { start: 53, end: 53 },
            }],
        )]);
    }
    p
}

fn namespaced_policy(
    p: usize,
    ns: &str,
    apps: usize,
    namespaces: usize,
    rng: &mut SynthRng,
) -> Policy {
    let app = |rng: &mut SynthRng| format!("app-{}", rng.below(apps));
    let target = app(rng);
    let mut pol = k8s_policy(ns, format!("pol-{p}"), eq("app", &target));
    match p % 6 {
        0 => {
            // Same namespace, by app label.
            let from = pods_in(NamespaceMatch::Name(ns.into()), eq("app", &app(rng)));
            pol.ingress = Some(vec![allow(vec![from], vec![tcp(80), tcp(8080)])]);
        }
        1 => {
            // From every namespace of a team, frontends only.
            let team = TEAMS[rng.below(TEAMS.len())];
            let from = pods_in(
                NamespaceMatch::Selector(eq("team", team)),
                eq("role", "frontend"),
            );
            pol.ingress = Some(vec![allow(vec![from], vec![tcp(80)])]);
        }
        2 => {
            // Egress to the cluster range except one namespace block, and to one namespace.
            let block = rng.below(256) as u8;
            let cidr: IpNet = "10.0.0.0/8".parse().unwrap_or_else(|_| unreachable_net());
            let except = IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 0, block, 0)), 24).unwrap_or(cidr);
            let other = ns_name(rng.below(namespaces));
            pol.egress = Some(vec![
                allow(
                    vec![Peer::Cidr {
                        cidr,
                        except: vec![except],
                    }],
                    vec![tcp(80), tcp(443)],
                ),
                allow(
                    vec![pods_in(NamespaceMatch::Name(other), Selector::All)],
                    Vec::new(),
                ),
            ]);
        }
        3 => {
            // Named ports from anywhere in the cluster (prometheus-style scraping).
            let from = pods_in(
                NamespaceMatch::Selector(Selector::All),
                eq("app", &app(rng)),
            );
            let named = |n: &str| PortSpec {
                protocol: Protocol::Tcp,
                port: PortMatch::Named(n.into()),
            };
            pol.ingress = Some(vec![allow(
                vec![from],
                vec![named("http"), named("metrics")],
            )]);
        }
        4 => {
            // A port range from namespaces of an environment, plus from an external block.
            let env = ENVS[rng.below(ENVS.len())];
            let vals: BTreeSet<String> = [env.to_string()].into();
            let from = pods_in(
                NamespaceMatch::Selector(Selector::In("env".into(), vals)),
                Selector::All,
            );
            let ext: IpNet = "192.168.0.0/16"
                .parse()
                .unwrap_or_else(|_| unreachable_net());
            pol.ingress = Some(vec![allow(
                vec![
                    from,
                    Peer::Cidr {
                        cidr: ext,
                        except: Vec::new(),
                    },
                ],
                vec![PortSpec {
                    protocol: Protocol::Tcp,
                    port: PortMatch::Range {
                        start: 8000,
                        end: 8100,
                    },
                }],
            )]);
        }
        _ => {
            // Egress by named port to one app of the same namespace, ingress from the role.
            let to = pods_in(NamespaceMatch::Name(ns.into()), eq("app", &app(rng)));
            pol.egress = Some(vec![allow(
                vec![to],
                vec![PortSpec {
                    protocol: Protocol::Tcp,
                    port: PortMatch::Named("http".into()),
                }],
            )]);
            let role = ROLES[rng.below(ROLES.len())];
            pol.ingress = Some(vec![allow(
                vec![pods_in(NamespaceMatch::Name(ns.into()), eq("role", role))],
                Vec::new(),
            )]);
        }
    }
    pol
}

fn admin_policy(p: usize, rng: &mut SynthRng) -> Policy {
    let env = ENVS[rng.below(2)];
    Policy {
        id: PolicyId {
            tier: "admin".into(),
            namespace: None,
            name: format!("guard-{p}"),
        },
        order: rng.below(5) as u32,
        selector: Selector::All,
        namespace_selector: eq("env", env),
        staged: false,
        ingress: Some(vec![
            Rule {
                action: Action::Deny,
                peers: vec![pods_in(
                    NamespaceMatch::Selector(eq("env", "dev")),
                    Selector::All,
                )],
                ports: Vec::new(),
            },
            Rule {
                action: Action::Pass,
                peers: Vec::new(),
                ports: Vec::new(),
            },
        ]),
        egress: None,
    }
}

/// Never reached: the literals above parse. Kept so no `unwrap` is needed.
fn unreachable_net() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::default())
}

/// `admin` Admin-tier and `baseline` Baseline-tier ClusterNetworkPolicies (as
/// `convert::cluster_network_policy` makes them: cluster-wide, order = priority, Allow/Deny/Pass)
/// for a cluster of [`generate`]: subjects by namespace labels (`team`, `env`) or by pod role,
/// ingress and egress rules with namespace and pod peers, networks (10.x CIDRs), TCP/UDP port
/// numbers and ranges, and named ports; every fourth rule list ends with a Pass.
pub fn cluster_network_policies(admin: usize, baseline: usize, seed: u64) -> Vec<Policy> {
    let mut rng = SynthRng::new(seed ^ 0xc1a5_7e12);
    let mut out = Vec::with_capacity(admin + baseline);
    for i in 0..admin + baseline {
        let (tier, name) = if i < admin {
            (palisade_model::ADMIN_TIER, format!("admin-{i}"))
        } else {
            (
                palisade_model::BASELINE_TIER,
                format!("baseline-{}", i - admin),
            )
        };
        let team = TEAMS[rng.below(TEAMS.len())];
        let env = ENVS[rng.below(ENVS.len())];
        let (namespace_selector, selector) = match rng.below(3) {
            0 => (Selector::Eq("team".into(), team.into()), Selector::All),
            1 => (Selector::Eq("env".into(), env.into()), Selector::All),
            _ => (
                Selector::All,
                Selector::Eq("role".into(), ROLES[rng.below(ROLES.len())].into()),
            ),
        };
        let rules = |rng: &mut SynthRng| -> Option<Vec<Rule>> {
            if rng.one_in(3) {
                return None;
            }
            let n = 1 + rng.below(3);
            let mut list: Vec<Rule> = (0..n)
                .map(|_| {
                    let action =
                        [Action::Allow, Action::Deny, Action::Deny, Action::Pass][rng.below(4)];
                    let peer = match rng.below(4) {
                        0 => Peer::Endpoints(EndpointPeer {
                            namespaces: NamespaceMatch::Selector(Selector::Eq(
                                "env".into(),
                                ENVS[rng.below(ENVS.len())].into(),
                            )),
                            pods: Selector::All,
                        }),
                        1 => Peer::Endpoints(EndpointPeer {
                            namespaces: NamespaceMatch::Selector(Selector::Eq(
                                "team".into(),
                                TEAMS[rng.below(TEAMS.len())].into(),
                            )),
                            pods: Selector::Eq("role".into(), ROLES[rng.below(ROLES.len())].into()),
                        }),
                        2 => Peer::Cidr {
                            cidr: IpNet::new(
                                IpAddr::V4(Ipv4Addr::new(10, rng.below(4) as u8, 0, 0)),
                                16,
                            )
                            .expect("a /16 is valid"),
                            except: Vec::new(),
                        },
                        _ => Peer::Endpoints(EndpointPeer {
                            namespaces: NamespaceMatch::Selector(Selector::All),
                            pods: Selector::Eq("app".into(), format!("app-{}", rng.below(5))),
                        }),
                    };
                    let ports = match rng.below(4) {
                        0 => Vec::new(),
                        1 => vec![PortSpec {
                            protocol: Protocol::Tcp,
                            port: PortMatch::Range {
                                start: 8000,
                                end: 8000 + rng.below(100) as u16,
                            },
                        }],
                        2 => [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
                            .into_iter()
                            .map(|protocol| PortSpec {
                                protocol,
                                port: PortMatch::Named("metrics".into()),
                            })
                            .collect(),
                        _ => vec![PortSpec {
                            protocol: [Protocol::Tcp, Protocol::Udp][rng.below(2)],
                            port: PortMatch::Range {
                                start: 443,
                                end: 443,
                            },
                        }],
                    };
                    Rule {
                        action,
                        peers: vec![peer],
                        ports,
                    }
                })
                .collect();
            if rng.one_in(4) {
                list.push(Rule {
                    action: Action::Pass,
                    peers: vec![Peer::Endpoints(EndpointPeer {
                        namespaces: NamespaceMatch::Selector(Selector::All),
                        pods: Selector::All,
                    })],
                    ports: Vec::new(),
                });
            }
            Some(list)
        };
        let ingress = rules(&mut rng);
        let egress = rules(&mut rng);
        out.push(Policy {
            id: PolicyId {
                tier: tier.to_string(),
                namespace: None,
                name,
            },
            order: rng.below(1001) as u32,
            selector,
            namespace_selector,
            ingress,
            egress,
            staged: false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized() {
        let cfg = SynthConfig {
            namespaces: 4,
            pods: 200,
            policies: 60,
            nodes: 3,
            seed: 7,
        };
        let a = generate(&cfg);
        assert_eq!(a, generate(&cfg));
        assert_ne!(a, generate(&SynthConfig { seed: 8, ..cfg }));
        assert_eq!(a.endpoints.len(), 200);
        assert_eq!(a.policies.len(), 60);
        assert!(a.endpoints.windows(2).all(|w| w[0].id < w[1].id));
        assert!(a.endpoints.iter().any(|e| e.ips.len() == 2));
        assert!(a
            .endpoints
            .iter()
            .all(|e| e.node.as_deref().is_some_and(|n| n.starts_with("node-"))));
        assert!(a.policies.iter().any(|p| p.id.tier == "admin"));
    }

    #[test]
    fn cluster_network_policies_in_both_tiers_and_the_bitset_matrix_agrees() {
        let cnps = cluster_network_policies(20, 30, 3);
        assert_eq!(cnps, cluster_network_policies(20, 30, 3));
        assert_eq!(cnps.iter().filter(|p| p.id.tier == "admin").count(), 20);
        assert_eq!(cnps.iter().filter(|p| p.id.tier == "baseline").count(), 30);
        assert!(cnps
            .iter()
            .all(|p| p.id.namespace.is_none() && p.order <= 1000));
        let mut c = generate(&SynthConfig {
            namespaces: 5,
            pods: 60,
            policies: 20,
            nodes: 2,
            seed: 3,
        });
        for p in cnps {
            c.upsert_policy(p);
        }
        let probes = [
            crate::Probe::new(Protocol::Tcp, 443),
            crate::Probe::new(Protocol::Tcp, 8050),
            crate::Probe::new(Protocol::Udp, 53),
        ];
        assert_eq!(crate::matrix(&c, &probes), crate::naive_matrix(&c, &probes));
    }
}
