//! The zone's big maps (a name's records, an address's PTRs, the names that exist), held
//! dense. At 100k Services they hold 900k entries; as persistent B-trees half of every
//! node sat empty (keys arrive in runs, and a split leaves two half-full nodes), which
//! cost 140 MiB of the daemon's 360.
//!
//! Entries live in shards, each sorted vectors behind an `Arc`: a snapshot for the answer
//! path copies the shard pointers, and a batch of writes copies only the shards it
//! touches, once each; a shard no snapshot shares is written in place. The shard count
//! follows the size (4 to 64 entries a shard), so a change copies a few dozen entries
//! whatever the zone's size. [`DenseMap::flush`] gives back the growth slack of the shards
//! a batch wrote. Shards are grouped in pages of 64 behind their own `Arc`, so taking a
//! snapshot is one reference per page and a write copies one page of pointers.
//!
//! A shard keeps 32 bits of each key's hash beside the entries and sorts by them first:
//! a lookup searches those inline and compares one key, rather than following a name's
//! pointer at every step of the search (five times slower reading the whole zone).
use std::{
    borrow::Borrow,
    collections::BTreeMap,
    fmt,
    hash::{BuildHasher, Hash},
    sync::Arc,
};

/// Fewest shards a map has (a power of two, as every count is).
const MIN_SHARDS: usize = 64;
/// Entries a shard holds on average before the count grows fourfold, and below which
/// it shrinks fourfold.
const GROW_AT: usize = 64;
const SHRINK_AT: usize = 4;

/// One shard: entries sorted by (tag, key), `tags[i]` the tag of `entries[i]`.
#[derive(Clone, PartialEq, Eq)]
struct Shard<K, V> {
    tags: Vec<u32>,
    entries: Vec<(K, V)>,
}

/// Free entries a copied shard gets.
const ROOM: usize = 2;

/// Shards per page.
const PAGE: usize = 64;

#[derive(Clone, PartialEq, Eq)]
struct Page<K, V>(Vec<Arc<Shard<K, V>>>);

pub struct DenseMap<K, V> {
    pages: Box<[Arc<Page<K, V>>]>,
    /// Shards written since the last flush, one bit each.
    written: Box<[u64]>,
    len: usize,
}

/// A set as a map to nothing: the entries are the keys alone.
pub type DenseSet<K> = DenseMap<K, ()>;

/// The shard a key lives in among `shards` and its tag there. A fixed seed: equal maps
/// with equal shard counts shard and order equally. foldhash, not SipHash: no key here
/// comes from someone choosing collisions that could hurt (a crowded shard is only
/// slower), and it is several times faster on names.
fn place<Q: Hash + ?Sized>(key: &Q, shards: usize) -> (usize, u32) {
    let h = foldhash::fast::FixedState::with_seed(0x6b8b_4567).hash_one(key);
    (h as usize & (shards - 1), (h >> 32) as u32)
}

