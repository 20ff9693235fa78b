//! `palisade matrix -o html`: the reachability page. One self-contained file (no fetches, no
//! external scripts, fonts or images): a virtualised canvas grid per probe, rows and columns
//! grouped by namespace, ✓ on light cells for allowed and ✗ on dark cells for denied (told
//! apart without colour), a namespace filter, and every cell's explain trace on hover/click.
//!
//! Traces are embedded compactly. Pods that the evaluation cannot tell apart (same namespace,
//! labels and ports, same address families, and inside the same ipBlocks) form a class; a
//! flow's trace depends only on the classes of its ends, up to the names and addresses of
//! those ends. So the engine judges one flow per pair of classes, the trace text is stored
//! once as a template (the ends' names and addresses replaced by placeholders the page fills
//! in), and each probe carries a class × class table of template numbers.

use std::collections::HashMap;
use std::net::IpAddr;

use palisade_engine::{explain_text, Flow, FlowEnd, Matrix, Verdict};
use palisade_model::{Cluster, Endpoint, EndpointId, Peer};
use serde::Serialize;

/// Placeholders in trace templates (control characters never appear in trace text).
const SRC_ID: char = '\u{1}';
const DST_ID: char = '\u{2}';
/// `SRC_IP + k` stands for the source's k-th address, `DST_IP + k` for the destination's.
const SRC_IP: u32 = 0x10;
const DST_IP: u32 = 0x18;
const MAX_IPS: usize = 8;

const TEMPLATE: &str = include_str!("matrix_html/page.html");

/// What the page's script reads.
#[derive(Serialize)]
struct PageData {
    /// `[namespace, name, [addresses]]` per pod, in matrix order.
    pods: Vec<(String, String, Vec<String>)>,
    /// The class of each pod.
    cls: Vec<u32>,
    /// The number of classes.
    nc: usize,
    probes: Vec<ProbeData>,
    /// Trace templates.
    tpl: Vec<String>,
}

#[derive(Serialize)]
struct ProbeData {
    name: String,
    /// Row-major bits (`from * n + to`), least significant bit first, base64.
    bits: String,
    allowed: usize,
    /// Template of the flow between two different pods, by `class(from) * nc + class(to)`.
    t: Vec<u32>,
    /// Template of a pod's flow to itself, by class.
    #[serde(rename = "self")]
    self_t: Vec<u32>,
}

/// The page for matrix `m` over `cluster` (which may hold more pods than `m` shows).
pub fn page(cluster: &Cluster, m: &Matrix) -> String {
    let data = page_data(cluster, m);
    // JSON inside <script>: no `<` at all, so neither `</script>` nor `<!--` can occur.
    let json = serde_json::to_string(&data)
        .unwrap_or_else(|_| "null".into())
        .replace('<', "\\u003c");
    TEMPLATE.replace("/*DATA*/null", &json)
}

fn page_data(cluster: &Cluster, m: &Matrix) -> PageData {
    let endpoints: Vec<&Endpoint> = m
        .pods
        .iter()
        .filter_map(|id| cluster.endpoint(id))
        .collect();
    let (cls, reps) = classes(cluster, &endpoints);
    let nc = reps.len();
    let mut templates = Templates::default();
    let probes = m
        .probes
        .iter()
        .map(|p| {
            let judge = |a: &Endpoint, b: &Endpoint| {
                let flow = Flow::new(
                    FlowEnd::Pod(a.id.clone()),
                    FlowEnd::Pod(b.id.clone()),
                    p.probe.protocol,
                    p.probe.port,
                );
                match palisade_engine::verdict(cluster, &flow) {
                    Ok(v) => templates.add(cluster, &v, a, b),
                    Err(e) => templates.intern(format!("cannot judge the flow: {e}\n")),
                }
            };
            let mut judge = judge;
            let mut t = vec![0; nc * nc];
            for (a, members_a) in reps.iter().enumerate() {
                for (b, members_b) in reps.iter().enumerate() {
                    // Two different pods of these classes (none: no such cell).
                    let from = members_a[0];
                    let Some(&to) = members_b.iter().find(|&&j| j != from) else {
                        continue;
                    };
                    t[a * nc + b] = judge(endpoints[from], endpoints[to]);
                }
            }
            let self_t = reps
                .iter()
                .map(|members| judge(endpoints[members[0]], endpoints[members[0]]))
                .collect();
            ProbeData {
                name: p.probe.to_string(),
                bits: base64(&row_major_bits(p, endpoints.len())),
                allowed: p.count(),
                t,
                self_t,
            }
        })
        .collect();
    PageData {
        pods: endpoints
            .iter()
            .map(|e| {
                (
                    e.id.namespace.clone(),
                    e.id.name.clone(),
                    e.ips.iter().map(ToString::to_string).collect(),
                )
            })
            .collect(),
        cls,
        nc,
        probes,
        tpl: templates.list,
    }
}

