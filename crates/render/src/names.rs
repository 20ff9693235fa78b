//! Names and text that reach rule syntax. Everything derived from user input is either hashed
//! (chain names, set names, rule comments) or checked against a strict alphabet (interface
//! names), or sanitized (log prefixes, descriptions). Backend limits live here: chain names
//! ≤ 28 characters, set names ≤ 31, interface names ≤ 15, NFLOG prefixes ≤ 63.

use ipnet::IpNet;
use palisade_calc::IpSetId;
use palisade_model::{Direction, EndpointId, PolicyId};
use sha2::{Digest, Sha256};

use crate::error::RenderError;
use crate::ir::{DispatchKey, Family};

/// The chain the kernel's FORWARD chain jumps to.
pub const FORWARD_CHAIN: &str = "pal-FORWARD";
/// The kernel chains (iptables) and hooks (nftables) whose traffic `pal-FORWARD` judges
/// besides forwarded traffic: a node's own traffic to its local pods (OUTPUT: their ingress)
/// and theirs to it (INPUT: their egress), e.g. to and from host-networked pods. iptables
/// jumps from INPUT and OUTPUT to `pal-FORWARD`; nftables, which cannot jump to a base chain,
/// has base chains of these names with `pal-FORWARD`'s rules (they hold no per-endpoint state:
/// the dispatch is in the verdict maps they share).
pub const LOCAL_HOOKS: [(&str, &str, &str); 2] = [
    ("INPUT", "pal-INPUT", "input"),
    ("OUTPUT", "pal-OUTPUT", "output"),
];
/// nftables verdict map: input interface → egress chain of that endpoint.
pub const FROM_WORKLOAD_MAP: &str = "pal-fw-map";
/// nftables verdict map: output interface → ingress chain of that endpoint.
pub const TO_WORKLOAD_MAP: &str = "pal-tw-map";
/// nftables verdict maps keyed by address (address matching): source address → egress chain,
/// destination address → ingress chain, one per family.
pub const FROM_WORKLOAD_MAP4: &str = "pal-fw-map4";
pub const FROM_WORKLOAD_MAP6: &str = "pal-fw-map6";
pub const TO_WORKLOAD_MAP4: &str = "pal-tw-map4";
pub const TO_WORKLOAD_MAP6: &str = "pal-tw-map6";

/// The dispatch map for the sending (`from_workload`) or receiving side, by key.
pub fn dispatch_map(from_workload: bool, key: DispatchKey) -> &'static str {
    match (from_workload, key) {
        (true, DispatchKey::Iface) => FROM_WORKLOAD_MAP,
        (false, DispatchKey::Iface) => TO_WORKLOAD_MAP,
        (true, DispatchKey::Addr(Family::V4)) => FROM_WORKLOAD_MAP4,
        (true, DispatchKey::Addr(Family::V6)) => FROM_WORKLOAD_MAP6,
        (false, DispatchKey::Addr(Family::V4)) => TO_WORKLOAD_MAP4,
        (false, DispatchKey::Addr(Family::V6)) => TO_WORKLOAD_MAP6,
    }
}

/// What a dispatch map (by name) is keyed by, and whether it is the sending side's.
pub fn dispatch_map_kind(map: &str) -> (bool, DispatchKey) {
    match map {
        FROM_WORKLOAD_MAP4 => (true, DispatchKey::Addr(Family::V4)),
        FROM_WORKLOAD_MAP6 => (true, DispatchKey::Addr(Family::V6)),
        TO_WORKLOAD_MAP4 => (false, DispatchKey::Addr(Family::V4)),
        TO_WORKLOAD_MAP6 => (false, DispatchKey::Addr(Family::V6)),
        FROM_WORKLOAD_MAP => (true, DispatchKey::Iface),
        _ => (false, DispatchKey::Iface),
    }
}

