//! Reading `nft -j list table inet palisade`: sets and maps with their elements, chains with
//! their hooks, rules with their `pal:` comment and counter.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::error::DataplaneError;
use crate::nft::program::{canonical_element, BaseChain, NftSet};

/// A set as read back has the same shape as a desired one.
pub type ViewSet = NftSet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewRule {
    pub hash: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewChain {
    pub base: Option<BaseChain>,
    pub rules: Vec<ViewRule>,
}

/// Our table as the kernel holds it (`exists: false` when there is none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftView {
    pub exists: bool,
    pub sets: BTreeMap<String, Arc<ViewSet>>,
    pub chains: BTreeMap<String, ViewChain>,
}

fn parse_err(reason: impl Into<String>) -> DataplaneError {
    DataplaneError::Parse {
        command: "nft -j list table inet palisade".into(),
        line_no: 1,
        line: String::new(),
        reason: reason.into(),
    }
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// An element (or map key / value) as nft syntax.
fn element_text(v: &Value, quote: bool) -> String {
    match v {
        Value::String(s) if quote => format!("\"{s}\""),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(kv) if kv.len() == 2 => {
            format!("{} : {}", element_text(&kv[0], quote), verdict_text(&kv[1]))
        }
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let addr = p.get("addr").and_then(Value::as_str).unwrap_or("");
                let len = p.get("len").and_then(Value::as_u64).unwrap_or(0);
                format!("{addr}/{len}")
            } else if let Some(Value::Array(r)) = o.get("range") {
                let a = r
                    .first()
                    .map(|x| element_text(x, false))
                    .unwrap_or_default();
                let b = r.get(1).map(|x| element_text(x, false)).unwrap_or_default();
                format!("{a}-{b}")
            } else if let Some(Value::Array(c)) = o.get("concat") {
                c.iter()
                    .map(|x| element_text(x, quote))
                    .collect::<Vec<_>>()
                    .join(" . ")
            } else if let Some(e) = o.get("elem") {
                e.get("val")
                    .map(|x| element_text(x, quote))
                    .unwrap_or_default()
            } else {
                v.to_string()
            }
        }
        other => other.to_string(),
    }
}

fn verdict_text(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            if let Some((k, inner)) = o.iter().next() {
                match inner.get("target").and_then(Value::as_str) {
                    Some(t) => format!("{k} {t}"),
                    None => k.clone(),
                }
            } else {
                String::new()
            }
        }
        other => element_text(other, false),
    }
}

