//! Selectors indexed by the labels they require, as felix's label index does: a change to
//! one endpoint's labels needs to look only at the selectors that could match it.
//!
//! A selector goes into one place: under `(key, value)` for a top-level `key == value` term
//! (or under each value of a top-level `key in {…}`), else under `key` for a top-level
//! `has(key)`, else into the list of selectors that must be checked against every change.
//! [`LabelIndex::candidates`] returns a superset of the selectors matching some labels, each
//! at most once; callers evaluate the candidates.

use std::collections::{HashMap, HashSet};

use palisade_model::{Labels, Selector};

/// Where a selector is indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IndexKey<'a> {
    /// The key must be present with one of these values.
    Values(&'a str, Vec<&'a str>),
    /// The key must be present.
    Key(&'a str),
    /// Nothing is required.
    None,
}

/// The most selective index key of a selector: an `Eq` term, else the `In` term with the
/// fewest values, else a `Has` term.
pub(crate) fn index_key(selector: &Selector) -> IndexKey<'_> {
    let terms: &[Selector] = match selector {
        Selector::And(terms) => terms,
        single => std::slice::from_ref(single),
    };
    let mut best = IndexKey::None;
    for term in terms {
        match term {
            Selector::Eq(k, v) => return IndexKey::Values(k, vec![v.as_str()]),
            Selector::In(k, vs) => {
                let better = match &best {
                    IndexKey::Values(_, cur) => vs.len() < cur.len(),
                    _ => true,
                };
                if better {
                    best = IndexKey::Values(k, vs.iter().map(String::as_str).collect());
                }
            }
            Selector::Has(k) if best == IndexKey::None => best = IndexKey::Key(k),
            _ => {}
        }
    }
    best
}

#[derive(Default)]
struct KeyBucket {
    any_value: HashSet<u32>,
    by_value: HashMap<String, HashSet<u32>>,
}

impl KeyBucket {
    fn is_empty(&self) -> bool {
        self.any_value.is_empty() && self.by_value.is_empty()
    }
}

/// Items (`u32` keys) indexed by their selectors.
#[derive(Default)]
pub(crate) struct LabelIndex {
    by_key: HashMap<String, KeyBucket>,
    unindexed: HashSet<u32>,
}

impl LabelIndex {
    pub(crate) fn insert(&mut self, item: u32, selector: &Selector) {
        match index_key(selector) {
            IndexKey::Values(k, vs) => {
                let bucket = self.by_key.entry(k.to_string()).or_default();
                for v in vs {
                    bucket
                        .by_value
                        .entry(v.to_string())
                        .or_default()
                        .insert(item);
                }
            }
            IndexKey::Key(k) => {
                self.by_key
                    .entry(k.to_string())
                    .or_default()
                    .any_value
                    .insert(item);
            }
            IndexKey::None => {
                self.unindexed.insert(item);
            }
        }
    }

    /// Removes an item inserted with the same selector.
    pub(crate) fn remove(&mut self, item: u32, selector: &Selector) {
        match index_key(selector) {
            IndexKey::Values(k, vs) => {
                if let Some(bucket) = self.by_key.get_mut(k) {
                    for v in vs {
                        if let Some(items) = bucket.by_value.get_mut(v) {
                            items.remove(&item);
                            if items.is_empty() {
                                bucket.by_value.remove(v);
                            }
                        }
                    }
                    if bucket.is_empty() {
                        self.by_key.remove(k);
                    }
                }
            }
            IndexKey::Key(k) => {
                if let Some(bucket) = self.by_key.get_mut(k) {
                    bucket.any_value.remove(&item);
                    if bucket.is_empty() {
                        self.by_key.remove(k);
                    }
                }
            }
            IndexKey::None => {
                self.unindexed.remove(&item);
            }
        }
    }

