//! Reading manifest text: multi-document YAML or JSON, `kind: List`, kinds we know and the
//! ones we skip. The caller reads files; this module sees only (file name, text).

use std::collections::BTreeMap;
use std::fmt;

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
}

impl Object {
    /// `Kind namespace/name` (or `Kind name` for a Namespace), for messages.
    pub fn describe(&self) -> String {
        todo_describe(self)
    }
}

fn todo_describe(o: &Object) -> String {
    let (kind, meta, namespaced) = match o {
        Object::Namespace(n) => ("Namespace", &n.metadata, false),
        Object::Pod(p) => ("Pod", &p.metadata, true),
        Object::NetworkPolicy(p) => ("NetworkPolicy", &p.metadata, true),
    };
    let name = meta.name.as_deref().unwrap_or("<unnamed>");
    if namespaced {
        let ns = meta.namespace.as_deref().unwrap_or("default");
        format!("{kind} {ns}/{name}")
    } else {
        format!("{kind} {name}")
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
    let _ = (file, text);
    unimplemented!("manifest::parse_documents")
}
