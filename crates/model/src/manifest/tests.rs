//! Parsing: multi-document YAML, JSON, `kind: List`, skipped kinds, and the errors.

use super::*;

fn parse_ok(text: &str) -> Manifests {
    match parse_documents("f.yaml", text) {
        Ok(m) => m,
        Err(e) => panic!("unexpected errors: {e:?}"),
    }
}

fn parse_err(text: &str) -> Vec<ManifestError> {
    match parse_documents("f.yaml", text) {
        Ok(m) => panic!("expected errors, parsed {m:?}"),
        Err(e) => e,
    }
}

#[test]
fn multi_document_yaml_with_empty_documents() {
    let m = parse_ok(
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\n# only a comment\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\n---\n",
    );
    assert_eq!(m.documents.len(), 2);
    assert!(
        matches!(&m.documents[0].object, Object::Namespace(n) if n.metadata.name.as_deref() == Some("a"))
    );
    assert_eq!(m.documents[0].source.document, 0);
    let Object::Pod(p) = &m.documents[1].object else {
        panic!("not a pod: {:?}", m.documents[1]);
    };
    assert_eq!(p.metadata.namespace.as_deref(), Some("a"));
    // Empty documents still count, so indexes match what an editor shows.
    assert_eq!(m.documents[1].source.document, 3);
    assert!(m.skipped.is_empty());
}

#[test]
fn json_document() {
    let m = parse_ok(
        r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "np", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": 80, "endPort": 90}, {"port": "http"}]}]}}"#,
    );
    let Object::NetworkPolicy(np) = &m.documents[0].object else {
        panic!("not a policy");
    };
    let ports = np.spec.ingress.as_ref().unwrap()[0].ports.as_ref().unwrap();
    assert_eq!(ports[0].port, Some(k8s::IntOrString::Int(80)));
    assert_eq!(ports[0].end_port, Some(90));
    assert_eq!(ports[1].port, Some(k8s::IntOrString::String("http".into())));
}

#[test]
fn list_items_are_numbered() {
    let m = parse_ok(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: first}\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: d}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n",
    );
    assert_eq!(m.documents.len(), 3);
    assert_eq!(
        m.documents[1].source,
        Source {
            file: "f.yaml".into(),
            document: 1,
            item: Some(0)
        }
    );
    assert_eq!(m.documents[2].source.item, Some(2));
    assert_eq!(
        m.documents[2].source.to_string(),
        "f.yaml: document 1 item 2"
    );
    assert_eq!(m.skipped.get("Deployment"), Some(&1));
}

#[test]
fn errors_inside_a_list_carry_the_item() {
    let errs = parse_err(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: ok}\n- apiVersion: apps/v1\n  kind: Pod\n  metadata: {name: bad, namespace: n}\n",
    );
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].location.item, Some(1));
    assert_eq!(errs[0].field, "apiVersion");
    assert_eq!(errs[0].object.as_deref(), Some("Pod n/bad"));
}

#[test]
fn other_kinds_are_counted() {
    let m = parse_ok(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n",
    );
    assert!(m.documents.is_empty());
    assert_eq!(m.skipped.get("Deployment"), Some(&2));
    assert_eq!(m.skipped.get("Service"), Some(&1));
}

#[test]
fn unknown_api_version_of_a_known_kind() {
    let errs = parse_err(
        "apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: old, namespace: x}\n---\napiVersion: apps/v1\nkind: Pod\nmetadata: {name: p}\n---\napiVersion: v2\nkind: Namespace\nmetadata: {name: n}\n",
    );
    assert_eq!(errs.len(), 3, "every error of the file: {errs:?}");
    assert_eq!(errs[0].field, "apiVersion");
    assert_eq!(errs[0].object.as_deref(), Some("NetworkPolicy x/old"));
    assert!(
        errs[0].message.contains("networking.k8s.io/v1beta1"),
        "{}",
        errs[0].message
    );
    assert!(
        errs[0].message.contains("\"networking.k8s.io/v1\""),
        "{}",
        errs[0].message
    );
    assert_eq!(errs[1].location.document, 1);
    assert_eq!(errs[1].object.as_deref(), Some("Pod default/p"));
    assert_eq!(errs[2].object.as_deref(), Some("Namespace n"));
}

#[test]
fn missing_api_version_or_kind() {
    let errs =
        parse_err("kind: Pod\nmetadata: {name: p}\n---\napiVersion: v1\nmetadata: {name: q}\n");
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0].field, "apiVersion");
    assert_eq!(errs[0].object.as_deref(), Some("Pod default/p"));
    assert_eq!(errs[1].field, "kind");
    assert_eq!(errs[1].location.document, 1);
}

