//! What-if for `palisade matrix` and `palisade apply --dry-run`: the pairs whose verdict a
//! change would flip, with the policy and rule that cause it (`palisade_engine::what_if`).
//!
//! A change is a set of manifests laid over the current ones (an object with the same kind,
//! namespace and name replaces the current one, others are added) and a list of deletions
//! (`--delete KIND NAME`, named as `palisade delete` names them).

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{bail, Result};
use palisade_engine::{Probe, WhatIf};
use palisade_model::manifest::{Document, Manifests};
use palisade_model::{Cluster, Protocol};
use palisade_store::StoredObject;
use serde::Serialize;

use crate::input;

/// One deletion, as `--delete KIND NAME` gives it: the kind as manifests spell it and
/// `ns/name` (or `name` for cluster-scoped kinds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub kind: &'static str,
    pub name: String,
}

impl Deletion {
    /// Parses `KIND` and `NAME` as `palisade delete` takes them (`NS/NAME`, or `NAME` in
    /// namespace `default`; cluster-scoped kinds take `NAME` alone).
    pub fn parse(kind: &str, name: &str) -> Result<Self> {
        let (kind, namespaced) = match kind.to_ascii_lowercase().as_str() {
            "networkpolicy" | "networkpolicies" | "netpol" | "netpols" | "np" | "policy"
            | "policies" => ("NetworkPolicy", true),
            "pod" | "pods" | "po" => ("Pod", true),
            "namespace" | "namespaces" | "ns" => ("Namespace", false),
            "clusternetworkpolicy" | "clusternetworkpolicies" | "cnp" => {
                ("ClusterNetworkPolicy", false)
            }
            other => bail!(
                "--delete {other:?}: unknown kind (networkpolicy, clusternetworkpolicy, pod, \
                 namespace)"
            ),
        };
        if name.is_empty() {
            bail!("--delete {kind}: the name is empty");
        }
        let name = match (namespaced, name.split_once('/')) {
            (true, Some((ns, n))) if !ns.is_empty() && !n.is_empty() => format!("{ns}/{n}"),
            (true, None) => format!("default/{name}"),
            (false, None) => name.to_string(),
            _ => bail!("--delete {kind} {name:?}: expected NS/NAME or NAME"),
        };
        Ok(Deletion { kind, name })
    }

    /// The key [`palisade_model::manifest::Object::describe`] gives the object.
    fn describe(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }
}

/// Parses the flat `--delete KIND NAME --delete KIND NAME` values (clap gives pairs).
pub fn deletions(words: &[String]) -> Result<Vec<Deletion>> {
    words
        .chunks(2)
        .map(|pair| match pair {
            [kind, name] => Deletion::parse(kind, name),
            _ => bail!("--delete takes two values: KIND NAME"),
        })
        .collect()
}

/// The documents of `current` with `changes` laid over them and `deletions` removed. A
/// deletion that names no current object is an error (a typo would otherwise look like "no
/// change").
pub fn overlay(
    current: &[Document],
    changes: &[Document],
    deletions: &[Deletion],
) -> Result<Vec<Document>> {
    let gone: HashSet<String> = deletions.iter().map(Deletion::describe).collect();
    let present: HashSet<String> = current.iter().map(|d| d.object.describe()).collect();
    let missing: Vec<&String> = gone.iter().filter(|k| !present.contains(*k)).collect();
    if !missing.is_empty() {
        let mut names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        names.sort_unstable();
        bail!(
            "--delete: not among the current objects: {}",
            names.join(", ")
        );
    }
    let replaced: HashSet<String> = changes.iter().map(|d| d.object.describe()).collect();
    let mut out: Vec<Document> = current
        .iter()
        .filter(|d| {
            let key = d.object.describe();
            !gone.contains(&key) && !replaced.contains(&key)
        })
        .cloned()
        .collect();
    out.extend(changes.iter().cloned());
    Ok(out)
}

