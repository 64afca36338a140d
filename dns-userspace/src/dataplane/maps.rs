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
            .filter_map(|(n, v)| {
                let k = self.key(n)?;
                Some((k, v.sealed(&k)))
            })
            .collect();
        self.records.sync(&keyed)
    }

    /// Writes entries under these keys exactly as given, seals included (`None`: delete):
    /// for tests that show the kernel passing an entry whose seal does not match it, as
    /// one the kernel reused while a program read it looks.
    #[doc(hidden)]
    pub fn write_unsealed(
        &mut self,
        records: &[(RecordKey, Option<NameRecords>)],
        targets: &[(RecordKey, Option<TargetRecord>)],
    ) -> Result<()> {
        self.records.apply(records)?;
        self.targets.apply(targets)?;
        Ok(())
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
        let keyed = keys_of(
            view,
            |n| RecordKey::of(n, seed),
            |n| RecordKey::of(n, other_seed(seed)),
        );
        let shared = &keyed.shared;
        if !shared.is_empty() {
            tracing::warn!(
                keys = shared.len(),
                "names share a kernel key: their queries pass to userspace"
            );
        }
        let is_wanted =
            |k: &RecordKey| keyed.records.contains_key(k) || keyed.target_keys.contains(k);
        // Values built here, once: kept from the walk they would add 70 MB to the peak.
        let records_all = view.records().filter_map(|(n, v)| {
            let k = RecordKey::of(&n, seed)?;
            Some(match shared.contains(&k) {
                true => (k, pass_record(v).sealed(&k)),
                false => (k, v.sealed(&k)),
            })
        });
        let targets_all = keyed
            .targets
            .iter()
            .map(|(k, v)| match shared.contains(&k) {
                true => (k, pass_target(v).sealed(&k)),
                false => (k, v.sealed(&k)),
            });
        let (targets, records) = (&mut self.targets, &mut self.records);
        let (targets, records) = std::thread::scope(|s| {
            let t = s.spawn(|| targets.reconcile(is_wanted, targets_all));
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

/// What a full publish keeps before its writes, and the keys two names share (see
/// [`keys_of`]).
struct Keys {
    /// The records map's keys, each with its name's second key.
    records: std::collections::HashMap<RecordKey, RecordKey>,
    target_keys: HashSet<RecordKey>,
    targets: PackedTargets,
    shared: HashSet<RecordKey>,
}

/// Targets as the walk found them, their names packed end to end: 140k entries of 272
/// bytes (mostly padding) in a map would add 80 MB to the first sync's peak at 100k
/// Services.
#[derive(Default)]
struct PackedTargets {
    /// Key, second key, and the value without its name, which is the next `len` bytes of
    /// `names`.
    heads: Vec<(RecordKey, RecordKey, TargetHead)>,
    names: Vec<u8>,
}

#[derive(Clone, Copy)]
struct TargetHead {
    ttl: u32,
    len: u16,
    rtype: u16,
    sum: u32,
}

impl PackedTargets {
    fn push(&mut self, k: RecordKey, o: RecordKey, v: &TargetRecord) {
        let len = usize::from(v.len).min(v.target.len());
        self.names.extend_from_slice(&v.target[..len]);
        let head = TargetHead {
            ttl: v.ttl,
            len: len as u16,
            rtype: v.rtype,
            sum: v.sum,
        };
        self.heads.push((k, o, head));
    }

    /// Every target, whole again, in the order pushed.
    fn iter(&self) -> impl Iterator<Item = (RecordKey, TargetRecord)> + '_ {
        let mut at = 0;
        self.heads.iter().map(move |(k, _, h)| {
            let len = usize::from(h.len);
            let mut v = TargetRecord {
                ttl: h.ttl,
                len: h.len,
                rtype: h.rtype,
                sum: h.sum,
                _pad: 0,
                seal: 0,
                target: [0; dns_common::NAME_KEY_LEN],
            };
            v.target[..len].copy_from_slice(&self.names[at..at + len]);
            at += len;
            (*k, v)
        })
    }
}

/// The view's names under their kernel keys (`key`), its targets with their values, and
/// the keys two names share. A name may sit in both maps (an ExternalName's owner); two
/// names may not share a key in either, nor across them (a PTR query looks in both).
/// `other`, a key under other seeds, tells one name from another without keeping 256-byte
/// names. The two maps are walked side by side; the targets (every PTR built, the longest
/// walk) are kept with their values so they are built once; the records' values (350k at
/// 100k Services) are built again as they are written.
fn keys_of(
    view: &dyn KernelEntries,
    key: impl Fn(&NameKey) -> Option<RecordKey> + Sync,
    other: impl Fn(&NameKey) -> Option<RecordKey> + Sync,
) -> Keys {
    let mut shared = HashSet::new();
    let (records, (target_keys, targets)) = std::thread::scope(|s| {
        let t = s.spawn(|| {
            let (mut keys, mut targets) = (HashSet::new(), PackedTargets::default());
            let mut shared = HashSet::new();
            for (n, v) in view.targets() {
                let (Some(k), Some(o)) = (key(&n), other(&n)) else {
                    continue;
                };
                if !keys.insert(k) {
                    shared.insert(k);
                }
                targets.push(k, o, &v);
            }
            (keys, targets, shared)
        });
        let mut records = std::collections::HashMap::new();
        for n in view.record_names() {
            let (Some(k), Some(o)) = (key(&n), other(&n)) else {
                continue;
            };
            if records.insert(k, o).is_some() {
                shared.insert(k);
            }
        }
        let (keys, targets, more) = t.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        shared.extend(more);
        (records, (keys, targets))
    });
    for (k, o, _) in &targets.heads {
        if records.get(k).is_some_and(|r| r != o) {
            shared.insert(*k);
        }
    }
    Keys {
        records,
        target_keys,
        targets,
        shared,
    }
}

/// The seeds of the second key, which tells names apart when their kernel keys meet.
fn other_seed(seed: [u64; 2]) -> [u64; 2] {
    const FLIP: u64 = 0x5851_f42d_4c95_7f2d;
    [seed[1] ^ FLIP, seed[0] ^ FLIP]
}

/// A map value as written under its key: sealed (see [`dns_common::Seal`]).
pub trait Sealed: Copy {
    fn sealed(self, key: &RecordKey) -> Self;
}

impl Sealed for NameRecords {
    fn sealed(self, key: &RecordKey) -> Self {
        NameRecords::sealed(self, key)
    }
}

impl Sealed for TargetRecord {
    fn sealed(self, key: &RecordKey) -> Self {
        TargetRecord::sealed(self, key)
    }
}

/// A delta's entries under their kernel keys.
fn keyed<V: Sealed>(
    entries: &[(NameKey, Option<V>)],
    seed: [u64; 2],
) -> Vec<(RecordKey, Option<V>)> {
    entries
        .iter()
        .filter_map(|(n, v)| {
            let k = RecordKey::of(n, seed)?;
            Some((k, v.map(|v| v.sealed(&k))))
        })
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

    /// The second key, under seeds of its own.
    fn other(n: &NameKey) -> Option<RecordKey> {
        RecordKey::of(n, [3, 4])
    }
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
            seal: 0,
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
        let keys = keys_of(&v, |n| RecordKey::of(n, [1, 2]), other);
        assert_eq!((keys.records.len(), keys.target_keys.len()), (2, 1));
        assert!(keys.shared.is_empty());
    }

    #[test]
    fn two_names_on_one_key_are_found_in_either_map_or_across() {
        // A key function that collides on purpose: by the name's length only.
        let by_len = |n: &NameKey| {
            let len = n.wire()?.len() as u64;
            Some(RecordKey { h: [len, 0] })
        };
        let collide = RecordKey { h: [17, 0] };
        let shared = keys_of(
            &view(&["a.cluster.local", "b.cluster.local"], &[]),
            by_len,
            other,
        )
        .shared;
        assert_eq!(shared, [collide].into());
        let shared = keys_of(
            &view(&[], &["a.cluster.local", "b.cluster.local"]),
            by_len,
            other,
        )
        .shared;
        assert_eq!(shared, [collide].into());
        let shared = keys_of(
            &view(&["a.cluster.local"], &["b.cluster.local"]),
            by_len,
            other,
        )
        .shared;
        assert_eq!(shared, [collide].into());
        let shared = keys_of(
            &view(&["a.cluster.local"], &["bb.cluster.local"]),
            by_len,
            other,
        )
        .shared;
        assert!(shared.is_empty());
    }

    #[test]
    fn packed_targets_come_back_whole_and_in_order() {
        let target = |n: &str, rtype| {
            let w = crate::model::wire_from_dotted(n).unwrap();
            let mut v = TargetRecord {
                ttl: 7,
                len: w.len() as u16,
                rtype,
                sum: w.len() as u32 * 3,
                _pad: 0,
                seal: 0,
                target: [0; 256],
            };
            v.target[..w.len()].copy_from_slice(&w);
            v
        };
        let all = [
            target("a.example.com", 5),
            target("web.shop.svc.cluster.local", 12),
            target("b.c", 5),
        ];
        let mut p = super::PackedTargets::default();
        for (i, v) in all.iter().enumerate() {
            let k = RecordKey { h: [i as u64, 0] };
            p.push(k, k, v);
        }
        let back: Vec<_> = p.iter().collect();
        assert_eq!(back.len(), all.len());
        for (i, (k, v)) in back.iter().enumerate() {
            assert_eq!(k.h[0], i as u64);
            assert_eq!(v, &all[i]);
        }
    }
}
