//! What the nftables backend writes: the sets, verdict maps and chains of `table inet
//! palisade`, each rule identified by its `pal:` hash.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::error::DataplaneError;
use crate::report::RuleOrigin;

pub const TABLE_FAMILY: &str = "inet";
pub const TABLE_NAME: &str = "palisade";

/// A named set (`map_to: None`) or map (`map_to: Some("verdict")`). Build it with
/// [`NftSet::new`], which puts elements and flags in the form the kernel reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftSet {
    /// Key types; more than one is a concatenation (`ipv4_addr . inet_proto . inet_service`).
    pub key_type: Vec<String>,
    pub map_to: Option<String>,
    /// `interval`, … (kept sorted).
    pub flags: Vec<String>,
    /// Elements in nft syntax (`10.0.0.1`, `10.1.0.0/16`, `10.0.0.1 . tcp . 80`,
    /// `"veth1" : jump pal-tw-x`); [`canonical_element`] normalises them.
    pub elements: BTreeSet<String>,
}

impl NftSet {
    /// A set with its elements made canonical ([`canonical_element`]) and flags sorted.
    pub fn new(
        key_type: Vec<String>,
        map_to: Option<String>,
        mut flags: Vec<String>,
        elements: impl IntoIterator<Item = String>,
    ) -> NftSet {
        flags.sort();
        NftSet {
            key_type,
            map_to,
            flags,
            elements: elements
                .into_iter()
                .map(|e| canonical_element(&e))
                .collect(),
        }
    }

    /// Same type, map type and flags (elements aside).
    pub fn same_shape(&self, other: &NftSet) -> bool {
        self.key_type == other.key_type && self.map_to == other.map_to && self.flags == other.flags
    }
}

/// The hook of a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// `filter`.
    pub kind: String,
    /// `forward`, `input`, `output`.
    pub hook: String,
    pub priority: i32,
    /// `accept` or `drop`.
    pub policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftRule {
    pub hash: String,
    /// The statement without its comment (the backend appends `comment "pal:<hash>"`).
    pub body: String,
    pub origin: Option<RuleOrigin>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftChain {
    pub base: Option<BaseChain>,
    pub rules: Vec<NftRule>,
}

/// Everything in `table inet palisade`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftProgram {
    /// Shared, so that unchanged sets cost nothing to keep, compare and remember.
    pub sets: BTreeMap<String, Arc<NftSet>>,
    pub chains: BTreeMap<String, NftChain>,
}

