//! Per-cluster precomputation for the bitset matrix: pods in matrix order, their address
//! family situations, a bitset of pods per endpoint peer and per ipBlock peer, the selecting
//! policies of every pod per direction, and the set algebra that decides a whole side at once.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use palisade_model::{
    Action, Cluster, Direction, Endpoint, EndpointId, EndpointPeer, NamespaceMatch, Peer,
    PortMatch, PortSpec, TierAction, DEFAULT_TIER,
};

use crate::bitset::BitSet;
use crate::eval::{pick_family, sort_policies};
use crate::matrix::{matrix_order, Probe, ProbeMatrix};

/// Address-family situations of a pod: no IP, v4 only, v6 only, v4 then v6, v6 then v4.
/// The family of a pod pair's flow depends only on the two situations.
const PROFILES: usize = 5;

fn profile_of(ips: &[IpAddr]) -> usize {
    let has4 = ips.iter().any(IpAddr::is_ipv4);
    let has6 = ips.iter().any(IpAddr::is_ipv6);
    match ips.first() {
        None => 0,
        Some(ip) if ip.is_ipv4() => {
            if has6 {
                3
            } else {
                1
            }
        }
        Some(_) => {
            if has4 {
                4
            } else {
                2
            }
        }
    }
}

fn representative(profile: usize) -> Vec<IpAddr> {
    let v4 = IpAddr::from([10, 0, 0, 1]);
    let v6 = IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, 1]);
    match profile {
        1 => vec![v4],
        2 => vec![v6],
        3 => vec![v4, v6],
        4 => vec![v6, v4],
        _ => vec![],
    }
}

/// A peer compiled to a set reference.
#[derive(Debug, Clone, Copy)]
enum PeerIx {
    /// Index into `endpoint_sets`.
    Pods(usize),
    /// Index into `cidr_egress` / `cidr_ingress` (ipBlocks, networks and nodes: matched by
    /// the flow's address).
    Cidr(usize),
    /// Matches no far end (domain names).
    Nothing,
}

/// What an address-matched peer set is made of, to share it between equal peers.
#[derive(Debug, PartialEq, Eq, Hash)]
enum AddressKey<'a> {
    Cidr(&'a IpNet, &'a [IpNet]),
    Nodes(&'a palisade_model::Selector),
}

#[derive(Debug)]
struct RuleIx<'a> {
    action: Action,
    peers: Vec<PeerIx>,
    ports: &'a [PortSpec],
}

pub(crate) struct Index<'a> {
    cluster: &'a Cluster,
    n: usize,
    eps: Vec<&'a Endpoint>,
    profile: Vec<usize>,
    /// Per ipBlock peer and source profile: the destinations whose flow address is inside.
    cidr_egress: Vec<Vec<BitSet>>,
    /// Per ipBlock peer and destination profile: the sources whose flow address is inside.
    cidr_ingress: Vec<Vec<BitSet>>,
    endpoint_sets: Vec<BitSet>,
    /// Compiled rules per policy: (ingress, egress).
    rules: Vec<(Vec<RuleIx<'a>>, Vec<RuleIx<'a>>)>,
    sel_ingress: Vec<Vec<usize>>,
    sel_egress: Vec<Vec<usize>>,
    /// Per pod, the index in `local_sets` of the host-networked pods on its node (its own
    /// node, which the NetworkPolicy tier does not judge), if there are any.
    local_of: Vec<Option<usize>>,
    local_sets: Vec<BitSet>,
}

impl<'a> Index<'a> {
    pub fn new(cluster: &'a Cluster) -> Self {
        let order = matrix_order(cluster);
        let eps: Vec<&Endpoint> = order.iter().map(|&i| &cluster.endpoints[i]).collect();
        let n = eps.len();

        // Namespaces and their pods; host-networked pods are never selected and never match
        // pod or namespace peers, so they are left out here.
        let mut ns_pods: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, ep) in eps.iter().enumerate() {
            if !cluster.is_host_network(&ep.id) {
                ns_pods.entry(ep.id.namespace.as_str()).or_default().push(i);
            }
        }
        let ns_labels: HashMap<&str, _> = ns_pods
            .keys()
            .map(|ns| (*ns, cluster.namespace_labels(ns)))
            .collect();

