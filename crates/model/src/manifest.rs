//! Reading manifest text: multi-document YAML or JSON, `kind: List`, kinds we know and the
//! ones we skip. The caller reads files; this module sees only (file name, text).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::k8s;

/// Where a document came from: the file and the document's 0-based index in it (items of a
/// `kind: List` are numbered after the list's own index as `index.item`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Source {
    pub file: String,
    pub document: usize,
    /// Index inside a `kind: List`, if the object came from one.
    pub item: Option<usize>,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.item {
            Some(i) => write!(f, "{}: document {} item {}", self.file, self.document, i),
            None => write!(f, "{}: document {}", self.file, self.document),
        }
    }
}

/// A Kubernetes object Palisade reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(k8s::Namespace),
    Pod(k8s::Pod),
    NetworkPolicy(k8s::NetworkPolicy),
    Node(k8s::Node),
    ClusterNetworkPolicy(k8s::ClusterNetworkPolicy),
}

impl Object {
    /// `Kind namespace/name` (or `Kind name` for a cluster-scoped kind), for messages.
    pub fn describe(&self) -> String {
        let (kind, meta, namespaced) = match self {
            Object::Namespace(n) => ("Namespace", &n.metadata, false),
            Object::Pod(p) => ("Pod", &p.metadata, true),
            Object::NetworkPolicy(p) => ("NetworkPolicy", &p.metadata, true),
            Object::Node(n) => ("Node", &n.metadata, false),
            Object::ClusterNetworkPolicy(p) => ("ClusterNetworkPolicy", &p.metadata, false),
        };
        let name = meta.name.as_deref().unwrap_or("<unnamed>");
        if namespaced {
            let ns = meta
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or("default");
            format!("{kind} {ns}/{name}")
        } else {
            format!("{kind} {name}")
        }
    }

    /// The object's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Pod(_) => "Pod",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::Node(_) => "Node",
            Object::ClusterNetworkPolicy(_) => "ClusterNetworkPolicy",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub source: Source,
    pub object: Object,
}

/// The documents of one or more files, plus a count of skipped kinds (e.g. `Deployment: 2`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    pub documents: Vec<Document>,
    pub skipped: BTreeMap<String, usize>,
}

