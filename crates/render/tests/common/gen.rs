//! Random clusters for property tests: a few namespaces, pods on two nodes with v4, v6 or
//! dual-stack addresses and named ports, and policies of every tier and action with pod,
//! namespace and ipBlock peers and every kind of port.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use palisade_model::{
    Action, Cluster, Endpoint, EndpointId, EndpointPeer, NamedPort, Namespace, NamespaceMatch,
    Peer, Policy, PolicyId, PortMatch, PortSpec, Protocol, Rule, Selector,
};

/// The node the tests render for.
pub const NODE: &str = "node-1";

/// A small deterministic generator driven by one proptest seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const NAMESPACES: [&str; 3] = ["ns-a", "ns-b", "ns-c"];
const PORTS: [(&str, Protocol, u16); 6] = [
    ("http", Protocol::Tcp, 80),
    ("http", Protocol::Tcp, 8080),
    ("dns", Protocol::Udp, 53),
    ("metrics", Protocol::Tcp, 9100),
    ("diameter", Protocol::Sctp, 3868),
    ("", Protocol::Tcp, 443),
];

fn selector(g: &mut Gen) -> Selector {
    match g.below(7) {
        0 => Selector::All,
        1 => Selector::Eq("app".into(), g.pick(&["a", "b", "c"]).to_string()),
        2 => Selector::In(
            "app".into(),
            ["a", "b"].iter().map(|s| s.to_string()).collect(),
        ),
        3 => Selector::NotEq("role".into(), "x".into()),
        4 => Selector::Has("role".into()),
        5 => Selector::NotIn("app".into(), BTreeSet::from(["c".to_string()])),
        _ => Selector::Eq("team".into(), g.pick(&["red", "blue"]).to_string()),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn peer(g: &mut Gen, ns: &str) -> Peer {
    if g.chance(30) {
        let (cidr, excepts): (&str, &[&str]) = *g.pick(&[
            ("10.0.0.0/16", &["10.0.1.0/28", "10.0.2.0/24"][..]),
            ("10.0.1.0/24", &["10.0.1.2/32"][..]),
            ("0.0.0.0/0", &["10.0.0.0/8", "0.0.0.0/1"][..]),
            ("fd00::/64", &["fd00::/124"][..]),
            ("::/0", &[][..]),
            ("192.0.2.0/24", &[][..]),
        ]);
        let except = excepts
            .iter()
            .filter(|_| g.chance(50))
            .map(|e| net(e))
            .collect();
        return Peer::Cidr {
            cidr: net(cidr),
            except,
        };
    }
    let namespaces = if g.chance(50) {
        NamespaceMatch::Name(ns.to_string())
    } else {
        NamespaceMatch::Selector(match g.below(3) {
            0 => Selector::All,
            _ => Selector::Eq("team".into(), g.pick(&["red", "blue"]).to_string()),
        })
    };
    Peer::Endpoints(EndpointPeer {
        namespaces,
        pods: selector(g),
    })
}

fn port(g: &mut Gen) -> PortSpec {
    let protocol = *g.pick(&[Protocol::Tcp, Protocol::Tcp, Protocol::Udp, Protocol::Sctp]);
    let port = match g.below(6) {
        0 => PortMatch::Any,
        1 => PortMatch::Range { start: 80, end: 80 },
        2 => PortMatch::Range { start: 53, end: 53 },
        3 => PortMatch::Range {
            start: 8000,
            end: 9999,
        },
        4 => PortMatch::Named(
            g.pick(&["http", "dns", "metrics", "diameter", "nope"])
                .to_string(),
        ),
        _ => PortMatch::Range { start: 1, end: 443 },
    };
    if g.chance(5) {
        return PortSpec {
            protocol: Protocol::Icmp,
            port: PortMatch::Any,
        };
    }
    PortSpec { protocol, port }
}

fn rules(g: &mut Gen, ns: &str, kube: bool) -> Option<Vec<Rule>> {
    if g.chance(35) {
        return None;
    }
    let n = g.below(3);
    Some(
        (0..n)
            .map(|_| Rule {
                action: if kube {
                    Action::Allow
                } else {
                    *g.pick(&[Action::Allow, Action::Deny, Action::Pass, Action::Log])
                },
                peers: (0..g.below(3)).map(|_| peer(g, ns)).collect(),
                ports: (0..g.below(3)).map(|_| port(g)).collect(),
            })
            .collect(),
    )
}

/// The cluster for `seed` (deterministic).
pub fn cluster(seed: u64) -> Cluster {
    let mut g = Gen(seed | 1);
    let mut c = Cluster::new();
    for (i, ns) in NAMESPACES.iter().enumerate() {
        let mut n = Namespace::implicit(ns);
        n.labels
            .insert("team".into(), ["red", "blue"][i % 2].to_string());
        c.upsert_namespace(n);
    }
    let pods = 2 + g.below(6);
    for i in 0..pods {
        let ns = *g.pick(&NAMESPACES);
        let mut labels = palisade_model::Labels::new();
        labels.insert("app".into(), g.pick(&["a", "b", "c"]).to_string());
        if g.chance(50) {
            labels.insert("role".into(), g.pick(&["x", "y"]).to_string());
        }
        let node = if g.chance(60) { NODE } else { "node-2" };
        let v4: IpAddr = format!("10.0.{}.{}", 1 + g.below(2), i + 1)
            .parse()
            .unwrap();
        let v6: IpAddr = format!("fd00::{:x}", i + 1).parse().unwrap();
        let ips = match g.below(4) {
            0 => vec![v6, v4],
            1 => vec![v6],
            _ => vec![v4],
        };
        let ports = PORTS
            .iter()
            .filter(|_| g.chance(40))
            .map(|(name, protocol, port)| NamedPort {
                name: name.to_string(),
                protocol: *protocol,
                port: *port,
            })
            .collect();
        c.upsert_endpoint(Endpoint {
            id: EndpointId::new(ns, format!("pod{i}")),
            node: Some(node.into()),
            labels,
            ips,
            ports,
        });
    }
    for i in 0..g.below(6) {
        let kube = g.chance(50);
        let ns = *g.pick(&NAMESPACES);
        let (tier, namespace, order) = if kube {
            ("default", Some(ns.to_string()), 1000)
        } else {
            let tier = *g.pick(&["admin", "default", "baseline"]);
            let namespace = g.chance(50).then(|| ns.to_string());
            (tier, namespace, g.below(3) as u32 * 10)
        };
        c.upsert_policy(Policy {
            id: PolicyId {
                tier: tier.into(),
                namespace,
                name: format!("p{i}"),
            },
            order,
            selector: selector(&mut g),
            namespace_selector: if g.chance(50) {
                Selector::All
            } else {
                Selector::Eq("team".into(), "red".into())
            },
            // Some policies staged: enforced nowhere, evaluated where they select.
            staged: g.chance(25),
            ingress: rules(&mut g, ns, kube),
            egress: rules(&mut g, ns, kube),
        });
    }
    with_node_peers(c)
}

/// ClusterNetworkPolicy `nodes` peers, without drawing from the generator (the clusters of
/// older seeds stay what they were): two nodes, one with the outside address 192.0.2.1 and the
/// first pod's address, one with 10.0.0.9; every 192.0.2.0/24 block becomes a nodes peer
/// (`zone == "a"` in even policies, every node in odd ones).
fn with_node_peers(mut c: Cluster) -> Cluster {
    let first = c.endpoints.first().and_then(|e| e.ips.first().copied());
    let zone = |z: &str| {
        let mut l = palisade_model::Labels::new();
        l.insert("zone".into(), z.into());
        l
    };
    c.upsert_node(palisade_model::Node {
        name: "edge-a".into(),
        labels: zone("a"),
        addresses: std::iter::once("192.0.2.1".parse().unwrap())
            .chain(first)
            .collect(),
    });
    c.upsert_node(palisade_model::Node {
        name: "edge-b".into(),
        labels: zone("b"),
        addresses: vec!["10.0.0.9".parse().unwrap()],
    });
    let outside = net("192.0.2.0/24");
    for (i, p) in c.policies.iter_mut().enumerate() {
        let rules = p.ingress.iter_mut().chain(p.egress.iter_mut()).flatten();
        for peer in rules.flat_map(|r| r.peers.iter_mut()) {
            if matches!(peer, Peer::Cidr { cidr, .. } if *cidr == outside) {
                *peer = Peer::Nodes(if i % 2 == 0 {
                    Selector::Eq("zone".into(), "a".into())
                } else {
                    Selector::All
                });
            }
        }
    }
    c
}
