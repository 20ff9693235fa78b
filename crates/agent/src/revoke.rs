//! Revoking established connections (`--established revoke`): after an apply, every tracked
//! flow of a local pod is run through the rules just programmed, as the first packet of a new
//! connection; the flows they would now drop are deleted from conntrack, so their next packet
//! is judged as new and dropped. Flows the rules still admit are never touched.
//!
//! The judge is the IR interpreter on the ruleset rendered from the same desired state (the
//! evaluation the kernel does), without the anti-spoofing bindings: a tracked flow from a
//! local address was admitted from its own interface, and this only asks what policy says.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use palisade_calc::DesiredState;
use palisade_dataplane::conntrack::{sweep, Conntrack, CtFlow, SweepReport};
use palisade_model::Protocol;
use palisade_render::interp::{self, Packet, Verdict};
use palisade_render::RenderConfig;
use serde::{Deserialize, Serialize};

/// What happens to established connections when the rules change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Established {
    /// Conntrack lets existing flows go on until they end (the default).
    #[default]
    Keep,
    /// Flows the new rules deny are deleted from conntrack after every applied change.
    Revoke,
}

/// Flows judged per sweep at most; the rest waits for the next apply (or resync).
pub const MAX_CHECKED_PER_SWEEP: usize = 100_000;

/// How many revoked flows a revocation record lists.
const LISTED: usize = 16;

/// An interface name no pod has: the far side of a flow that is not a local pod.
const OUTSIDE: &str = "palisade-outside";

/// The outcome of one sweep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocation {
    pub report: SweepReport,
    /// The first flows the rules deny now (at most [`LISTED`]): deleted, or already gone.
    pub flows: Vec<CtFlow>,
}

/// The protocol and port a flow's first packet is judged with; `None` for flows policy does
/// not judge as connections (ICMP errors, other protocols).
fn probe_of(flow: &CtFlow) -> Option<(Protocol, u16)> {
    match flow.protocol {
        6 => Some((Protocol::Tcp, flow.dst_port)),
        17 => Some((Protocol::Udp, flow.dst_port)),
        132 => Some((Protocol::Sctp, flow.dst_port)),
        // Echo requests only (type 8, ICMPv6 128): judged as the ICMP probe (port 0).
        1 | 58 => match flow.icmp {
            Some((8 | 128, _, _)) => Some((Protocol::Icmp, 0)),
            _ => None,
        },
        _ => None,
    }
}

/// A sweep's table and render configuration, taken into the apply's blocking task.
pub struct Revoker {
    table: Arc<dyn Conntrack>,
    render: RenderConfig,
}

impl Revoker {
    pub fn new(table: Arc<dyn Conntrack>, render: RenderConfig) -> Self {
        Revoker { table, render }
    }

    /// Sweeps against the rules of `state` once they are in the kernel (`written` is the
    /// outcome of the write); `None` when the write failed.
    pub fn after<T, E>(
        &self,
        state: &DesiredState,
        written: &Result<T, E>,
    ) -> Option<Box<Result<Revocation, String>>> {
        written.as_ref().ok()?;
        Some(Box::new(revoke(
            state,
            &self.render,
            self.table.as_ref(),
            MAX_CHECKED_PER_SWEEP,
        )))
    }
}

/// Runs one sweep of `table` against the rules of `state`.
pub fn revoke(
    state: &DesiredState,
    render: &RenderConfig,
    table: &dyn Conntrack,
    max_checked: usize,
) -> Result<Revocation, String> {
    let cfg = RenderConfig {
        source_bindings: Default::default(),
        ..render.clone()
    };
    let rs = palisade_render::build(state, &cfg).map_err(|e| e.to_string())?;
    let ifaces: HashMap<IpAddr, &str> = state
        .endpoints
        .values()
        .flat_map(|e| e.ips.iter().map(move |ip| (*ip, e.iface.as_str())))
        .collect();
    let mut flows = Vec::new();
    let report = sweep(table, max_checked, |flow| {
        let (src_if, dst_if) = (ifaces.get(&flow.src), ifaces.get(&flow.dst));
        if src_if.is_none() && dst_if.is_none() {
            return None; // not a local pod's flow
        }
        let (protocol, port) = probe_of(flow)?;
        let packet = Packet::new(
            flow.src,
            flow.dst,
            protocol,
            port,
            src_if.copied().unwrap_or(OUTSIDE),
            dst_if.copied().unwrap_or(OUTSIDE),
        );
        let allowed = match interp::evaluate(&rs, &packet) {
            Ok(o) => o.verdict != Verdict::Drop,
            // A flow the interpreter cannot follow is left alone.
            Err(_) => return None,
        };
        if !allowed && flows.len() < LISTED {
            flows.push(flow.clone());
        }
        Some(allowed)
    })
    .map_err(|e| e.to_string())?;
    Ok(Revocation { report, flows })
}

