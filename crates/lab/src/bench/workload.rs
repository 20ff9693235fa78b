//! The benchmark's cluster and policy sets (pure: no I/O).
//!
//! ```text
//!  n1: bench/client (app=client)      n2: bench/server (app=server; 80/TCP: a BenchServer)
//!                                         bench/idle-0 .. idle-<k-1> (app=idle-<j>, 8080/TCP)
//! ```
//!
//! The server pod declares no port, so the lab serves nothing there: the benchmark runs its
//! own [`super::BenchServer`] on [`SERVER_PORT`].
//!
//! * [`allow_client`]: selects the server and allows the client on 80/TCP.
//! * [`on_node`]: `n - 1` more policies spread over the idle pods of n2, each with its own
//!   peers (`client: c<i>`, some also an ipBlock) and ports (TCP and UDP, single ports and
//!   ranges; every fourth also has an egress rule): with [`allow_client`] the node carries `n`
//!   active policies while the server is still judged by one.
//! * [`on_server`]: the same `n - 1` names, all selecting the server and allowing absent
//!   clients on 80/TCP: with [`allow_client`] every new connection to the server is judged by
//!   `n` policies (the adversarial case). The names are those of [`on_node`], so one apply
//!   moves the policies from the idle pods to the server.
//! * [`deny_all`]: deny all ingress to the server (apply → blocked).
//! * [`cluster_policies`]: `n` Admin and `n` Baseline ClusterNetworkPolicies whose subject is
//!   every pod of the bench namespace (so every one is active on n2 and judges the server's
//!   ingress) and whose rules name peers that are absent (`client: c<i>`, some an ipBlock,
//!   some a Pass): they change no verdict, each new connection to the server walks the Admin
//!   tier's rules before the NetworkPolicy tier decides.

use std::collections::BTreeMap;

use palisade_model::k8s::{
    IntOrString, IpBlock, LabelSelector, NetworkPolicy, NetworkPolicyEgressRule,
    NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec, ObjectMeta,
};
use palisade_model::{
    Action, Cluster, Endpoint, EndpointId, EndpointPeer, NamedPort, NamespaceMatch, Peer, Policy,
    PolicyId, PortMatch, PortSpec, Protocol, Rule, Selector,
};

/// The namespace of every bench pod and policy.
pub const NS: &str = "bench";
/// The server's port.
pub const SERVER_PORT: u16 = 80;
/// The policy that allows the client to the server.
pub const ALLOW_CLIENT: &str = "allow-client";
/// The deny-all-ingress policy of the apply → blocked measurement.
pub const DENY_ALL: &str = "bench-deny";

/// A bench policy that does not convert (a bug in this module, reported, not a panic).
#[derive(Debug, thiserror::Error)]
#[error("bench policy {policy}: {reason}")]
pub struct WorkloadError {
    pub policy: String,
    pub reason: String,
}

/// The client pod (on n1), the server pod (no declared port) and `idle_pods` idle pods (on n2).
pub fn cluster(idle_pods: usize) -> Cluster {
    let mut c = Cluster::new();
    let tcp = |name: &str, port: u16| NamedPort {
        name: name.into(),
        protocol: Protocol::Tcp,
        port,
    };
    c.upsert_endpoint(pod("client", "n1", "client", vec![]));
    c.upsert_endpoint(pod("server", "n2", "server", vec![]));
    for j in 0..idle_pods {
        let name = idle_name(j);
        c.upsert_endpoint(pod(&name, "n2", &name, vec![tcp("http", 8080)]));
    }
    c
}

/// The name (and `app` label) of idle pod `j`.
pub fn idle_name(j: usize) -> String {
    format!("idle-{j}")
}

/// The name of the `i`-th (from 1) policy of [`on_node`] and [`on_server`].
pub fn other_name(i: usize) -> String {
    format!("p-{i:05}")
}

fn pod(name: &str, node: &str, app: &str, ports: Vec<NamedPort>) -> Endpoint {
    Endpoint {
        id: EndpointId::new(NS, name),
        node: Some(node.to_string()),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        ips: vec![],
        ports,
    }
}

/// Selects the server; allows the client on 80/TCP.
pub fn allow_client() -> Result<Policy, WorkloadError> {
    convert(
        ALLOW_CLIENT,
        spec(
            "server",
            vec![ingress(
                vec![pods("app", "client")],
                vec![port("TCP", SERVER_PORT, None)],
            )],
            None,
        ),
    )
}

/// Selects the server; allows nothing in (egress untouched).
pub fn deny_all() -> Result<Policy, WorkloadError> {
    convert(DENY_ALL, spec("server", vec![], None))
}