/// Anti-spoofing: the chain `pal-FORWARD` jumps to first, and its sets per family: the local
/// pod addresses with a binding, and the (address, interface) pairs allowed.
pub const SPOOF_CHAIN: &str = "pal-spoof";

pub fn local_set_name(family: Family) -> String {
    format!("{}local", family_prefix(family))
}

pub fn bind_set_name(family: Family) -> String {
    format!("{}bind", family_prefix(family))
}

/// nftables table (family `inet`).
pub const NFT_TABLE: &str = "palisade";
/// Longest chain name iptables accepts.
pub const MAX_CHAIN_LEN: usize = 28;
/// Longest ipset name.
pub const MAX_SET_LEN: usize = 31;
/// Longest NFLOG prefix (64 bytes with the terminating NUL).
pub const MAX_LOG_PREFIX: usize = 63;

/// Hex SHA-256 of length-prefixed parts, cut to `len` characters. Length prefixes keep
/// `("ab","c")` and `("a","bc")` apart.
pub fn hash_hex(parts: &[&str], len: usize) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(decimal(p.len(), &mut [0u8; 20]));
        h.update(b":");
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let len = len.min(2 * digest.len());
    let mut out = String::with_capacity(len);
    for b in digest.iter() {
        for nibble in [b >> 4, b & 0xf] {
            if out.len() == len {
                return out;
            }
            out.push(char::from(HEX[usize::from(nibble)]));
        }
    }
    out
}

/// `n` in decimal ASCII, written into the end of `buf` (what `n.to_string()` spells, without
/// the allocation: [`hash_hex`] runs for every rule comment).
fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// `pal-pi-<hash>` (ingress) or `pal-po-<hash>` (egress) for a policy.
pub fn policy_chain(direction: Direction, id: &PolicyId) -> String {
    let prefix = match direction {
        Direction::Ingress => "pal-pi-",
        Direction::Egress => "pal-po-",
    };
    let ns = id.namespace.as_deref().map(|n| format!("n{n}"));
    let h = hash_hex(
        &[&id.tier, ns.as_deref().unwrap_or("g"), &id.name],
        MAX_CHAIN_LEN - prefix.len(),
    );
    format!("{prefix}{h}")
}

/// `pal-si-<hash>` / `pal-so-<hash>`: a policy's chain for staged evaluation, where a Deny
/// rule marks instead of dropping (the hash is [`policy_chain`]'s).
pub fn staged_policy_chain(direction: Direction, id: &PolicyId) -> String {
    let enforced = policy_chain(direction, id);
    let prefix = match direction {
        Direction::Ingress => "pal-si-",
        Direction::Egress => "pal-so-",
    };
    format!("{prefix}{}", &enforced["pal-pi-".len()..])
}

/// `pal-st-<iface>` (ingress) / `pal-sf-<iface>` (egress): an endpoint's staged evaluation
/// (its tiers as if staged policies were enforced), which only marks.
pub fn staged_endpoint_chain(direction: Direction, iface: &str) -> String {
    match direction {
        Direction::Ingress => format!("pal-st-{iface}"),
        Direction::Egress => format!("pal-sf-{iface}"),
    }
}

/// `pal-tw-<iface>` (to workload: ingress) or `pal-fw-<iface>` (from workload: egress).
/// The interface must have passed [`check_iface`].
pub fn endpoint_chain(direction: Direction, iface: &str) -> String {
    match direction {
        Direction::Ingress => format!("pal-tw-{iface}"),
        Direction::Egress => format!("pal-fw-{iface}"),
    }
}

fn family_prefix(family: Family) -> &'static str {
    match family {
        Family::V4 => "pal4-",
        Family::V6 => "pal6-",
    }
}

/// `pal4-<hash>` / `pal6-<hash>` for a calc set id (hashed: ids are not trusted text).
pub fn set_name(family: Family, id: &IpSetId) -> String {
    let p = family_prefix(family);
    format!(
        "{p}{}",
        hash_hex(&["set", &id.0], MAX_SET_LEN - p.len() - 4)
    )
}