    /// Pushes every item whose selector could match `labels`, each once.
    pub(crate) fn candidates(&self, labels: &Labels, out: &mut Vec<u32>) {
        out.extend(self.unindexed.iter().copied());
        if self.by_key.is_empty() {
            return;
        }
        for (k, v) in labels {
            if let Some(bucket) = self.by_key.get(k) {
                out.extend(bucket.any_value.iter().copied());
                if let Some(items) = bucket.by_value.get(v) {
                    out.extend(items.iter().copied());
                }
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_key.is_empty() && self.unindexed.is_empty()
    }
}

/// A [`LabelIndex`] per namespace for items scoped to one namespace, and one for items that
/// may match endpoints of any namespace.
#[derive(Default)]
pub(crate) struct ScopedIndex {
    by_namespace: HashMap<String, LabelIndex>,
    any_namespace: LabelIndex,
}

impl ScopedIndex {
    pub(crate) fn insert(&mut self, item: u32, namespace: Option<&str>, selector: &Selector) {
        match namespace {
            Some(ns) => self
                .by_namespace
                .entry(ns.to_string())
                .or_default()
                .insert(item, selector),
            None => self.any_namespace.insert(item, selector),
        }
    }

    pub(crate) fn remove(&mut self, item: u32, namespace: Option<&str>, selector: &Selector) {
        match namespace {
            Some(ns) => {
                if let Some(index) = self.by_namespace.get_mut(ns) {
                    index.remove(item, selector);
                    if index.is_empty() {
                        self.by_namespace.remove(ns);
                    }
                }
            }
            None => self.any_namespace.remove(item, selector),
        }
    }

    /// Items that could match an endpoint of `namespace` with `labels`, each once.
    pub(crate) fn candidates(&self, namespace: &str, labels: &Labels, out: &mut Vec<u32>) {
        if let Some(index) = self.by_namespace.get(namespace) {
            index.candidates(labels, out);
        }
        self.any_namespace.candidates(labels, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(text: &str) -> Selector {
        Selector::parse(text).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn index_key_prefers_eq_then_smallest_in_then_has() {
        let s = sel("has(a) && b in {\"1\", \"2\"} && c == \"x\"");
        assert_eq!(index_key(&s), IndexKey::Values("c", vec!["x"]));
        let s = sel("has(a) && b in {\"1\", \"2\"} && d in {\"z\"}");
        assert_eq!(index_key(&s), IndexKey::Values("d", vec!["z"]));
        assert_eq!(index_key(&sel("has(a) && b != \"1\"")), IndexKey::Key("a"));
        assert_eq!(index_key(&sel("a == \"1\" || b == \"2\"")), IndexKey::None);
        assert_eq!(index_key(&sel("!has(a)")), IndexKey::None);
        assert_eq!(index_key(&Selector::All), IndexKey::None);
    }

    #[test]
    fn candidates_cover_matches_and_skip_impossible() {
        let sels = [
            sel("app == \"web\""),
            sel("app == \"db\""),
            sel("tier in {\"a\", \"b\"}"),
            sel("has(team)"),
            sel("app != \"web\""),
            Selector::All,
        ];
        let mut index = LabelIndex::default();
        for (i, s) in sels.iter().enumerate() {
            index.insert(i as u32, s);
        }
        let l = labels(&[("app", "web"), ("tier", "b"), ("team", "x")]);
        let mut out = Vec::new();
        index.candidates(&l, &mut out);
        out.sort();
        assert_eq!(out, vec![0, 2, 3, 4, 5]);
        // Every selector that matches is a candidate.
        for (i, s) in sels.iter().enumerate() {
            if s.matches(&l) {
                assert!(out.contains(&(i as u32)));
            }
        }
        for (i, s) in sels.iter().enumerate() {
            index.remove(i as u32, s);
        }
        assert!(index.is_empty());
    }

    #[test]
    fn scoped_candidates_only_from_own_namespace() {
        let mut index = ScopedIndex::default();
        index.insert(1, Some("a"), &Selector::All);
        index.insert(2, Some("b"), &Selector::All);
        index.insert(3, None, &Selector::All);
        let mut out = Vec::new();
        index.candidates("a", &Labels::new(), &mut out);
        out.sort();
        assert_eq!(out, vec![1, 3]);
        index.remove(1, Some("a"), &Selector::All);
        out.clear();
        index.candidates("a", &Labels::new(), &mut out);
        assert_eq!(out, vec![3]);
    }
}
