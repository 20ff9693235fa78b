//! The kernel's connection tracking table, for revoking established connections that new
//! rules deny (`palisade agent --established revoke`): list the tracked flows of the node's
//! network namespace, delete one by its original tuple.
//!
//! [`NetlinkConntrack`] speaks ctnetlink (nfnetlink subsystem 1) on a socket opened inside
//! the namespace; [`FakeConntrack`] keeps flows in memory for tests without root. The wire
//! format lives in [`wire`], pure and unit-tested.

mod netlink;
pub mod wire;

use std::net::IpAddr;
use std::sync::Mutex;

pub use netlink::NetlinkConntrack;

use crate::error::DataplaneError;

/// One tracked connection, by the tuple of its first packet (the original direction).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CtFlow {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6).
    pub protocol: u8,
    /// Ports for TCP, UDP and SCTP; 0 otherwise.
    pub src_port: u16,
    pub dst_port: u16,
    /// ICMP echo: (type, code, id).
    pub icmp: Option<(u8, u8, u16)>,
    /// Conntrack zone (0 unless something assigned one).
    pub zone: u16,
}

/// The table of one network namespace.
pub trait Conntrack: Send + Sync {
    /// Every tracked flow of both families.
    fn flows(&self) -> Result<Vec<CtFlow>, DataplaneError>;
    /// Deletes one flow; `Ok(false)` when it was already gone.
    fn delete(&self, flow: &CtFlow) -> Result<bool, DataplaneError>;
}

/// An in-memory table for tests.
#[derive(Debug, Default)]
pub struct FakeConntrack {
    flows: Mutex<Vec<CtFlow>>,
}

impl FakeConntrack {
    pub fn new(flows: Vec<CtFlow>) -> Self {
        FakeConntrack {
            flows: Mutex::new(flows),
        }
    }

    /// What is left.
    pub fn snapshot(&self) -> Vec<CtFlow> {
        self.flows.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

impl Conntrack for FakeConntrack {
    fn flows(&self) -> Result<Vec<CtFlow>, DataplaneError> {
        Ok(self.snapshot())
    }

    fn delete(&self, flow: &CtFlow) -> Result<bool, DataplaneError> {
        let mut flows = self
            .flows
            .lock()
            .map_err(|_| DataplaneError::Netlink("fake conntrack poisoned".into()))?;
        let before = flows.len();
        flows.retain(|f| f != flow);
        Ok(flows.len() != before)
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Flows looked at (those `judge` was asked about).
    pub checked: usize,
    /// Flows deleted because `judge` denied them.
    pub removed: usize,
    /// Flows `judge` denied but the kernel had already forgotten.
    pub gone: usize,
}

/// Deletes every flow that `judge` says the current rules would not admit as a new
/// connection (`Some(false)`); flows it has no opinion on (`None`: not ours) are left alone.
/// At most `max_checked` flows are judged per sweep (the rest waits for the next one).
pub fn sweep(
    table: &dyn Conntrack,
    max_checked: usize,
    mut judge: impl FnMut(&CtFlow) -> Option<bool>,
) -> Result<SweepReport, DataplaneError> {
    let mut report = SweepReport::default();
    for flow in table.flows()? {
        if report.checked >= max_checked {
            break;
        }
        let Some(allowed) = judge(&flow) else {
            continue;
        };
        report.checked += 1;
        if !allowed {
            if table.delete(&flow)? {
                report.removed += 1;
            } else {
                report.gone += 1;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(src: &str, dst: &str, dport: u16) -> CtFlow {
        CtFlow {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: 6,
            src_port: 40000,
            dst_port: dport,
            icmp: None,
            zone: 0,
        }
    }

    #[test]
    fn sweep_deletes_only_what_the_judge_denies() {
        let keep = tcp("10.0.0.1", "10.0.0.2", 80);
        let cut = tcp("10.0.0.3", "10.0.0.2", 80);
        let foreign = tcp("192.0.2.1", "192.0.2.2", 22);
        let table = FakeConntrack::new(vec![keep.clone(), cut.clone(), foreign.clone()]);
        let report = sweep(&table, 100, |f| {
            if f.src.to_string().starts_with("192.0.2.") {
                None
            } else {
                Some(f.src.to_string() != "10.0.0.3")
            }
        })
        .unwrap();
        assert_eq!(
            report,
            SweepReport {
                checked: 2,
                removed: 1,
                gone: 0
            }
        );
        assert_eq!(table.snapshot(), vec![keep, foreign]);
    }

    #[test]
    fn sweep_stops_at_its_budget() {
        let flows: Vec<CtFlow> = (0..10)
            .map(|i| tcp(&format!("10.0.0.{i}"), "10.0.1.1", 80))
            .collect();
        let table = FakeConntrack::new(flows);
        let report = sweep(&table, 4, |_| Some(false)).unwrap();
        assert_eq!((report.checked, report.removed), (4, 4));
        assert_eq!(table.snapshot().len(), 6);
    }
}
