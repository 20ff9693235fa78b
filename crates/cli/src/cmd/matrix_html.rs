//! `palisade matrix -o html`: the reachability page. One self-contained file (no fetches, no
//! external scripts, fonts or images): a virtualised canvas grid per probe, rows and columns
//! grouped by namespace, ✓ on light cells for allowed and ✗ on dark cells for denied (told
//! apart without colour), a namespace filter, and every cell's explain trace on hover/click.
//!
//! Traces are embedded compactly. Pods that the evaluation cannot tell apart (same namespace,
//! labels and ports, same address families, and inside the same ipBlocks) form a class. A
//! trace is three parts: the verdict line with the addresses, the egress side (which depends
//! on the policies selecting the source for egress and on the destination's class), and the
//! ingress side (the source's class and the policies selecting the destination for
//! ingress). Each part is stored once as a template (the ends' names and addresses replaced
//! by placeholders the page fills in); each probe carries small tables of template numbers.
//! The engine judges one flow per missing table entry. A test compares every cell's trace
//! with `explain`'s text for the same flow.

mod traces;

use std::collections::BTreeMap;

use palisade_engine::Matrix;
use palisade_model::{Cluster, Endpoint};
use serde::Serialize;

use traces::{classify, judge, Templates};

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
    /// Per class: its group of egress policies, its group of ingress policies and its
    /// pattern of address families.
    ge: Vec<u32>,
    gi: Vec<u32>,
    fam: Vec<u32>,
    /// The number of classes and of ingress groups.
    nc: usize,
    ngi: usize,
    probes: Vec<ProbeData>,
    /// Trace templates (parts of traces).
    tpl: Vec<String>,
}

#[derive(Serialize)]
struct ProbeData {
    name: String,
    /// Row-major bits (`from * n + to`), least significant bit first, base64.
    bits: String,
    allowed: usize,
    /// The verdict line and the addresses, by `"allowed,fam(from),fam(to)"` (allowed 0 or 1).
    head: BTreeMap<String, u32>,
    /// The egress side, by `ge(from) * nc + class(to)`.
    #[serde(serialize_with = "packed")]
    eg: Vec<u32>,
    /// The ingress side, by `class(from) * ngi + gi(to)`.
    #[serde(rename = "in", serialize_with = "packed")]
    ing: Vec<u32>,
    /// A pod's flow to itself, whole, by class.
    #[serde(rename = "self")]
    self_t: Vec<u32>,
}