/// Removes what `deletions` name from a cluster (a namespace with its pods and policies);
/// a deletion that names nothing there is an error.
pub fn delete_from(cluster: &mut Cluster, deletions: &[Deletion]) -> Result<()> {
    for d in deletions {
        let (ns, name) = match d.name.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, d.name.as_str()),
        };
        let found = match d.kind {
            "NetworkPolicy" => {
                let before = cluster.policies.len();
                cluster.policies.retain(|p| {
                    !(p.id.tier == palisade_model::DEFAULT_TIER
                        && p.id.namespace.as_deref() == ns
                        && p.id.name == name)
                });
                before != cluster.policies.len()
            }
            "ClusterNetworkPolicy" => {
                let before = cluster.policies.len();
                cluster.policies.retain(|p| {
                    !(p.id.namespace.is_none()
                        && p.id.tier != palisade_model::DEFAULT_TIER
                        && p.id.name == name)
                });
                before != cluster.policies.len()
            }
            "Pod" => {
                let before = cluster.endpoints.len();
                cluster
                    .endpoints
                    .retain(|e| !(Some(e.id.namespace.as_str()) == ns && e.id.name == name));
                before != cluster.endpoints.len()
            }
            _ => {
                let found = cluster.namespaces.remove(name).is_some();
                cluster.endpoints.retain(|e| e.id.namespace != name);
                cluster
                    .policies
                    .retain(|p| p.id.namespace.as_deref() != Some(name));
                found
            }
        };
        if !found {
            bail!("--delete: {} is not in the datastore", d.describe());
        }
    }
    Ok(())
}

/// Lays stored objects over a cluster (same key replaces; `StoredObject::upsert_into`);
/// agent statuses are ignored.
pub fn upsert_stored<'a>(
    cluster: &mut Cluster,
    objects: impl IntoIterator<Item = &'a StoredObject>,
) {
    for object in objects {
        object.clone().upsert_into(cluster);
    }
}

/// Converts documents into a cluster; every error is printed and the command fails.
pub fn cluster_of(documents: &[Document], what: &str) -> Result<Cluster> {
    palisade_model::convert::cluster(documents).map_err(|errors| input::report_in(&errors, what))
}

/// Reads the change files (validated on their own first, so that errors name their files).
pub fn read_changes(paths: &[PathBuf]) -> Result<Manifests> {
    let (manifests, errors) = input::read_manifests_partial(paths)?;
    input::warn_skipped(&manifests);
    if !errors.is_empty() {
        return Err(input::report_in(&errors, "the what-if manifests"));
    }
    Ok(manifests)
}

/// `--output json`: `{"changes":[{"from","to","port","protocol","now","then","because"}]}`.
#[derive(Serialize)]
pub struct JsonWhatIf {
    pub changes: Vec<JsonChange>,
    pub newly_denied: usize,
    pub newly_allowed: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pods_added: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pods_removed: Vec<String>,
}

#[derive(Serialize)]
pub struct JsonChange {
    pub from: String,
    pub to: String,
    /// `null` for ICMP.
    pub port: Option<u16>,
    pub protocol: &'static str,
    pub now: bool,
    pub then: bool,
    pub because: String,
}

pub fn to_json(w: &WhatIf) -> JsonWhatIf {
    JsonWhatIf {
        changes: w
            .changes
            .iter()
            .map(|c| JsonChange {
                from: c.from.to_string(),
                to: c.to.to_string(),
                port: c.probe.protocol.has_ports().then_some(c.probe.port),
                protocol: c.probe.protocol.as_str(),
                now: c.now,
                then: c.then,
                because: c.because.clone(),
            })
            .collect(),
        newly_denied: w.newly_denied(),
        newly_allowed: w.newly_allowed(),
        pods_added: w.pods_added.iter().map(ToString::to_string).collect(),
        pods_removed: w.pods_removed.iter().map(ToString::to_string).collect(),
    }
}

/// The counts for `apply --dry-run -o json`.
#[derive(Serialize)]
pub struct JsonSummary {
    pub newly_denied: usize,
    pub newly_allowed: usize,
    pub probes: Vec<String>,
}

pub fn json_summary(w: &WhatIf, probes: &[Probe]) -> JsonSummary {
    JsonSummary {
        newly_denied: w.newly_denied(),
        newly_allowed: w.newly_allowed(),
        probes: probes.iter().map(ToString::to_string).collect(),
    }
}

