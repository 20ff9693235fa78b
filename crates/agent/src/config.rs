//! [`AgentConfig`]: everything one agent needs to know about its node, checked once at start
//! (node name, datastore-independent knobs, dataplane kind, mark bits, timers, metrics address),
//! and the parsers the command line uses for its values.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use palisade_calc::{CalcConfig, IfaceNaming};
pub use palisade_dataplane::IncrementalMode;
pub use palisade_render::config::EndpointMatch;
use palisade_render::RenderConfig;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A configuration value that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "bad node name {0:?}: must be non-empty, without '/', control characters or a leading '_'"
    )]
    Node(String),
    #[error("bad interface prefix {prefix:?}: {reason}")]
    IfacePrefix { prefix: String, reason: String },
    #[error("bad {field} {value:?}: {reason}")]
    Number {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("bad duration {value:?}: {reason} (examples: 30s, 500ms, 2m)")]
    Duration { value: String, reason: String },
    #[error("bad mark bits: {0}")]
    Marks(String),
    #[error("unknown dataplane {0:?}: expected iptables or nftables")]
    Dataplane(String),
    #[error("bad network namespace name {0:?}: use letters, digits, '-', '_' or '.'")]
    Netns(String),
}

/// Which kernel packet filter the agent programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataplaneKind {
    Iptables,
    Nftables,
}

impl DataplaneKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DataplaneKind::Iptables => "iptables",
            DataplaneKind::Nftables => "nftables",
        }
    }
}

impl std::fmt::Display for DataplaneKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataplaneKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "iptables" => Ok(DataplaneKind::Iptables),
            "nftables" | "nft" => Ok(DataplaneKind::Nftables),
            _ => Err(ConfigError::Dataplane(s.to_string())),
        }
    }
}

/// NFLOG group the agent logs policy drops to and reads them from (group 1 is the policies'
/// `Log` rules').
pub const DEFAULT_DROP_LOG_GROUP: u16 = 2;

/// Default minimum time between two applies under load.
pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_millis(50);
/// Default time between two dataplane resyncs (re-read the kernel, repair drift).
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// The agent's configuration; build it with [`AgentConfig::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The node this agent programs (`Endpoint::node` of its local pods).
    pub node: String,
    pub dataplane: DataplaneKind,
    /// Program the packet filter of this network namespace instead of the agent's own.
    pub netns: Option<String>,
    /// Interface prefixes of workloads; the first names our pods' veths and their chains, and
    /// a pod's interface under any of them is dispatched to its chains.
    pub iface_prefixes: Vec<String>,
    /// Mark bits, NFLOG group, families and endpoint matching (`render.endpoint_match`:
    /// address, the default, or interface) of the rendered rules.
    pub render: RenderConfig,
    /// Interface matching: how the CNI names pod interfaces (Palisade's hash or Calico's).
    pub iface_naming: IfaceNaming,
    /// At start, turn on `net.bridge.bridge-nf-call-iptables`/`-ip6tables` (loading
    /// `br_netfilter`) in the programmed namespace where they are off; when false and a
    /// sysctl is off the agent reports not ready, naming it.
    pub set_bridge_sysctls: bool,
    /// Time between dataplane resyncs.
    pub resync_interval: Duration,
    /// Minimum time between two applies under load.
    pub batch_interval: Duration,
    /// Where `/metrics`, `/healthz`, `/readyz` and `/counters` are served; `None`: nowhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Whether an apply re-renders only what changed (nftables), and whether it checks that
    /// against a full render (tests). A full render still happens at start, after a failed
    /// apply and at every resync.
    pub incremental: IncrementalMode,
    /// What happens to established connections that new rules deny: they go on (`Keep`,
    /// conntrack's default) or are cut after the apply (`Revoke`, see [`crate::revoke`]).
    pub established: crate::revoke::Established,
}

impl AgentConfig {
    /// Defaults for `node`: iptables, prefix `pal`, default marks, drops logged to NFLOG group
    /// [`DEFAULT_DROP_LOG_GROUP`] (rate-limited), 30 s resync, 50 ms batches, no metrics server.
    pub fn new(node: impl Into<String>) -> Self {
        AgentConfig {
            node: node.into(),
            dataplane: DataplaneKind::Iptables,
            netns: None,
            iface_prefixes: vec![palisade_calc::config::DEFAULT_IFACE_PREFIX.to_string()],
            render: RenderConfig {
                drop_log_group: Some(DEFAULT_DROP_LOG_GROUP),
                ..RenderConfig::default()
            },
            iface_naming: IfaceNaming::Palisade,
            set_bridge_sysctls: true,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            batch_interval: DEFAULT_BATCH_INTERVAL,
            metrics_addr: None,
            incremental: IncrementalMode::On,
            established: crate::revoke::Established::Keep,
        }
    }

    /// Checks every field; the agent refuses to start on the first error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_node(&self.node)?;
        if self.iface_prefixes.is_empty() {
            return Err(ConfigError::IfacePrefix {
                prefix: String::new(),
                reason: "at least one prefix is needed".into(),
            });
        }
        for p in &self.iface_prefixes {
            check_prefix(p)?;
        }
        if let Some(ns) = &self.netns {
            check_netns(ns)?;
        }
        self.render
            .validate()
            .map_err(|e| ConfigError::Marks(e.to_string()))?;
        if self.resync_interval.is_zero() {
            return Err(ConfigError::Duration {
                value: "0s".into(),
                reason: "the resync interval must be positive".into(),
            });
        }
        Ok(())
    }

    /// What the calculation needs: the node and the interface prefixes, the first primary
    /// (it names the endpoint chains); every prefix's interface name is dispatched.
    pub fn calc_config(&self) -> CalcConfig {
        let mut c = CalcConfig::with_prefixes(self.node.clone(), &self.iface_prefixes);
        c.iface_naming = self.iface_naming;
        c
    }

    /// How local pods are found: `address`, or `interface (palisade naming)`.
    pub fn endpoint_match(&self) -> EndpointMatch {
        self.render.endpoint_match
    }
}

