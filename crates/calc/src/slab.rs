//! A map from ids to values that also hands out small integer keys, so the hot indexes
//! refer to endpoints, policies and sets by `u32` instead of cloning their ids.

use std::collections::HashMap;
use std::hash::Hash;

pub(crate) struct Slab<K, V> {
    keys: HashMap<K, u32>,
    /// Boxed: a free or not yet used slot (the `Vec` grows by doubling) costs 8 bytes, not
    /// the size of an entry (~230 bytes for an endpoint).
    slots: Vec<Option<Box<(K, V)>>>,
    free: Vec<u32>,
}

impl<K, V> Default for Slab<K, V> {
    fn default() -> Self {
        Slab {
            keys: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, V> Slab<K, V> {
    pub(crate) fn key(&self, id: &K) -> Option<u32> {
        self.keys.get(id).copied()
    }

    pub(crate) fn get(&self, key: u32) -> Option<&V> {
        self.slots
            .get(key as usize)
            .and_then(|s| s.as_deref())
            .map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, key: u32) -> Option<&mut V> {
        self.slots
            .get_mut(key as usize)
            .and_then(|s| s.as_deref_mut())
            .map(|(_, v)| v)
    }

    pub(crate) fn id(&self, key: u32) -> Option<&K> {
        self.slots
            .get(key as usize)
            .and_then(|s| s.as_deref())
            .map(|(k, _)| k)
    }

    pub(crate) fn by_id(&self, id: &K) -> Option<&V> {
        self.key(id).and_then(|k| self.get(k))
    }

    /// Inserts a value under a new id and returns its key. The id must not be present.
    pub(crate) fn insert(&mut self, id: K, value: V) -> u32 {
        let entry = Some(Box::new((id.clone(), value)));
        let key = match self.free.pop() {
            Some(k) if (k as usize) < self.slots.len() => {
                self.slots[k as usize] = entry;
                k
            }
            _ => {
                self.slots.push(entry);
                (self.slots.len() - 1) as u32
            }
        };
        self.keys.insert(id, key);
        key
    }

    pub(crate) fn remove(&mut self, key: u32) -> Option<(K, V)> {
        let taken = *self.slots.get_mut(key as usize).and_then(|s| s.take())?;
        self.keys.remove(&taken.0);
        self.free.push(key);
        Some(taken)
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_reused_after_removal() {
        let mut s: Slab<String, u8> = Slab::default();
        let a = s.insert("a".into(), 1);
        let b = s.insert("b".into(), 2);
        assert_ne!(a, b);
        assert_eq!(s.remove(a), Some(("a".to_string(), 1)));
        assert_eq!(s.key(&"a".to_string()), None);
        assert_eq!(s.get(a), None);
        let c = s.insert("c".into(), 3);
        assert_eq!(c, a);
        assert_eq!(s.by_id(&"c".to_string()), Some(&3));
        assert_eq!(s.id(b), Some(&"b".to_string()));
        assert_eq!(s.len(), 2);
    }
}
