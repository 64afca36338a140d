//! The record model as the kernel maps hold it: every value here is what one map must
//! contain for the kernel to answer exactly as [`Records::lookup`] does.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use dns_common::{
    NameKey, NameRecords, PodKey, ServiceAddr, TargetRecord, ZoneInfo, MAX_ADDRS, MAX_NAME_LEN,
    NAME_KEY_LEN, NAME_OTHER_TYPES, NAME_PASS, NAME_TARGET, RTYPE_CNAME, RTYPE_PTR,
    ZONE_PODS_DISABLED, ZONE_PODS_VERIFIED, ZONE_ROTATE,
};

use super::{live::Touched, name, PodMode, Ptrs, RRSet, Records};

/// The kernel entries one batch of changes rewrites (see [`Records::kernel_delta`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelDelta {
    pub zone: ZoneInfo,
    pub records: Vec<(NameKey, Option<NameRecords>)>,
    pub targets: Vec<(NameKey, Option<TargetRecord>)>,
    pub pod_namespaces: Vec<(PodKey, bool)>,
    pub pod_addrs: Vec<(PodKey, bool)>,
}

/// Everything the kernel maps hold for one zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelView {
    pub zone: ZoneInfo,
    pub zone_name: NameKey,
    pub records: BTreeMap<NameKey, NameRecords>,
    pub pod_namespaces: BTreeSet<PodKey>,
    pub pod_addrs: BTreeSet<PodKey>,
    pub targets: BTreeMap<NameKey, TargetRecord>,
}

/// What the kernel maps must hold, entry by entry: a full publish walks it and looks keys
/// up in it, so the whole zone never has to exist a second time as map entries.
pub trait KernelEntries: Sync {
    fn zone(&self) -> ZoneInfo;
    fn zone_name(&self) -> NameKey;
    fn records(&self) -> Box<dyn Iterator<Item = (NameKey, NameRecords)> + '_>;
    /// The names [`KernelEntries::records`] yields, without building their values.
    fn record_names(&self) -> Box<dyn Iterator<Item = NameKey> + '_>;
    fn targets(&self) -> Box<dyn Iterator<Item = (NameKey, TargetRecord)> + '_>;
    fn pod_namespaces(&self) -> BTreeSet<PodKey>;
    fn pod_addrs(&self) -> BTreeSet<PodKey>;
}

impl KernelEntries for KernelView {
    fn zone(&self) -> ZoneInfo {
        self.zone
    }
    fn zone_name(&self) -> NameKey {
        self.zone_name
    }
    fn records(&self) -> Box<dyn Iterator<Item = (NameKey, NameRecords)> + '_> {
        Box::new(self.records.iter().map(|(k, v)| (*k, *v)))
    }
    fn record_names(&self) -> Box<dyn Iterator<Item = NameKey> + '_> {
        Box::new(self.records.keys().copied())
    }
    fn targets(&self) -> Box<dyn Iterator<Item = (NameKey, TargetRecord)> + '_> {
        Box::new(self.targets.iter().map(|(k, v)| (*k, *v)))
    }
    fn pod_namespaces(&self) -> BTreeSet<PodKey> {
        self.pod_namespaces.clone()
    }
    fn pod_addrs(&self) -> BTreeSet<PodKey> {
        self.pod_addrs.clone()
    }
}

