//! What the kernel path is doing, read from the pins alone: counters (global and per
//! interface), map occupancy, and what is attached where. `/metrics` and `xdns status` both
//! read it, so they work the same whether or not a daemon runs.
use std::{
    collections::BTreeMap,
    path::Path,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
};

use dns_common::maps as m;

use super::{
    attach::AttachMode,
    links::{self, Pin},
    maps::{self, Counters},
    Result,
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
            None => (
                maps::pinned_records_len(pin_dir)?,
                maps::pinned_targets_len(pin_dir)?,
            ),
        };
        let counters = maps::pinned_counters(pin_dir)?;
        let per_iface: BTreeMap<u32, Counters> =
            maps::pinned_iface_counters(pin_dir).unwrap_or_default();
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
            records_max: maps::pinned_records_capacity(pin_dir)
                .map_or(m::RECORDS_MAX, |c| c as u32),
            degraded: maps::pinned_zone(pin_dir)?
                .is_some_and(|z| z.flags & dns_common::ZONE_DEGRADED != 0),
            target_records,
        })
    }
}
