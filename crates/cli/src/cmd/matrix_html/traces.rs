//! The traces of the reachability page: pods grouped into classes and policy groups, and
//! trace texts as shared templates (see the parent module's docs).

use std::collections::HashMap;
use std::net::IpAddr;

use palisade_engine::{explain_text, Flow, FlowEnd, Probe, Verdict};
use palisade_model::{Cluster, Direction, Endpoint, EndpointId, Peer};

use super::{DST_ID, DST_IP, MAX_IPS, SRC_ID, SRC_IP};

/// The trace of one flow as three templates (see [`Templates::parts`]).
pub(super) fn judge(
    cluster: &Cluster,
    templates: &mut Templates,
    probe: Probe,
    a: &Endpoint,
    b: &Endpoint,
) -> (u32, u32, u32) {
    let flow = Flow::new(
        FlowEnd::Pod(a.id.clone()),
        FlowEnd::Pod(b.id.clone()),
        probe.protocol,
        probe.port,
    );
    match palisade_engine::verdict(cluster, &flow) {
        Ok(v) => templates.parts(cluster, &v, a, b),
        Err(e) => (
            templates.intern(format!("cannot judge the flow: {e}\n")),
            templates.intern(String::new()),
            templates.intern(String::new()),
        ),
    }
}

/// Pods grouped for sharing traces.
pub(super) struct Classes {
    /// The class of every pod.
    pub(super) cls: Vec<u32>,
    /// Per class, up to two members (a flow between two different pods of one class).
    pub(super) members: Vec<Vec<usize>>,
    /// Per class: its egress policy group, ingress policy group, address family pattern.
    pub(super) ge: Vec<u32>,
    pub(super) gi: Vec<u32>,
    pub(super) fam: Vec<u32>,
    pub(super) nge: usize,
    pub(super) ngi: usize,
}

/// A class holds the pods the evaluation cannot tell apart: same namespace, labels and
/// ports, same address families, inside the same ipBlocks. Egress groups: the classes
/// selected by the same policies for egress, with the same address families (the egress side
/// of a flow depends on those and on the destination only); ingress groups likewise.
pub(super) fn classify(cluster: &Cluster, endpoints: &[&Endpoint]) -> Classes {
    let mut cidrs = Vec::new();
    for p in &cluster.policies {
        for rule in p.ingress.iter().chain(&p.egress).flatten() {
            for peer in &rule.peers {
                if let Peer::Cidr { cidr, except } = peer {
                    if !cidrs.contains(&(cidr, except)) {
                        cidrs.push((cidr, except));
                    }
                }
            }
        }
    }
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    let cls = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut key = format!("{:?}\0{:?}\0{:?}", e.id.namespace, e.labels, e.ports);
            for ip in &e.ips {
                key.push(if ip.is_ipv4() { '4' } else { '6' });
                for (cidr, except) in &cidrs {
                    let inside = Peer::cidr_contains(cidr, except, *ip);
                    key.push(if inside { '1' } else { '0' });
                }
            }
            let next = members.len() as u32;
            let c = *index.entry(key).or_insert(next);
            if c == next {
                members.push(vec![i]);
            } else if members[c as usize].len() < 2 {
                members[c as usize].push(i);
            }
            c
        })
        .collect();
    let mut fams: HashMap<String, u32> = HashMap::new();
    let fam: Vec<u32> = members
        .iter()
        .map(|m| {
            let pattern: String = endpoints[m[0]]
                .ips
                .iter()
                .map(|ip| if ip.is_ipv4() { '4' } else { '6' })
                .collect();
            let next = fams.len() as u32;
            *fams.entry(pattern).or_insert(next)
        })
        .collect();
    // The pair's addresses are of one family, chosen by both ends: the family pattern is
    // part of a group.
    let groups = |dir: Direction| -> (Vec<u32>, usize) {
        let mut index: HashMap<(Vec<usize>, u32), u32> = HashMap::new();
        let per_class = members
            .iter()
            .zip(&fam)
            .map(|(m, &f)| {
                let e = endpoints[m[0]];
                let labels = cluster.namespace_labels(&e.id.namespace);
                let set: Vec<usize> = (0..cluster.policies.len())
                    .filter(|&k| {
                        let p = &cluster.policies[k];
                        p.rules(dir).is_some() && p.selects(e, &labels)
                    })
                    .collect();
                let next = index.len() as u32;
                *index.entry((set, f)).or_insert(next)
            })
            .collect();
        (per_class, index.len())
    };
    let (ge, nge) = groups(Direction::Egress);
    let (gi, ngi) = groups(Direction::Ingress);
    Classes {
        cls,
        members,
        ge,
        gi,
        fam,
        nge,
        ngi,
    }
}

