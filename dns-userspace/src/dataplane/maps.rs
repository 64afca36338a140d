//! Typed handles on the kernel maps the daemon writes: the zone, the records (kept equal to
//! the model by [`super::mirror::Mirror`]), service addresses, counters.
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::IpAddr,
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues},
    Ebpf,
};
use dns_common::{
    maps as m, Counter, IfaceCounters, NameKey, NameRecords, PodKey, RecordKey, ServiceAddr,
    TargetRecord, ZoneInfo, COUNTER_COUNT, NAME_PASS, ZONE_COMPLETE, ZONE_DEGRADED,
};

pub use super::mirror::SyncStats;
use super::{
    mirror::{map_err, Mirror},
    Error, Result,
};

use crate::model::{KernelDelta, KernelEntries};

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

/// A set as a map's entries (value 1).
fn as_set(keys: &BTreeSet<PodKey>) -> BTreeMap<PodKey, u8> {
    keys.iter().map(|k| (*k, 1)).collect()
}

pub struct KernelMaps {
    records: Mirror<RecordKey, NameRecords>,
    pod_ns: Mirror<PodKey, u8>,
    pod_addrs: Mirror<PodKey, u8>,
    targets: Mirror<RecordKey, TargetRecord>,
    /// The seeds of every [`RecordKey`] in the maps: kept from the pinned zone when the
    /// maps are adopted, else new.
    seed: [u64; 2],
    zone: Array<MapData, ZoneInfo>,
    zone_name: Array<MapData, NameKey>,
    addrs: HashMap<MapData, ServiceAddr, u32>,
    counters: PerCpuArray<MapData, u64>,
    /// The zone as last set, for the heartbeat.
    zone_info: Option<ZoneInfo>,
    fresh_for: std::time::Duration,
    /// One kernel answer in this many to the query log ring (0: none).
    log_sample: u32,
    iface_counters: PerCpuArray<MapData, IfaceCounters>,
    iface_slots: HashMap<MapData, u32, u32>,
}