fn check_node(node: &str) -> Result<(), ConfigError> {
    if node.is_empty()
        || node.contains('/')
        || node.starts_with('_')
        || node.chars().any(char::is_control)
    {
        return Err(ConfigError::Node(node.to_string()));
    }
    Ok(())
}

fn check_netns(ns: &str) -> Result<(), ConfigError> {
    let ok = !ns.is_empty()
        && ns != "."
        && ns != ".."
        && ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Netns(ns.to_string()))
    }
}

/// Longest prefix: interface names are 15 characters and need a few hash digits after it.
pub const MAX_PREFIX_LEN: usize = 11;

fn check_prefix(p: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::IfacePrefix {
        prefix: p.to_string(),
        reason: reason.to_string(),
    };
    if p.is_empty() {
        return Err(bad("is empty"));
    }
    if p.len() > MAX_PREFIX_LEN {
        return Err(bad("is longer than 11 characters"));
    }
    if !p
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad("may contain only letters, digits, '-' and '_'"));
    }
    Ok(())
}

/// Flattens repeated and comma-separated prefix arguments (`--iface-prefix cali,pal
/// --iface-prefix tap`) in order, dropping duplicates; each one is checked.
pub fn parse_prefixes<S: AsRef<str>>(values: &[S]) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        for p in v.as_ref().split(',') {
            let p = p.trim();
            check_prefix(p)?;
            if !out.iter().any(|o| o == p) {
                out.push(p.to_string());
            }
        }
    }
    if out.is_empty() {
        return Err(ConfigError::IfacePrefix {
            prefix: String::new(),
            reason: "at least one prefix is needed".into(),
        });
    }
    Ok(out)
}

/// A 32-bit mark value, hexadecimal (`0x10000`) or decimal.
pub fn parse_mark(field: &'static str, s: &str) -> Result<u32, ConfigError> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => t.parse::<u32>(),
    };
    parsed.map_err(|e| ConfigError::Number {
        field,
        value: s.to_string(),
        reason: e.to_string(),
    })
}

/// A duration such as `30s`, `500ms` or `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s.trim()).map_err(|e| ConfigError::Duration {
        value: s.to_string(),
        reason: e.to_string(),
    })
}

/// Mark bits as given on the command line: the mask and the accept and pass bits; the two
/// scratch bits are the lowest free bits of the mask after those.
pub fn render_marks(mask: u32, accept: u32, pass: u32) -> Result<RenderConfig, ConfigError> {
    let mut scratch = Vec::new();
    let mut bit = 1u32;
    while bit != 0 && scratch.len() < 2 {
        if mask & bit != 0 && bit != accept && bit != pass {
            scratch.push(bit);
        }
        bit = bit.wrapping_shl(1);
    }
    let [s0, s1] = scratch[..] else {
        return Err(ConfigError::Marks(format!(
            "mask {mask:#x} needs at least two free bits besides accept {accept:#x} and pass {pass:#x}"
        )));
    };
    let cfg = RenderConfig {
        mark_mask: mask,
        accept_mark: accept,
        pass_mark: pass,
        scratch_marks: [s0, s1],
        ..RenderConfig::default()
    };
    cfg.validate()
        .map_err(|e| ConfigError::Marks(e.to_string()))?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_split_on_commas_and_repeat() {
        let p = parse_prefixes(&["cali,pal", "tap", "pal"]).unwrap();
        assert_eq!(p, vec!["cali", "pal", "tap"]);
        assert!(parse_prefixes(&["pal,"]).is_err());
        assert!(parse_prefixes(&["pa l"]).is_err());
        assert!(parse_prefixes(&["averylongprefix"]).is_err());
        assert!(parse_prefixes::<&str>(&[]).is_err());
    }

    #[test]
    fn marks_parse_hex_and_decimal_and_are_checked() {
        assert_eq!(parse_mark("mark", "0x10000").unwrap(), 0x10000);
        assert_eq!(parse_mark("mark", "65536").unwrap(), 0x10000);
        assert!(parse_mark("mark", "0xzz").is_err());
        let cfg = render_marks(0xffff_0000, 0x1_0000, 0x2_0000).unwrap();
        assert_eq!(cfg, RenderConfig::default());
        let err = render_marks(0xffff_0000, 0x1, 0x2_0000).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
        assert!(render_marks(0x3_0000, 0x1_0000, 0x2_0000).is_err());
    }

    #[test]
    fn durations_use_humantime() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon")
            .unwrap_err()
            .to_string()
            .contains("soon"));
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut c = AgentConfig::new("n1");
        c.validate().unwrap();
        c.node = "a/b".into();
        assert!(matches!(c.validate(), Err(ConfigError::Node(_))));
        c.node = "n1".into();
        c.netns = Some("../etc".into());
        assert!(matches!(c.validate(), Err(ConfigError::Netns(_))));
        c.netns = None;
        c.iface_prefixes = vec!["cali".into(), "pal".into()];
        let calc = c.calc_config();
        assert_eq!(calc.iface_prefix, "cali");
        assert_eq!(calc.extra_iface_prefixes, vec!["pal"]);
        c.iface_prefixes = vec!["pal".into()];
        assert_eq!(c.calc_config(), CalcConfig::new("n1"));
        assert_eq!(
            "nft".parse::<DataplaneKind>().unwrap(),
            DataplaneKind::Nftables
        );
        assert!("ebpf".parse::<DataplaneKind>().is_err());
    }
}
