//! Label maps and the Kubernetes rules for label keys and values.

use std::collections::BTreeMap;

/// Labels of a pod or namespace. Ordered so that printing and hashing are deterministic.
pub type Labels = BTreeMap<String, String>;

/// The label every namespace carries with its own name (set by the API server since 1.21).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters made of alphanumerics, `-`, `_`, `.`, beginning and ending alphanumeric.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() || prefix.len() > 253 || !is_dns_subdomain(prefix) {
            return Err(format!(
                "label key {key:?}: prefix must be a DNS subdomain (lower case alphanumerics, '-', '.'), at most 253 characters"
            ));
        }
    }
    if name.is_empty() {
        return Err(format!("label key {key:?}: name part must not be empty"));
    }
    check_name_part(name).map_err(|why| format!("label key {key:?}: {why}"))
}

/// Checks a label value: empty, or at most 63 characters of alphanumerics, `-`, `_`, `.`,
/// beginning and ending alphanumeric.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_part(value).map_err(|why| format!("label value {value:?}: {why}"))
}

fn check_name_part(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be at most 63 characters".into());
    }
    let bytes = s.as_bytes();
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err("must begin and end with an alphanumeric character".into());
    }
    if !bytes
        .iter()
        .all(|&b| alnum(b) || b == b'-' || b == b'_' || b == b'.')
    {
        return Err("may contain only alphanumerics, '-', '_' and '.'".into());
    }
    Ok(())
}

/// RFC 1123 subdomain: dot-separated labels of lower-case alphanumerics and '-'.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// RFC 1123 label (namespace names): lower-case alphanumerics and '-', at most 63.
pub fn is_dns_label(s: &str) -> bool {
    is_dns_subdomain(s) && !s.contains('.') && s.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(check_label_key("app").is_ok());
        assert!(check_label_key("kubernetes.io/metadata.name").is_ok());
        assert!(check_label_key("a.b/c_d-e.f").is_ok());
        assert!(check_label_key("").is_err());
        assert!(check_label_key("/x").is_err());
        assert!(check_label_key("Bad_Prefix/x").is_err());
        assert!(check_label_key("x/").is_err());
        assert!(check_label_key("-x").is_err());
        assert!(check_label_key(&"a".repeat(64)).is_err());
    }

    #[test]
    fn values() {
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("frontend").is_ok());
        assert!(check_label_value("a b").is_err());
        assert!(check_label_value("x\"; -A").is_err());
        assert!(check_label_value("x-").is_err());
    }
}
