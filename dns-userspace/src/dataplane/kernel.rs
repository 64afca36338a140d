//! The kernel side of a running daemon: the loaded object, its maps, and the interfaces it
//! serves. Start-up order is what makes restarts lossless: load (adopting the pinned maps,
//! which the old program keeps answering from), reconcile the maps with the fresh view,
//! and only then swap the new program into the pinned links.
use std::{collections::BTreeMap, net::IpAddr, path::Path};

use aya::Ebpf;

use super::{
    attach::AttachMode,
    discover::{self, Pattern},
    links::{Links, Outcome},
    maps::{Counters, KernelMaps},
    Result,
};

/// What happened to one interface.
#[derive(Debug)]
pub enum Change {
    Served { iface: String, outcome: Outcome },
    Gone { iface: String },
    Failed { iface: String, error: String },
}

impl std::fmt::Display for Change {
    /// One line per interface, for the daemon's stdout (scripts and tests read it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Served {
                iface,
                outcome: Outcome::Adopted(mode),
            } => write!(f, "adopted {iface} {mode}"),
            Change::Served {
                iface,
                outcome: Outcome::Attached { mode, note: None },
            } => write!(f, "attached {iface} {mode}"),
            Change::Served {
                iface,
                outcome:
                    Outcome::Attached {
                        mode,
                        note: Some(note),
                    },
            } => write!(f, "attached {iface} {mode} ({note})"),
            Change::Gone { iface } => write!(f, "gone {iface}"),
            Change::Failed { iface, error } => write!(f, "failed {iface}: {error}"),
        }
    }
}

pub struct Kernel {
    /// The pin folder, this daemon's alone while the kernel path is (see [`bpffs::lock`]).
    _pins: super::bpffs::PinLock,
    ebpf: Ebpf,
    pub maps: KernelMaps,
    links: Links,
    named: Vec<String>,
    patterns: Vec<Pattern>,
    mode: AttachMode,
    pin_dir: std::path::PathBuf,
    /// This load's program arrays (see [`super::TAIL_MAPS`]).
    tails: std::path::PathBuf,
}

impl Kernel {
    /// The ring buffer of sampled kernel answers, for [`super::kernel_log::run`]; once.
    pub fn take_log(&mut self) -> Result<aya::maps::RingBuf<aya::maps::MapData>> {
        let name = dns_common::maps::KERNEL_LOG;
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(super::Error::MissingMap(name))?;
        aya::maps::RingBuf::try_from(map).map_err(|source| super::Error::Map { name, source })
    }

    /// Loads the programs (not attached yet) with the pinned maps, and points the kernel at
    /// the service addresses it answers for.
    pub fn load(
        pins: super::bpffs::PinLock,
        pin_dir: &Path,
        addrs: &[IpAddr],
        named: Vec<String>,
        patterns: Vec<Pattern>,
        mode: AttachMode,
        records_max: u32,
    ) -> Result<Self> {
        let (mut ebpf, tails) = super::load_sized(Some(pin_dir), records_max)?;
        let mut maps = KernelMaps::take(&mut ebpf)?;
        maps.sync_service_addrs(addrs)?;
        let links = Links::open(pin_dir.join("links"))?;
        Ok(Self {
            _pins: pins,
            ebpf,
            maps,
            links,
            named,
            patterns,
            mode,
            pin_dir: pin_dir.to_owned(),
            tails: tails.unwrap_or_default(),
        })
    }

    /// Pushes the records' freshness forward (see [`KernelMaps::refresh`]).
    pub fn heartbeat(&mut self) {
        if let Err(e) = self.maps.refresh() {
            tracing::error!(error = %e, "refreshing the kernel zone");
        }
    }

    pub fn verified_insns(&self) -> Vec<(&'static str, Option<u32>)> {
        super::verified_insns(&self.ebpf)
    }

    /// Attaches to (or adopts) every named interface and every present one matching a
    /// pattern, then drops the pins of interfaces no longer served. A named interface that
    /// cannot be served is an error; a pattern match is only logged.
    pub fn attach_all(&mut self) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        for iface in self.named.clone() {
            let outcome = self.links.ensure(&mut self.ebpf, &iface, self.mode)?;
            changes.push(Change::Served { iface, outcome });
        }
        changes.extend(self.rescan());
        for iface in self.links.sweep() {
            tracing::info!(iface, "dropped the pin of an interface no longer served");
        }
        self.sync_counter_slots();
        // Every link runs our programs now: maps of another layout, and the program
        // arrays of another load, serve nobody.
        for old in super::sweep_other_layouts(&self.pin_dir) {
            tracing::info!(path = %old.display(), "dropped maps pinned by another layout");
        }
        for old in super::sweep_other_tails(&self.pin_dir, &self.tails) {
            tracing::debug!(path = %old.display(), "dropped another load's program arrays");
        }
        Ok(changes)
    }

    /// Brings the attachments in line with the interfaces present now.
    pub fn rescan(&mut self) -> Vec<Change> {
        let attached: BTreeMap<String, u32> = self
            .links
            .held()
            .map(|p| (p.iface.clone(), p.ifindex))
            .collect();
        let present = discover::interfaces();
        let mut wanted = self.patterns.clone();
        wanted.extend(self.named.iter().map(|n| Pattern::new(n)));
        let (new, gone) = discover::diff(&present, &attached, &wanted);
        let mut changes = Vec::new();
        for iface in gone {
            // Its counter slot goes back in `sync_counter_slots` below.
            self.links.forget(&iface);
            changes.push(Change::Gone { iface });
        }
        for iface in new {
            match self.links.ensure(&mut self.ebpf, &iface, self.mode) {
                Ok(outcome) => changes.push(Change::Served { iface, outcome }),
                Err(e) => changes.push(Change::Failed {
                    iface,
                    error: e.to_string(),
                }),
            }
        }
        if !changes.is_empty() {
            self.sync_counter_slots();
        }
        changes
    }

    /// A counter slot for each interface served, and none for the others.
    fn sync_counter_slots(&mut self) {
        let served = self.links.held().map(|p| p.ifindex).collect();
        if let Err(e) = self.maps.sync_iface_slots(&served) {
            tracing::warn!(error = %e, "per-interface counter slots");
        }
    }

    /// The attach mode of every interface served.
    pub fn modes(&self) -> Vec<(String, AttachMode)> {
        self.links
            .held()
            .map(|p| (p.iface.clone(), p.mode))
            .collect()
    }

    pub fn counters(&self) -> Result<Counters> {
        self.maps.counters()
    }

    /// Leaves the links pinned (the kernel goes on answering until the next daemon takes
    /// over), or with `detach`, removes them and the pinned maps: nothing of ours is left.
    pub fn finish(mut self, detach: bool, pin_dir: &Path) {
        if detach {
            self.links.detach_all();
            let maps = super::maps_dir(pin_dir);
            for name in super::PINNED_MAPS {
                let _ = std::fs::remove_file(maps.join(name));
            }
            let _ = std::fs::remove_dir(maps);
            super::remove_tails(&self.tails);
            let _ = std::fs::remove_dir(pin_dir.join("links"));
            let _ = std::fs::remove_dir(pin_dir);
        }
        drop(self.ebpf);
    }
}
