//! Hostile names, namespaces and label values never reach rule syntax: outside quoted
//! strings the rendered text holds none of their characters, and every quoted string holds
//! only the sanitized alphabet.

mod common;

use palisade_calc::{DesiredState, EndpointTiers, LocalEndpoint};
use palisade_model::EndpointId;
use palisade_render::{build, iptables, nft, RenderConfig, RenderError};

/// Splits a line into (outside-quotes, inside-quotes) parts.
fn split_quotes(line: &str) -> (String, Vec<String>) {
    let mut outside = String::new();
    let mut inside = Vec::new();
    for (i, part) in line.split('"').enumerate() {
        if i % 2 == 0 {
            outside.push_str(part);
        } else {
            inside.push(part.to_string());
        }
    }
    (outside, inside)
}

fn assert_contained(text: &str) {
    for line in text.lines() {
        assert_eq!(
            line.matches('"').count() % 2,
            0,
            "unbalanced quotes: {line}"
        );
        let (outside, inside) = split_quotes(line);
        assert!(
            !outside.contains("EVIL"),
            "hostile text outside quotes: {line}"
        );
        for q in inside {
            assert!(
                q.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./:=(),!- ".contains(c)),
                "unsanitized quoted text {q:?} in {line}"
            );
            assert!(q.len() <= 100, "quoted text too long in {line}");
        }
    }
}

#[test]
fn hostile_input_stays_inside_sanitized_quotes() {
    let c = common::hostile_cluster();
    let state = common::state(&c, "node-1");
    assert_eq!(state.endpoints.len(), 2);
    assert!(!state.policies.is_empty());
    let cfg = RenderConfig {
        drop_log_group: Some(3),
        ..RenderConfig::default()
    };
    let rs = build(&state, &cfg).unwrap();
    let t = iptables::render(&rs, true);
    for text in [&t.ipset, t.v4.as_ref().unwrap(), t.v6.as_ref().unwrap()] {
        assert_contained(text);
    }
    let script = nft::render(&rs);
    assert_contained(&script);
    // The sanitized names still show up where they help a human: log prefixes, set comments.
    assert!(script.contains("EVIL_"), "sanitized descriptions are kept");
    // One line per statement: no line of the output is a continuation of another.
    // (pal-FORWARD's rules also in its input and output copies.)
    let rules: usize = rs
        .chains
        .iter()
        .flat_map(nft::with_local_copies)
        .map(|c| c.rules.len())
        .sum();
    assert_eq!(
        script
            .lines()
            .filter(|l| l.starts_with("add rule "))
            .count(),
        rules
    );
    for name in rs.chains.iter().map(|c| &c.name) {
        assert!(name.len() <= 28, "{name}");
    }
    for s in &rs.sets {
        assert!(s.set.name.len() <= 31, "{}", s.set.name);
    }
}

#[test]
fn bad_interface_names_are_refused() {
    for iface in [
        "eth0\"",
        "a b",
        "-A",
        "x;y",
        "waytoolonginterface",
        "",
        "a}b",
    ] {
        // As the primary name and as an alias under another prefix.
        for (primary, aliases) in [(iface, vec![]), ("pal0", vec![iface.to_string()])] {
            let mut s = DesiredState::default();
            let id = EndpointId::new("n", "p");
            s.endpoints.insert(
                id.clone(),
                LocalEndpoint {
                    id,
                    iface: primary.into(),
                    iface_aliases: aliases,
                    ips: vec![],
                    tiers: EndpointTiers::default(),
                },
            );
            let err = build(&s, &RenderConfig::default()).unwrap_err();
            assert!(
                matches!(err, RenderError::BadInterface { .. }),
                "{iface:?}: {err}"
            );
        }
    }
}
