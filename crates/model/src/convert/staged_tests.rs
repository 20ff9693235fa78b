//! The staged annotation (`palisade.dev/staged`) on NetworkPolicy and ClusterNetworkPolicy.

use super::*;
use crate::manifest::parse_documents;

fn np_with(annotations: &str) -> k8s::NetworkPolicy {
    let yaml = format!(
        "metadata: {{name: web-deny-all, namespace: default{annotations}}}\nspec: {{podSelector: {{}}}}"
    );
    serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("bad test yaml: {e}"))
}

#[test]
fn true_stages_false_and_absent_enforce() {
    let staged =
        network_policy(&np_with(", annotations: {palisade.dev/staged: \"true\"}")).unwrap();
    assert!(staged.staged);
    let plain =
        network_policy(&np_with(", annotations: {palisade.dev/staged: \"false\"}")).unwrap();
    assert!(!plain.staged);
    let none = network_policy(&np_with("")).unwrap();
    assert!(!none.staged);
    let other = network_policy(&np_with(", annotations: {team: a}")).unwrap();
    assert!(!other.staged);
}

#[test]
fn another_value_is_an_error_naming_the_annotation() {
    for bad in ["yes", "True", "", "1"] {
        let errs = network_policy(&np_with(&format!(
            ", annotations: {{palisade.dev/staged: \"{bad}\"}}"
        )))
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            errs[0].field,
            "metadata.annotations[\"palisade.dev/staged\"]"
        );
        assert!(errs[0].message.contains(&format!("{bad:?}")), "{}", errs[0]);
        assert!(
            errs[0].message.contains("\"true\" or \"false\""),
            "{}",
            errs[0]
        );
    }
}

#[test]
fn a_staged_cnp_is_staged_and_validated_too() {
    let doc = |v: &str| {
        format!(
            r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: deny-web
  annotations: {{palisade.dev/staged: "{v}"}}
spec:
  tier: Admin
  priority: 5
  subject: {{namespaces: {{}}}}
  ingress:
  - action: Deny
    from: [{{namespaces: {{}}}}]
"#
        )
    };
    let m = parse_documents("t.yaml", &doc("true")).unwrap();
    let c = super::cluster(&m.documents).unwrap();
    assert!(c.policies[0].staged);
    assert!(c.has_staged());
    assert!(!c.clone().with_staged_enforced().has_staged());
    let m = parse_documents("t.yaml", &doc("maybe")).unwrap();
    let err = format!("{:?}", super::cluster(&m.documents).unwrap_err());
    assert!(
        err.contains("metadata.annotations[\\\"palisade.dev/staged\\\"]"),
        "{err}"
    );
}

#[test]
fn the_flag_round_trips_and_is_left_out_when_false() {
    let staged =
        network_policy(&np_with(", annotations: {palisade.dev/staged: \"true\"}")).unwrap();
    let json = serde_json::to_string(&staged).unwrap();
    assert!(json.contains("\"staged\":true"), "{json}");
    let back: Policy = serde_json::from_str(&json).unwrap();
    assert_eq!(back, staged);
    let plain = network_policy(&np_with("")).unwrap();
    assert!(!serde_json::to_string(&plain).unwrap().contains("staged"));
}
