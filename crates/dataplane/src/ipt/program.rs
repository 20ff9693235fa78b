//! What the iptables backend writes: ipsets and, per address family, our chains with their
//! rules (each identified by its `pal:` hash) and the kernel chains that jump into them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::DataplaneError;
use crate::report::RuleOrigin;

/// Prefix of every chain we own.
pub const CHAIN_PREFIX: &str = "pal-";
/// Prefixes of the ipsets we own, per family.
pub const SET_PREFIX_V4: &str = "pal4-";
pub const SET_PREFIX_V6: &str = "pal6-";
/// Scratch set used to rewrite a set whole (`create`, fill, `swap`, `destroy`).
pub const TEMP_SET: &str = "pal-tmp";
/// The kernel allows 28 characters in a chain name, 31 in an ipset name.
pub const MAX_CHAIN_NAME: usize = 28;
pub const MAX_SET_NAME: usize = 31;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn ipset_family(self) -> &'static str {
        match self {
            Family::V4 => "inet",
            Family::V6 => "inet6",
        }
    }

    pub fn save_program(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    pub fn restore_program(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        })
    }
}

/// One ipset: type (`hash:net`, `hash:ip,port`), family and members as `ipset save` prints
/// them (`10.0.0.1`, `10.1.0.0/16`, `10.1.2.0/24 nomatch`, `10.0.0.1,tcp:80`). Build it with
/// [`IpsetSpec::new`], which makes members canonical ([`canonical_member`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsetSpec {
    pub kind: String,
    pub family: Family,
    pub members: BTreeSet<String>,
}

impl IpsetSpec {
    /// A set with canonical members; an error names the first member that is none of an
    /// address, a prefix or `address,proto:port` (optionally `nomatch`).
    pub fn new(
        kind: impl Into<String>,
        family: Family,
        members: impl IntoIterator<Item = String>,
    ) -> Result<IpsetSpec, DataplaneError> {
        let mut out = BTreeSet::new();
        for m in members {
            match canonical_member(&m) {
                Some(c) => {
                    out.insert(c);
                }
                None => {
                    return Err(DataplaneError::invalid(
                        "ipset member",
                        format!("{m:?} is not an address, prefix or address,proto:port"),
                    ))
                }
            }
        }
        Ok(IpsetSpec {
            kind: kind.into(),
            family,
            members: out,
        })
    }
}

/// One rule of one of our chains: its hash and its full rule specification (what follows
/// `-A <chain>`, the `pal:<hash>` comment included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptRule {
    pub hash: String,
    pub spec: String,
    pub origin: Option<RuleOrigin>,
}

impl IptRule {
    /// A rule whose `spec` is `body` preceded by the `pal:<hash>` comment.
    pub fn new(hash: impl Into<String>, body: &str, origin: Option<RuleOrigin>) -> Self {
        let hash = hash.into();
        IptRule {
            spec: format!("-m comment --comment \"pal:{hash}\" {body}"),
            hash,
            origin,
        }
    }
}

/// Our chains of one family (`pal-...` → rules) and the hooks: kernel chain (`FORWARD`,
/// `INPUT`, `OUTPUT`) → the chain of ours it jumps to first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IptChains {
    pub chains: BTreeMap<String, Vec<IptRule>>,
    pub hooks: BTreeMap<String, String>,
}

/// Everything the iptables backend owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IptablesProgram {
    /// Shared, so that unchanged sets cost nothing to keep, compare and remember.
    pub sets: BTreeMap<String, Arc<IpsetSpec>>,
    pub v4: IptChains,
    pub v6: IptChains,
}

