//! Typed handles on the kernel maps and the reconciler that keeps them equal to the model.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
};

use aya::Pod;
use aya::{
    maps::{Array, HashMap, IterableMap, Map, MapData, PerCpuArray, PerCpuHashMap},
    Ebpf,
};
use dns_common::{
    maps as m, Counter, IfaceCounters, NameKey, NameRecords, PodKey, ServiceAddr, TargetRecord,
    ZoneInfo, COUNTER_COUNT, ZONE_COMPLETE, ZONE_DEGRADED,
};

use super::{batch, Error, Result};

/// Entries written per system call on a first fill: a few hundred kilobytes of keys and
/// values, so the copy the kernel makes stays small.
const BATCH: usize = 1024;
use crate::model::{KernelDelta, KernelEntries};

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
    fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Self> {
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
    /// what it should hold: deletes what is not wanted first (so a full map makes room
    /// before it grows), then writes only what differs. Running it twice changes nothing
    /// the second time; pins adopted from an earlier daemon are kept where they already
    /// hold the right value.
    pub fn reconcile<'a>(
        &mut self,
        wanted: impl Fn(&K) -> Option<V>,
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
        for k in held.into_iter().filter(|k| wanted(k).is_none()) {
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
            |k| desired.get(k).copied(),
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

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `z` saying (or not) that the maps hold the whole zone: the kernel's licence to answer
/// NXDOMAIN.
fn complete(z: &ZoneInfo, on: bool) -> ZoneInfo {
    flag(z, ZONE_COMPLETE, on)
}

fn flag(z: &ZoneInfo, bit: u32, on: bool) -> ZoneInfo {
    let mut z = *z;
    if on {
        z.flags |= bit;
    } else {
        z.flags &= !bit;
    }
    z
}

/// `z` after a write failed: some entries may be old, so the kernel passes everything.
fn degraded(z: &ZoneInfo) -> ZoneInfo {
    flag(&complete(z, false), ZONE_DEGRADED, true)
}

/// A map's `max_entries`, as the kernel reports it.
fn map_capacity<K: Pod, V: Pod>(map: &HashMap<MapData, K, V>) -> Option<usize> {
    aya::maps::IterableMap::map(map)
        .info()
        .ok()
        .map(|i| i.max_entries() as usize)
}

/// A set as a map's entries (value 1).
fn as_set(keys: &BTreeSet<PodKey>) -> BTreeMap<PodKey, u8> {
    keys.iter().map(|k| (*k, 1)).collect()
}

pub struct KernelMaps {
    records: Mirror<NameKey, NameRecords>,
    pod_ns: Mirror<PodKey, u8>,
    pod_addrs: Mirror<PodKey, u8>,
    targets: Mirror<NameKey, TargetRecord>,
    zone: Array<MapData, ZoneInfo>,
    zone_name: Array<MapData, NameKey>,
    addrs: HashMap<MapData, ServiceAddr, u32>,
    counters: PerCpuArray<MapData, u64>,
    /// The zone as last set, for the heartbeat.
    zone_info: Option<ZoneInfo>,
    fresh_for: std::time::Duration,
    /// One kernel answer in this many to the query log ring (0: none).
    log_sample: u32,
    iface_counters: PerCpuHashMap<MapData, u32, IfaceCounters>,
}

/// What one sync changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub upserted: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |source| Error::Map { name, source }
}

impl KernelMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let records = Mirror::take(ebpf, m::RECORDS)?;
        let pod_ns = Mirror::take(ebpf, m::POD_NS)?;
        let pod_addrs = Mirror::take(ebpf, m::POD_ADDRS)?;
        let targets = Mirror::take(ebpf, m::TARGETS)?;
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(Error::MissingMap(name));
        Ok(Self {
            records,
            pod_ns,
            pod_addrs,
            targets,
            zone_info: None,
            fresh_for: FRESH_FOR,
            log_sample: 0,
            zone: Array::try_from(take(m::ZONE)?).map_err(map_err(m::ZONE))?,
            zone_name: Array::try_from(take(m::ZONE_NAME)?).map_err(map_err(m::ZONE_NAME))?,
            addrs: HashMap::try_from(take(m::SERVICE_ADDRS)?).map_err(map_err(m::SERVICE_ADDRS))?,
            counters: PerCpuArray::try_from(take(m::COUNTERS)?).map_err(map_err(m::COUNTERS))?,
            iface_counters: PerCpuHashMap::try_from(take(m::IFACE_COUNTERS)?)
                .map_err(map_err(m::IFACE_COUNTERS))?,
        })
    }

    /// Makes the records map hold exactly `desired` (see [`Mirror::sync`]).
    pub fn sync_records(&mut self, desired: &BTreeMap<NameKey, NameRecords>) -> Result<SyncStats> {
        self.records.sync(desired)
    }

    /// Makes the kernel serve a zone: its name and SOA first, then the PTR records and the
    /// records (side by side), the pod namespaces and addresses; only once they have all landed (and if
    /// `nxdomain`) does the zone say the maps are complete, which lets the kernel answer
    /// NXDOMAIN (and pod names, which it reaches that way). A failed write leaves it saying
    /// incomplete, so unknown names pass to userspace until a sync succeeds. The stats are
    /// the records map's.
    pub fn publish(&mut self, view: &dyn KernelEntries, nxdomain: bool) -> Result<SyncStats> {
        let (zone, name) = (view.zone(), &view.zone_name());
        // A zone rename invalidates "complete" until the records follow it.
        let renamed = self.zone_name.get(&0, 0).ok().as_ref() != Some(name);
        let was_complete = !renamed && self.is_complete();
        self.set_zone(&complete(&zone, nxdomain && was_complete))?;
        if renamed {
            self.zone_name
                .set(0, name, 0)
                .map_err(map_err(m::ZONE_NAME))?;
        }
        // The two big maps fill side by side (half the first sync's fill at 100k Services
        // on two cores). Either order is safe while the zone is not complete: a record
        // whose target is not written yet passes to userspace.
        let (targets, records) = (&mut self.targets, &mut self.records);
        let (targets, records) = std::thread::scope(|s| {
            let t = s.spawn(|| targets.reconcile(|k| view.target(k), view.targets()));
            let r = records.reconcile(|k| view.record(k), view.records());
            (t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)), r)
        });
        let synced = self
            .pod_ns
            .sync(&as_set(&view.pod_namespaces()))
            .and_then(|_| self.pod_addrs.sync(&as_set(&view.pod_addrs())))
            .and(targets)
            .and(records);
        let stats = match synced {
            Ok(s) => s,
            Err(e) => {
                self.set_zone(&degraded(&zone))?;
                return Err(e);
            }
        };
        // Whole again: answering resumes (it was degraded only if a write had failed).
        self.set_zone(&complete(&zone, nxdomain))?;
        Ok(stats)
    }

    /// Writes one batch of changes (see [`crate::model::Records::kernel_delta`]): the new
    /// SOA, the pod keys, then the names, deletions of records before targets and targets
    /// before new records, so no record ever points at a target not yet written. A failed
    /// write marks the maps incomplete (unknown names pass to userspace) and is returned:
    /// the caller then makes a full [`KernelMaps::publish`].
    pub fn publish_delta(&mut self, delta: &KernelDelta, nxdomain: bool) -> Result<SyncStats> {
        let zone = delta.zone;
        if self.is_degraded() {
            // Only a full sync can vouch for the maps again.
            self.set_zone(&degraded(&zone))?;
            return Err(Error::Degraded);
        }
        self.set_zone(&complete(&zone, nxdomain && self.is_complete()))?;
        match self.write_delta(delta) {
            Ok(stats) => Ok(stats),
            Err(e) => {
                self.set_zone(&degraded(&zone))?;
                Err(e)
            }
        }
    }

    /// Whether the kernel passes every query because the maps could not be made whole.
    pub fn is_degraded(&self) -> bool {
        self.zone_info.is_some_and(|z| z.flags & ZONE_DEGRADED != 0)
    }

    /// Whether the zone as last set says the maps hold the whole zone.
    fn is_complete(&self) -> bool {
        self.zone_info.is_some_and(|z| z.flags & ZONE_COMPLETE != 0)
    }

    /// The writes of [`KernelMaps::publish_delta`]; the stats are the records map's.
    fn write_delta(&mut self, delta: &KernelDelta) -> Result<SyncStats> {
        let sets = |v: &[(PodKey, bool)]| -> Vec<(PodKey, Option<u8>)> {
            v.iter().map(|(k, on)| (*k, on.then_some(1))).collect()
        };
        self.pod_ns.apply(&sets(&delta.pod_namespaces))?;
        self.pod_addrs.apply(&sets(&delta.pod_addrs))?;
        let (gone, kept): (Vec<_>, Vec<_>) = delta
            .records
            .iter()
            .copied()
            .partition(|(_, v)| v.is_none());
        let mut stats = self.records.apply(&gone)?;
        self.targets.apply(&delta.targets)?;
        let more = self.records.apply(&kept)?;
        stats.upserted += more.upserted;
        stats.unchanged += more.unchanged;
        Ok(stats)
    }

    /// How long the kernel may answer after the last [`KernelMaps::refresh`].
    pub fn set_fresh_for(&mut self, d: std::time::Duration) {
        self.fresh_for = d;
    }

    /// One kernel answer in `n` to the query log ring (0: none), from the next zone write.
    pub fn set_log_sample(&mut self, n: u32) {
        self.log_sample = n;
    }

    /// The SOA the kernel puts in NODATA answers, marked fresh for a while.
    pub fn set_zone(&mut self, zone: &ZoneInfo) -> Result<()> {
        let mut z = *zone;
        z.fresh_until_ns = monotonic_ns() + self.fresh_for.as_nanos() as u64;
        z.log_sample = self.log_sample;
        self.zone.set(0, z, 0).map_err(map_err(m::ZONE))?;
        self.zone_info = Some(*zone);
        Ok(())
    }

    /// Pushes the zone's freshness forward (the daemon's heartbeat to the kernel).
    pub fn refresh(&mut self) -> Result<()> {
        match self.zone_info {
            Some(z) => self.set_zone(&z),
            None => Ok(()),
        }
    }

    /// Makes the kernel answer for exactly these destination addresses.
    pub fn sync_service_addrs(&mut self, addrs: &[IpAddr]) -> Result<()> {
        let desired: BTreeSet<[u8; 16]> = addrs.iter().map(|a| service_addr(*a).addr).collect();
        let current: Vec<ServiceAddr> = self
            .addrs
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(m::SERVICE_ADDRS))?;
        for a in &desired {
            self.addrs
                .insert(ServiceAddr { addr: *a }, 1, 0)
                .map_err(map_err(m::SERVICE_ADDRS))?;
        }
        for a in current.iter().filter(|a| !desired.contains(&a.addr)) {
            self.addrs.remove(a).map_err(map_err(m::SERVICE_ADDRS))?;
        }
        Ok(())
    }

    pub fn counters(&self) -> Result<Counters> {
        read_counters(&self.counters)
    }

    /// Counters per interface index, for DNS to us (see [`Counter::per_iface`]).
    pub fn iface_counters(&self) -> Result<BTreeMap<u32, Counters>> {
        read_iface_counters(&self.iface_counters)
    }

    /// Drops a gone interface's counters (its index may come back as another device).
    pub fn forget_iface(&mut self, ifindex: u32) {
        let _ = self.iface_counters.remove(&ifindex);
    }

    /// Names the kernel holds (counted as written, else read from the map).
    pub fn records_len(&self) -> usize {
        self.records.len()
    }

    /// Names the kernel answers with a stored target (PTR, CNAME).
    pub fn targets_len(&self) -> usize {
        self.targets.len()
    }
}