impl KernelEntries for Records {
    fn zone(&self) -> ZoneInfo {
        self.kernel_zone()
    }
    fn zone_name(&self) -> NameKey {
        self.kernel_zone_name()
    }
    fn records(&self) -> Box<dyn Iterator<Item = (NameKey, NameRecords)> + '_> {
        let apex = std::iter::once(self.cfg.zone.as_slice());
        Box::new(
            // Every one exists: no lookup to say so.
            apex.chain(self.names.keys().map(|n| &n[..]))
                .filter_map(|owner| self.existing_record(owner)),
        )
    }
    fn record_names(&self) -> Box<dyn Iterator<Item = NameKey> + '_> {
        let apex = std::iter::once(self.cfg.zone.as_slice());
        let pod_zone = name::child(&self.cfg.zone, &["pod"]);
        Box::new(
            apex.chain(self.names.keys().map(|n| &n[..]))
                .filter(move |owner| self.in_records_map(owner, &pod_zone))
                .filter_map(NameKey::of),
        )
    }
    fn targets(&self) -> Box<dyn Iterator<Item = (NameKey, TargetRecord)> + '_> {
        let cnames = self
            .rrsets
            .iter()
            .filter(|(_, set)| set.cname.is_some())
            .filter_map(|(owner, _)| self.kernel_target(owner));
        // By address, with its records: no reverse name parsed back from the one just
        // built, no second lookup.
        let ptrs = self
            .reverse
            .iter()
            .filter_map(|(ip, ptrs)| self.ptr_entry(ip, &ptrs, &name::reverse(ip)));
        Box::new(cnames.chain(ptrs))
    }
    fn pod_namespaces(&self) -> BTreeSet<PodKey> {
        self.kernel_pod_namespaces()
    }
    fn pod_addrs(&self) -> BTreeSet<PodKey> {
        self.kernel_pod_addrs()
    }
}

impl Records {
    pub fn kernel_view(&self) -> KernelView {
        KernelView {
            zone: self.kernel_zone(),
            zone_name: self.kernel_zone_name(),
            records: self.kernel_records(),
            pod_namespaces: self.kernel_pod_namespaces(),
            pod_addrs: self.kernel_pod_addrs(),
            targets: self.kernel_targets(),
        }
    }

    /// The kernel map's desired contents: every name of the zone that exists (the apex and
    /// empty non-terminals included), so that a name under the zone the map lacks is
    /// NXDOMAIN. Names the kernel cannot answer as [`Records::lookup`] does are flagged
    /// [`NAME_PASS`]: CNAME owners chased inside the zone, families larger than a value
    /// holds; a CNAME to outside the zone is [`NAME_TARGET`] (see [`Records::kernel_targets`]).
    /// Names below
    /// `pod.<zone>` are left out: the kernel's pod program computes them (from
    /// [`Records::kernel_pod_namespaces`] and [`Records::kernel_pod_addrs`]).
    pub fn kernel_records(&self) -> BTreeMap<NameKey, NameRecords> {
        KernelEntries::records(self).collect()
    }

    /// The records map's entry for one name, or `None` where the map has none: the name
    /// does not exist, is longer than a key, or is a pod name (the pod program's).
    pub fn kernel_record(&self, owner: &[u8]) -> Option<(NameKey, NameRecords)> {
        let exists = owner == self.cfg.zone.as_slice() || self.names.contains(owner);
        if !exists {
            return None;
        }
        self.existing_record(owner)
    }

    /// [`Records::kernel_record`] for a name known to exist.
    fn existing_record(&self, owner: &[u8]) -> Option<(NameKey, NameRecords)> {
        if !self.in_records_map(owner, &name::child(&self.cfg.zone, &["pod"])) {
            return None;
        }
        let key = NameKey::of(owner)?;
        let empty = RRSet::default();
        let set = self.rrsets.get(owner).unwrap_or(&empty);
        let mut v = NameRecords::empty(self.cfg.ttl);
        if owner == self.cfg.zone.as_slice() || !set.srv.is_empty() || !set.txt.is_empty() {
            v.flags |= NAME_OTHER_TYPES;
        }
        if self.outside_cname(owner, set).is_some() {
            v.flags = NAME_TARGET;
        } else if set.cname.is_some() || set.a.len() > MAX_ADDRS || set.aaaa.len() > MAX_ADDRS {
            v.flags = NAME_PASS;
        } else {
            v.a_count = set.a.len() as u8;
            v.aaaa_count = set.aaaa.len() as u8;
            for (slot, a) in v.a.iter_mut().zip(&set.a) {
                *slot = a.octets();
            }
            for (slot, a) in v.aaaa.iter_mut().zip(&set.aaaa) {
                *slot = a.octets();
            }
        }
        Some((key, v))
    }

    /// Whether an existing name has an entry in the records map: short enough for a key,
    /// and not below `pod_zone` (pod names are computed by the pod program).
    fn in_records_map(&self, owner: &[u8], pod_zone: &[u8]) -> bool {
        let below_pods = name::is_within(owner, pod_zone) && owner != pod_zone;
        owner.len() <= MAX_NAME_LEN && !below_pods
    }