        // Address families.
        let profile: Vec<usize> = eps.iter().map(|e| profile_of(&e.ips)).collect();
        let mut profile_sets = vec![BitSet::new(n); PROFILES];
        for (i, p) in profile.iter().enumerate() {
            profile_sets[*p].insert(i);
        }
        let reps: Vec<Vec<IpAddr>> = (0..PROFILES).map(representative).collect();
        let mut fam6_for_src = vec![BitSet::new(n); PROFILES];
        let mut fam6_for_dst = vec![BitSet::new(n); PROFILES];
        for p in 0..PROFILES {
            for q in 0..PROFILES {
                if pick_family(&reps[p], &reps[q]) {
                    fam6_for_src[p].union_with(&profile_sets[q]);
                    fam6_for_dst[q].union_with(&profile_sets[p]);
                }
            }
        }

        // Selecting policies, in evaluation order (staged policies are not enforced).
        let mut pol_order: Vec<usize> = (0..cluster.policies.len())
            .filter(|&pi| !cluster.policies[pi].staged)
            .collect();
        sort_policies(cluster, &mut pol_order);
        let mut sel_ingress = vec![Vec::new(); n];
        let mut sel_egress = vec![Vec::new(); n];
        for &pi in &pol_order {
            let policy = &cluster.policies[pi];
            // (`ns_pods` holds no host-networked pod: they are never selected.)
            let candidates = ns_pods.iter().filter(|(ns, _)| match &policy.id.namespace {
                Some(own) => own == *ns,
                None => policy.namespace_selector.matches(&ns_labels[*ns]),
            });
            for (_, pods) in candidates {
                for &i in pods {
                    if policy.selector.matches(&eps[i].labels) {
                        if policy.ingress.is_some() {
                            sel_ingress[i].push(pi);
                        }
                        if policy.egress.is_some() {
                            sel_egress[i].push(pi);
                        }
                    }
                }
            }
        }