/// Parses the JSON listing of our table.
pub fn parse_table(text: &str) -> Result<NftView, DataplaneError> {
    let root: Value = serde_json::from_str(text).map_err(|e| parse_err(e.to_string()))?;
    let items = root
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| parse_err("no nftables array"))?;
    let mut view = NftView {
        exists: true,
        ..NftView::default()
    };
    for item in items {
        let Some(obj) = item.as_object() else {
            continue;
        };
        if let Some(s) = obj.get("set").or_else(|| obj.get("map")) {
            let name = s
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| parse_err("set without name"))?;
            let key_type = str_list(s.get("type"));
            let quote = key_type.iter().any(|t| t == "ifname");
            let mut flags = str_list(s.get("flags"));
            flags.sort();
            let elements = s
                .get("elem")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|e| canonical_element(&element_text(e, quote)))
                        .collect()
                })
                .unwrap_or_default();
            view.sets.insert(
                name.to_string(),
                Arc::new(NftSet {
                    key_type,
                    map_to: s.get("map").and_then(Value::as_str).map(str::to_string),
                    flags,
                    elements,
                }),
            );
        } else if let Some(c) = obj.get("chain") {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| parse_err("chain without name"))?;
            let base = c.get("hook").and_then(Value::as_str).map(|hook| BaseChain {
                kind: c
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("filter")
                    .to_string(),
                hook: hook.to_string(),
                priority: c.get("prio").and_then(Value::as_i64).unwrap_or(0) as i32,
                policy: c
                    .get("policy")
                    .and_then(Value::as_str)
                    .unwrap_or("accept")
                    .to_string(),
            });
            view.chains.entry(name.to_string()).or_default().base = base;
        } else if let Some(r) = obj.get("rule") {
            let chain = r
                .get("chain")
                .and_then(Value::as_str)
                .ok_or_else(|| parse_err("rule without chain"))?;
            let hash = r
                .get("comment")
                .and_then(Value::as_str)
                .and_then(|c| c.strip_prefix("pal:"))
                .map(str::to_string);
            let (mut packets, mut bytes) = (0, 0);
            if let Some(exprs) = r.get("expr").and_then(Value::as_array) {
                for e in exprs {
                    if let Some(cnt) = e.get("counter") {
                        packets += cnt.get("packets").and_then(Value::as_u64).unwrap_or(0);
                        bytes += cnt.get("bytes").and_then(Value::as_u64).unwrap_or(0);
                    }
                }
            }
            view.chains
                .entry(chain.to_string())
                .or_default()
                .rules
                .push(ViewRule {
                    hash,
                    packets,
                    bytes,
                });
        }
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from nft 1.0.6 (comment in a rule, sets of three kinds, a verdict map).
    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
 {"table": {"family": "inet", "name": "palisade", "handle": 1}},
 {"set": {"family": "inet", "name": "pal4-s", "table": "palisade", "type": "ipv4_addr", "handle": 1, "flags": ["interval"], "elem": ["10.0.0.1", {"prefix": {"addr": "10.1.0.0", "len": 16}}, {"range": ["10.2.0.0", "10.2.0.5"]}]}},
 {"set": {"family": "inet", "name": "pal4-np", "table": "palisade", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 2, "elem": [{"concat": ["10.0.0.1", "tcp", 80]}]}},
 {"map": {"family": "inet", "name": "pal-tw", "table": "palisade", "type": "ifname", "handle": 3, "map": "verdict", "elem": [["veth1", {"jump": {"target": "pal-pi-x"}}]]}},
 {"chain": {"family": "inet", "table": "palisade", "name": "pal-FORWARD", "handle": 4, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
 {"chain": {"family": "inet", "table": "palisade", "name": "pal-pi-x", "handle": 5}},
 {"rule": {"family": "inet", "table": "palisade", "chain": "pal-FORWARD", "handle": 6, "comment": "pal:q", "expr": [{"vmap": {"key": {"meta": {"key": "iifname"}}, "data": "@pal-tw"}}]}},
 {"rule": {"family": "inet", "table": "palisade", "chain": "pal-pi-x", "handle": 7, "comment": "pal:r1", "expr": [{"counter": {"packets": 4, "bytes": 240}}, {"accept": null}]}}]}"#;

    #[test]
    fn reads_listing() {
        let v = parse_table(LISTING).unwrap();
        let s = &v.sets["pal4-s"];
        assert_eq!(s.flags, vec!["interval"]);
        assert!(s.elements.contains("10.0.0.1"));
        assert!(s.elements.contains("10.1.0.0/16"));
        assert!(s.elements.contains("10.2.0.0-10.2.0.5"));
        assert!(v.sets["pal4-np"].elements.contains("10.0.0.1 . tcp . 80"));
        assert_eq!(v.sets["pal4-np"].key_type.len(), 3);
        assert!(v.sets["pal-tw"]
            .elements
            .contains("\"veth1\" : jump pal-pi-x"));
        assert_eq!(v.sets["pal-tw"].map_to.as_deref(), Some("verdict"));
        assert_eq!(
            v.chains["pal-FORWARD"].base.as_ref().unwrap().hook,
            "forward"
        );
        let r = &v.chains["pal-pi-x"].rules[0];
        assert_eq!(
            (r.hash.as_deref(), r.packets, r.bytes),
            (Some("r1"), 4, 240)
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_table("{").is_err());
        assert!(parse_table("{}").is_err());
    }
}