/// `n - 1` policies over `idle_pods` idle pods, round robin; see the module docs.
pub fn on_node(n: usize, idle_pods: usize) -> Result<Vec<Policy>, WorkloadError> {
    const PORTS: [(&str, u16, Option<u16>); 8] = [
        ("TCP", 8080, None),
        ("TCP", 443, None),
        ("TCP", 5432, None),
        ("UDP", 53, None),
        ("TCP", 6379, None),
        ("TCP", 9090, Some(9100)),
        ("TCP", 3306, None),
        ("UDP", 5000, Some(5010)),
    ];
    let idle_pods = idle_pods.max(1);
    (1..n)
        .map(|i| {
            let mut peers = vec![pods("client", &format!("c{i}"))];
            if i % 10 == 0 {
                peers.push(NetworkPolicyPeer {
                    ip_block: Some(IpBlock {
                        cidr: format!("172.{}.{}.0/24", 16 + (i / 256) % 16, i % 256),
                        except: None,
                    }),
                    ..Default::default()
                });
            }
            let (proto, p, end) = PORTS[i % PORTS.len()];
            let mut ports = vec![port(proto, p, end)];
            if i % 3 == 0 {
                let (proto, p, end) = PORTS[(i + 3) % PORTS.len()];
                ports.push(port(proto, p, end));
            }
            let egress = (i % 4 == 0).then(|| {
                vec![NetworkPolicyEgressRule {
                    to: Some(vec![pods("client", &format!("c{i}"))]),
                    ports: Some(vec![port("UDP", 53, None)]),
                }]
            });
            let target = idle_name(i % idle_pods);
            convert(
                &other_name(i),
                spec(&target, vec![ingress(peers, ports)], egress),
            )
        })
        .collect()
}

/// The same `n - 1` names as [`on_node`], all selecting the server; see the module docs.
pub fn on_server(n: usize) -> Result<Vec<Policy>, WorkloadError> {
    (1..n)
        .map(|i| {
            let rule = ingress(
                vec![pods("client", &format!("c{i}"))],
                vec![port("TCP", SERVER_PORT, None)],
            );
            convert(&other_name(i), spec("server", vec![rule], None))
        })
        .collect()
}

/// `per_tier` Admin (`bench-admin-<i>`) and `per_tier` Baseline (`bench-baseline-<i>`)
/// ClusterNetworkPolicies; see the module docs.
pub fn cluster_policies(per_tier: usize) -> Vec<Policy> {
    let tiers = [palisade_model::ADMIN_TIER, palisade_model::BASELINE_TIER];
    tiers
        .into_iter()
        .flat_map(|tier| (0..per_tier).map(move |i| cluster_policy(tier, i)))
        .collect()
}

fn cluster_policy(tier: &str, i: usize) -> Policy {
    let absent_client = Peer::Endpoints(EndpointPeer {
        namespaces: NamespaceMatch::Selector(Selector::All),
        pods: Selector::Eq("client".into(), format!("c{i}")),
    });
    let tcp = |start: u16, end: u16| PortSpec {
        protocol: Protocol::Tcp,
        port: PortMatch::Range { start, end },
    };
    let mut rules = vec![Rule {
        action: Action::Deny,
        peers: vec![absent_client.clone()],
        ports: vec![tcp(SERVER_PORT, SERVER_PORT)],
    }];
    if i.is_multiple_of(5) {
        let cidr = format!("172.{}.{}.0/24", 32 + (i / 256) % 16, i % 256);
        rules.push(Rule {
            action: Action::Deny,
            peers: vec![Peer::Cidr {
                cidr: cidr.parse().expect("a valid /24"),
                except: Vec::new(),
            }],
            ports: vec![],
        });
    }
    if i.is_multiple_of(4) {
        rules.push(Rule {
            action: Action::Pass,
            peers: vec![absent_client],
            ports: vec![tcp(8000, 8100)],
        });
    }
    let short = if tier == palisade_model::ADMIN_TIER {
        "admin"
    } else {
        "baseline"
    };
    Policy {
        id: PolicyId {
            tier: tier.to_string(),
            namespace: None,
            name: format!("bench-{short}-{i}"),
        },
        order: i as u32,
        selector: Selector::All,
        namespace_selector: Selector::Eq(
            palisade_model::labels::NAMESPACE_NAME_LABEL.into(),
            NS.into(),
        ),
        staged: false,
        ingress: Some(rules),
        egress: None,
    }
}

fn labels(k: &str, v: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
        match_expressions: None,
    }
}

fn pods(k: &str, v: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(labels(k, v)),
        ..Default::default()
    }
}

fn port(protocol: &str, port: u16, end: Option<u16>) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(port.into())),
        end_port: end.map(i64::from),
    }
}

fn ingress(
    from: Vec<NetworkPolicyPeer>,
    ports: Vec<NetworkPolicyPort>,
) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: Some(from),
        ports: Some(ports),
    }
}

/// A spec selecting `app: <app>`, with these ingress rules and, if given, egress rules.
fn spec(
    app: &str,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Option<Vec<NetworkPolicyEgressRule>>,
) -> NetworkPolicySpec {
    let mut types = vec!["Ingress".to_string()];
    if egress.is_some() {
        types.push("Egress".into());
    }
    NetworkPolicySpec {
        pod_selector: labels("app", app),
        policy_types: Some(types),
        ingress: Some(ingress),
        egress,
    }
}