/// An error in an input document: where, which object, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    pub location: Source,
    /// `Kind namespace/name` when known.
    pub object: Option<String>,
    /// Path of the field, e.g. `spec.ingress[0].ports[1].endPort`; empty for the whole document.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.location)?;
        if let Some(o) = &self.object {
            write!(f, ": {o}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Parses one file's text (YAML, possibly multi-document, or JSON) into documents.
/// Unknown kinds are counted in `skipped`; a known kind with an unknown apiVersion, a document
/// that is not an object, or a field of the wrong type is an error. Nothing is validated
/// beyond types here: see [`crate::validate`].
pub fn parse_documents(file: &str, text: &str) -> Result<Manifests, Vec<ManifestError>> {
    let (out, errors) = parse_documents_partial(file, text);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Like [`parse_documents`], but also returns the documents that did parse when others did
/// not, so that a caller can validate them too and report every error of a file at once.
pub fn parse_documents_partial(file: &str, text: &str) -> (Manifests, Vec<ManifestError>) {
    let mut out = Manifests::default();
    let mut errors = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let source = Source {
            file: file.to_string(),
            document: index,
            item: None,
        };
        match serde_yaml::Value::deserialize(de) {
            // A syntax error ends the stream: the parser cannot resynchronize after it.
            Err(e) => {
                errors.push(error(
                    source,
                    None,
                    "",
                    format!("not valid YAML or JSON: {e}"),
                ));
                break;
            }
            Ok(value) => read_value(source, value, true, &mut out, &mut errors),
        }
    }
    (out, errors)
}

/// Reads one document (or one item of a `kind: List`) into `out`, or its error into `errors`.
fn read_value(
    source: Source,
    value: serde_yaml::Value,
    top_level: bool,
    out: &mut Manifests,
    errors: &mut Vec<ManifestError>,
) {
    let value = match value {
        serde_yaml::Value::Null if top_level => return, // empty document, e.g. a trailing `---`
        serde_yaml::Value::Mapping(_) => value,
        other => {
            let what = value_kind(&other);
            errors.push(error(
                source,
                None,
                "",
                format!("expected a Kubernetes object (a mapping), found {what}"),
            ));
            return;
        }
    };
    let api_version = value.get("apiVersion").and_then(|v| v.as_str());
    let kind = value.get("kind").and_then(|v| v.as_str());
    let (api_version, kind) = match (api_version, kind) {
        (Some(a), Some(k)) if !a.is_empty() && !k.is_empty() => (a.to_string(), k.to_string()),
        (a, k) => {
            let field = if a.is_none_or(str::is_empty) {
                "apiVersion"
            } else {
                "kind"
            };
            let object = describe_value(k.unwrap_or("object"), &value);
            errors.push(error(
                source,
                object,
                field,
                format!("missing (every object needs a string {field})"),
            ));
            return;
        }
    };
    // `PodList`, `NamespaceList`, `NetworkPolicyList` (API server list responses, whose
    // items may leave out apiVersion and kind) read like a `List` of that kind.
    let typed_list = kind
        .strip_suffix("List")
        .and_then(|element| Some((element.to_string(), api_version_of(element)?)))
        .filter(|_| top_level);
    let expected = match (kind.as_str(), &typed_list) {
        ("List", _) if top_level => "v1",
        (_, Some((_, version))) => version,
        (k, _) => match api_version_of(k) {
            Some(v) => v,
            None => {
                *out.skipped.entry(kind).or_default() += 1;
                return;
            }
        },
    };
    if api_version != expected {
        let object = describe_value(&kind, &value);
        errors.push(error(
            source,
            object,
            "apiVersion",
            format!(
                "unsupported apiVersion {api_version:?} for kind {kind} (expected {expected:?})"
            ),
        ));
        return;
    }
    let object = match kind.as_str() {
        "List" => return read_list(source, value, None, out, errors),
        _ if typed_list.is_some() => {
            return read_list(source, value, typed_list.as_ref(), out, errors)
        }
        "Namespace" => typed(&kind, value).map(Object::Namespace),
        "Pod" => typed(&kind, value).map(Object::Pod),
        "Node" => typed(&kind, value).map(Object::Node),
        "ClusterNetworkPolicy" => typed(&kind, value).map(Object::ClusterNetworkPolicy),
        _ => typed(&kind, value).map(Object::NetworkPolicy),
    };
    match object {
        Ok(object) => out.documents.push(Document { source, object }),
        Err((object, field, message)) => errors.push(error(source, object, &field, message)),
    }
}

/// The apiVersion of ClusterNetworkPolicy (network-policy-api).
pub const CLUSTER_NETWORK_POLICY_API_VERSION: &str = "policy.networking.k8s.io/v1alpha2";

/// Whether a kind Palisade reads is cluster-scoped (no `metadata.namespace`).
pub fn is_cluster_scoped(kind: &str) -> bool {
    matches!(kind, "Namespace" | "Node" | "ClusterNetworkPolicy")
}

/// The apiVersion Palisade reads a kind in, or `None` for a kind it skips.
fn api_version_of(kind: &str) -> Option<&'static str> {
    match kind {
        "Namespace" | "Pod" | "Node" => Some("v1"),
        "NetworkPolicy" => Some("networking.k8s.io/v1"),
        "ClusterNetworkPolicy" => Some(CLUSTER_NETWORK_POLICY_API_VERSION),
        _ => None,
    }
}

/// The items of a `kind: List` (or of a typed list such as `PodList`, whose items get the
/// element's apiVersion and kind when they leave them out), numbered by `Source::item`.
fn read_list(
    source: Source,
    value: serde_yaml::Value,
    element: Option<&(String, &'static str)>,
    out: &mut Manifests,
    errors: &mut Vec<ManifestError>,
) {
    let items = match value.get("items") {
        None | Some(serde_yaml::Value::Null) => return,
        Some(serde_yaml::Value::Sequence(items)) => items.clone(),
        Some(other) => {
            let what = value_kind(other);
            errors.push(error(
                source,
                Some("List".into()),
                "items",
                format!("expected a list of objects, found {what}"),
            ));
            return;
        }
    };
    for (i, mut item) in items.into_iter().enumerate() {
        if let (Some((kind, version)), serde_yaml::Value::Mapping(map)) = (element, &mut item) {
            if !map.contains_key("apiVersion") {
                map.insert("apiVersion".into(), (*version).into());
            }
            if !map.contains_key("kind") {
                map.insert("kind".into(), kind.as_str().into());
            }
        }
        let source = Source {
            item: Some(i),
            ..source.clone()
        };
        read_value(source, item, false, out, errors);
    }
}

/// Deserializes a value into a typed object; on error: the object, the field path, the message.
fn typed<T: DeserializeOwned>(
    kind: &str,
    value: serde_yaml::Value,
) -> Result<T, (Option<String>, String, String)> {
    let object = describe_value(kind, &value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        (object, field, friendly(&e.into_inner().to_string()))
    })
}

/// Rewrites serde messages that name Rust types into words a manifest author knows.
fn friendly(message: &str) -> String {
    if message.contains("untagged enum IntOrString") {
        "must be a port number or a port name".to_string()
    } else {
        message.replace("expected i64", "expected an integer")
    }
}

fn error(source: Source, object: Option<String>, field: &str, message: String) -> ManifestError {
    ManifestError {
        location: source,
        object,
        field: field.to_string(),
        message,
    }
}

/// `Kind ns/name` from an untyped document, when its metadata names it.
fn describe_value(kind: &str, value: &serde_yaml::Value) -> Option<String> {
    let meta = value.get("metadata")?;
    let name = meta.get("name").and_then(|v| v.as_str())?;
    if is_cluster_scoped(kind) {
        return Some(format!("{kind} {name}"));
    }
    let ns = meta
        .get("namespace")
        .and_then(|v| v.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    Some(format!("{kind} {ns}/{name}"))
}

fn value_kind(v: &serde_yaml::Value) -> &'static str {
    match v {
        serde_yaml::Value::Null => "nothing (null)",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests;