/// How long, by default, the kernel answers from the records after the daemon last
/// refreshed them. Longer than a pod restart or an image pull on upgrade, short enough that
/// an uninstalled or crash-looping daemon's records stop being served within a minute.
pub const FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// CLOCK_MONOTONIC, the clock of the kernel's `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn service_addr(a: IpAddr) -> ServiceAddr {
    match a {
        IpAddr::V4(v4) => ServiceAddr::v4(v4.octets()),
        IpAddr::V6(v6) => ServiceAddr::v6(v6.octets()),
    }
}

/// Counter totals over all CPUs, indexed by [`Counter`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub Vec<u64>);

impl Counters {
    pub fn get(&self, c: Counter) -> u64 {
        self.0.get(c as usize).copied().unwrap_or(0)
    }
    pub fn passed(&self) -> u64 {
        self.0.iter().sum::<u64>() - self.get(Counter::Answered)
    }
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in Counter::ALL {
            let n = self.get(c);
            if n > 0 || c == Counter::Answered {
                writeln!(f, "{:<18} {n}", c.name())?;
            }
        }
        Ok(())
    }
}

fn read_counters(map: &PerCpuArray<MapData, u64>) -> Result<Counters> {
    let mut out = Vec::with_capacity(COUNTER_COUNT as usize);
    for i in 0..COUNTER_COUNT {
        let per_cpu = map.get(&i, 0).map_err(map_err(m::COUNTERS))?;
        out.push(per_cpu.iter().sum());
    }
    Ok(Counters(out))
}

