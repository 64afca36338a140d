//! What the kernel path is doing, read from the pins alone: counters (global and per
//! interface), map occupancy, and what is attached where; and the readers of each pinned
//! map it is made from. `/metrics` and `xdns status` both
//! read it, so they work the same whether or not a daemon runs.
use std::{
    collections::BTreeMap,
    path::Path,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
};

use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    Pod,
};
use dns_common::{maps as m, NameKey, NameRecords, RecordKey, TargetRecord, ZoneInfo};

use super::{
    attach::AttachMode,
    links::{self, Pin},
    maps::{read_counters, read_iface_counters, Counters},
    mirror::{map_capacity, map_err},
    Error, Result,
};

/// One attached interface.
#[derive(Clone, Debug)]
pub struct IfaceStat {
    pub iface: String,
    pub ifindex: u32,
    pub mode: AttachMode,
    /// Whether the device still exists (a pin of a gone device is swept by the daemon).
    pub present: bool,
    pub counters: Counters,
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub counters: Counters,
    pub ifaces: Vec<IfaceStat>,
    pub records: usize,
    pub records_max: u32,
    /// The kernel passes every query: its maps could not be made whole.
    pub degraded: bool,
    /// Names the kernel answers with one stored target (PTR, ExternalName CNAME).
    pub target_records: usize,
}

/// The entries a running daemon knows its maps hold, kept as it writes them, so a scrape
/// does not walk every key of a map of 350k names with one syscall each.
#[derive(Debug, Default)]
pub struct Held {
    records: AtomicUsize,
    targets: AtomicUsize,
    known: AtomicBool,
}

impl Held {
    pub fn set(&self, records: usize, targets: usize) {
        self.records.store(records, Ordering::Relaxed);
        self.targets.store(targets, Ordering::Relaxed);
        self.known.store(true, Ordering::Release);
    }

    fn get(&self) -> Option<(usize, usize)> {
        self.known.load(Ordering::Acquire).then(|| {
            (
                self.records.load(Ordering::Relaxed),
                self.targets.load(Ordering::Relaxed),
            )
        })
    }
}

impl Snapshot {
    /// Everything from the pins (the map sizes by walking their keys).
    pub fn read(pin_dir: &Path) -> Result<Self> {
        Self::read_with(pin_dir, None)
    }

    /// From the pins, the map sizes from `held` once the daemon knows them.
    pub fn read_with(pin_dir: &Path, held: Option<&Held>) -> Result<Self> {
        let (records, target_records) = match held.and_then(Held::get) {
            Some(known) => known,
            None => (pinned_records_len(pin_dir)?, pinned_targets_len(pin_dir)?),
        };
        let counters = pinned_counters(pin_dir)?;
        let per_iface: BTreeMap<u32, Counters> = pinned_iface_counters(pin_dir).unwrap_or_default();
        let ifaces = links::pins(&pin_dir.join("links"))
            .into_iter()
            .map(
                |Pin {
                     iface,
                     ifindex,
                     mode,
                     ..
                 }| IfaceStat {
                    present: links::ifindex(&iface) == Some(ifindex),
                    counters: per_iface.get(&ifindex).cloned().unwrap_or_default(),
                    iface,
                    ifindex,
                    mode,
                },
            )
            .collect();
        Ok(Self {
            counters,
            ifaces,
            records,
            records_max: pinned_records_capacity(pin_dir).map_or(m::RECORDS_MAX, |c| c as u32),
            degraded: pinned_zone(pin_dir)?
                .is_some_and(|z| z.flags & dns_common::ZONE_DEGRADED != 0),
            target_records,
        })
    }
}

/// Per-interface counters from the pinned map.
pub fn pinned_iface_counters(pin_dir: &Path) -> Result<BTreeMap<u32, Counters>> {
    let dir = super::maps_dir(pin_dir);
    let pin = |name: &'static str| MapData::from_pin(dir.join(name)).map_err(map_err(name));
    let counters = PerCpuArray::try_from(Map::PerCpuArray(pin(m::IFACE_COUNTERS)?))
        .map_err(map_err(m::IFACE_COUNTERS))?;
    let slots =
        HashMap::try_from(Map::HashMap(pin(m::IFACE_SLOTS)?)).map_err(map_err(m::IFACE_SLOTS))?;
    read_iface_counters(&slots, &counters)
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
    let map = pinned_hash::<RecordKey, NameRecords>(pin_dir, m::RECORDS)?;
    map_capacity(&map).ok_or(Error::MissingMap(m::RECORDS))
}

/// How many names the pinned records map holds.
pub fn pinned_records_len(pin_dir: &Path) -> Result<usize> {
    Ok(pinned_hash::<RecordKey, NameRecords>(pin_dir, m::RECORDS)?
        .keys()
        .count())
}

/// How many names the pinned targets map holds.
pub fn pinned_targets_len(pin_dir: &Path) -> Result<usize> {
    Ok(pinned_hash::<RecordKey, TargetRecord>(pin_dir, m::TARGETS)?
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
pub fn pinned_records(pin_dir: &Path) -> Result<BTreeMap<RecordKey, NameRecords>> {
    pinned_hash(pin_dir, m::RECORDS)?
        .iter()
        .map(|e| e.map_err(map_err(m::RECORDS)))
        .collect()
}

/// `by_name` as the pinned maps hold it (under the seed in the pinned zone, sealed), to
/// compare with them; names without a key (not wire names) are left out.
pub fn keyed_as_pinned<V: super::maps::Sealed>(
    pin_dir: &Path,
    by_name: &BTreeMap<NameKey, V>,
) -> Result<BTreeMap<RecordKey, V>> {
    let seed = pinned_zone(pin_dir)?.map_or([0, 0], |z| z.seed);
    Ok(by_name
        .iter()
        .filter_map(|(n, v)| {
            let k = RecordKey::of(n, seed)?;
            Some((k, v.sealed(&k)))
        })
        .collect())
}
