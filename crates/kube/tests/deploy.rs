//! The manifests in deploy/: every document reads into the typed Kubernetes structs and
//! writes back to exactly what the file says (so a misspelled or misplaced field, which the
//! API server would reject or silently drop, fails here), and they say what the install
//! needs. `scripts/check-deploy` additionally runs `kubectl apply --dry-run=client`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Every document of every YAML file, as JSON values, by `kind/name`.
fn documents() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", file.display()));
            if v.is_null() {
                continue;
            }
            let id = format!(
                "{}/{}",
                v["kind"].as_str().unwrap_or("?"),
                v["metadata"]["name"].as_str().unwrap_or("?")
            );
            assert!(out.insert(id.clone(), v).is_none(), "{id} declared twice");
        }
    }
    out
}

/// Reads a document into `T` and checks nothing was lost or changed on the way.
fn typed<T: DeserializeOwned + serde::Serialize>(id: &str, v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone()).unwrap_or_except(id);
    let back = serde_json::to_value(&t).unwrap();
    if back != *v {
        panic!(
            "{id}: fields the Kubernetes schema does not have (or with the wrong type):\nfile:  {}\ntyped: {}",
            serde_json::to_string(v).unwrap(),
            serde_json::to_string(&back).unwrap()
        );
    }
    t
}

trait OrExcept<T> {
    fn unwrap_or_except(self, id: &str) -> T;
}

impl<T> OrExcept<T> for Result<T, serde_json::Error> {
    fn unwrap_or_except(self, id: &str) -> T {
        self.unwrap_or_else(|e| panic!("{id}: does not match the Kubernetes schema: {e}"))
    }
}

#[test]
fn every_manifest_matches_the_kubernetes_schema_exactly() {
    let docs = documents();
    for (id, v) in &docs {
        match v["kind"].as_str().unwrap_or_default() {
            "Namespace" => drop(typed::<Namespace>(id, v)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(id, v)),
            "ClusterRole" => drop(typed::<ClusterRole>(id, v)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(id, v)),
            "Secret" => drop(typed::<Secret>(id, v)),
            "Deployment" => drop(typed::<Deployment>(id, v)),
            "DaemonSet" => drop(typed::<DaemonSet>(id, v)),
            "CustomResourceDefinition" => drop(typed::<
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
            >(id, v)),
            other => panic!("{id}: unexpected kind {other}"),
        }
    }
    for want in [
        "Namespace/palisade-system",
        "ServiceAccount/palisade-controller",
        "ClusterRole/palisade-controller",
        "ClusterRoleBinding/palisade-controller",
        "Secret/palisade-etcd",
        "Deployment/palisade-controller",
        "DaemonSet/palisade-agent",
        "CustomResourceDefinition/clusternetworkpolicies.policy.networking.k8s.io",
    ] {
        assert!(docs.contains_key(want), "missing {want}");
    }
}

fn grants(role: &ClusterRole, group: &str, resource: &str, verbs: &[&str]) -> bool {
    role.rules.iter().flatten().any(|r| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|x| x == resource)
            && verbs.iter().all(|v| r.verbs.iter().any(|rv| rv == v))
    })
}

#[test]
fn the_controller_may_read_what_it_watches_and_hold_its_lease() {
    let docs = documents();
    let role: ClusterRole = typed("role", &docs["ClusterRole/palisade-controller"]);
    let read = ["get", "list", "watch"];
    assert!(grants(&role, "", "pods", &read));
    assert!(grants(&role, "", "namespaces", &read));
    assert!(grants(&role, "networking.k8s.io", "networkpolicies", &read));
    assert!(grants(&role, "", "nodes", &read));
    assert!(grants(
        &role,
        "policy.networking.k8s.io",
        "clusternetworkpolicies",
        &read
    ));
    assert!(grants(
        &role,
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"]
    ));
    assert!(!role
        .rules
        .iter()
        .flatten()
        .any(|r| r.verbs.iter().any(|v| v == "*" || v == "delete")));
    let binding: ClusterRoleBinding =
        typed("binding", &docs["ClusterRoleBinding/palisade-controller"]);
    assert_eq!(binding.role_ref.name, "palisade-controller");
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(subject.name, "palisade-controller");
    assert_eq!(subject.namespace.as_deref(), Some("palisade-system"));
}

fn env_from_field(c: &Container, name: &str) -> Option<String> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| {
            e.value_from
                .as_ref()?
                .field_ref
                .as_ref()
                .map(|f| f.field_path.clone())
        })
}

#[test]
fn the_controller_runs_two_replicas_with_probes_and_the_etcd_secret() {
    let docs = documents();
    let d: Deployment = typed("deployment", &docs["Deployment/palisade-controller"]);
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("palisade-controller")
    );
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "controller");
    assert!(
        args.iter().any(|a| a == "--metrics-addr=0.0.0.0:9096"),
        "{args:?}"
    );
    assert_eq!(
        env_from_field(c, "POD_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );
    let ds_env = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PALISADE_DATASTORE")
        .unwrap();
    let secret_ref = ds_env
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(secret_ref.name, "palisade-etcd");
    assert_eq!(secret_ref.key, "endpoints");
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/healthz")
    );
}

