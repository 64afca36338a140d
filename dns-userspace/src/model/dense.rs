//! The zone's big maps (a name's records, an address's PTRs, the names that exist), held
//! dense. At 100k Services they hold 900k entries; as persistent B-trees half of every
//! node sat empty (keys arrive in runs, and a split leaves two half-full nodes), which
//! cost 140 MiB of the daemon's 360.
//!
//! Entries live in a fixed number of shards, each sorted vectors behind an `Arc`: a
//! snapshot for the answer path copies the shard pointers, and a batch of writes copies
//! only the shards it touches, once each (a change costs a few shards' copies, each
//! about a four-thousandth of the map); a shard no snapshot shares is written in place.
//! [`DenseMap::flush`] gives back the growth slack of the shards a batch wrote.
//!
//! A shard keeps 32 bits of each key's hash beside the entries and sorts by them first:
//! a lookup searches those inline and compares one key, rather than following a name's
//! pointer at every step of the search (five times slower reading the whole zone).
use std::{
    borrow::Borrow,
    collections::BTreeMap,
    fmt,
    hash::{Hash, Hasher},
    sync::Arc,
};

/// Shards per map: at 100k Services a reverse shard holds ~150 PTRs (10 KiB to copy for
/// a change); a small zone pays ~100 bytes a shard.
const SHARDS: usize = 4096;

/// One shard: entries sorted by (tag, key), `tags[i]` the tag of `entries[i]`.
#[derive(Clone, PartialEq, Eq)]
struct Shard<K, V> {
    tags: Vec<u32>,
    entries: Vec<(K, V)>,
}

pub struct DenseMap<K, V> {
    shards: Box<[Arc<Shard<K, V>>]>,
    /// Shards written since the last flush, one bit each.
    written: Box<[u64]>,
    len: usize,
}

/// A set as a map to nothing: the entries are the keys alone.
pub type DenseSet<K> = DenseMap<K, ()>;

/// The shard a key lives in and its tag there. A fixed hasher (SipHash with zero keys):
/// equal maps shard and order equally, so two maps compare shard by shard.
fn place<Q: Hash + ?Sized>(key: &Q) -> (usize, u32) {
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    let h = h.finish();
    ((h % SHARDS as u64) as usize, (h >> 32) as u32)
}

impl<K: Ord + Clone, V: Clone> Shard<K, V> {
    /// Where `key` is (`Ok`) or would go (`Err`).
    fn find<Q>(&self, tag: u32, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let mut i = self.tags.partition_point(|t| *t < tag);
        while i < self.tags.len() && self.tags[i] == tag {
            match self.entries[i].0.borrow().cmp(key) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Equal => return Ok(i),
                std::cmp::Ordering::Greater => break,
            }
        }
        Err(i)
    }
}

