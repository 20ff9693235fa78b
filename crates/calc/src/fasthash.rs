//! A fast non-cryptographic hasher (FxHash's rotate-xor-multiply) for the set store's hot
//! maps: endpoint keys (`u32`) and set members (addresses). Creating a set with thousands of
//! members hashes each member once or twice, and the standard SipHash was a large part of
//! that. The keys come from the cluster view (slab keys, pod addresses), not from packets, so
//! hash flooding is not a concern here; the maps hold one node's view and are rebuilt on
//! restart.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
pub(crate) type FastSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::IpSetMember;

    #[test]
    fn maps_work_and_hashes_spread() {
        let mut m: FastMap<IpSetMember, u32> = FastMap::default();
        for i in 0..1000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            m.insert(
                IpSetMember::Net(ipnet::IpNet::from(std::net::IpAddr::V4(ip))),
                i,
            );
        }
        assert_eq!(m.len(), 1000);
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, 0));
        assert_eq!(m.get(&IpSetMember::Net(ipnet::IpNet::from(ip))), Some(&256));
        // Sequential keys land in distinct buckets of a small table (hashbrown indexes by the
        // low bits).
        let buckets: FastSet<u64> = (0..64u32)
            .map(|k| {
                let mut h = FxHasher::default();
                h.write_u32(k);
                h.finish() & 63
            })
            .collect();
        assert_eq!(buckets.len(), 64);
        let mut a = FxHasher::default();
        a.write(b"abc");
        let mut b = FxHasher::default();
        b.write(b"abc\0");
        assert_ne!(a.finish(), b.finish());
    }
}