impl KernelMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let records = Mirror::take(ebpf, m::RECORDS)?;
        let pod_ns = Mirror::take(ebpf, m::POD_NS)?;
        let pod_addrs = Mirror::take(ebpf, m::POD_ADDRS)?;
        let targets = Mirror::take(ebpf, m::TARGETS)?;
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(Error::MissingMap(name));
        let zone: Array<MapData, ZoneInfo> =
            Array::try_from(take(m::ZONE)?).map_err(map_err(m::ZONE))?;
        // Adopted maps keep their keys' seed; a new node gets its own.
        let seed = match zone.get(&0, 0).map(|z| z.seed) {
            Ok(seed) if seed != [0, 0] => seed,
            _ => new_seed()?,
        };
        Ok(Self {
            records,
            pod_ns,
            pod_addrs,
            targets,
            seed,
            zone,
            zone_info: None,
            fresh_for: FRESH_FOR,
            log_sample: 0,
            zone_name: Array::try_from(take(m::ZONE_NAME)?).map_err(map_err(m::ZONE_NAME))?,
            addrs: HashMap::try_from(take(m::SERVICE_ADDRS)?).map_err(map_err(m::SERVICE_ADDRS))?,
            counters: PerCpuArray::try_from(take(m::COUNTERS)?).map_err(map_err(m::COUNTERS))?,
            iface_counters: PerCpuArray::try_from(take(m::IFACE_COUNTERS)?)
                .map_err(map_err(m::IFACE_COUNTERS))?,
            iface_slots: HashMap::try_from(take(m::IFACE_SLOTS)?)
                .map_err(map_err(m::IFACE_SLOTS))?,
        })
    }

    /// Makes the records map hold exactly `desired` (see [`Mirror::sync`]).
    pub fn sync_records(&mut self, desired: &BTreeMap<NameKey, NameRecords>) -> Result<SyncStats> {
        let keyed = desired
            .iter()
            .filter_map(|(n, v)| Some((self.key(n)?, *v)))
            .collect();
        self.records.sync(&keyed)
    }

    /// The kernel's key for a name in these maps.
    pub fn key(&self, name: &NameKey) -> Option<RecordKey> {
        RecordKey::of(name, self.seed)
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
        let seed = self.seed;
        let key = |n: &NameKey| RecordKey::of(n, seed);
        let (wanted, shared) = keys_of(view, key);
        if !shared.is_empty() {
            tracing::warn!(
                keys = shared.len(),
                "names share a kernel key: their queries pass to userspace"
            );
        }
        let records_all = view.records().filter_map(|(n, v)| {
            let k = key(&n)?;
            Some((
                k,
                if shared.contains(&k) {
                    pass_record(v)
                } else {
                    v
                },
            ))
        });
        // Made on the thread that writes them: the view's iterators stay where they are.
        let targets_all = || {
            view.targets().filter_map(|(n, v)| {
                let k = key(&n)?;
                Some((
                    k,
                    if shared.contains(&k) {
                        pass_target(v)
                    } else {
                        v
                    },
                ))
            })
        };
        let is_wanted = |k: &RecordKey| wanted.contains(k);
        let (targets, records) = (&mut self.targets, &mut self.records);
        let (targets, records) = std::thread::scope(|s| {
            let t = s.spawn(|| targets.reconcile(is_wanted, targets_all()));
            let r = records.reconcile(is_wanted, records_all);
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
        let seed = self.seed;
        let (gone, kept): (Vec<_>, Vec<_>) = keyed(&delta.records, seed)
            .into_iter()
            .partition(|(_, v)| v.is_none());
        let mut stats = self.records.apply(&gone)?;
        self.targets.apply(&keyed(&delta.targets, seed))?;
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
        z.seed = self.seed;
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
        read_iface_counters(&self.iface_slots, &self.iface_counters)
    }

    /// Gives each interface served a counter slot (zeroed, the lowest free) and takes
    /// back the slots of the others; slots already held (a restart) are kept, so are their
    /// counts. An interface past the last slot is counted in the global counters only.
    pub fn sync_iface_slots(&mut self, served: &BTreeSet<u32>) -> Result<()> {
        let held: BTreeMap<u32, u32> = self.iface_slots.iter().filter_map(|e| e.ok()).collect();
        for ifindex in held.keys().filter(|i| !served.contains(i)) {
            self.forget_iface(*ifindex);
        }
        let mut used: BTreeSet<u32> = held
            .iter()
            .filter(|(i, _)| served.contains(i))
            .map(|(_, s)| *s)
            .collect();
        let zero = IfaceCounters {
            n: [0; COUNTER_COUNT as usize],
        };
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::Map {
            name: m::IFACE_COUNTERS,
            source: aya::maps::MapError::IoError(e),
        })?;
        for ifindex in served.iter().filter(|i| !held.contains_key(i)) {
            let Some(slot) = (0..m::IFACE_SLOTS_MAX).find(|s| !used.contains(s)) else {
                tracing::warn!(
                    ifindex,
                    "no interface counter slot left: counted globally only"
                );
                continue;
            };
            // Zeroed before the kernel can find it: the slot's last owner counted there.
            let zeros = PerCpuValues::try_from(vec![zero; cpus]).map_err(|e| Error::Map {
                name: m::IFACE_COUNTERS,
                source: aya::maps::MapError::IoError(e),
            })?;
            self.iface_counters
                .set(slot, zeros, 0)
                .map_err(map_err(m::IFACE_COUNTERS))?;
            self.iface_slots
                .insert(ifindex, slot, 0)
                .map_err(map_err(m::IFACE_SLOTS))?;
            used.insert(slot);
        }
        Ok(())
    }

    /// Takes back a gone interface's counter slot (its index may come back as another
    /// device; the slot is zeroed when given again).
    fn forget_iface(&mut self, ifindex: u32) {
        let _ = self.iface_slots.remove(&ifindex);
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

/// Every key the view's names take, and those that two names share. A name
/// may sit in both maps (an ExternalName's owner); two names may not share a key in
/// either, nor across them (a PTR query looks in both).
fn keys_of(
    view: &dyn KernelEntries,
    key: impl Fn(&NameKey) -> Option<RecordKey>,
) -> (HashSet<RecordKey>, HashSet<RecordKey>) {
    use std::hash::{Hash, Hasher};
    let fingerprint = |n: &NameKey| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        n.hash(&mut h);
        h.finish()
    };
    let mut shared = HashSet::new();
    let mut records: std::collections::HashMap<RecordKey, u64> = Default::default();
    for (n, _) in view.records() {
        let Some(k) = key(&n) else { continue };
        if records.insert(k, fingerprint(&n)).is_some() {
            shared.insert(k);
        }
    }
    let mut all: HashSet<RecordKey> = HashSet::with_capacity(records.len());
    for (n, _) in view.targets() {
        let Some(k) = key(&n) else { continue };
        let other_name = records.get(&k).is_some_and(|f| *f != fingerprint(&n));
        if !all.insert(k) || other_name {
            shared.insert(k);
        }
    }
    all.extend(records.into_keys());
    (all, shared)
}

/// A delta's entries under their kernel keys.
fn keyed<V: Copy>(entries: &[(NameKey, Option<V>)], seed: [u64; 2]) -> Vec<(RecordKey, Option<V>)> {
    entries
        .iter()
        .filter_map(|(n, v)| Some((RecordKey::of(n, seed)?, *v)))
        .collect()
}

/// What a name whose key another name shares is written as: it passes to userspace.
fn pass_record(v: NameRecords) -> NameRecords {
    NameRecords {
        flags: v.flags | NAME_PASS,
        ..v
    }
}

/// A stored target of no type the kernel answers: its queries pass.
fn pass_target(v: TargetRecord) -> TargetRecord {
    TargetRecord { rtype: 0, ..v }
}

/// Sixteen random bytes from the kernel, the seeds of a new node's keys.
fn new_seed() -> Result<[u64; 2]> {
    let mut b = [0u8; 16];
    // SAFETY: a valid buffer of the length given.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        return Err(Error::Seed(std::io::Error::last_os_error()));
    }
    let (lo, hi) = b.split_at(8);
    let word = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
    Ok([word(lo), word(hi)])
}