fn read_iface_counters(
    map: &PerCpuHashMap<MapData, u32, IfaceCounters>,
) -> Result<BTreeMap<u32, Counters>> {
    let mut out = BTreeMap::new();
    for entry in map.iter() {
        let (ifindex, per_cpu) = entry.map_err(map_err(m::IFACE_COUNTERS))?;
        let mut sum = vec![0u64; COUNTER_COUNT as usize];
        for c in per_cpu.iter() {
            for (s, n) in sum.iter_mut().zip(c.n) {
                *s += n;
            }
        }
        out.insert(ifindex, Counters(sum));
    }
    Ok(out)
}

/// Per-interface counters from the pinned map.
pub fn pinned_iface_counters(pin_dir: &Path) -> Result<BTreeMap<u32, Counters>> {
    let data = MapData::from_pin(super::maps_dir(pin_dir).join(m::IFACE_COUNTERS))
        .map_err(map_err(m::IFACE_COUNTERS))?;
    let map =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).map_err(map_err(m::IFACE_COUNTERS))?;
    read_iface_counters(&map)
}

/// A pinned hash map of a running (or stopped) daemon, by name.
fn pinned_hash<K: Pod, V: Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>> {
    let data = MapData::from_pin(super::maps_dir(pin_dir).join(name)).map_err(map_err(name))?;
    HashMap::try_from(Map::HashMap(data)).map_err(map_err(name))
}