#[test]
fn the_agent_is_a_privileged_host_network_daemonset_on_every_node() {
    let docs = documents();
    let ds: DaemonSet = typed("daemonset", &docs["DaemonSet/palisade-agent"]);
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert!(pod
        .tolerations
        .iter()
        .flatten()
        .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()));
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "agent");
    assert!(
        args.contains(&"--node=$(NODE_NAME)".to_string()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--dataplane=nftables".to_string()),
        "{args:?}"
    );
    assert_eq!(
        env_from_field(c, "NODE_NAME").as_deref(),
        Some("spec.nodeName")
    );
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.privileged, Some(true));
    let caps = sc.capabilities.as_ref().unwrap().add.clone().unwrap();
    assert!(caps.contains(&"NET_ADMIN".to_string()) && caps.contains(&"NET_RAW".to_string()));
    let mounts: Vec<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(mounts.contains(&"/run/xtables.lock"), "{mounts:?}");
    assert!(mounts.contains(&"/lib/modules"), "{mounts:?}");
}

#[test]
fn the_etcd_secret_has_every_key_the_pods_mount() {
    let docs = documents();
    let s: Secret = typed("secret", &docs["Secret/palisade-etcd"]);
    let data = s.string_data.unwrap();
    for key in ["endpoints", "ca.crt", "tls.crt", "tls.key"] {
        assert!(data.contains_key(key), "secret lacks {key}");
    }
    assert!(data["endpoints"].starts_with("etcd://"));
}

#[test]
fn the_dockerfile_builds_palisade_into_a_slim_image_with_the_packet_filter_tools() {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("deploy/Dockerfile");
    assert!(text.contains("cargo build --release"), "builder stage");
    assert!(text.contains("debian:bookworm-slim"), "runtime stage");
    for tool in ["iptables", "nftables", "ipset"] {
        assert!(text.contains(tool), "runtime image lacks {tool}");
    }
}

/// `deploy/05-crd-clusternetworkpolicy.yaml` is what `crates/kube/src/crd.rs` generates.
/// Regenerate: `cargo run -p palisade-kube --example crd > deploy/05-crd-clusternetworkpolicy.yaml`.
#[test]
fn the_checked_in_crd_is_the_generated_one() {
    let path = deploy_dir().join("05-crd-clusternetworkpolicy.yaml");
    let checked_in = std::fs::read_to_string(&path).expect("the CRD manifest exists");
    assert!(
        checked_in == palisade_kube::crd::crd_yaml(),
        "{} is stale: regenerate it with \
         `cargo run -p palisade-kube --example crd > deploy/05-crd-clusternetworkpolicy.yaml`",
        path.display()
    );
}

/// The generated schema carries the upstream validation rules.
#[test]
fn the_crd_carries_the_upstream_validation() {
    let docs = documents();
    let crd = &docs["CustomResourceDefinition/clusternetworkpolicies.policy.networking.k8s.io"];
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["group"], "policy.networking.k8s.io");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha2");
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let required: Vec<&str> = spec["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for field in ["tier", "priority", "subject"] {
        assert!(
            required.contains(&field),
            "{field} not required: {required:?}"
        );
    }
    assert_eq!(
        spec["properties"]["tier"]["enum"],
        serde_json::json!(["Admin", "Baseline"])
    );
    // JSONSchemaProps holds bounds as floats.
    assert_eq!(
        spec["properties"]["priority"]["minimum"].as_f64(),
        Some(0.0)
    );
    assert_eq!(
        spec["properties"]["priority"]["maximum"].as_f64(),
        Some(1000.0)
    );
    assert_eq!(spec["properties"]["ingress"]["maxItems"], 25);
    let text = serde_json::to_string(crd).unwrap();
    for rule in [
        "isCIDR(n)",
        "self.start < self.end",
        "has(self.destinationNamedPort)",
    ] {
        assert!(text.contains(rule), "no CEL rule {rule}");
    }
    let action = &spec["properties"]["ingress"]["items"]["properties"]["action"];
    assert_eq!(
        action["enum"],
        serde_json::json!(["Accept", "Deny", "Pass"])
    );
}

/// The CRD's types take every ClusterNetworkPolicy of `examples/cluster-policies/` whole: the
/// schema has every field the examples (and so Palisade) use, with the same shape.
#[test]
fn the_crd_types_read_the_example_cluster_policies() {
    let dir = deploy_dir().join("../examples/cluster-policies");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/cluster-policies") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = Value::deserialize(doc).unwrap();
            if v["kind"] != "ClusterNetworkPolicy" {
                continue;
            }
            let id = format!("{}: {}", path.display(), v["metadata"]["name"]);
            drop(typed::<palisade_kube::crd::ClusterNetworkPolicy>(&id, &v));
            seen += 1;
        }
    }
    assert!(
        seen >= 4,
        "only {seen} ClusterNetworkPolicies in {}",
        dir.display()
    );
}