    /// What the kernel maps must change after a batch of changes touched `t`: each
    /// touched name's entries (`None`: delete), the touched pod keys (`false`: delete), and
    /// the zone (its serial moves with every change).
    pub fn kernel_delta(&self, t: &Touched) -> KernelDelta {
        let mut d = KernelDelta {
            zone: self.kernel_zone(),
            ..KernelDelta::default()
        };
        for owner in &t.owners {
            let Some(key) = NameKey::of(owner).filter(|_| owner.len() <= MAX_NAME_LEN) else {
                continue;
            };
            d.records
                .push((key, self.kernel_record(owner).map(|(_, v)| v)));
            d.targets
                .push((key, self.kernel_target(owner).map(|(_, v)| v)));
        }
        let pods_on = self.cfg.pods != PodMode::Disabled;
        for ns in &t.namespaces {
            if let Some(k) = PodKey::new(ns, [0; 16]) {
                d.pod_namespaces
                    .push((k, pods_on && self.namespaces.contains(ns)));
            }
        }
        let verified = self.cfg.pods == PodMode::Verified;
        for pair in &t.pod_ips {
            let addr = match pair.1 {
                IpAddr::V4(v4) => ServiceAddr::v4(v4.octets()),
                IpAddr::V6(v6) => ServiceAddr::v6(v6.octets()),
            };
            if let Some(k) = PodKey::new(&pair.0, addr.addr) {
                d.pod_addrs
                    .push((k, verified && self.pod_ips.contains(pair)));
            }
        }
        d
    }

    /// The zone's wire name, as the kernel's NXDOMAIN check compares it.
    pub fn kernel_zone_name(&self) -> NameKey {
        let mut key = NameKey::zeroed();
        let z = &self.cfg.zone;
        key.name[..z.len().min(MAX_NAME_LEN)].copy_from_slice(&z[..z.len().min(MAX_NAME_LEN)]);
        key
    }

    /// The SOA as the kernel writes it into NODATA answers.
    pub fn kernel_zone(&self) -> ZoneInfo {
        let soa = self.soa();
        ZoneInfo {
            zone_len: self.cfg.zone.len() as u32,
            soa_ttl: self.cfg.ttl.min(soa.minimum),
            serial: soa.serial,
            refresh: soa.refresh,
            retry: soa.retry,
            expire: soa.expire,
            minimum: soa.minimum,
            flags: if self.cfg.loadbalance { ZONE_ROTATE } else { 0 }
                | match self.cfg.pods {
                    PodMode::Disabled => ZONE_PODS_DISABLED,
                    PodMode::Verified => ZONE_PODS_VERIFIED,
                    PodMode::Insecure => 0,
                },
            // Set by the map writer, which knows the clock and the node's seed; the model
            // stays pure.
            fresh_until_ns: 0,
            seed: [0, 0],
            record_ttl: self.cfg.ttl,
            // A node setting, set by the map writer like the clock.
            log_sample: 0,
        }
    }

    /// The namespaces pod names may be in (none with `pods disabled`: the zone's flag then
    /// makes every pod name NXDOMAIN).
    pub fn kernel_pod_namespaces(&self) -> BTreeSet<PodKey> {
        if self.cfg.pods == PodMode::Disabled {
            return BTreeSet::new();
        }
        self.namespaces
            .iter()
            .filter_map(|ns| PodKey::new(ns, [0; 16]))
            .collect()
    }

    /// `pods verified`: the (namespace, address) of every pod, IPv4 mapped as in
    /// [`ServiceAddr`].
    pub fn kernel_pod_addrs(&self) -> BTreeSet<PodKey> {
        if self.cfg.pods != PodMode::Verified {
            return BTreeSet::new();
        }
        self.pod_ips
            .iter()
            .filter_map(|(ns, ip)| {
                let addr = match ip {
                    IpAddr::V4(v4) => ServiceAddr::v4(v4.octets()),
                    IpAddr::V6(v6) => ServiceAddr::v6(v6.octets()),
                };
                PodKey::new(ns, addr.addr)
            })
            .collect()
    }