/// Not yet computed (never left in a table a cell reads).
const UNSET: u32 = u32::MAX;

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
    let c = classify(cluster, &endpoints);
    let nc = c.members.len();
    let nge = c.nge;
    let ngi = c.ngi;
    let mut templates = Templates::default();
    let probes = m
        .probes
        .iter()
        .map(|p| {
            let mut head = BTreeMap::new();
            let mut eg = vec![UNSET; nge * nc];
            let mut ing = vec![UNSET; nc * ngi];
            for a in 0..nc {
                for b in 0..nc {
                    // Two different pods of these classes (none: no such cell).
                    let from = c.members[a][0];
                    let Some(&to) = c.members[b].iter().find(|&&j| j != from) else {
                        continue;
                    };
                    let (ga, gb) = (c.ge[a] as usize, c.gi[b] as usize);
                    let bit = u8::from(p.allowed(from, to));
                    let hkey = format!("{bit},{},{}", c.fam[a], c.fam[b]);
                    if eg[ga * nc + b] != UNSET
                        && ing[a * ngi + gb] != UNSET
                        && head.contains_key(&hkey)
                    {
                        continue;
                    }
                    let (h, e, i) = judge(
                        cluster,
                        &mut templates,
                        p.probe,
                        endpoints[from],
                        endpoints[to],
                    );
                    head.entry(hkey).or_insert(h);
                    if eg[ga * nc + b] == UNSET {
                        eg[ga * nc + b] = e;
                    }
                    if ing[a * ngi + gb] == UNSET {
                        ing[a * ngi + gb] = i;
                    }
                }
            }
            let self_t = c
                .members
                .iter()
                .map(|m| {
                    let e = endpoints[m[0]];
                    let parts = judge(cluster, &mut templates, p.probe, e, e);
                    let text = <[u32; 3]>::from(parts)
                        .map(|t| templates.list[t as usize].clone())
                        .concat();
                    templates.intern(text)
                })
                .collect();
            // Entries no cell reads: the smallest number, for a shorter page.
            for t in eg.iter_mut().chain(ing.iter_mut()) {
                if *t == UNSET {
                    *t = 0;
                }
            }
            ProbeData {
                name: p.probe.to_string(),
                bits: base64(&row_major_bits(p, endpoints.len())),
                allowed: p.count(),
                head,
                eg,
                ing,
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
        cls: c.cls,
        ge: c.ge,
        gi: c.gi,
        fam: c.fam,
        nc,
        ngi,
        probes,
        tpl: templates.list,
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

/// A table of template numbers as `W:` and the base64 of its little-endian `W`-byte numbers
/// (`W` is 2 when every number fits, else 4): a third of the size of a JSON array.
fn packed<S: serde::Serializer>(table: &[u32], s: S) -> Result<S::Ok, S::Error> {
    let narrow = table.iter().all(|&t| t <= u32::from(u16::MAX));
    let mut bytes = Vec::with_capacity(table.len() * if narrow { 2 } else { 4 });
    for &t in table {
        if narrow {
            bytes.extend_from_slice(&(t as u16).to_le_bytes());
        } else {
            bytes.extend_from_slice(&t.to_le_bytes());
        }
    }
    s.serialize_str(&format!(
        "{}:{}",
        if narrow { 2 } else { 4 },
        base64(&bytes)
    ))
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

/// The trace the page shows for cell `(from, to)` of probe `k`: the templates filled in, as
/// the page's script does it. For tests.
#[cfg(test)]
fn filled(data: &PageData, k: usize, from: usize, to: usize) -> String {
    let p = &data.probes[k];
    let (a, b) = (data.cls[from] as usize, data.cls[to] as usize);
    let mut s = if from == to {
        data.tpl[p.self_t[a] as usize].clone()
    } else {
        let bit = u8::from(p.bits_allowed(from, to, data.pods.len()));
        let head = p.head[&format!("{bit},{},{}", data.fam[a], data.fam[b])];
        let eg = p.eg[data.ge[a] as usize * data.nc + b];
        let ing = p.ing[a * data.ngi + data.gi[b] as usize];
        [head, eg, ing]
            .map(|t| data.tpl[t as usize].clone())
            .concat()
    };
    let (x, y) = (&data.pods[from], &data.pods[to]);
    for (ips, base) in [(&y.2, DST_IP), (&x.2, SRC_IP)] {
        for (k, ip) in ips.iter().enumerate().take(MAX_IPS) {
            let c = char::from_u32(base + k as u32).unwrap_or('\0');
            s = s.replace(c, ip);
        }
    }
    s = s.replace(DST_ID, &format!("{}/{}", y.0, y.1));
    s.replace(SRC_ID, &format!("{}/{}", x.0, x.1))
}

#[cfg(test)]
impl ProbeData {
    /// The bit as the page decodes it from `bits`.
    fn bits_allowed(&self, from: usize, to: usize, n: usize) -> bool {
        const ABC: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bit = from * n + to;
        let (byte, shift) = (bit / 8, bit % 8);
        let group: Vec<u32> = self.bits.as_bytes()[byte / 3 * 4..byte / 3 * 4 + 4]
            .iter()
            .map(|&c| ABC.find(c as char).unwrap_or(0) as u32)
            .collect();
        let v = (group[0] << 18) | (group[1] << 12) | (group[2] << 6) | group[3];
        let b = (v >> (16 - 8 * (byte % 3))) & 0xff;
        (b >> shift) & 1 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_engine::synth::{generate, SynthConfig};
    use palisade_engine::{explain_text, Flow, FlowEnd, Probe};

    /// Every cell's trace, from the shared templates, is exactly `palisade explain`'s text,
    /// and agrees with the matrix bit; on a synthetic cluster with tiers, Deny, Pass,
    /// ipBlocks with except, named ports and dual-stack pods.
    #[test]
    fn every_cell_shows_exactly_its_explain_text() {
        every_cell_of(generate(&SynthConfig::sized(120, 40, 7)));
        let mut more_namespaces = SynthConfig::sized(60, 30, 3);
        more_namespaces.namespaces = 6;
        every_cell_of(generate(&more_namespaces));
    }

    fn every_cell_of(cluster: Cluster) {
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
                        data.probes[k].bits_allowed(i, j, m.pods.len()),
                        p.allowed(i, j)
                    );
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
    fn tables_are_packed_little_endian() {
        let mut json = serde_json::Serializer::new(Vec::new());
        packed(&[1, 258], &mut json).unwrap();
        assert_eq!(
            String::from_utf8(json.into_inner()).unwrap(),
            "\"2:AQACAQ==\""
        );
        let mut json = serde_json::Serializer::new(Vec::new());
        packed(&[70_000], &mut json).unwrap();
        assert_eq!(
            String::from_utf8(json.into_inner()).unwrap(),
            "\"4:cBEBAA==\""
        );
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
