//! [`RenderConfig`]: the knobs of the rendered layout (mark bits, logging, address families).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::RenderError;

/// How the ruleset is laid out. `Default` gives the documented defaults: mark mask
/// `0xffff0000` with accept `0x10000`, pass `0x20000`, scratch `0x40000`/`0x80000`; no NFLOG on
/// drops (end of tier, Deny rules), at most 100 logged per second and rule when on; policy `Log` rules to NFLOG group 1; both address families.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderConfig {
    /// The mark bits Palisade may use; every other bit is left alone.
    pub mark_mask: u32,
    /// Set by a policy chain when an Allow rule matched.
    pub accept_mark: u32,
    /// Set by a policy chain when a Pass rule matched.
    pub pass_mark: u32,
    /// Reserved for later use; validated to be distinct bits inside the mask.
    pub scratch_marks: [u32; 2],
    /// NFLOG group for drops (the end of a tier, and Deny rules); `None` (default): no log.
    pub drop_log_group: Option<u16>,
    /// Most drops per second each drop rule logs (a kernel `limit`, so that a flood cannot
    /// overload the reader); the burst is as large. 0: no limit.
    #[serde(default = "default_drop_log_rate")]
    pub drop_log_rate: u32,
    /// NFLOG group for policy rules with action Log.
    pub log_group: u16,
    /// Render IPv4 (iptables, `pal4-` sets).
    pub ipv4: bool,
    /// Render IPv6 (ip6tables, `pal6-` sets).
    pub ipv6: bool,
    /// How a packet finds its local pod: by address (default) or by interface name.
    #[serde(default)]
    pub endpoint_match: EndpointMatch,
    /// How an endpoint's NetworkPolicy tiers are laid out on nftables ([`NftLayout`]). The
    /// iptables backend always walks chains: callers rendering for it use [`NftLayout::Chains`].
    #[serde(default)]
    pub nft_layout: NftLayout,
    /// Anti-spoofing: where each local pod address may enter the node (learned by the agent
    /// from the kernel). A packet from an address of this map that entered anywhere else is
    /// dropped and counted (`None`: it may enter nowhere); an address not in the map is not
    /// checked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_bindings: BTreeMap<IpAddr, Option<SourceBinding>>,
}

/// Where a local pod's address may enter the node: the interface the route to it uses
/// (`iface`: the pod's host-side veth for routed pods, the bridge for bridged ones) and, on a
/// bridge, the bridge port (the pod's host-side veth).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourceBinding {
    pub iface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_port: Option<String>,
}

/// How a packet finds the local pod it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMatch {
    /// By the pod's addresses (every family): to one of them → its ingress chain, from one of
    /// them → its egress chain. Works under any CNI.
    #[default]
    Address,
    /// By the pod's host-side interface name (input → egress, output → ingress); needs a CNI
    /// whose interface names are known (Palisade's own, Calico's).
    Interface,
}

impl EndpointMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointMatch::Address => "address",
            EndpointMatch::Interface => "interface",
        }
    }
}

impl std::fmt::Display for EndpointMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EndpointMatch {
    type Err = RenderError;

    fn from_str(s: &str) -> Result<Self, RenderError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "address" | "addr" => Ok(EndpointMatch::Address),
            "interface" | "iface" => Ok(EndpointMatch::Interface),
            _ => Err(RenderError::Config(format!(
                "unknown endpoint match {s:?}: expected address or interface"
            ))),
        }
    }
}

/// Default [`RenderConfig::drop_log_rate`]: logged drops per second and drop rule.
/// The layout of the tiers whose rules are all Allow (the NetworkPolicy tier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NftLayout {
    /// One jump per selecting policy into that policy's chain: a new connection's cost grows
    /// with the policies that select its endpoint.
    #[default]
    Chains,
    /// One lookup per tier, family and kind of port match: the allow rules of an endpoint,
    /// direction and tier compiled into an `address . protocol . port` interval set (and an
    /// address set for rules that allow every protocol); see `crate::build::flat`.
    Flat,
}

impl NftLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            NftLayout::Chains => "chains",
            NftLayout::Flat => "flat",
        }
    }
}

