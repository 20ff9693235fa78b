//! Selectors: Palisade's Calico-style expression language, into which Kubernetes label
//! selectors convert.
//!
//! Grammar (lowest precedence first):
//! ```text
//! or    := and ( "||" and )*
//! and   := unary ( "&&" unary )*
//! unary := "!" unary | "(" or ")" | "all()" | "has(" key ")"
//!        | key "==" str | key "!=" str | key "in" "{" strs "}" | key "not" "in" "{" strs "}"
//! str   := '"' … '"' | "'" … "'"   (backslash escapes the quote and itself)
//! ```
//! `!=` and `not in` are true when the key is absent, as for Kubernetes `NotIn`.
//! [`Selector`]'s `Display` prints a canonical form that [`Selector::parse`] reads back to
//! an equal value (for `And`/`Or` with at least two children, which is all the parser makes).

mod parse;

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::labels::Labels;
pub use parse::SelectorParseError;

/// A predicate over a label map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    /// Matches everything (`all()`, or an empty Kubernetes selector).
    All,
    /// `key == "value"`: the key is present with this value.
    Eq(String, String),
    /// `key != "value"`: the key is absent or has another value.
    NotEq(String, String),
    /// `key in {"a", "b"}`: the key is present with one of these values.
    In(String, BTreeSet<String>),
    /// `key not in {"a", "b"}`: the key is absent or has none of these values.
    NotIn(String, BTreeSet<String>),
    /// `has(key)`: the key is present.
    Has(String),
    /// `!expr`.
    Not(Box<Selector>),
    /// `a && b && …`; an empty list matches everything.
    And(Vec<Selector>),
    /// `a || b || …`; an empty list matches nothing.
    Or(Vec<Selector>),
}

impl Selector {
    /// Whether labels satisfy the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Selector::All => true,
            Selector::Eq(k, v) => labels.get(k) == Some(v),
            Selector::NotEq(k, v) => labels.get(k) != Some(v),
            Selector::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Selector::NotIn(k, vs) => !labels.get(k).is_some_and(|v| vs.contains(v)),
            Selector::Has(k) => labels.contains_key(k),
            Selector::Not(s) => !s.matches(labels),
            Selector::And(ss) => ss.iter().all(|s| s.matches(labels)),
            Selector::Or(ss) => ss.iter().any(|s| s.matches(labels)),
        }
    }

    /// Parses the expression language (see the module docs).
    pub fn parse(text: &str) -> Result<Selector, SelectorParseError> {
        parse::parse(text)
    }

    /// Conjunction that collapses trivial cases: no terms is `All`, one term is itself, and
    /// `All` terms are dropped.
    pub fn and(terms: Vec<Selector>) -> Selector {
        let mut terms: Vec<Selector> = terms.into_iter().filter(|t| *t != Selector::All).collect();
        match terms.len() {
            0 => Selector::All,
            1 => terms.pop().unwrap_or(Selector::All),
            _ => Selector::And(terms),
        }
    }

    /// Label keys whose presence is required for a match: every key of an `Eq`, `In` or
    /// `Has` term of the top-level conjunction. Indexes use this to skip selectors that cannot
    /// match a label set (a selector with no required key must be checked against everything).
    pub fn required_keys(&self) -> Vec<&str> {
        match self {
            Selector::Eq(k, _) | Selector::In(k, _) | Selector::Has(k) => vec![k.as_str()],
            Selector::And(ss) => ss.iter().flat_map(|s| s.required_keys()).collect(),
            _ => Vec::new(),
        }
    }

    fn is_compound(&self) -> bool {
        matches!(self, Selector::And(_) | Selector::Or(_))
    }
}

fn write_str(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

fn write_set(f: &mut fmt::Formatter<'_>, vs: &BTreeSet<String>) -> fmt::Result {
    f.write_str("{")?;
    for (i, v) in vs.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_str(f, v)?;
    }
    f.write_str("}")
}

fn write_joined(f: &mut fmt::Formatter<'_>, ss: &[Selector], op: &str) -> fmt::Result {
    if ss.is_empty() {
        // An empty And is all(); an empty Or matches nothing.
        return f.write_str(if op == " && " { "all()" } else { "!all()" });
    }
    for (i, s) in ss.iter().enumerate() {
        if i > 0 {
            f.write_str(op)?;
        }
        if s.is_compound() {
            write!(f, "({s})")?;
        } else {
            write!(f, "{s}")?;
        }
    }
    Ok(())
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => f.write_str("all()"),
            Selector::Eq(k, v) => {
                write!(f, "{k} == ")?;
                write_str(f, v)
            }
            Selector::NotEq(k, v) => {
                write!(f, "{k} != ")?;
                write_str(f, v)
            }
            Selector::In(k, vs) => {
                write!(f, "{k} in ")?;
                write_set(f, vs)
            }
            Selector::NotIn(k, vs) => {
                write!(f, "{k} not in ")?;
                write_set(f, vs)
            }
            Selector::Has(k) => write!(f, "has({k})"),
            Selector::Not(s) => match **s {
                Selector::All | Selector::Has(_) | Selector::Not(_) => write!(f, "!{s}"),
                _ => write!(f, "!({s})"),
            },
            Selector::And(ss) => write_joined(f, ss, " && "),
            Selector::Or(ss) => write_joined(f, ss, " || "),
        }
    }
}

impl Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Selector::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