/// Trace texts as templates, each stored once.
#[derive(Default)]
pub(super) struct Templates {
    pub(super) list: Vec<String>,
    pub(super) index: HashMap<String, u32>,
}

impl Templates {
    pub(super) fn intern(&mut self, text: String) -> u32 {
        if let Some(&i) = self.index.get(&text) {
            return i;
        }
        let i = self.list.len() as u32;
        self.index.insert(text.clone(), i);
        self.list.push(text);
        i
    }

    /// The trace of flow `v` (between pods `a` and `b`) as three templates: the verdict
    /// with the addresses, the egress side, the ingress side. The engine writes the trace
    /// about two sentinel pods, so their names mark exactly where the ends are named (never a
    /// policy or another pod with a similar name), and the addresses line names the ends'
    /// addresses by their position in the pods' address lists.
    pub(super) fn parts(
        &mut self,
        cluster: &Cluster,
        v: &Verdict,
        a: &Endpoint,
        b: &Endpoint,
    ) -> (u32, u32, u32) {
        let src = EndpointId::new(SRC_ID.to_string(), SRC_ID.to_string());
        let dst = EndpointId::new(DST_ID.to_string(), DST_ID.to_string());
        let mut s = v.clone();
        s.flow.src = FlowEnd::Pod(src.clone());
        s.flow.dst = FlowEnd::Pod(dst.clone());
        s.src_ip = None;
        s.dst_ip = None;
        if let Some(e) = s.egress.as_mut() {
            e.endpoint = src.clone();
        }
        if let Some(i) = s.ingress.as_mut() {
            i.endpoint = dst.clone();
        }
        let text = explain_text(cluster, &s);
        let at = |what: &str| text.find(what).map(|i| i + 1);
        let egress_at = at(&format!("\n  egress at {src}:")).unwrap_or(text.len());
        let ingress_at = at(&format!("\n  ingress at {dst}:"))
            .unwrap_or(text.len())
            .max(egress_at);
        let fill = |t: &str| {
            t.replace(&src.to_string(), &SRC_ID.to_string())
                .replace(&dst.to_string(), &DST_ID.to_string())
        };
        let mut head = fill(&text[..egress_at]);
        if v.src_ip.is_some() || v.dst_ip.is_some() {
            // The line explain_text writes after the verdict line.
            let addr = |ip: Option<IpAddr>, ips: &[IpAddr], base: u32| match ip {
                None => "no address".to_string(),
                Some(ip) => ips
                    .iter()
                    .position(|x| *x == ip)
                    .filter(|&k| k < MAX_IPS)
                    .and_then(|k| char::from_u32(base + k as u32))
                    .map_or(ip.to_string(), |c| c.to_string()),
            };
            let line = format!(
                "  addresses: {} -> {}\n",
                addr(v.src_ip, &a.ips, SRC_IP),
                addr(v.dst_ip, &b.ips, DST_IP)
            );
            let split = head.find('\n').map_or(head.len(), |i| i + 1);
            head.insert_str(split, &line);
        }
        (
            self.intern(head),
            self.intern(fill(&text[egress_at..ingress_at])),
            self.intern(fill(&text[ingress_at..])),
        )
    }
}