/// One line of the drop stream for a sweep that removed flows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevocationRecord {
    pub time: String,
    pub node: String,
    pub revoked: bool,
    /// Flows judged and flows removed by this sweep.
    pub checked: usize,
    pub removed: usize,
    /// The first removed flows.
    pub flows: Vec<RevokedFlow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokedFlow {
    pub from: String,
    pub to: String,
    pub protocol: String,
    /// `null` for ICMP.
    pub port: Option<u16>,
}

impl RevocationRecord {
    /// The record of `r`, naming addresses with `name` (pod names where known).
    pub fn of(
        r: &Revocation,
        node: &str,
        time: String,
        name: impl Fn(&IpAddr) -> String,
    ) -> RevocationRecord {
        RevocationRecord {
            time,
            node: node.to_string(),
            revoked: true,
            checked: r.report.checked,
            removed: r.report.removed,
            flows: r
                .flows
                .iter()
                .map(|f| {
                    let proto = probe_of(f).map(|(p, _)| p);
                    RevokedFlow {
                        from: name(&f.src),
                        to: name(&f.dst),
                        protocol: match (proto, f.protocol) {
                            (Some(Protocol::Icmp), 58) => "ICMPv6".to_string(),
                            (Some(p), _) => p.as_str().to_string(),
                            (None, n) => n.to_string(),
                        },
                        port: match proto {
                            Some(Protocol::Icmp) | None => None,
                            Some(_) => Some(f.dst_port),
                        },
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use palisade_calc::{compute_full, CalcConfig};
    use palisade_dataplane::conntrack::FakeConntrack;
    use palisade_model::manifest;
    use palisade_render::config::EndpointMatch;

    use super::*;

    const CLUSTER: &str = "
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec: {nodeName: n1}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: a, labels: {app: client}}
spec: {nodeName: n2}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: a}
spec: {nodeName: n2}
status: {podIP: 10.0.0.3}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 80}]
";

    fn flow(src: &str, dst: &str, protocol: u8, dport: u16) -> CtFlow {
        CtFlow {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol,
            src_port: 40000,
            dst_port: dport,
            icmp: match protocol {
                1 => Some((8, 0, 9)),
                58 => Some((128, 0, 9)),
                _ => None,
            },
            zone: 0,
        }
    }

    fn state() -> DesiredState {
        let docs = manifest::parse_documents("t.yaml", CLUSTER).unwrap();
        let cluster = palisade_model::convert::cluster(&docs.documents).unwrap();
        compute_full(&CalcConfig::new("n1"), &cluster)
    }

    #[test]
    fn only_flows_the_rules_now_deny_are_removed() {
        let allowed = flow("10.0.0.2", "10.0.0.1", 6, 80);
        let wrong_port = flow("10.0.0.2", "10.0.0.1", 6, 8080);
        let wrong_peer = flow("10.0.0.3", "10.0.0.1", 6, 80);
        let ping = flow("10.0.0.3", "10.0.0.1", 1, 0);
        let not_ours = flow("10.0.0.3", "10.0.0.2", 6, 80);
        let egress_open = flow("10.0.0.1", "10.0.0.3", 17, 53);
        for endpoint_match in [EndpointMatch::Address, EndpointMatch::Interface] {
            let table = FakeConntrack::new(vec![
                allowed.clone(),
                wrong_port.clone(),
                wrong_peer.clone(),
                ping.clone(),
                not_ours.clone(),
                egress_open.clone(),
            ]);
            let cfg = RenderConfig {
                endpoint_match,
                ..RenderConfig::default()
            };
            let r = revoke(&state(), &cfg, &table, 100).unwrap();
            assert_eq!(
                (r.report.checked, r.report.removed),
                (5, 3),
                "{endpoint_match:?}: {r:?}"
            );
            assert_eq!(
                r.flows,
                vec![wrong_port.clone(), wrong_peer.clone(), ping.clone()]
            );
            assert_eq!(
                table.snapshot(),
                vec![allowed.clone(), not_ours.clone(), egress_open.clone()]
            );
        }
    }

    #[test]
    fn the_record_names_pods_and_leaves_icmp_without_port() {
        let r = Revocation {
            report: SweepReport {
                checked: 3,
                removed: 2,
                gone: 0,
            },
            flows: vec![
                flow("10.0.0.3", "10.0.0.1", 6, 80),
                flow("fd00::3", "fd00::1", 58, 0),
            ],
        };
        let rec = RevocationRecord::of(&r, "n1", "t".into(), |ip| match ip.to_string().as_str() {
            "10.0.0.1" => "a/web".into(),
            other => other.into(),
        });
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(json["revoked"], true);
        assert_eq!(json["removed"], 2);
        assert_eq!(json["flows"][0]["to"], "a/web");
        assert_eq!(json["flows"][0]["port"], 80);
        assert_eq!(json["flows"][1]["protocol"], "ICMPv6");
        assert!(json["flows"][1]["port"].is_null());
    }
}