/// How long, by default, the kernel answers from the records after the daemon last
/// refreshed them. Longer than a pod restart or an image pull on upgrade, short enough that
/// an uninstalled or crash-looping daemon's records stop being served within a minute.
pub const FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// CLOCK_MONOTONIC, the clock of the kernel's `bpf_ktime_get_coarse_ns` (which lags it by a
/// tick at most).
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

pub(super) fn read_counters(map: &PerCpuArray<MapData, u64>) -> Result<Counters> {
    let mut out = Vec::with_capacity(COUNTER_COUNT as usize);
    for i in 0..COUNTER_COUNT {
        let per_cpu = map.get(&i, 0).map_err(map_err(m::COUNTERS))?;
        out.push(per_cpu.iter().sum());
    }
    Ok(Counters(out))
}

pub(super) fn read_iface_counters(
    slots: &HashMap<MapData, u32, u32>,
    counters: &PerCpuArray<MapData, IfaceCounters>,
) -> Result<BTreeMap<u32, Counters>> {
    let mut out = BTreeMap::new();
    for entry in slots.iter() {
        let (ifindex, slot) = entry.map_err(map_err(m::IFACE_SLOTS))?;
        let per_cpu = counters.get(&slot, 0).map_err(map_err(m::IFACE_COUNTERS))?;
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use dns_common::{NameKey, NameRecords, RecordKey, TargetRecord, ZoneInfo};

    use super::keys_of;
    use crate::model::KernelView;

    fn name(s: &str) -> NameKey {
        NameKey::of(&crate::model::wire_from_dotted(s).unwrap()).unwrap()
    }

    fn view(records: &[&str], targets: &[&str]) -> KernelView {
        let target = TargetRecord {
            ttl: 30,
            len: 0,
            rtype: 5,
            sum: 0,
            _pad: 0,
            target: [0; 256],
        };
        KernelView {
            zone: ZoneInfo::default(),
            zone_name: name("cluster.local"),
            records: records
                .iter()
                .map(|n| (name(n), NameRecords::empty(30)))
                .collect::<BTreeMap<_, _>>(),
            pod_namespaces: BTreeSet::new(),
            pod_addrs: BTreeSet::new(),
            targets: targets.iter().map(|n| (name(n), target)).collect(),
        }
    }

    #[test]
    fn one_name_in_both_maps_shares_no_key() {
        let v = view(
            &["a.cluster.local", "b.cluster.local"],
            &["a.cluster.local"],
        );
        let (all, shared) = keys_of(&v, |n| RecordKey::of(n, [1, 2]));
        assert_eq!(all.len(), 2);
        assert!(shared.is_empty());
    }

    #[test]
    fn two_names_on_one_key_are_found_in_either_map_or_across() {
        // A key function that collides on purpose: by the name's length only.
        let by_len = |n: &NameKey| {
            let len = n.wire()?.len() as u64;
            Some(RecordKey { h: [len, 0] })
        };
        let collide = RecordKey { h: [17, 0] };
        let (_, shared) = keys_of(&view(&["a.cluster.local", "b.cluster.local"], &[]), by_len);
        assert_eq!(shared, [collide].into());
        let (_, shared) = keys_of(&view(&[], &["a.cluster.local", "b.cluster.local"]), by_len);
        assert_eq!(shared, [collide].into());
        let (_, shared) = keys_of(&view(&["a.cluster.local"], &["b.cluster.local"]), by_len);
        assert_eq!(shared, [collide].into());
        let (_, shared) = keys_of(&view(&["a.cluster.local"], &["bb.cluster.local"]), by_len);
        assert!(shared.is_empty());
    }
}