    /// Reverse names with exactly one PTR record to a name the zone gives addresses (a
    /// Service's cluster IP, a headless endpoint), and CNAMEs out of the zone; the kernel
    /// passes the others (and every other query type for them) to userspace.
    pub fn kernel_targets(&self) -> BTreeMap<NameKey, TargetRecord> {
        KernelEntries::targets(self).collect()
    }

    /// The targets map's entry for one name, if it has one.
    pub fn kernel_target(&self, owner: &[u8]) -> Option<(NameKey, TargetRecord)> {
        match name::unreverse(owner) {
            Some(ip) => self.kernel_ptr(ip, owner),
            None => {
                let set = self.rrsets.get(owner)?;
                let target = self.outside_cname(owner, set)?;
                self.target_entry(owner, RTYPE_CNAME, target)
            }
        }
    }

    /// The entry for `ip`'s reverse name `owner`: its one PTR, to a name with addresses.
    fn kernel_ptr(&self, ip: IpAddr, owner: &[u8]) -> Option<(NameKey, TargetRecord)> {
        self.ptr_entry(ip, &self.reverse.get(ip)?, owner)
    }

    /// The entry for `ip`'s reverse name `owner` holding `ptrs`.
    fn ptr_entry(&self, ip: IpAddr, ptrs: &Ptrs, owner: &[u8]) -> Option<(NameKey, TargetRecord)> {
        let [ptr] = ptrs.as_slice() else {
            return None;
        };
        let target = ptr.target(ip);
        if !self.has_addresses(&target) {
            return None;
        }
        self.target_entry(owner, RTYPE_PTR, &target)
    }

    fn target_entry(
        &self,
        owner: &[u8],
        rtype: u16,
        target: &[u8],
    ) -> Option<(NameKey, TargetRecord)> {
        if owner.len() > MAX_NAME_LEN || target.len() > MAX_NAME_LEN || shares_suffix(owner, target)
        {
            return None;
        }
        let key = NameKey::of(owner)?;
        let mut v = TargetRecord {
            ttl: self.cfg.ttl,
            len: target.len() as u16,
            rtype,
            sum: ones_sum(target) as u32,
            _pad: 0,
            seal: 0,
            target: [0; NAME_KEY_LEN],
        };
        v.target[..target.len()].copy_from_slice(target);
        Some((key, v))
    }
}

impl Records {
    /// Whether `name` has A or AAAA records. The endpoints of a ClusterIP Service have a
    /// PTR (as CoreDNS answers) but no name of their own: at 100k Services those are 500k
    /// reverse names, 290 MiB of kernel memory at 580 bytes a target entry, so they pass to
    /// userspace and the kernel keeps the reverse names of the names it answers.
    fn has_addresses(&self, name: &[u8]) -> bool {
        self.rrsets
            .get(name)
            .is_some_and(|t| !t.a.is_empty() || !t.aaaa.is_empty())
    }

    /// The target of a CNAME `owner` (in the zone) has that points outside the zone: the
    /// whole answer for every type, as [`Records::lookup`] gives it, unless the target ends
    /// like the owner (userspace would compress it against the question).
    fn outside_cname<'a>(&self, owner: &[u8], set: &'a RRSet) -> Option<&'a [u8]> {
        let target = set.cname.as_deref()?;
        let answerable = name::is_within(owner, &self.cfg.zone)
            && !name::is_within(target, &self.cfg.zone)
            && target.len() <= MAX_NAME_LEN
            && !shares_suffix(owner, target);
        answerable.then_some(target)
    }
}

/// Whether two wire names end in the same label: the reply writer would then compress the
/// second against the first, which the kernel's verbatim copy does not.
fn shares_suffix(a: &[u8], b: &[u8]) -> bool {
    let last = |n: &[u8]| name::labels(n).last().map(|l| l.to_ascii_lowercase());
    last(a).is_some() && last(a) == last(b)
}

/// RFC 1071 sum of `bytes` as big-endian 16-bit words from the first byte (an odd last
/// byte padded with zero), folded to 16 bits.
pub(super) fn ones_sum(bytes: &[u8]) -> u16 {
    let mut s: u64 = bytes
        .chunks(2)
        .map(|c| u64::from(c[0]) << 8 | u64::from(c.get(1).copied().unwrap_or(0)))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}
