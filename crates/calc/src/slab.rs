//! A map from ids to values that also hands out small integer keys, so the hot indexes
//! refer to endpoints, policies and sets by `u32` instead of cloning their ids.
//!
//! Each id is stored once, in its slot: the lookup table holds only the `u32` keys and finds
//! an id by its hash, comparing against the slot (an agent holds one entry per pod of the
//! cluster, and a second copy of every `namespace/name` was ~100 bytes a pod).

use std::hash::{BuildHasher, Hash, RandomState};

use hashbrown::HashTable;

pub(crate) struct Slab<K, V> {
    /// Keys of the occupied slots, by the hash of their id.
    index: HashTable<u32>,
    hasher: RandomState,
    /// Boxed: a free or not yet used slot (the `Vec` grows by doubling) costs 8 bytes, not
    /// the size of an entry.
    slots: Vec<Option<Box<(K, V)>>>,
    free: Vec<u32>,
}

impl<K, V> Default for Slab<K, V> {
    fn default() -> Self {
        Slab {
            index: HashTable::new(),
            hasher: RandomState::new(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

/// The id in a slot, if occupied.
fn slot_id<K, V>(slots: &[Option<Box<(K, V)>>], key: u32) -> Option<&K> {
    slots
        .get(key as usize)
        .and_then(|s| s.as_deref())
        .map(|(k, _)| k)
}

impl<K: Hash + Eq, V> Slab<K, V> {
    pub(crate) fn key(&self, id: &K) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.index
            .find(hash, |&k| slot_id(&self.slots, k) == Some(id))
            .copied()
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
        slot_id(&self.slots, key)
    }

    /// The id and value under a key.
    pub(crate) fn entry(&self, key: u32) -> Option<(&K, &V)> {
        self.slots
            .get(key as usize)
            .and_then(|s| s.as_deref())
            .map(|(k, v)| (k, v))
    }

    pub(crate) fn by_id(&self, id: &K) -> Option<&V> {
        self.key(id).and_then(|k| self.get(k))
    }

    /// Inserts a value under a new id and returns its key. The id must not be present.
    pub(crate) fn insert(&mut self, id: K, value: V) -> u32 {
        let hash = self.hasher.hash_one(&id);
        let entry = Some(Box::new((id, value)));
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
        let Slab {
            index,
            hasher,
            slots,
            ..
        } = self;
        index.insert_unique(hash, key, |&k| {
            slot_id(slots, k).map_or(0, |id| hasher.hash_one(id))
        });
        key
    }

    pub(crate) fn remove(&mut self, key: u32) -> Option<(K, V)> {
        let hash = self.hasher.hash_one(slot_id(&self.slots, key)?);
        if let Ok(found) = self.index.find_entry(hash, |&k| k == key) {
            found.remove();
        }
        let taken = *self.slots.get_mut(key as usize).and_then(|s| s.take())?;
        self.free.push(key);
        Some(taken)
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
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