/// The zone as the pinned map holds it (flags, SOA), if a daemon has set it.
pub fn pinned_zone(pin_dir: &Path) -> Result<Option<ZoneInfo>> {
    let data =
        MapData::from_pin(super::maps_dir(pin_dir).join(m::ZONE)).map_err(map_err(m::ZONE))?;
    let map: Array<MapData, ZoneInfo> =
        Array::try_from(Map::Array(data)).map_err(map_err(m::ZONE))?;
    let z = map.get(&0, 0).map_err(map_err(m::ZONE))?;
    Ok((z.zone_len != 0).then_some(z))
}

/// How many names the pinned records map can hold.
pub fn pinned_records_capacity(pin_dir: &Path) -> Result<usize> {
    let map = pinned_hash::<NameKey, NameRecords>(pin_dir, m::RECORDS)?;
    map_capacity(&map).ok_or(Error::MissingMap(m::RECORDS))
}

/// How many names the pinned records map holds.
pub fn pinned_records_len(pin_dir: &Path) -> Result<usize> {
    Ok(pinned_hash::<NameKey, NameRecords>(pin_dir, m::RECORDS)?
        .keys()
        .count())
}

/// How many names the pinned targets map holds.
pub fn pinned_targets_len(pin_dir: &Path) -> Result<usize> {
    Ok(pinned_hash::<NameKey, TargetRecord>(pin_dir, m::TARGETS)?
        .keys()
        .count())
}

/// Reads the counters from the pinned map of a running (or stopped) daemon.
pub fn pinned_counters(pin_dir: &Path) -> Result<Counters> {
    let data = MapData::from_pin(super::maps_dir(pin_dir).join(m::COUNTERS))
        .map_err(map_err(m::COUNTERS))?;
    let map = PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(map_err(m::COUNTERS))?;
    read_counters(&map)
}

/// The records map of a running (or stopped) daemon, as the kernel holds it.
pub fn pinned_records(pin_dir: &Path) -> Result<BTreeMap<NameKey, NameRecords>> {
    pinned_hash(pin_dir, m::RECORDS)?
        .iter()
        .map(|e| e.map_err(map_err(m::RECORDS)))
        .collect()
}