fn convert(name: &str, spec: NetworkPolicySpec) -> Result<Policy, WorkloadError> {
    let np = NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(NS.to_string()),
            ..Default::default()
        },
        spec,
    };
    palisade_model::convert::network_policy(&np).map_err(|errors| WorkloadError {
        policy: name.to_string(),
        reason: errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn selecting<'a>(c: &Cluster, policies: &'a [Policy], pod: &str) -> Vec<&'a Policy> {
        let ep = c.endpoint(&EndpointId::new(NS, pod)).unwrap();
        let ns = c.namespace_labels(NS);
        policies.iter().filter(|p| p.selects(ep, &ns)).collect()
    }

    fn on_n2(c: &Cluster, policies: &[Policy]) -> usize {
        let ns = c.namespace_labels(NS);
        policies
            .iter()
            .filter(|p| {
                c.endpoints
                    .iter()
                    .any(|e| e.node.as_deref() == Some("n2") && p.selects(e, &ns))
            })
            .count()
    }

    #[test]
    fn on_node_puts_n_policies_on_n2_and_one_on_the_server() {
        let c = cluster(20);
        let mut all = on_node(1000, 20).unwrap();
        assert_eq!(all.len(), 999);
        all.push(allow_client().unwrap());
        assert_eq!(on_n2(&c, &all), 1000);
        let server = selecting(&c, &all, "server");
        assert_eq!(server.len(), 1);
        assert_eq!(server[0].id.name, ALLOW_CLIENT);
        for j in 0..20 {
            let n = selecting(&c, &all, &idle_name(j)).len();
            assert!((49..=50).contains(&n), "idle-{j} is selected by {n}");
        }
        assert!(selecting(&c, &all, "client").is_empty());
    }

    #[test]
    fn on_node_policies_have_distinct_peers_and_varied_ports() {
        let all = on_node(1000, 20).unwrap();
        let rules: BTreeSet<_> = all
            .iter()
            .map(|p| format!("{:?}", p.ingress.as_ref().unwrap()[0]))
            .collect();
        assert_eq!(rules.len(), all.len());
        assert!(all.iter().any(|p| p.egress.is_some()));
        assert!(all.iter().any(|p| p.egress.is_none()));
        let ports: BTreeSet<_> = all
            .iter()
            .map(|p| format!("{:?}", p.ingress.as_ref().unwrap()[0].ports))
            .collect();
        assert!(ports.len() > 8, "only {} port lists", ports.len());
    }

    #[test]
    fn on_server_moves_the_same_names_onto_the_server() {
        let c = cluster(20);
        let node = on_node(1000, 20).unwrap();
        let mut pod = on_server(1000).unwrap();
        let names = |v: &[Policy]| v.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
        assert_eq!(names(&node), names(&pod));
        pod.push(allow_client().unwrap());
        assert_eq!(selecting(&c, &pod, "server").len(), 1000);
        assert_eq!(on_n2(&c, &pod), 1000);
        assert!(selecting(&c, &pod, "idle-0").is_empty());
    }

    #[test]
    fn cluster_policies_select_every_bench_pod_and_change_no_verdict() {
        let mut c = cluster(3);
        let cnps = cluster_policies(10);
        assert_eq!(cnps.len(), 20);
        let admin = cnps.iter().filter(|p| p.id.tier == "admin").count();
        assert_eq!(admin, 10);
        let names: BTreeSet<_> = cnps.iter().map(|p| p.id.clone()).collect();
        assert_eq!(names.len(), 20);
        for pod in ["client", "server", "idle-0", "idle-2"] {
            assert_eq!(selecting(&c, &cnps, pod).len(), 20, "{pod}");
        }
        // With the allow-client policy, the client still reaches the server on 80/TCP and
        // nothing else changes: the peers the ClusterNetworkPolicies name are absent.
        let mut with_np = cnps.clone();
        with_np.push(allow_client().unwrap());
        let ip = |i: u8| vec![std::net::IpAddr::from([10, 0, 0, i])];
        let mut addressed = Cluster::new();
        for (k, mut ep) in c.endpoints.drain(..).enumerate() {
            ep.ips = ip(k as u8 + 1);
            addressed.upsert_endpoint(ep);
        }
        let probe = palisade_engine::Probe::new(Protocol::Tcp, SERVER_PORT);
        let verdicts = |policies: &[Policy]| {
            let mut cl = addressed.clone();
            for p in policies {
                cl.upsert_policy(p.clone());
            }
            palisade_engine::matrix(&cl, &[probe])
        };
        assert_eq!(verdicts(&with_np), verdicts(&[allow_client().unwrap()]));
    }

    #[test]
    fn deny_all_isolates_the_server_only() {
        let c = cluster(2);
        let deny = [deny_all().unwrap()];
        assert_eq!(selecting(&c, &deny, "server").len(), 1);
        assert_eq!(deny[0].ingress.as_deref(), Some(&[][..]));
        assert!(deny[0].egress.is_none());
        assert!(selecting(&c, &deny, "idle-1").is_empty());
    }
}