impl<K: Ord + Hash + Clone, V: Clone> DenseMap<K, V> {
    pub fn new() -> Self {
        let empty = Arc::new(Shard {
            tags: Vec::new(),
            entries: Vec::new(),
        });
        Self {
            shards: (0..SHARDS).map(|_| empty.clone()).collect(),
            written: vec![0; SHARDS / 64].into(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Ord + Hash + ?Sized,
    {
        let (i, tag) = place(key);
        let shard = &self.shards[i];
        let (k, v) = &shard.entries[shard.find(tag, key).ok()?];
        Some((k, v))
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + Hash + ?Sized,
    {
        self.get_key_value(key).map(|(_, v)| v)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + Hash + ?Sized,
    {
        self.get_key_value(key).is_some()
    }

    /// The shard for writing: copied first if a snapshot shares it.
    fn shard_mut(&mut self, i: usize) -> &mut Shard<K, V> {
        self.written[i / 64] |= 1 << (i % 64);
        Arc::make_mut(&mut self.shards[i])
    }

    pub fn insert(&mut self, key: K, value: V) {
        let (i, tag) = place(&key);
        match self.shards[i].find(tag, &key) {
            Ok(at) => self.shard_mut(i).entries[at].1 = value,
            Err(at) => {
                let shard = self.shard_mut(i);
                shard.tags.insert(at, tag);
                shard.entries.insert(at, (key, value));
                self.len += 1;
            }
        }
    }

    pub fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Ord + Hash + ?Sized,
    {
        let (i, tag) = place(key);
        if let Ok(at) = self.shards[i].find(tag, key) {
            let shard = self.shard_mut(i);
            shard.tags.remove(at);
            shard.entries.remove(at);
            self.len -= 1;
        }
    }

    /// Ends a batch of writes: the shards it wrote lose their growth slack (at 100k
    /// Services that slack would be a third of the map).
    pub fn flush(&mut self) {
        for w in 0..self.written.len() {
            let mut bits = std::mem::take(&mut self.written[w]);
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(shard) = Arc::get_mut(&mut self.shards[i]) {
                    shard.tags.shrink_to_fit();
                    shard.entries.shrink_to_fit();
                }
            }
        }
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.shards
            .iter()
            .flat_map(|s| s.entries.iter())
            .map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.iter().map(|(k, _)| k)
    }
}

impl<K: Ord + Hash + Clone> DenseSet<K> {
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + Hash + ?Sized,
    {
        self.contains_key(key)
    }
}

impl<K: Ord + Hash + Clone, V: Clone> Default for DenseMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> Clone for DenseMap<K, V> {
    fn clone(&self) -> Self {
        Self {
            shards: self.shards.clone(),
            written: self.written.clone(),
            len: self.len,
        }
    }
}

impl<K: Ord + Hash + Clone, V: Clone> FromIterator<(K, V)> for DenseMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Self::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m.flush();
        m
    }
}

impl<K: Ord + Hash + Clone> FromIterator<K> for DenseSet<K> {
    fn from_iter<I: IntoIterator<Item = K>>(iter: I) -> Self {
        iter.into_iter().map(|k| (k, ())).collect()
    }
}

impl<K: PartialEq, V: PartialEq> PartialEq for DenseMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.shards == other.shards
    }
}

impl<K: Eq, V: Eq> Eq for DenseMap<K, V> {}

impl<K: Ord + Hash + Clone + fmt::Debug, V: Clone + fmt::Debug> fmt::Debug for DenseMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sorted: BTreeMap<&K, &V> = self.iter().collect();
        f.debug_map().entries(sorted).finish()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any sequence of inserts, removes and flushes reads as a BTreeMap does, before and
        /// after the flush, and equal maps compare equal however they were written.
        #[test]
        fn reads_as_a_btreemap(ops in proptest::collection::vec((0u16..300, any::<Option<u8>>(), any::<bool>()), 0..400)) {
            let mut m: DenseMap<u16, u8> = DenseMap::new();
            let mut oracle = BTreeMap::new();
            for (k, v, flush) in ops {
                match v {
                    Some(v) => { m.insert(k, v); oracle.insert(k, v); }
                    None => { m.remove(&k); oracle.remove(&k); }
                }
                if flush {
                    m.flush();
                }
                prop_assert_eq!(m.len(), oracle.len());
                prop_assert_eq!(m.get(&k), oracle.get(&k));
            }
            let seen: BTreeMap<u16, u8> = m.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(&seen, &oracle);
            let rebuilt: DenseMap<u16, u8> = oracle.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(&rebuilt, &m);
            m.flush();
            let seen: BTreeMap<u16, u8> = m.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(&seen, &oracle);
            for s in m.shards.iter() {
                let order: Vec<(u32, u16)> = s.tags.iter().copied().zip(s.entries.iter().map(|e| e.0)).collect();
                prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "a shard out of order");
            }
        }
    }

    #[test]
    fn a_snapshot_keeps_what_it_saw() {
        let mut m: DenseMap<u32, u32> = (0..5000).map(|i| (i, i)).collect();
        let snap = m.clone();
        m.insert(7, 70);
        m.remove(&8);
        m.flush();
        assert_eq!((snap.get(&7), snap.get(&8)), (Some(&7), Some(&8)));
        assert_eq!((m.get(&7), m.get(&8)), (Some(&70), None));
        assert_eq!((snap.len(), m.len()), (5000, 4999));
    }
}