impl std::fmt::Display for NftLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NftLayout {
    type Err = RenderError;

    fn from_str(s: &str) -> Result<Self, RenderError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "chains" => Ok(NftLayout::Chains),
            "flat" => Ok(NftLayout::Flat),
            _ => Err(RenderError::Config(format!(
                "unknown nft layout {s:?}: expected flat or chains"
            ))),
        }
    }
}

pub const DEFAULT_DROP_LOG_RATE: u32 = 100;

fn default_drop_log_rate() -> u32 {
    DEFAULT_DROP_LOG_RATE
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            mark_mask: 0xffff_0000,
            accept_mark: 0x1_0000,
            pass_mark: 0x2_0000,
            scratch_marks: [0x4_0000, 0x8_0000],
            drop_log_group: None,
            drop_log_rate: DEFAULT_DROP_LOG_RATE,
            log_group: 1,
            ipv4: true,
            ipv6: true,
            endpoint_match: EndpointMatch::Address,
            nft_layout: NftLayout::Chains,
            source_bindings: BTreeMap::new(),
        }
    }
}

impl RenderConfig {
    /// Checks that every mark is a single bit inside the mask and that no two are equal.
    pub fn validate(&self) -> Result<(), RenderError> {
        let named = [
            ("accept_mark", self.accept_mark),
            ("pass_mark", self.pass_mark),
            ("scratch_marks[0]", self.scratch_marks[0]),
            ("scratch_marks[1]", self.scratch_marks[1]),
        ];
        let mut seen = 0u32;
        for (field, bit) in named {
            if bit.count_ones() != 1 {
                return Err(RenderError::Config(format!(
                    "{field} {bit:#x} must be exactly one bit"
                )));
            }
            if bit & self.mark_mask != bit {
                return Err(RenderError::Config(format!(
                    "{field} {bit:#x} is outside mark_mask {:#x}",
                    self.mark_mask
                )));
            }
            if seen & bit != 0 {
                return Err(RenderError::Config(format!(
                    "{field} {bit:#x} is used twice"
                )));
            }
            seen |= bit;
        }
        for (ip, b) in self
            .source_bindings
            .iter()
            .filter_map(|(ip, b)| Some((ip, b.as_ref()?)))
        {
            for name in std::iter::once(&b.iface).chain(b.bridge_port.iter()) {
                if !crate::names::iface_ok(name) {
                    return Err(RenderError::Config(format!(
                        "source binding of {ip}: interface name {name:?} is not usable in rules"
                    )));
                }
            }
        }
        if !self.ipv4 && !self.ipv6 {
            return Err(RenderError::Config(
                "at least one of ipv4 and ipv6 must be enabled".into(),
            ));
        }
        Ok(())
    }

    /// The matches a drop's log rule carries besides its own: the rate limit, if any.
    pub fn drop_log_limit(&self) -> Option<crate::ir::Match> {
        (self.drop_log_rate > 0).then_some(crate::ir::Match::Limit {
            per_second: self.drop_log_rate,
            burst: self.drop_log_rate,
        })
    }

    /// Staged evaluation: set when an endpoint's staged tiers accept the packet (scratch 0).
    pub fn staged_accept_mark(&self) -> u32 {
        self.scratch_marks[0]
    }

    /// Staged evaluation: set by a Deny rule of a staged-evaluation policy chain (scratch 1).
    pub fn staged_deny_mark(&self) -> u32 {
        self.scratch_marks[1]
    }

    /// Accept and pass bits together (cleared at the start of every tier).
    pub fn verdict_marks(&self) -> u32 {
        self.accept_mark | self.pass_mark
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        RenderConfig::default().validate().unwrap();
    }

    #[test]
    fn rejects_bits_outside_mask_and_duplicates() {
        let mut c = RenderConfig {
            accept_mark: 0x1,
            ..RenderConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("outside"));
        c.accept_mark = 0x2_0000;
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
        c.accept_mark = 0x3_0000;
        assert!(c.validate().unwrap_err().to_string().contains("one bit"));
    }
}