impl<K: Ord + Clone, V: Clone> Shard<K, V> {
    fn with_room(&self, room: usize) -> Self {
        let mut tags = Vec::with_capacity(self.tags.len() + room);
        tags.extend_from_slice(&self.tags);
        let mut entries = Vec::with_capacity(self.entries.len() + room);
        entries.extend_from_slice(&self.entries);
        Self { tags, entries }
    }

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
        Self::with_shards(MIN_SHARDS)
    }

    fn with_shards(n: usize) -> Self {
        let empty = Arc::new(Shard {
            tags: Vec::new(),
            entries: Vec::new(),
        });
        Self {
            pages: (0..n / PAGE)
                .map(|_| Arc::new(Page(vec![empty.clone(); PAGE])))
                .collect(),
            written: vec![0; n.div_ceil(64)].into(),
            len: 0,
        }
    }

    /// The same entries in `n` shards: each shard sorted once, at its exact size.
    fn reshard(&mut self, n: usize) {
        let mut out: Vec<Vec<(u32, K, V)>> = (0..n).map(|_| Vec::new()).collect();
        for page in std::mem::take(&mut self.pages).into_vec() {
            let page = Arc::try_unwrap(page).unwrap_or_else(|shared| (*shared).clone());
            for shard in page.0 {
                let shard = Arc::try_unwrap(shard).unwrap_or_else(|shared| (*shared).clone());
                for (k, v) in shard.entries {
                    let (i, tag) = place(&k, n);
                    out[i].push((tag, k, v));
                }
            }
        }
        let len = self.len;
        *self = Self::with_shards(n);
        self.len = len;
        for (i, mut entries) in out.into_iter().enumerate() {
            if entries.is_empty() {
                continue;
            }
            entries.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            let (tags, entries) = entries.into_iter().map(|(t, k, v)| (t, (k, v))).unzip();
            *self.shard_mut(i) = Shard { tags, entries };
        }
    }

    /// Keeps shards between [`SHRINK_AT`] and [`GROW_AT`] entries on average.
    fn resize(&mut self) {
        let n = self.shard_count();
        if self.len > n * GROW_AT {
            self.reshard(n * 4);
        } else if n > MIN_SHARDS && self.len < n * SHRINK_AT {
            self.reshard(n / 4);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn shard_count(&self) -> usize {
        self.pages.len() * PAGE
    }

    fn shard(&self, i: usize) -> &Shard<K, V> {
        &self.pages[i / PAGE].0[i % PAGE]
    }

    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Ord + Hash + ?Sized,
    {
        let (i, tag) = place(key, self.shard_count());
        let shard = self.shard(i);
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
        let page = Arc::make_mut(&mut self.pages[i / PAGE]);
        let slot = &mut page.0[i % PAGE];
        if Arc::get_mut(slot).is_none() {
            // A snapshot shares it: a copy with room for this batch's first insert, so
            // the write does not reallocate what was just copied.
            *slot = Arc::new(slot.with_room(ROOM));
        }
        Arc::make_mut(slot)
    }

    pub fn insert(&mut self, key: K, value: V) {
        let (i, tag) = place(&key, self.shard_count());
        match self.shard(i).find(tag, &key) {
            Ok(at) => self.shard_mut(i).entries[at].1 = value,
            Err(at) => {
                let shard = self.shard_mut(i);
                shard.tags.insert(at, tag);
                shard.entries.insert(at, (key, value));
                self.len += 1;
                self.resize();
            }
        }
    }

    pub fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Ord + Hash + ?Sized,
    {
        let (i, tag) = place(key, self.shard_count());
        if let Ok(at) = self.shard(i).find(tag, key) {
            let shard = self.shard_mut(i);
            shard.tags.remove(at);
            shard.entries.remove(at);
            self.len -= 1;
            self.resize();
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
                let page = Arc::get_mut(&mut self.pages[i / PAGE]);
                if let Some(shard) = page.and_then(|p| Arc::get_mut(&mut p.0[i % PAGE])) {
                    // A little slack stays (a copy's room): shrinking it would copy the
                    // shard once more for a few bytes.
                    if shard.entries.capacity()
                        > shard.entries.len() + ROOM + shard.entries.len() / 8
                    {
                        shard.tags.shrink_to_fit();
                        shard.entries.shrink_to_fit();
                    }
                }
            }
        }
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.pages
            .iter()
            .flat_map(|p| p.0.iter())
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
            pages: self.pages.clone(),
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

impl<K: Ord + Hash + Clone, V: Clone + PartialEq> PartialEq for DenseMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        if self.len != other.len {
            return false;
        }
        if self.pages.len() == other.pages.len() {
            return self.pages == other.pages;
        }
        // Histories differ (the count shrinks later than it grows): compare entries.
        self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<K: Ord + Hash + Clone, V: Clone + Eq> Eq for DenseMap<K, V> {}

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
            for s in m.pages.iter().flat_map(|p| p.0.iter()) {
                let order: Vec<(u32, u16)> = s.tags.iter().copied().zip(s.entries.iter().map(|e| e.0)).collect();
                prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "a shard out of order");
            }
        }
    }

    /// Growing past a shard count and shrinking back keeps every entry readable, and a
    /// map with another history (another shard count) still compares equal.
    #[test]
    fn resharding_keeps_every_entry() {
        let mut m: DenseMap<u32, u32> = DenseMap::new();
        let snap = m.clone();
        for i in 0..20_000 {
            m.insert(i, i * 2);
        }
        assert_eq!(m.shard_count(), MIN_SHARDS * 16);
        assert!((0..20_000).all(|i| m.get(&i) == Some(&(i * 2))));
        for i in 2000..20_000 {
            m.remove(&i);
        }
        m.flush();
        assert!(m.shard_count() < MIN_SHARDS * 16);
        let fresh: DenseMap<u32, u32> = (0..2000).map(|i| (i, i * 2)).collect();
        assert_ne!(fresh.shard_count(), m.shard_count());
        assert_eq!(fresh, m);
        assert_eq!(
            (m.len(), m.get(&1999), m.get(&2000)),
            (2000, Some(&3998), None)
        );
        assert_eq!(snap.len(), 0);
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
