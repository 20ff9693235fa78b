//! Every name the lab gives to something in the kernel, derived from the lab's name so that a
//! later `lab down` (or a scan after a crash) finds all of it by prefix.
//!
//! * lab id: `l` + 6 hex digits of SHA-256(name); prefix `pal-<id>-`;
//! * node namespace `pal-<id>-<node>`; pod namespace `pal-<id>-p<10 hex of ns/name>`;
//! * pod veth, node side: [`palisade_model::endpoint::interface_name`]`("pal", id)` (calc and
//!   render match workload interfaces by that name); pod side `eth0`;
//! * link between nodes i and j: `lnk-<j>` in node i (node indices, 1-based).

use std::path::PathBuf;

use palisade_model::EndpointId;
use sha2::{Digest, Sha256};

use crate::error::{LabError, Result};

/// Where lab state lives: `<STATE_ROOT>/<name>/`.
pub const STATE_ROOT: &str = "/run/palisade/lab";

/// The gateway address every pod routes through (answered by the node side of its veth,
/// whose MAC is [`GATEWAY_MAC`]), as Calico does.
pub const GATEWAY: &str = "169.254.1.1";
/// MAC of every node-side pod veth.
pub const GATEWAY_MAC: &str = "ee:ee:ee:ee:ee:ee";

fn hex_digest(text: &str, len: usize) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..len.min(hex.len())].to_string()
}

/// A lab's name and the names derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabNames {
    pub name: String,
    pub id: String,
}

impl LabNames {
    /// Lab names are 1-32 characters of `a-z`, `0-9` and `-`.
    pub fn new(name: &str) -> Result<LabNames> {
        let bad = |why: &str| LabError::Name {
            name: name.to_string(),
            why: why.to_string(),
        };
        if name.is_empty() || name.len() > 32 {
            return Err(bad("it must have 1 to 32 characters"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(bad("use only a-z, 0-9 and -"));
        }
        Ok(LabNames {
            name: name.to_string(),
            id: format!("l{}", hex_digest(name, 6)),
        })
    }

    /// The prefix of every network namespace of this lab.
    pub fn prefix(&self) -> String {
        format!("pal-{}-", self.id)
    }

    pub fn node_netns(&self, node: &str) -> String {
        format!("{}{node}", self.prefix())
    }

    pub fn pod_netns(&self, id: &EndpointId) -> String {
        format!("{}p{}", self.prefix(), hex_digest(&id.to_string(), 10))
    }

    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(STATE_ROOT).join(&self.name)
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }

    pub fn socket(&self) -> PathBuf {
        self.state_dir().join("daemon.sock")
    }

    pub fn log_file(&self) -> PathBuf {
        self.state_dir().join("daemon.log")
    }
}

/// The interface in node `from` that leads to node `to` (1-based indices).
pub fn link_name(to: usize) -> String {
    format!("lnk-{to}")
}

/// Node names become namespace-name suffixes and datastore key segments.
pub fn check_node_name(node: &str) -> Result<()> {
    let ok = !node.is_empty()
        && node.len() <= 63
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(LabError::Plan(format!(
            "node name {node:?} is not usable (1-63 characters of a-z, 0-9, '-', '.', '_')"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_prefixed() {
        let n = LabNames::new("lab").unwrap();
        assert_eq!(n.id.len(), 7);
        assert!(n.node_netns("n1").starts_with(&n.prefix()));
        let p = n.pod_netns(&EndpointId::new("x", "a"));
        assert!(p.starts_with(&n.prefix()));
        assert_ne!(p, n.pod_netns(&EndpointId::new("x", "b")));
        assert_ne!(n.id, LabNames::new("lab2").unwrap().id);
        assert_eq!(
            n.state_file(),
            PathBuf::from("/run/palisade/lab/lab/state.json")
        );
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(LabNames::new("").is_err());
        assert!(LabNames::new("A b").is_err());
        assert!(LabNames::new(&"x".repeat(33)).is_err());
        assert!(check_node_name("n1").is_ok());
        assert!(check_node_name("n 1").is_err());
    }
}