        // Peers.
        let mut ep_ids: HashMap<&EndpointPeer, usize> = HashMap::new();
        let mut endpoint_sets: Vec<BitSet> = Vec::new();
        let mut cidr_ids: HashMap<AddressKey<'a>, usize> = HashMap::new();
        let mut cidr_egress: Vec<Vec<BitSet>> = Vec::new();
        let mut cidr_ingress: Vec<Vec<BitSet>> = Vec::new();
        // The far ends whose flow address `contains` admits, per source profile (egress) and
        // per destination profile (ingress); returns the index of the new sets.
        let mut address_sets = |contains: &dyn Fn(IpAddr) -> bool| -> usize {
            let mut in4 = BitSet::new(n);
            let mut in6 = BitSet::new(n);
            for (i, ep) in eps.iter().enumerate() {
                for (v6, set) in [(false, &mut in4), (true, &mut in6)] {
                    if ep.ip_of_family(v6).is_some_and(contains) {
                        set.insert(i);
                    }
                }
            }
            let combine = |fam6: &BitSet| {
                let mut s = in6.clone();
                s.intersect_with(fam6);
                let mut v4 = in4.clone();
                v4.difference_with(fam6);
                s.union_with(&v4);
                s
            };
            cidr_egress.push(fam6_for_src.iter().map(combine).collect());
            cidr_ingress.push(fam6_for_dst.iter().map(combine).collect());
            cidr_egress.len() - 1
        };
        let mut compile_peer = |peer: &'a Peer| -> PeerIx {
            match peer {
                Peer::Endpoints(ep_peer) => {
                    let id = *ep_ids.entry(ep_peer).or_insert_with(|| {
                        let mut set = BitSet::new(n);
                        for (ns, pods) in &ns_pods {
                            let ns_ok = match &ep_peer.namespaces {
                                NamespaceMatch::Name(name) => name == ns,
                                NamespaceMatch::Selector(s) => s.matches(&ns_labels[ns]),
                            };
                            if ns_ok {
                                for &i in pods {
                                    if ep_peer.pods.matches(&eps[i].labels) {
                                        set.insert(i);
                                    }
                                }
                            }
                        }
                        endpoint_sets.push(set);
                        endpoint_sets.len() - 1
                    });
                    PeerIx::Pods(id)
                }
                Peer::Cidr { cidr, except } => {
                    let id = *cidr_ids
                        .entry(AddressKey::Cidr(cidr, except))
                        .or_insert_with(|| {
                            address_sets(&|ip| Peer::cidr_contains(cidr, except, ip))
                        });
                    PeerIx::Cidr(id)
                }
                Peer::Nodes(selector) => {
                    let id = *cidr_ids
                        .entry(AddressKey::Nodes(selector))
                        .or_insert_with(|| {
                            let nodes: Vec<&palisade_model::Node> = cluster
                                .nodes
                                .values()
                                .filter(|n| selector.matches(&n.labels))
                                .collect();
                            address_sets(&|ip| nodes.iter().any(|n| n.has_address(ip)))
                        });
                    PeerIx::Cidr(id)
                }
                // Address-based enforcement cannot see domain names: nobody matches.
                Peer::DomainNames(_) => PeerIx::Nothing,
            }
        };
        let mut compile_rules = |rules: Option<&'a [palisade_model::Rule]>| -> Vec<RuleIx<'a>> {
            rules
                .unwrap_or(&[])
                .iter()
                .map(|r| RuleIx {
                    action: r.action,
                    peers: r.peers.iter().map(&mut compile_peer).collect(),
                    ports: &r.ports,
                })
                .collect()
        };
        let rules = cluster
            .policies
            .iter()
            .map(|p| {
                let ing = compile_rules(p.ingress.as_deref());
                let eg = compile_rules(p.egress.as_deref());
                (ing, eg)
            })
            .collect();

        // Host-networked pods per node: the far ends that are a pod's own node.
        let mut local_ids: HashMap<&str, usize> = HashMap::new();
        let mut local_sets: Vec<BitSet> = Vec::new();
        for (i, ep) in eps.iter().enumerate() {
            if let (true, Some(node)) = (cluster.is_host_network(&ep.id), ep.node.as_deref()) {
                let k = *local_ids.entry(node).or_insert_with(|| {
                    local_sets.push(BitSet::new(n));
                    local_sets.len() - 1
                });
                local_sets[k].insert(i);
            }
        }
        let local_of = eps
            .iter()
            .map(|ep| {
                ep.node
                    .as_deref()
                    .filter(|_| !cluster.is_host_network(&ep.id))
                    .and_then(|node| local_ids.get(node).copied())
            })
            .collect();

        Index {
            local_of,
            local_sets,
            cluster,
            n,
            eps,
            profile,
            cidr_egress,
            cidr_ingress,
            endpoint_sets,
            rules,
            sel_ingress,
            sel_egress,
        }
    }

    pub fn pod_ids(&self) -> Vec<EndpointId> {
        self.eps.iter().map(|e| e.id.clone()).collect()
    }

    /// The matrix for one probe.
    pub fn probe_matrix(&self, probe: Probe) -> ProbeMatrix {
        let n = self.n;
        // Egress named ports resolve on each destination: one set per name.
        let mut named_dst: HashMap<&str, BitSet> = HashMap::new();
        for (ing, eg) in &self.rules {
            for r in ing.iter().chain(eg) {
                for spec in r.ports {
                    if let PortMatch::Named(name) = &spec.port {
                        if spec.protocol == probe.protocol && !named_dst.contains_key(name.as_str())
                        {
                            let mut s = BitSet::new(n);
                            for (j, ep) in self.eps.iter().enumerate() {
                                if ep.named_port(name, probe.protocol) == Some(probe.port)
                                    && !self.cluster.is_host_network(&ep.id)
                                {
                                    s.insert(j);
                                }
                            }
                            named_dst.insert(name, s);
                        }
                    }
                }
            }
        }
        let mut scratch = Scratch::new(n);

        // Egress rows, shared between pods with the same policies and family situation.
        let mut eg_groups: HashMap<(&[usize], usize, Option<usize>), usize> = HashMap::new();
        let mut eg_sets: Vec<BitSet> = Vec::new();
        let mut eg_of = Vec::with_capacity(n);
        for i in 0..n {
            let key = (
                self.sel_egress[i].as_slice(),
                self.profile[i],
                self.local_of[i],
            );
            let g = *eg_groups.entry(key).or_insert_with(|| {
                let side = Side::Egress {
                    profile: self.profile[i],
                    named: &named_dst,
                };
                let local = key.2.map(|k| &self.local_sets[k]);
                eg_sets.push(self.side_set(
                    key.0,
                    Direction::Egress,
                    &side,
                    local,
                    probe,
                    &mut scratch,
                ));
                eg_sets.len() - 1
            });
            eg_of.push(g);
        }

        // Ingress columns, shared likewise (declared ports too: named ports resolve here).
        type InKey<'k> = (
            &'k [usize],
            usize,
            &'k [palisade_model::NamedPort],
            Option<usize>,
        );
        let mut in_groups: HashMap<InKey<'_>, usize> = HashMap::new();
        let mut in_sets: Vec<(BitSet, bool)> = Vec::new();
        let mut in_of = Vec::with_capacity(n);
        for j in 0..n {
            let key = (
                self.sel_ingress[j].as_slice(),
                self.profile[j],
                self.eps[j].ports.as_slice(),
                self.local_of[j],
            );
            let g = *in_groups.entry(key).or_insert_with(|| {
                let side = Side::Ingress {
                    profile: self.profile[j],
                    ep: self.eps[j],
                };
                let local = key.3.map(|k| &self.local_sets[k]);
                let set =
                    self.side_set(key.0, Direction::Ingress, &side, local, probe, &mut scratch);
                let full = set.count() == n;
                in_sets.push((set, full));
                in_sets.len() - 1
            });
            in_of.push(g);
        }

        // Transpose the ingress columns; open columns are added to every row at once.
        let mut open_cols = BitSet::new(n);
        let mut rows = vec![BitSet::new(n); n];
        for (j, &g) in in_of.iter().enumerate() {
            let (set, full) = &in_sets[g];
            if *full {
                open_cols.insert(j);
            } else {
                for i in set.iter() {
                    rows[i].insert(j);
                }
            }
        }
        for (i, row) in rows.iter_mut().enumerate() {
            row.union_with(&open_cols);
            row.intersect_with(&eg_sets[eg_of[i]]);
            row.insert(i);
        }
        ProbeMatrix { probe, rows }
    }

    /// Runs the tier/rule algorithm on whole sets: the far ends this side allows. `local`:
    /// the far ends that are the pod's own node, which the NetworkPolicy tier passes on.
    fn side_set(
        &self,
        selecting: &[usize],
        dir: Direction,
        side: &Side<'_, '_>,
        local: Option<&BitSet>,
        probe: Probe,
        s: &mut Scratch,
    ) -> BitSet {
        let n = self.n;
        if selecting.is_empty() {
            return BitSet::full(n);
        }
        let mut allowed = BitSet::new(n);
        s.undecided.fill();
        let mut i = 0;
        while i < selecting.len() {
            let tier = &self.cluster.policies[selecting[i]].id.tier;
            let mut j = i;
            while j < selecting.len() && self.cluster.policies[selecting[j]].id.tier == *tier {
                j += 1;
            }
            s.open.copy_from(&s.undecided);
            s.passed.clear();
            if let (Some(local), true) = (local, tier == DEFAULT_TIER) {
                s.matched.copy_from(&s.open);
                s.matched.intersect_with(local);
                s.passed.union_with(&s.matched);
                s.open.difference_with(&s.matched);
            }
            for &pi in &selecting[i..j] {
                let rules = match dir {
                    Direction::Ingress => &self.rules[pi].0,
                    Direction::Egress => &self.rules[pi].1,
                };
                for rule in rules {
                    if s.open.is_empty() {
                        break;
                    }
                    if !self.rule_set(rule, side, probe, &mut s.matched) {
                        continue;
                    }
                    s.matched.intersect_with(&s.open);
                    match rule.action {
                        Action::Allow => {
                            allowed.union_with(&s.matched);
                            s.open.difference_with(&s.matched);
                        }
                        Action::Deny => s.open.difference_with(&s.matched),
                        Action::Pass => {
                            s.passed.union_with(&s.matched);
                            s.open.difference_with(&s.matched);
                        }
                        Action::Log => {}
                    }
                }
            }
            // What no rule decided: denied at the end of a Deny tier, on to the next tier at
            // the end of a Pass tier (as is what a Pass rule matched).
            if self.cluster.tier_action(tier) == TierAction::Pass {
                s.passed.union_with(&s.open);
            }
            s.undecided.copy_from(&s.passed);
            i = j;
        }
        allowed.union_with(&s.undecided);
        allowed
    }

    /// Writes into `out` the far ends a rule matches; `false` when it matches none.
    fn rule_set(
        &self,
        rule: &RuleIx<'_>,
        side: &Side<'_, '_>,
        probe: Probe,
        out: &mut BitSet,
    ) -> bool {
        // Ports: a numeric or "any" match admits every far end; named ones depend on the
        // destination.
        let mut restrict: Option<Vec<&BitSet>> = None;
        if !rule.ports.is_empty() {
            let mut constant = false;
            let mut named = Vec::new();
            let mut named_here = false;
            for spec in rule.ports.iter().filter(|p| p.protocol == probe.protocol) {
                match &spec.port {
                    PortMatch::Any => constant = true,
                    PortMatch::Range { start, end } => {
                        constant |= (*start..=*end).contains(&probe.port)
                    }
                    PortMatch::Named(name) => match side {
                        Side::Egress { named: sets, .. } => {
                            if let Some(s) = sets.get(name.as_str()) {
                                named.push(s);
                            }
                        }
                        Side::Ingress { ep, .. } => {
                            named_here |= ep.named_port(name, probe.protocol) == Some(probe.port)
                        }
                    },
                }
            }
            if !(constant || named_here) {
                if named.is_empty() {
                    return false;
                }
                restrict = Some(named);
            }
        }
        if rule.peers.is_empty() {
            out.fill();
        } else {
            out.clear();
            for peer in &rule.peers {
                let set = match (peer, side) {
                    (PeerIx::Nothing, _) => continue,
                    (PeerIx::Pods(k), _) => &self.endpoint_sets[*k],
                    (PeerIx::Cidr(k), Side::Egress { profile, .. }) => {
                        &self.cidr_egress[*k][*profile]
                    }
                    (PeerIx::Cidr(k), Side::Ingress { profile, .. }) => {
                        &self.cidr_ingress[*k][*profile]
                    }
                };
                out.union_with(set);
            }
        }
        if let Some(named) = restrict {
            let mut any = BitSet::new(self.n);
            for s in named {
                any.union_with(s);
            }
            out.intersect_with(&any);
        }
        true
    }
}

/// The side being decided: egress at a source (far ends are destinations, named ports
/// resolve on them) or ingress at a destination (named ports resolve on it).
enum Side<'s, 'a> {
    Egress {
        profile: usize,
        named: &'s HashMap<&'a str, BitSet>,
    },
    Ingress {
        profile: usize,
        ep: &'a Endpoint,
    },
}

struct Scratch {
    undecided: BitSet,
    open: BitSet,
    passed: BitSet,
    matched: BitSet,
}

impl Scratch {
    fn new(n: usize) -> Self {
        Scratch {
            undecided: BitSet::new(n),
            open: BitSet::new(n),
            passed: BitSet::new(n),
            matched: BitSet::new(n),
        }
    }
}
