use palisade_model::{manifest, Cluster, EndpointId, Protocol};

use super::*;

fn cluster(yaml: &str) -> Cluster {
    let docs = manifest::parse_documents("test.yaml", yaml).expect("test manifests parse");
    palisade_model::convert::cluster(&docs.documents).expect("test cluster converts")
}

const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: a, labels: {app: client}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: b}
status: {podIP: 10.0.0.3}
";

const DENY_WEB: &str = "
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-deny-all, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
";

const ALLOW_CLIENT: &str = "
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-allow-client, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
";

fn id(s: &str) -> EndpointId {
    let (ns, name) = s.split_once('/').expect("ns/name");
    EndpointId::new(ns, name)
}

fn tcp80() -> Vec<Probe> {
    vec![Probe::new(Protocol::Tcp, 80)]
}

#[test]
fn a_default_deny_lists_every_newly_denied_pair_with_its_policy() {
    let now = cluster(PODS);
    let then = cluster(&format!("{PODS}{DENY_WEB}"));
    let w = what_if(&now, &then, &tcp80());
    let pairs: Vec<(String, String)> = w
        .changes
        .iter()
        .map(|c| (c.from.to_string(), c.to.to_string()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("a/client".to_string(), "a/web".to_string()),
            ("b/other".into(), "a/web".into())
        ]
    );
    assert_eq!((w.newly_denied(), w.newly_allowed()), (2, 0));
    for c in &w.changes {
        assert!(c.now && !c.then);
        assert!(
            c.because
                .starts_with("ingress at a/web: isolated by a/web-deny-all"),
            "{}",
            c.because
        );
    }
}

#[test]
fn an_allow_names_the_rule_that_opens_the_pair() {
    let now = cluster(&format!("{PODS}{DENY_WEB}"));
    let then = cluster(&format!("{PODS}{DENY_WEB}{ALLOW_CLIENT}"));
    let w = what_if(&now, &then, &tcp80());
    assert_eq!(w.changes.len(), 1, "{:?}", w.changes);
    let c = &w.changes[0];
    assert_eq!(
        (c.from.clone(), c.to.clone()),
        (id("a/client"), id("a/web"))
    );
    assert!(!c.now && c.then);
    assert_eq!(
        c.because,
        "ingress at a/web: allowed by a/web-allow-client rule 0"
    );
}

#[test]
fn deleting_the_last_isolating_policy_opens_the_pod_again() {
    let now = cluster(&format!("{PODS}{DENY_WEB}"));
    let then = cluster(PODS);
    let w = what_if(&now, &then, &tcp80());
    assert_eq!((w.newly_denied(), w.newly_allowed()), (0, 2));
    assert!(w
        .changes
        .iter()
        .all(|c| c.because == "ingress at a/web: no policy selects the pod: open"));
}

#[test]
fn no_change_no_pairs_and_new_pods_are_listed_apart() {
    let now = cluster(PODS);
    assert!(what_if(&now, &now, &tcp80()).changes.is_empty());
    let more = format!(
        "{PODS}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: new, namespace: b}}\nstatus: {{podIP: 10.0.0.9}}\n"
    );
    let w = what_if(&now, &cluster(&more), &tcp80());
    assert!(w.changes.is_empty(), "{:?}", w.changes);
    assert_eq!(w.pods_added, vec![id("b/new")]);
    assert!(w.pods_removed.is_empty());
}
