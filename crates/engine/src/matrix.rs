//! The reachability matrix: for every ordered pair of pods and every probe (protocol, port),
//! whether the first can open a connection to the second.
//!
//! [`matrix`] computes it with set algebra. [`index::Index`] precomputes, once per cluster,
//! a bitset of pods for every endpoint peer and every ipBlock peer (per address-family
//! situation), and the selecting policies of every pod per direction. Then, per probe, the
//! egress decision of a source pod is a bitset over destinations and the ingress decision of
//! a destination is a bitset over sources, each computed by running the tier/rule algorithm on
//! whole sets (Allow adds to the allowed set, Deny and Pass remove from the undecided set, the
//! end of a tier drops what is left). Pods with the same selecting policies (and address
//! family situation, and for ingress the same declared ports) share one computation. The
//! matrix is the AND of the egress rows and the transposed ingress columns.
//!
//! [`naive_matrix`] evaluates every pair with the same code as [`crate::verdict`]; tests
//! check that both agree.

use palisade_model::{Cluster, EndpointId, Protocol};
use serde::{Deserialize, Serialize};

use crate::bitset::BitSet;
use crate::eval;
use crate::flow::{Flow, FlowEnd};
use crate::index::Index;

/// What a matrix column tests: a protocol and destination port (0 for ICMP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Probe {
    pub protocol: Protocol,
    pub port: u16,
}

impl Probe {
    pub fn new(protocol: Protocol, port: u16) -> Self {
        Probe { protocol, port }
    }
}

/// A probe that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("probe {text:?}: {why} (expected PORT[/PROTO] such as 80/TCP or 53/udp, or icmp)")]
pub struct ProbeParseError {
    pub text: String,
    pub why: &'static str,
}

impl std::str::FromStr for Probe {
    type Err = ProbeParseError;

    /// `PORT[/PROTO]` (protocol in any case, TCP when omitted), or `icmp` alone.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why| ProbeParseError {
            text: text.to_string(),
            why,
        };
        let t = text.trim();
        if t.eq_ignore_ascii_case("icmp") {
            return Ok(Probe::new(Protocol::Icmp, 0));
        }
        let (port, proto) = match t.split_once('/') {
            Some((port, proto)) => (port, proto),
            None => (t, "TCP"),
        };
        let protocol = Protocol::parse(proto).ok_or_else(|| err("unknown protocol"))?;
        if protocol == Protocol::Icmp {
            return Err(err("ICMP has no port: write icmp alone"));
        }
        let port: u16 = port.parse().map_err(|_| err("port must be a number"))?;
        if port == 0 {
            return Err(err("port must be in 1..65535"));
        }
        Ok(Probe::new(protocol, port))
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.protocol.has_ports() {
            write!(f, "{}/{}", self.port, self.protocol)
        } else {
            write!(f, "{}", self.protocol)
        }
    }
}

/// The result for one probe: `rows[i]` holds the destinations pod `i` can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeMatrix {
    pub probe: Probe,
    pub rows: Vec<BitSet>,
}

impl ProbeMatrix {
    /// Whether `pods[from]` can open a connection to `pods[to]`.
    pub fn allowed(&self, from: usize, to: usize) -> bool {
        self.rows.get(from).is_some_and(|r| r.contains(to))
    }

    /// The number of allowed ordered pairs (self pairs included).
    pub fn count(&self) -> usize {
        self.rows.iter().map(BitSet::count).sum()
    }

    /// The matrix as nested booleans (`[from][to]`).
    pub fn to_bools(&self) -> Vec<Vec<bool>> {
        self.rows
            .iter()
            .map(|r| (0..r.len()).map(|j| r.contains(j)).collect())
            .collect()
    }
}

/// Reachability of every pod pair for every probe; `pods` sorted by `ns/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    pub pods: Vec<EndpointId>,
    pub probes: Vec<ProbeMatrix>,
}

/// Indices into `cluster.endpoints` in matrix order: sorted by the text `ns/name`.
pub fn matrix_order(cluster: &Cluster) -> Vec<usize> {
    let mut order: Vec<(String, usize)> = cluster
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id.to_string(), i))
        .collect();
    order.sort();
    order.into_iter().map(|(_, i)| i).collect()
}

/// The matrix by set algebra (see the module docs).
pub fn matrix(cluster: &Cluster, probes: &[Probe]) -> Matrix {
    let index = Index::new(cluster);
    let probes = probes.iter().map(|p| index.probe_matrix(*p)).collect();
    Matrix {
        pods: index.pod_ids(),
        probes,
    }
}

/// The matrix pair by pair through the same evaluation as [`crate::verdict`].
pub fn naive_matrix(cluster: &Cluster, probes: &[Probe]) -> Matrix {
    let order = matrix_order(cluster);
    let all: Vec<usize> = (0..order.len()).collect();
    let probes = probes
        .iter()
        .map(|p| ProbeMatrix {
            probe: *p,
            rows: naive_rows(cluster, &order, *p, &all),
        })
        .collect();
    Matrix {
        pods: order
            .iter()
            .map(|&i| cluster.endpoints[i].id.clone())
            .collect(),
        probes,
    }
}

/// Rows `rows` (matrix indices) of the naive matrix for one probe; `order` is
/// [`matrix_order`]. The benchmark uses it to time a sample of rows.
pub fn naive_rows(cluster: &Cluster, order: &[usize], probe: Probe, rows: &[usize]) -> Vec<BitSet> {
    let n = order.len();
    rows.iter()
        .map(|&i| {
            let mut row = BitSet::new(n);
            let src = FlowEnd::Pod(cluster.endpoints[order[i]].id.clone());
            for (j, &dj) in order.iter().enumerate() {
                let flow = Flow::new(
                    src.clone(),
                    FlowEnd::Pod(cluster.endpoints[dj].id.clone()),
                    probe.protocol,
                    probe.port,
                );
                // Both ends are pods of the cluster, so evaluation cannot fail.
                if eval::evaluate(cluster, &flow).is_ok_and(|ev| ev.allowed()) {
                    row.insert(j);
                }
            }
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_parse() {
        let p = |s: &str| s.parse::<Probe>();
        assert_eq!(p("80/TCP"), Ok(Probe::new(Protocol::Tcp, 80)));
        assert_eq!(p("53/udp"), Ok(Probe::new(Protocol::Udp, 53)));
        assert_eq!(p("8080"), Ok(Probe::new(Protocol::Tcp, 8080)));
        assert_eq!(p("ICMP"), Ok(Probe::new(Protocol::Icmp, 0)));
        assert_eq!(p("9/sctp"), Ok(Probe::new(Protocol::Sctp, 9)));
        for bad in ["0/TCP", "70000", "http/TCP", "80/XYZ", "1/icmp", ""] {
            assert!(p(bad).is_err(), "{bad} should not parse");
        }
        assert_eq!(Probe::new(Protocol::Udp, 53).to_string(), "53/UDP");
    }
}