#[test]
fn a_document_that_is_not_an_object() {
    let errs = parse_err("- a\n- b\n---\njust text\n");
    assert_eq!(errs.len(), 2);
    assert!(
        errs[0].message.contains("found a list"),
        "{}",
        errs[0].message
    );
    assert!(
        errs[1].message.contains("found a string"),
        "{}",
        errs[1].message
    );
}

#[test]
fn wrong_type_names_the_field_path() {
    let errs = parse_err(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: x}\nspec:\n  ingress:\n  - ports:\n    - port: 80\n      endPort: eighty\n",
    );
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "spec.ingress[0].ports[0].endPort");
    assert_eq!(errs[0].object.as_deref(), Some("NetworkPolicy x/np"));
    assert!(errs[0].message.contains("integer"), "{}", errs[0].message);
}

#[test]
fn wrong_types_in_several_documents_are_all_reported() {
    let errs = parse_err(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: [x]}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: q}\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: 80\n    - name: http\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec: {ingress: [{ports: [{port: [1]}]}]}\n",
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_eq!(errs[0].field, "metadata.labels.app");
    assert_eq!(errs[1].field, "spec.containers[0].ports[1]");
    assert!(
        errs[1].message.contains("containerPort"),
        "{}",
        errs[1].message
    );
    assert_eq!(errs[2].field, "spec.ingress[0].ports[0].port");
    assert_eq!(errs[2].message, "must be a port number or a port name");
}

#[test]
fn syntax_error_is_reported_with_its_document() {
    let errs =
        parse_err("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [unclosed\n");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].location.document, 1);
    assert!(
        errs[0].message.starts_with("not valid YAML or JSON"),
        "{}",
        errs[0].message
    );
}

#[test]
fn display_names_file_document_object_and_field() {
    let e = ManifestError {
        location: Source {
            file: "pol.yaml".into(),
            document: 2,
            item: None,
        },
        object: Some("NetworkPolicy myns/np".into()),
        field: "spec.ingress[0].ports[0].endPort".into(),
        message: "endPort 10 must not be below port 20".into(),
    };
    assert_eq!(
        e.to_string(),
        "pol.yaml: document 2: NetworkPolicy myns/np: spec.ingress[0].ports[0].endPort: endPort 10 must not be below port 20"
    );
    let whole = ManifestError {
        object: None,
        field: String::new(),
        ..e
    };
    assert_eq!(
        whole.to_string(),
        "pol.yaml: document 2: endPort 10 must not be below port 20"
    );
}

#[test]
fn describe_objects() {
    let ns = Object::Namespace(k8s::Namespace {
        metadata: k8s::ObjectMeta {
            name: Some("a".into()),
            ..Default::default()
        },
    });
    assert_eq!(ns.describe(), "Namespace a");
    let pod = Object::Pod(k8s::Pod {
        metadata: k8s::ObjectMeta {
            name: Some("p".into()),
            ..Default::default()
        },
        ..Default::default()
    });
    assert_eq!(pod.describe(), "Pod default/p");
    assert_eq!(pod.kind(), "Pod");
}

#[test]
fn typed_lists_fill_in_apiversion_and_kind() {
    let m = parse_ok(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicyList\nmetadata: {resourceVersion: \"5\"}\nitems:\n- metadata: {name: a, namespace: x}\n  spec: {}\n- metadata: {name: b, namespace: x}\n---\napiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: p}\n",
    );
    assert_eq!(m.documents.len(), 3);
    assert!(
        matches!(&m.documents[1].object, Object::NetworkPolicy(np) if np.metadata.name.as_deref() == Some("b"))
    );
    assert_eq!(m.documents[1].source.item, Some(1));
    assert_eq!(m.documents[2].object.describe(), "Pod default/p");
    // A typed list of a kind Palisade does not read is skipped whole; a wrong version is an error.
    let m = parse_ok("apiVersion: apps/v1\nkind: DeploymentList\nitems: [{metadata: {name: d}}]\n");
    assert_eq!(m.skipped.get("DeploymentList"), Some(&1));
    let errs = parse_err("apiVersion: v1\nkind: NetworkPolicyList\nitems: []\n");
    assert_eq!(errs[0].field, "apiVersion");
}

#[test]
fn partial_parse_keeps_the_documents_that_parsed() {
    let (m, errs) = parse_documents_partial(
        "f.yaml",
        "apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: x, namespace: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].location.document, 0);
    assert_eq!(m.documents.len(), 1);
    assert_eq!(m.documents[0].source.document, 1);
}
