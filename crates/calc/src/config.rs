//! [`CalcConfig`]: which node the calculation is for and how its interfaces are named.

use palisade_model::endpoint::{calico_interface_name, interface_name};
use palisade_model::EndpointId;
use serde::{Deserialize, Serialize};

/// The interface prefix Palisade uses for pod veths unless configured otherwise.
pub const DEFAULT_IFACE_PREFIX: &str = "pal";

/// What one node's calculation needs to know about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalcConfig {
    /// The node whose endpoints are local (`Endpoint::node`).
    pub node: String,
    /// Prefix of host-side interface names (`palisade_model::endpoint::interface_name`): the
    /// primary one, which names the endpoint chains.
    pub iface_prefix: String,
    /// Further prefixes a CNI on this node may name a pod's host-side interface with (e.g.
    /// `cali` while migrating to `pal`): each local endpoint is also dispatched by its name
    /// under each of these ([`crate::LocalEndpoint::iface_aliases`]). Empty by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_iface_prefixes: Vec<String>,
    /// How the primary interface name is made: Palisade's (`<prefix><SHA-256 of ns/pod>`) or
    /// Calico's (`cali<SHA-1 of ns.pod>`, the prefix then unused).
    #[serde(default)]
    pub iface_naming: IfaceNaming,
}

/// How a pod's host-side interface is named by the CNI that wired it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IfaceNaming {
    /// `<prefix>` + the first hex digits of SHA-256 of `namespace/pod` (Palisade's lab).
    #[default]
    Palisade,
    /// `cali` + the first 11 hex digits of SHA-1 of `namespace.pod` (Calico's CNI).
    Calico,
}

impl IfaceNaming {
    pub fn as_str(self) -> &'static str {
        match self {
            IfaceNaming::Palisade => "palisade",
            IfaceNaming::Calico => "calico",
        }
    }
}

impl std::fmt::Display for IfaceNaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IfaceNaming {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "palisade" => Ok(IfaceNaming::Palisade),
            "calico" => Ok(IfaceNaming::Calico),
            _ => Err(format!(
                "unknown interface naming {s:?}: expected palisade or calico"
            )),
        }
    }
}

impl CalcConfig {
    /// The configuration for `node` with the default interface prefix.
    pub fn new(node: impl Into<String>) -> Self {
        CalcConfig {
            node: node.into(),
            iface_prefix: DEFAULT_IFACE_PREFIX.to_string(),
            extra_iface_prefixes: Vec::new(),
            iface_naming: IfaceNaming::Palisade,
        }
    }

    /// The configuration for `node` with `prefixes`, the first one primary; the default prefix
    /// when `prefixes` is empty. Repeated prefixes count once.
    pub fn with_prefixes<S: AsRef<str>>(node: impl Into<String>, prefixes: &[S]) -> Self {
        let mut all = prefixes.iter().map(|p| p.as_ref().to_string());
        let primary = all
            .next()
            .unwrap_or_else(|| DEFAULT_IFACE_PREFIX.to_string());
        let mut extra: Vec<String> = Vec::new();
        for p in all {
            if p != primary && !extra.contains(&p) {
                extra.push(p);
            }
        }
        CalcConfig {
            node: node.into(),
            iface_prefix: primary,
            extra_iface_prefixes: extra,
            iface_naming: IfaceNaming::Palisade,
        }
    }

    /// Every prefix, the primary one first.
    pub fn iface_prefixes(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.iface_prefix.as_str())
            .chain(self.extra_iface_prefixes.iter().map(String::as_str))
    }

    /// The host-side interface of local endpoint `id` under the primary prefix.
    pub fn iface(&self, id: &EndpointId) -> String {
        match self.iface_naming {
            IfaceNaming::Palisade => interface_name(&self.iface_prefix, id),
            IfaceNaming::Calico => calico_interface_name(id),
        }
    }

    /// The names of `id`'s interface under the extra prefixes, in their order, without the
    /// primary name and without repeats.
    pub fn iface_aliases(&self, id: &EndpointId, primary: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(self.extra_iface_prefixes.len());
        for p in &self.extra_iface_prefixes {
            let name = interface_name(p, id);
            if name != primary && !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_has_no_aliases() {
        let c = CalcConfig::new("n1");
        let id = EndpointId::new("ns", "p");
        assert_eq!(c.iface(&id), interface_name("pal", &id));
        assert!(c.iface_aliases(&id, &c.iface(&id)).is_empty());
        assert_eq!(c.iface_prefixes().collect::<Vec<_>>(), ["pal"]);
    }

    #[test]
    fn every_extra_prefix_names_an_alias() {
        let c = CalcConfig::with_prefixes("n1", &["cali", "pal", "cali", "tap"]);
        assert_eq!(c.iface_prefix, "cali");
        assert_eq!(c.extra_iface_prefixes, ["pal", "tap"]);
        let id = EndpointId::new("ns", "p");
        let primary = c.iface(&id);
        assert!(primary.starts_with("cali") && primary.len() == 15);
        assert_eq!(
            c.iface_aliases(&id, &primary),
            [interface_name("pal", &id), interface_name("tap", &id)]
        );
        assert_eq!(
            CalcConfig::with_prefixes::<&str>("n1", &[]),
            CalcConfig::new("n1")
        );
    }

    #[test]
    fn calico_naming_is_cali_and_sha1_of_namespace_dot_pod() {
        let mut c = CalcConfig::new("n1");
        c.iface_naming = IfaceNaming::Calico;
        // printf 'default.web' | sha1sum → 68caf03a5f4aa41b0a8b…
        let id = EndpointId::new("default", "web");
        assert_eq!(c.iface(&id), "cali68caf03a5f4");
        assert_eq!(
            "calico".parse::<IfaceNaming>().unwrap(),
            IfaceNaming::Calico
        );
        assert!("weave".parse::<IfaceNaming>().is_err());
    }

    #[test]
    fn serde_keeps_the_single_prefix_form() {
        let c = CalcConfig::new("n1");
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("extra_iface_prefixes"), "{json}");
        let back: CalcConfig =
            serde_json::from_str(r#"{"node":"n1","iface_prefix":"pal"}"#).unwrap();
        assert_eq!(back, c);
    }
}