/// The class of every pod and, per class, its members (at most two are needed: a flow
/// between two different pods of one class).
fn classes(cluster: &Cluster, endpoints: &[&Endpoint]) -> (Vec<u32>, Vec<Vec<usize>>) {
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
    let mut reps: Vec<Vec<usize>> = Vec::new();
    let cls = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            // Everything the evaluation reads of a pod, except its name and addresses: the
            // addresses only through their family and the ipBlocks that hold them.
            let mut key = format!("{:?}\0{:?}\0{:?}", e.id.namespace, e.labels, e.ports);
            for ip in &e.ips {
                key.push(if ip.is_ipv4() { '4' } else { '6' });
                for (cidr, except) in &cidrs {
                    key.push(if Peer::cidr_contains(cidr, except, *ip) {
                        '1'
                    } else {
                        '0'
                    });
                }
            }
            let next = reps.len() as u32;
            let c = *index.entry(key).or_insert(next);
            if c == next {
                reps.push(vec![i]);
            } else if reps[c as usize].len() < 2 {
                reps[c as usize].push(i);
            }
            c
        })
        .collect();
    (cls, reps)
}

/// Trace texts as templates, each stored once.
#[derive(Default)]
struct Templates {
    list: Vec<String>,
    index: HashMap<String, u32>,
}

impl Templates {
    fn intern(&mut self, text: String) -> u32 {
        if let Some(&i) = self.index.get(&text) {
            return i;
        }
        let i = self.list.len() as u32;
        self.index.insert(text.clone(), i);
        self.list.push(text);
        i
    }

    /// The trace of flow `v` as a template: the engine writes it about two sentinel pods
    /// (so their names mark exactly where the ends are named, never a policy or another pod
    /// with a similar name), and the addresses line names the ends' addresses by their
    /// position in the pods' address lists.
    fn add(&mut self, cluster: &Cluster, v: &Verdict, a: &Endpoint, b: &Endpoint) -> u32 {
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
        let text = explain_text(cluster, &s)
            .replace(&src.to_string(), &SRC_ID.to_string())
            .replace(&dst.to_string(), &DST_ID.to_string());
        if v.src_ip.is_none() && v.dst_ip.is_none() {
            return self.intern(text);
        }
        // The line explain_text writes between the verdict and the sides.
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
        let split = text.find('\n').map_or(text.len(), |i| i + 1);
        self.intern(format!("{}{line}{}", &text[..split], &text[split..]))
    }
}

fn row_major_bits(p: &palisade_engine::ProbeMatrix, n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; (n * n).div_ceil(8)];
    for (i, row) in p.rows.iter().enumerate() {
        for j in row.iter() {
            let bit = i * n + j;
            bytes[bit / 8] |= 1 << (bit % 8);
        }
    }
    bytes
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ABC[(v >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The trace the page shows for cell `(from, to)` of probe `k`: the template filled in, as
/// the page's script does it. For tests.
#[cfg(test)]
fn filled(data: &PageData, k: usize, from: usize, to: usize) -> String {
    let p = &data.probes[k];
    let (cf, ct) = (data.cls[from] as usize, data.cls[to] as usize);
    let t = if from == to {
        p.self_t[cf]
    } else {
        p.t[cf * data.nc + ct]
    };
    let mut s = data.tpl[t as usize].clone();
    let (a, b) = (&data.pods[from], &data.pods[to]);
    for (ips, base) in [(&b.2, DST_IP), (&a.2, SRC_IP)] {
        for (k, ip) in ips.iter().enumerate().take(MAX_IPS) {
            let c = char::from_u32(base + k as u32).unwrap_or('\0');
            s = s.replace(c, ip);
        }
    }
    s = s.replace(DST_ID, &format!("{}/{}", b.0, b.1));
    s.replace(SRC_ID, &format!("{}/{}", a.0, a.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_engine::synth::{generate, SynthConfig};
    use palisade_engine::Probe;

    /// Every cell's trace, from the shared templates, is exactly `palisade explain`'s text,
    /// and agrees with the matrix bit; on a synthetic cluster with tiers, Deny, Pass,
    /// ipBlocks with except, named ports and dual-stack pods.
    #[test]
    fn every_cell_shows_exactly_its_explain_text() {
        let cluster = generate(&SynthConfig::sized(120, 40, 7));
        let probes: Vec<Probe> = ["80", "53/udp", "8080", "icmp"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        let m = palisade_engine::matrix(&cluster, &probes);
        let data = page_data(&cluster, &m);
        assert!(data.nc < m.pods.len(), "classes share traces");
        for (k, p) in m.probes.iter().enumerate() {
            for i in 0..m.pods.len() {
                for j in 0..m.pods.len() {
                    let flow = Flow::new(
                        FlowEnd::Pod(m.pods[i].clone()),
                        FlowEnd::Pod(m.pods[j].clone()),
                        p.probe.protocol,
                        p.probe.port,
                    );
                    let v = palisade_engine::verdict(&cluster, &flow).unwrap();
                    assert_eq!(v.allowed, p.allowed(i, j), "{flow:?}");
                    assert_eq!(
                        filled(&data, k, i, j),
                        explain_text(&cluster, &v),
                        "{flow:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xff, 0xfe, 0x00, 0x01]), "//4AAQ==");
    }

    #[test]
    fn the_page_is_self_contained() {
        let cluster = generate(&SynthConfig::sized(30, 10, 1));
        let m = palisade_engine::matrix(&cluster, &["80".parse().unwrap()]);
        let html = page(&cluster, &m);
        assert!(html.starts_with("<!doctype html>"));
        assert!(!html.contains("/*DATA*/"));
        for external in ["http://", "https://", "src=", "@import", "url("] {
            assert!(!html.contains(external), "{external}");
        }
        assert_eq!(html.matches("</script>").count(), 2);
    }
}
