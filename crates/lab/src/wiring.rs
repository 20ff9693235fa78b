//! How a lab wires its pods and how its agents recognize them: the CNI (`bridge`, `ptp` or
//! `palisade`), the address families pods get from IPAM, and the agents' endpoint matching.
//!
//! Rule: `--endpoint-match` defaults to `address`, except under `--cni palisade` (the lab's
//! own wiring, whose node-side interfaces carry the names interface matching expects), where
//! it defaults to `interface`. An explicit `--endpoint-match` always wins.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Who wires a pod into its node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cni {
    /// The reference `bridge` plugin: one Linux bridge `cni0` per node.
    #[default]
    Bridge,
    /// The reference `ptp` plugin: a routed veth per pod.
    Ptp,
    /// The lab's own wiring (veths named for interface matching, gateway 169.254.1.1).
    Palisade,
}

/// The address families IPAM hands out (pods with addresses in their manifest keep those).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    #[default]
    Ipv4,
    Ipv6,
    Dual,
}

/// How the agents recognize a local pod (`palisade agent --endpoint-match`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMatch {
    #[default]
    Address,
    Interface,
}

impl IpFamily {
    pub fn has_v4(self) -> bool {
        matches!(self, IpFamily::Ipv4 | IpFamily::Dual)
    }
    pub fn has_v6(self) -> bool {
        matches!(self, IpFamily::Ipv6 | IpFamily::Dual)
    }
}

impl EndpointMatch {
    /// The matching mode of a lab: the one asked for, else the CNI's default.
    pub fn for_cni(asked: Option<EndpointMatch>, cni: Cni) -> EndpointMatch {
        asked.unwrap_or(match cni {
            Cni::Palisade => EndpointMatch::Interface,
            Cni::Bridge | Cni::Ptp => EndpointMatch::Address,
        })
    }
}

macro_rules! text_enum {
    ($t:ty, $what:literal, $($v:ident => $s:literal),+) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),+ }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok(<$t>::$v),)+
                    other => Err(format!(
                        "{} {other:?} is not one of {}",
                        $what,
                        [$($s),+].join(", ")
                    )),
                }
            }
        }
    };
}

text_enum!(Cni, "CNI", Bridge => "bridge", Ptp => "ptp", Palisade => "palisade");
text_enum!(IpFamily, "IP family", Ipv4 => "ipv4", Ipv6 => "ipv6", Dual => "dual");
text_enum!(EndpointMatch, "endpoint matching", Address => "address", Interface => "interface");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_defaults_to_address_except_on_the_labs_own_wiring() {
        assert_eq!(
            EndpointMatch::for_cni(None, Cni::Bridge),
            EndpointMatch::Address
        );
        assert_eq!(
            EndpointMatch::for_cni(None, Cni::Ptp),
            EndpointMatch::Address
        );
        assert_eq!(
            EndpointMatch::for_cni(None, Cni::Palisade),
            EndpointMatch::Interface
        );
        assert_eq!(
            EndpointMatch::for_cni(Some(EndpointMatch::Address), Cni::Palisade),
            EndpointMatch::Address
        );
    }

    #[test]
    fn names_round_trip() {
        for c in [Cni::Bridge, Cni::Ptp, Cni::Palisade] {
            assert_eq!(c.as_str().parse::<Cni>().unwrap(), c);
        }
        assert_eq!("dual".parse::<IpFamily>().unwrap(), IpFamily::Dual);
        assert!("flannel"
            .parse::<Cni>()
            .unwrap_err()
            .contains("bridge, ptp, palisade"));
        assert_eq!(
            serde_json::to_string(&EndpointMatch::Interface).unwrap(),
            "\"interface\""
        );
    }
}