fn is_name(s: &str) -> bool {
    s.starts_with("pal")
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl NftProgram {
    /// Checks names, hashes and statement text before anything is written. Elements of sets
    /// shared with `previous` (already checked) are not checked again.
    pub fn validate(&self, previous: &NftProgram) -> Result<(), DataplaneError> {
        self.validate_sets(previous)?;
        for (name, chain) in &self.chains {
            self.validate_chain(name, chain)?;
        }
        Ok(())
    }

    /// The checks of [`NftProgram::validate`] for a program patched in place, whose patcher
    /// checked the elements and chains it changed ([`NftProgram::validate_chain`]): the sets'
    /// names and types only. Every rule of a node is ~250 kB of text at 110 pods; checking
    /// it all again took 1.5–2 ms of every update.
    pub fn validate_patched(&self) -> Result<(), DataplaneError> {
        self.validate_sets(self)
    }

    /// Set names and types; the elements of sets not shared with `previous`.
    fn validate_sets(&self, previous: &NftProgram) -> Result<(), DataplaneError> {
        for (name, set) in &self.sets {
            let checked = previous.sets.get(name).is_some_and(|p| Arc::ptr_eq(p, set));
            if !is_name(name) {
                return Err(DataplaneError::invalid(
                    format!("nft set {name:?}"),
                    "name must start with pal and use [A-Za-z0-9_-]",
                ));
            }
            if set.key_type.is_empty()
                || !set.key_type.iter().all(|t| is_word(t))
                || !set.flags.iter().all(|t| is_word(t))
                || !set.map_to.as_deref().is_none_or(is_word)
            {
                return Err(DataplaneError::invalid(
                    format!("nft set {name}"),
                    "type, flags and map type must be plain words",
                ));
            }
            // Skipped without a walk: at 30k+ elements even an idle iteration costs ms.
            let unchecked = if checked { None } else { Some(&set.elements) };
            for e in unchecked.into_iter().flatten() {
                if e.contains(['\n', '\r', ',', '{', '}', ';', '#']) {
                    return Err(DataplaneError::invalid(
                        format!("nft set {name}"),
                        format!("element {e:?} contains a separator"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Name, base, rule hashes and statements of one chain, and that its jumps land on
    /// chains of this program.
    pub fn validate_chain(&self, name: &str, chain: &NftChain) -> Result<(), DataplaneError> {
        if !name.starts_with("pal-") || !is_name(name) {
            return Err(DataplaneError::invalid(
                format!("nft chain {name:?}"),
                "name must start with pal- and use [A-Za-z0-9_-]",
            ));
        }
        if let Some(b) = &chain.base {
            if !is_word(&b.kind) || !is_word(&b.hook) || !is_word(&b.policy) {
                return Err(DataplaneError::invalid(
                    format!("nft chain {name}"),
                    "base chain type, hook and policy must be plain words",
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for r in &chain.rules {
            if r.hash.is_empty()
                || !r
                    .hash
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                || !seen.insert(r.hash.as_str())
            {
                return Err(DataplaneError::invalid(
                    format!("nft chain {name}"),
                    format!(
                        "rule hash {:?} must be [A-Za-z0-9_-] and unique in its chain",
                        r.hash
                    ),
                ));
            }
            if r.body.contains(['\n', '\r', ';', '#']) || r.body.contains(" comment \"") {
                return Err(DataplaneError::invalid(
                    format!("nft chain {name} rule {}", r.hash),
                    "statement must be one line without its own comment",
                ));
            }
            for target in jump_targets(&r.body) {
                if !self.chains.contains_key(target) {
                    return Err(DataplaneError::invalid(
                        format!("nft chain {name} rule {}", r.hash),
                        format!("jumps to {target}, which the program does not define"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Targets of `jump`/`goto` in a statement.
pub(crate) fn jump_targets(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut it = body.split_whitespace();
    while let Some(tok) = it.next() {
        if matches!(tok, "jump" | "goto") {
            if let Some(t) = it.next() {
                out.push(t.trim_end_matches([',', '}']));
            }
        }
    }
    out
}

/// An element in the form the backend compares with what it reads back: addresses and
/// prefixes canonical (host prefixes bare), ranges `a-b`, concatenations `a . b . c`, map
/// entries `key : verdict`, single spaces.
pub fn canonical_element(e: &str) -> String {
    let (key, value) = match e.split_once(" : ") {
        Some((k, v)) => (
            k.trim(),
            Some(v.split_whitespace().collect::<Vec<_>>().join(" ")),
        ),
        None => (e.trim(), None),
    };
    let key = key
        .split(" . ")
        .map(|part| canonical_atom(part.trim()))
        .collect::<Vec<_>>()
        .join(" . ");
    match value {
        Some(v) => format!("{key} : {v}"),
        None => key,
    }
}

fn canonical_atom(s: &str) -> String {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return ip.to_string();
    }
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        let net = net.trunc();
        return if net.prefix_len() == net.max_prefix_len() {
            net.addr().to_string()
        } else {
            net.to_string()
        };
    }
    if let Some((a, b)) = s.split_once('-') {
        if let (Ok(a), Ok(b)) = (a.parse::<std::net::IpAddr>(), b.parse::<std::net::IpAddr>()) {
            return range_text(a, b);
        }
    }
    s.to_string()
}

/// A range as nft prints it back: one address bare, an exact prefix as `a/len`, else `a-b`.
fn range_text(a: std::net::IpAddr, b: std::net::IpAddr) -> String {
    let (x, y, bits) = match (a, b) {
        (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => {
            (u32::from(a) as u128, u32::from(b) as u128, 32u32)
        }
        (std::net::IpAddr::V6(a), std::net::IpAddr::V6(b)) => {
            (u128::from(a), u128::from(b), 128u32)
        }
        _ => return format!("{a}-{b}"),
    };
    if x == y {
        return a.to_string();
    }
    if y > x {
        let Some(size) = (y - x).checked_add(1) else {
            return format!("{a}/0");
        };
        if size.is_power_of_two() && x % size == 0 {
            let len = bits - size.trailing_zeros();
            return format!("{a}/{len}");
        }
    }
    format!("{a}-{b}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_canonical() {
        assert_eq!(canonical_element("10.0.0.1/32"), "10.0.0.1");
        assert_eq!(canonical_element("fd00:0::1/64"), "fd00::/64");
        assert_eq!(
            canonical_element("10.0.0.1 .  tcp . 80"),
            "10.0.0.1 . tcp . 80"
        );
        assert_eq!(canonical_element("10.0.0.0-10.0.0.255"), "10.0.0.0/24");
        assert_eq!(canonical_element("10.0.0.4-10.0.0.4"), "10.0.0.4");
        assert_eq!(canonical_element("10.0.0.1-10.0.0.4"), "10.0.0.1-10.0.0.4");
        assert_eq!(
            canonical_element("\"veth1\" :   jump pal-tw-a"),
            "\"veth1\" : jump pal-tw-a"
        );
    }
}