/// `pal4-c<hash>` for the dedicated set of an ipBlock with `except` entries.
pub fn cidr_set_name(family: Family, cidr: &IpNet, except: &[IpNet]) -> String {
    let p = family_prefix(family);
    let mut parts = vec!["cidr".to_string(), cidr.trunc().to_string()];
    let mut ex: Vec<String> = except.iter().map(|e| e.trunc().to_string()).collect();
    ex.sort();
    parts.extend(ex);
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    format!("{p}c{}", hash_hex(&refs, MAX_SET_LEN - p.len() - 5))
}

/// The flat layout's sets of one endpoint (by its primary interface), direction and tier:
/// `pal4f-<hash>` (address . protocol . port) or, with `any_protocol`, `pal4a-<hash>`
/// (addresses allowed every protocol).
pub fn flat_set_name(
    family: Family,
    direction: Direction,
    iface: &str,
    tier: &str,
    any_protocol: bool,
) -> String {
    let p = family_prefix(family);
    let kind = if any_protocol { "a" } else { "f" };
    let dir = match direction {
        Direction::Ingress => "in",
        Direction::Egress => "out",
    };
    format!(
        "{p}{kind}{}",
        hash_hex(&["flat", kind, dir, iface, tier], MAX_SET_LEN - p.len() - 5)
    )
}