/// One line of counts: `what-if: N pairs newly denied, M newly allowed (probes …)`.
pub fn summary(w: &WhatIf, probes: &[Probe]) -> String {
    let list: Vec<String> = probes.iter().map(ToString::to_string).collect();
    format!(
        "what-if: {} pair(s) newly denied, {} newly allowed (probes {})",
        w.newly_denied(),
        w.newly_allowed(),
        list.join(", ")
    )
}

/// The table: the summary, then one line per changed pair.
pub fn table(w: &WhatIf, probes: &[Probe]) -> String {
    let mut out = summary(w, probes);
    out.push('\n');
    if w.changes.is_empty() {
        out.push_str("no pair changes its verdict\n");
    }
    let word = |b: bool| if b { "allowed" } else { "denied" };
    for c in &w.changes {
        out.push_str(&format!(
            "  {} -> {} {}: {} -> {}, because {}\n",
            c.from,
            c.to,
            c.probe,
            word(c.now),
            word(c.then),
            c.because
        ));
    }
    for p in &w.pods_added {
        out.push_str(&format!(
            "  pod {p} is added by the change (no verdict before)\n"
        ));
    }
    for p in &w.pods_removed {
        out.push_str(&format!("  pod {p} is removed by the change\n"));
    }
    out
}

/// Probes for a summary when none are given: every port the policies of either cluster name
/// with a number (the first of a range), and TCP/80 and ICMP; at most 16, in order.
pub fn default_probes(now: &Cluster, then: &Cluster) -> Vec<Probe> {
    let mut set = std::collections::BTreeSet::new();
    for p in now.policies.iter().chain(&then.policies) {
        let rules = p.ingress.iter().chain(&p.egress).flatten();
        for spec in rules.flat_map(|r| &r.ports) {
            if let palisade_model::PortMatch::Range { start, .. } = spec.port {
                set.insert(Probe::new(spec.protocol, start));
            }
        }
    }
    set.insert(Probe::new(Protocol::Tcp, 80));
    set.insert(Probe::new(Protocol::Icmp, 0));
    set.into_iter().take(16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::manifest;

    fn docs(text: &str) -> Vec<Document> {
        manifest::parse_documents("t.yaml", text)
            .expect("parses")
            .documents
    }

    const CURRENT: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n\
        apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\n\
        spec: {podSelector: {}}\n";

    #[test]
    fn deletions_parse_like_palisade_delete() {
        let d = |k: &str, n: &str| Deletion::parse(k, n).map(|d| d.describe());
        assert_eq!(d("np", "a/p").unwrap(), "NetworkPolicy a/p");
        assert_eq!(d("networkpolicy", "p").unwrap(), "NetworkPolicy default/p");
        assert_eq!(d("ns", "a").unwrap(), "Namespace a");
        assert_eq!(d("cnp", "x").unwrap(), "ClusterNetworkPolicy x");
        assert!(d("deployment", "a/x").is_err());
        assert!(d("ns", "a/b").is_err());
        assert!(d("np", "/p").is_err());
        assert!(deletions(&["np".into()]).is_err());
    }

    #[test]
    fn overlay_replaces_adds_and_deletes() {
        let current = docs(CURRENT);
        let change = docs(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\n\
             spec: {podSelector: {matchLabels: {x: y}}}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: q, namespace: a}\n\
             spec: {podSelector: {}}\n",
        );
        let out = overlay(&current, &change, &[]).unwrap();
        let keys: Vec<String> = out.iter().map(|d| d.object.describe()).collect();
        assert_eq!(
            keys,
            ["Namespace a", "NetworkPolicy a/p", "NetworkPolicy a/q"]
        );
        assert_eq!(
            out[1], change[0],
            "the change replaces the current object whole"
        );

        let gone = overlay(&current, &[], &[Deletion::parse("np", "a/p").unwrap()]).unwrap();
        assert_eq!(gone.len(), 1);
        let err = overlay(&current, &[], &[Deletion::parse("np", "a/zz").unwrap()]).unwrap_err();
        assert!(err.to_string().contains("NetworkPolicy a/zz"), "{err}");
    }
}
