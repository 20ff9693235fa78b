//! [`CalcConfig`]: which node the calculation is for and how its interfaces are named.

use palisade_model::endpoint::interface_name;
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
}

impl CalcConfig {
    /// The configuration for `node` with the default interface prefix.
    pub fn new(node: impl Into<String>) -> Self {
        CalcConfig {
            node: node.into(),
            iface_prefix: DEFAULT_IFACE_PREFIX.to_string(),
            extra_iface_prefixes: Vec::new(),
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
        }
    }

    /// Every prefix, the primary one first.
    pub fn iface_prefixes(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.iface_prefix.as_str())
            .chain(self.extra_iface_prefixes.iter().map(String::as_str))
    }

    /// The host-side interface of local endpoint `id` under the primary prefix.
    pub fn iface(&self, id: &EndpointId) -> String {
        interface_name(&self.iface_prefix, id)
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
    fn serde_keeps_the_single_prefix_form() {
        let c = CalcConfig::new("n1");
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("extra_iface_prefixes"), "{json}");
        let back: CalcConfig =
            serde_json::from_str(r#"{"node":"n1","iface_prefix":"pal"}"#).unwrap();
        assert_eq!(back, c);
    }
}