/// Whether an interface name may reach rule text: 1 to 15 characters of `[a-zA-Z0-9_.-]`,
/// starting with a letter or digit.
pub fn iface_ok(iface: &str) -> bool {
    !iface.is_empty()
        && iface.len() <= 15
        && iface.starts_with(|c: char| c.is_ascii_alphanumeric())
        && iface
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Checks an interface name before it reaches rule text: 1 to 15 characters of
/// `[a-zA-Z0-9_.-]`, starting with a letter or digit.
pub fn check_iface(endpoint: &EndpointId, iface: &str) -> Result<(), RenderError> {
    if iface_ok(iface) {
        Ok(())
    } else {
        Err(RenderError::BadInterface {
            endpoint: endpoint.to_string(),
            iface: iface.to_string(),
        })
    }
}

/// Human text made safe for a quoted argument in any backend: only `[a-zA-Z0-9_./:=(),!-]`
/// and spaces survive (everything else, quotes and backslashes above all, becomes `_`), cut
/// to `max` characters.
pub fn sanitize(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '_' | '.' | '/' | ':' | '=' | '-' | ' ' | '(' | ')' | ',' | '!'
                )
            {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

/// First word of every drop's NFLOG prefix; the second is its [`drop_key`].
pub const DROP_PREFIX_TAG: &str = "pal-drop";
/// Length of a drop key (hex characters).
pub const DROP_KEY_LEN: usize = 16;

/// Where a logged drop comes from: what the compact key in its NFLOG prefix stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropSite<'a> {
    /// The drop at the end of `tier` in `endpoint`'s chain for `direction` (a default deny:
    /// policies of the tier selected the endpoint, none allowed the packet).
    EndOfTier {
        direction: Direction,
        endpoint: &'a EndpointId,
        tier: &'a str,
    },
    /// Rule `rule` (action Deny) of `policy` in `direction`.
    DenyRule {
        direction: Direction,
        policy: &'a PolicyId,
        rule: usize,
    },
    /// `endpoint`'s enforced policies accepted the packet in `direction`, its staged tiers
    /// (staged policies as if enforced) would have dropped it: a would-drop.
    StagedDrop {
        direction: Direction,
        endpoint: &'a EndpointId,
    },
    /// The drop at the end of `tier` of `endpoint`'s enforced chain, where its staged tiers
    /// would have accepted the packet.
    StagedAllow {
        direction: Direction,
        endpoint: &'a EndpointId,
        tier: &'a str,
    },
}

/// The compact key of a drop site ([`DROP_KEY_LEN`] hex characters): what the agent maps a
/// logged packet back to its endpoint, tier, policy and rule with.
pub fn drop_key(site: DropSite<'_>) -> String {
    match site {
        DropSite::EndOfTier {
            direction,
            endpoint,
            tier,
        } => hash_hex(
            &[
                "drop-end",
                dir_word(direction),
                &endpoint.namespace,
                &endpoint.name,
                tier,
            ],
            DROP_KEY_LEN,
        ),
        DropSite::DenyRule {
            direction,
            policy,
            rule,
        } => hash_hex(
            &[
                "drop-deny",
                dir_word(direction),
                &policy.tier,
                policy.namespace.as_deref().unwrap_or("\0"),
                &policy.name,
                &rule.to_string(),
            ],
            DROP_KEY_LEN,
        ),
        DropSite::StagedDrop {
            direction,
            endpoint,
        } => hash_hex(
            &[
                "staged-drop",
                dir_word(direction),
                &endpoint.namespace,
                &endpoint.name,
            ],
            DROP_KEY_LEN,
        ),
        DropSite::StagedAllow {
            direction,
            endpoint,
            tier,
        } => hash_hex(
            &[
                "staged-allow",
                dir_word(direction),
                &endpoint.namespace,
                &endpoint.name,
                tier,
            ],
            DROP_KEY_LEN,
        ),
    }
}

/// NFLOG prefix of a drop: `pal-drop <key> <direction> <what>` (the tail, sanitized and cut to
/// fit [`MAX_LOG_PREFIX`], is for humans reading the log elsewhere; the agent reads the key).
pub fn drop_log_prefix(site: DropSite<'_>) -> String {
    let (direction, what) = match site {
        DropSite::EndOfTier {
            direction,
            endpoint,
            ..
        } => (direction, endpoint.to_string()),
        DropSite::DenyRule {
            direction,
            policy,
            rule,
        } => (direction, format!("{policy} rule {rule}")),
        DropSite::StagedDrop {
            direction,
            endpoint,
        } => (direction, format!("staged {endpoint}")),
        DropSite::StagedAllow {
            direction,
            endpoint,
            ..
        } => (direction, format!("staged-allow {endpoint}")),
    };
    let head = format!("{DROP_PREFIX_TAG} {} {direction} ", drop_key(site));
    let room = MAX_LOG_PREFIX.saturating_sub(head.len());
    format!("{head}{}", sanitize(&what, room))
}

fn dir_word(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

/// The key of a drop's NFLOG prefix, if it is one ([`drop_log_prefix`]).
pub fn drop_key_of_prefix(prefix: &str) -> Option<&str> {
    let mut words = prefix.split(' ');
    if words.next()? != DROP_PREFIX_TAG {
        return None;
    }
    let key = words.next()?;
    (key.len() == DROP_KEY_LEN && key.bytes().all(|b| b.is_ascii_hexdigit())).then_some(key)
}

/// NFLOG prefix for a policy rule with action Log.
pub fn rule_log_prefix(direction: Direction, policy: &PolicyId, rule: usize) -> String {
    let head = format!("pal log {direction} rule {rule} ");
    let room = MAX_LOG_PREFIX.saturating_sub(head.len());
    format!("{head}{}", sanitize(&policy.to_string(), room))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(ns: &str, name: &str) -> PolicyId {
        PolicyId {
            tier: "default".into(),
            namespace: Some(ns.into()),
            name: name.into(),
        }
    }

    #[test]
    fn chain_and_set_names_fit_and_are_plain() {
        let hostile = pid("a\"b;c}\n-A FORWARD -j ACCEPT", &"x y".repeat(300));
        for c in [
            policy_chain(Direction::Ingress, &hostile),
            policy_chain(Direction::Egress, &hostile),
        ] {
            assert_eq!(c.len(), MAX_CHAIN_LEN, "{c}");
            assert!(c.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        }
        let s = set_name(Family::V6, &IpSetId("x\n\"; flush ruleset".into()));
        assert!(s.len() <= MAX_SET_LEN && s.starts_with("pal6-"), "{s}");
        let c = cidr_set_name(Family::V4, &"10.0.0.0/8".parse().unwrap(), &[]);
        assert!(c.len() <= MAX_SET_LEN && c.starts_with("pal4-c"), "{c}");
    }

    /// The spelling [`hash_hex`] had before it was made allocation-free: names and comments
    /// must not change, or every kernel rule would be rewritten after an upgrade.
    fn hash_hex_reference(parts: &[&str], len: usize) -> String {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p.len().to_string().as_bytes());
            h.update(b":");
            h.update(p.as_bytes());
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        hex[..len.min(hex.len())].to_string()
    }

    #[test]
    fn hash_hex_is_stable() {
        let long = "x".repeat(12_345);
        let cases: [&[&str]; 4] = [&[], &[""], &["ab", "c"], &["pal-FORWARD", "0", &long]];
        for parts in cases {
            for len in [0, 1, 7, 16, 21, 63, 64, 100] {
                assert_eq!(hash_hex(parts, len), hash_hex_reference(parts, len));
            }
        }
        assert_ne!(hash_hex(&["ab", "c"], 16), hash_hex(&["a", "bc"], 16));
        assert_eq!(decimal(0, &mut [0; 20]), b"0");
        assert_eq!(
            decimal(usize::MAX, &mut [0; 20]),
            usize::MAX.to_string().as_bytes()
        );
    }

    #[test]
    fn policy_chain_names_differ_by_every_part() {
        let a = pid("ns", "p");
        let mut b = a.clone();
        b.tier = "admin".into();
        let mut c = a.clone();
        c.namespace = None;
        let names = [&a, &b, &c].map(|p| policy_chain(Direction::Ingress, p));
        assert_ne!(names[0], names[1]);
        assert_ne!(names[0], names[2]);
        assert_ne!(
            policy_chain(Direction::Ingress, &a),
            policy_chain(Direction::Egress, &a)
        );
    }

    #[test]
    fn interface_check() {
        let e = EndpointId::new("n", "p");
        for good in ["pal1234567890ab", "eth0", "a.b_c-d"] {
            check_iface(&e, good).unwrap();
        }
        for bad in [
            "",
            "-A",
            "a b",
            "x\"",
            "sixteen-chars-xx",
            "eth+",
            "a;b",
            "..",
        ] {
            assert!(check_iface(&e, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn log_prefixes_are_sanitized_and_short() {
        let e = EndpointId::new("ns\"\n}", "p;".repeat(100));
        let site = DropSite::EndOfTier {
            direction: Direction::Ingress,
            endpoint: &e,
            tier: "default",
        };
        let p = drop_log_prefix(site);
        assert!(p.len() <= MAX_LOG_PREFIX);
        assert!(!p.contains(['"', '\n', '}', ';']));
        assert_eq!(drop_key_of_prefix(&p), Some(drop_key(site).as_str()));
        let deny = pid("x\"y", &"z".repeat(90));
        let d = drop_log_prefix(DropSite::DenyRule {
            direction: Direction::Egress,
            policy: &deny,
            rule: 2,
        });
        assert!(d.len() <= MAX_LOG_PREFIX && !d.contains('"'), "{d}");
        assert_ne!(drop_key_of_prefix(&d), drop_key_of_prefix(&p));
        assert_eq!(drop_key_of_prefix("pal log egress rule 0 x"), None);
        assert_eq!(drop_key_of_prefix("pal-drop short ingress"), None);
        let r = rule_log_prefix(Direction::Egress, &pid("x\"y", &"z".repeat(90)), 3);
        assert!(r.len() <= MAX_LOG_PREFIX && !r.contains('"'));
    }
}