impl IptablesProgram {
    pub fn chains(&self, family: Family) -> &IptChains {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    pub fn chains_mut(&mut self, family: Family) -> &mut IptChains {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    /// Checks names, hashes and rule text, so that nothing the kernel would misread (or that
    /// is not ours) reaches a restore. Members of sets shared with `previous` (already
    /// checked) are not checked again.
    pub fn validate(&self, previous: &IptablesProgram) -> Result<(), DataplaneError> {
        self.validate_sets(previous)?;
        for family in [Family::V4, Family::V6] {
            for (name, rules) in &self.chains(family).chains {
                self.validate_chain(family, name, rules)?;
            }
            self.validate_hooks(family)?;
        }
        Ok(())
    }

    /// The checks of [`IptablesProgram::validate`] for a program patched in place, whose
    /// patcher checked the members and chains it changed
    /// ([`IptablesProgram::validate_chain`]): set names and types, and the hooks.
    pub fn validate_patched(&self) -> Result<(), DataplaneError> {
        self.validate_sets(self)?;
        for family in [Family::V4, Family::V6] {
            self.validate_hooks(family)?;
        }
        Ok(())
    }

    /// Set names and types; the members of sets not shared with `previous`.
    fn validate_sets(&self, previous: &IptablesProgram) -> Result<(), DataplaneError> {
        for (name, set) in &self.sets {
            let checked = previous.sets.get(name).is_some_and(|p| Arc::ptr_eq(p, set));
            let prefix = match set.family {
                Family::V4 => SET_PREFIX_V4,
                Family::V6 => SET_PREFIX_V6,
            };
            if !name.starts_with(prefix) || name.len() > MAX_SET_NAME || !is_name(name) {
                return Err(DataplaneError::invalid(
                    format!("ipset {name:?}"),
                    format!("name must start with {prefix}, use [A-Za-z0-9_.-] and fit {MAX_SET_NAME} characters"),
                ));
            }
            if !matches!(
                set.kind.as_str(),
                "hash:net" | "hash:ip,port" | "hash:net,port" | "hash:net,iface"
            ) {
                return Err(DataplaneError::invalid(
                    format!("ipset {name}"),
                    format!("unsupported type {:?}", set.kind),
                ));
            }
            // Skipped without a walk: at 30k+ members even an idle iteration costs ms.
            let unchecked = if checked { None } else { Some(&set.members) };
            for m in unchecked.into_iter().flatten() {
                if canonical_member(m).as_deref() != Some(m.as_str()) {
                    return Err(DataplaneError::invalid(
                        format!("ipset {name}"),
                        format!("member {m:?} is not a canonical address, prefix or address,proto:port (use IpsetSpec::new)"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Name, rule hashes and rule text of one chain, and that its jumps to our chains land
    /// on chains of this program's `family`.
    pub fn validate_chain(
        &self,
        family: Family,
        name: &str,
        rules: &[IptRule],
    ) -> Result<(), DataplaneError> {
        let c = self.chains(family);
        check_chain_name(name, family)?;
        let mut seen = BTreeSet::new();
        for r in rules {
            if r.hash.is_empty()
                || !r
                    .hash
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                return Err(DataplaneError::invalid(
                    format!("{family} chain {name}"),
                    format!("rule hash {:?} must be [A-Za-z0-9_-]", r.hash),
                ));
            }
            if !seen.insert(r.hash.as_str()) {
                return Err(DataplaneError::invalid(
                    format!("{family} chain {name}"),
                    format!("rule hash {} appears twice", r.hash),
                ));
            }
            if r.spec.contains(['\n', '\r']) || !r.spec.contains(&format!("pal:{}", r.hash)) {
                return Err(DataplaneError::invalid(
                    format!("{family} chain {name} rule {}", r.hash),
                    "rule must be one line carrying its pal: comment",
                ));
            }
            for target in jump_targets(&r.spec) {
                if target.starts_with(CHAIN_PREFIX) && !c.chains.contains_key(target) {
                    return Err(DataplaneError::invalid(
                        format!("{family} chain {name} rule {}", r.hash),
                        format!("jumps to {target}, which the program does not define"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The kernel chains hooked, and that each hook jumps to one of our chains.
    fn validate_hooks(&self, family: Family) -> Result<(), DataplaneError> {
        let c = self.chains(family);
        for (kernel, target) in &c.hooks {
            if !matches!(kernel.as_str(), "INPUT" | "FORWARD" | "OUTPUT") {
                return Err(DataplaneError::invalid(
                    format!("{family} hook {kernel}"),
                    "only INPUT, FORWARD and OUTPUT of the filter table can be hooked",
                ));
            }
            if !c.chains.contains_key(target) {
                return Err(DataplaneError::invalid(
                    format!("{family} hook {kernel}"),
                    format!("target {target} is not one of the program's chains"),
                ));
            }
        }
        Ok(())
    }
}

fn check_chain_name(name: &str, family: Family) -> Result<(), DataplaneError> {
    if !name.starts_with(CHAIN_PREFIX) || name.len() > MAX_CHAIN_NAME || !is_name(name) {
        return Err(DataplaneError::invalid(
            format!("{family} chain {name:?}"),
            format!("name must start with {CHAIN_PREFIX}, use [A-Za-z0-9_.-] and fit {MAX_CHAIN_NAME} characters"),
        ));
    }
    Ok(())
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Targets of `-j`/`-g`/`--goto`/`--jump` in a rule specification.
pub(crate) fn jump_targets(spec: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut it = spec.split_whitespace();
    while let Some(tok) = it.next() {
        if matches!(tok, "-j" | "-g" | "--jump" | "--goto") {
            if let Some(t) = it.next() {
                out.push(t);
            }
        }
    }
    out
}

/// The hash carried by the jump from `kernel_chain` into `target`.
pub fn jump_hash(kernel_chain: &str, target: &str) -> String {
    let d = Sha256::digest(format!("jump {kernel_chain} {target}").as_bytes());
    let hex: String = d.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("j{hex}")
}

/// The specification of the jump from `kernel_chain` into `target`.
pub fn jump_spec(kernel_chain: &str, target: &str) -> String {
    format!(
        "-m comment --comment \"pal:{}\" -j {target}",
        jump_hash(kernel_chain, target)
    )
}

/// An ipset member in the form `ipset save` prints it: host prefixes without `/32`/`/128`,
/// IPv6 compressed, protocol in lower case, `nomatch` kept. `None` if it is none of those.
pub fn canonical_member(member: &str) -> Option<String> {
    let mut words = member.split_whitespace();
    let entry = words.next()?;
    let mut nomatch = false;
    for w in words {
        if w == "nomatch" {
            nomatch = true;
        } else {
            return None;
        }
    }
    let mut parts = entry.splitn(2, ',');
    let addr = canonical_net(parts.next()?)?;
    let mut out = addr;
    if let Some(port) = parts.next() {
        // `hash:net,iface`: an interface, or `physdev:` and a bridge port.
        let iface = port.strip_prefix("physdev:").unwrap_or(port);
        if !port.contains(':') || port.starts_with("physdev:") {
            if !palisade_render::names::iface_ok(iface) {
                return None;
            }
            out = format!("{out},{port}");
            if nomatch {
                out.push_str(" nomatch");
            }
            return Some(out);
        }
        let (proto, num) = port.split_once(':')?;
        let proto = proto.to_ascii_lowercase();
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp" | "udplite") {
            return None;
        }
        let num: u16 = num.parse().ok()?;
        out = format!("{out},{proto}:{num}");
    }
    if nomatch {
        out.push_str(" nomatch");
    }
    Some(out)
}

fn canonical_net(s: &str) -> Option<String> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Some(ip.to_string());
    }
    let net: ipnet::IpNet = s.parse().ok()?;
    let net = net.trunc();
    if net.prefix_len() == net.max_prefix_len() {
        Some(net.addr().to_string())
    } else {
        Some(net.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_canonical() {
        assert_eq!(canonical_member("10.0.0.1/32").as_deref(), Some("10.0.0.1"));
        assert_eq!(
            canonical_member("10.1.2.3/16").as_deref(),
            Some("10.1.0.0/16")
        );
        assert_eq!(
            canonical_member("fd00:0::2,UDP:53").as_deref(),
            Some("fd00::2,udp:53")
        );
        assert_eq!(
            canonical_member("10.1.2.0/24  nomatch").as_deref(),
            Some("10.1.2.0/24 nomatch")
        );
        assert_eq!(canonical_member("10.0.0.1; rm -rf /"), None);
        assert_eq!(canonical_member("x"), None);
    }

    #[test]
    fn jump_targets_are_found() {
        assert_eq!(
            jump_targets("-m comment --comment \"pal:a\" -j pal-x"),
            vec!["pal-x"]
        );
        assert_eq!(jump_targets("-g pal-y"), vec!["pal-y"]);
    }
}
