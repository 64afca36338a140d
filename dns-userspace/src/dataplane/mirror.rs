//! A BPF hash map kept equal to the model by writing only the differences.
use std::collections::BTreeMap;

use aya::{
    maps::{HashMap, IterableMap, MapData},
    Ebpf, Pod,
};

use super::{batch, Error, Result};

/// Entries written per system call on a first fill: a few hundred kilobytes of keys and
/// values, so the copy the kernel makes stays small.
const BATCH: usize = 1024;

/// A hash map kept equal to the model by writing only the differences. It holds no copy
/// of the map: a write first reads the kernel's entry, so what it compares against is
/// always what the kernel holds.
pub struct Mirror<K, V> {
    name: &'static str,
    map: HashMap<MapData, K, V>,
    /// Entries the map holds, counted as they are written; `None` until a full sync has
    /// counted them, and after a failed write.
    count: Option<usize>,
    /// Entries the map can hold (its `max_entries`).
    capacity: usize,
}

impl<K: Pod + Ord, V: Pod + PartialEq> Mirror<K, V> {
    pub(super) fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Self> {
        let data = ebpf.take_map(name).ok_or(Error::MissingMap(name))?;
        let map: HashMap<MapData, K, V> = HashMap::try_from(data).map_err(map_err(name))?;
        let capacity = map_capacity(&map).unwrap_or(usize::MAX);
        Ok(Self {
            name,
            map,
            count: None,
            capacity,
        })
    }

    fn held(&self, k: &K) -> Option<V> {
        self.map.get(k, 0).ok()
    }

    /// Makes the map hold exactly the entries `all` yields, `wanted` saying for any key
    /// whether `all` holds it: deletes what is not wanted first (so a full map makes room
    /// before it grows), then writes only what differs. Running it twice changes nothing
    /// the second time; pins adopted from an earlier daemon are kept where they already
    /// hold the right value.
    pub fn reconcile<'a>(
        &mut self,
        wanted: impl Fn(&K) -> bool,
        all: impl Iterator<Item = (K, V)> + 'a,
    ) -> Result<SyncStats> {
        self.count = None;
        let mut stats = SyncStats::default();
        let held: Vec<K> = self
            .map
            .keys()
            .collect::<std::result::Result<Vec<K>, _>>()
            .map_err(map_err(self.name))?;
        // A map that held nothing (a first start) needs no read before each write: at
        // 100k Services that is 490k lookups saved from the first sync.
        let was_empty = held.is_empty();
        for k in held.into_iter().filter(|k| !wanted(k)) {
            self.map.remove(&k).map_err(map_err(self.name))?;
            stats.deleted += 1;
        }
        let mut count = 0;
        if was_empty {
            let mut all = all;
            let (mut keys, mut values) = (Vec::new(), Vec::new());
            loop {
                keys.clear();
                values.clear();
                for (k, v) in all.by_ref().take(BATCH) {
                    keys.push(k);
                    values.push(v);
                }
                if keys.is_empty() {
                    break;
                }
                self.write_batch(&keys, &values)?;
                count += keys.len();
                stats.upserted += keys.len();
            }
        } else {
            for (k, v) in all {
                count += 1;
                if self.held(&k).as_ref() == Some(&v) {
                    stats.unchanged += 1;
                    continue;
                }
                self.map.insert(k, v, 0).map_err(map_err(self.name))?;
                stats.upserted += 1;
            }
        }
        self.count = Some(count);
        Ok(stats)
    }

    /// Writes `keys[i] → values[i]` in one system call where the kernel can, else one by
    /// one.
    fn write_batch(&mut self, keys: &[K], values: &[V]) -> Result<()> {
        match batch::update(self.map.map(), keys, values) {
            Ok(()) => Ok(()),
            Err(e) if e.unsupported() => {
                tracing::debug!(map = self.name, error = %e.source, "no batch writes here; one by one");
                for (k, v) in keys.iter().zip(values) {
                    self.map.insert(k, v, 0).map_err(map_err(self.name))?;
                }
                Ok(())
            }
            Err(e) => Err(Error::Map {
                name: self.name,
                source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_update_batch",
                    io_error: e.source,
                }),
            }),
        }
    }

    /// Makes the map hold exactly `desired` (see [`Mirror::reconcile`]).
    pub fn sync(&mut self, desired: &BTreeMap<K, V>) -> Result<SyncStats> {
        self.reconcile(
            |k| desired.contains_key(k),
            desired.iter().map(|(k, v)| (*k, *v)),
        )
    }

    /// Writes a batch of entries (`None`: delete), deletes first; an entry already as
    /// wanted is not written. A batch that would not fit is refused before any write.
    pub fn apply(&mut self, entries: &[(K, Option<V>)]) -> Result<SyncStats> {
        // What the kernel holds for each key, read once: it decides both whether the batch
        // fits and what is written.
        let held: Vec<Option<V>> = entries.iter().map(|(k, _)| self.held(k)).collect();
        let pairs = || entries.iter().zip(&held);
        let added = pairs()
            .filter(|((_, v), h)| v.is_some() && h.is_none())
            .count();
        let removed = pairs()
            .filter(|((_, v), h)| v.is_none() && h.is_some())
            .count();
        if let Some(count) = self.count {
            let wanted = (count + added).saturating_sub(removed);
            if wanted > self.capacity {
                return Err(Error::Full {
                    name: self.name,
                    wanted,
                    capacity: self.capacity,
                });
            }
        }
        let mut stats = SyncStats::default();
        let count = self.count.take();
        for ((k, _), _) in pairs().filter(|((_, v), h)| v.is_none() && h.is_some()) {
            self.map.remove(k).map_err(map_err(self.name))?;
            stats.deleted += 1;
        }
        for ((k, v), h) in pairs() {
            let Some(v) = v else { continue };
            if h.as_ref() == Some(v) {
                stats.unchanged += 1;
            } else {
                self.map.insert(k, v, 0).map_err(map_err(self.name))?;
                stats.upserted += 1;
            }
        }
        // Restored only once every write landed: a failed batch leaves it unknown.
        self.count = count.map(|c| (c + added).saturating_sub(removed));
        Ok(stats)
    }

    /// Entries the map holds (counted, else read from the map).
    pub fn len(&self) -> usize {
        match self.count {
            Some(c) => c,
            None => self.map.keys().count(),
        }
    }
}

/// What one sync changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub upserted: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

/// A map's `max_entries`, as the kernel reports it.
pub(super) fn map_capacity<K: Pod, V: Pod>(map: &HashMap<MapData, K, V>) -> Option<usize> {
    aya::maps::IterableMap::map(map)
        .info()
        .ok()
        .map(|i| i.max_entries() as usize)
}

pub(super) fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |source| Error::Map { name, source }
}
