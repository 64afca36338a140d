//! The record model: pure functions from the cluster view to the zone's records, and the
//! lookups both answer paths use. No I/O here.
//!
//! Where the Kubernetes DNS specification (schema 1.1.0) is silent this follows CoreDNS's
//! kubernetes plugin; each such choice is named where it is made.
mod build;
pub mod config;
mod dense;
mod kernel;
pub mod live;
pub mod name;
mod reverse;
pub mod selector;
mod serial;
mod shared;
pub mod view;

#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dense::{DenseMap, DenseSet};
pub use shared::Shared;

pub use config::{PodMode, ZoneConfig};
pub use kernel::{KernelDelta, KernelEntries, KernelView};
pub use name::{wire_from_dotted, NameError};

/// SOA timers, as CoreDNS's kubernetes plugin sets them; the minimum is the record TTL.
pub const SOA_REFRESH: u32 = 7200;
pub const SOA_RETRY: u32 = 1800;
pub const SOA_EXPIRE: u32 = 86400;
/// The schema version `dns-version.<zone>` announces.
pub const SCHEMA_VERSION: &str = "1.1.0";
/// CNAMEs followed inside the zone before giving up on a chain.
const MAX_CNAME_CHAIN: usize = 8;

/// A lower-case wire name held by the zone: one allocation shared by every structure that
/// names it (records, existence, the units' owner lists).
pub type Name = std::sync::Arc<[u8]>;

/// The zone's SOA, shared by every negative answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Soa {
    pub mname: Vec<u8>,
    pub rname: Vec<u8>,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Shared with the target's own records in a live zone: every ClusterIP Service's SRV
    /// records name the Service (100k copies at 100k Services otherwise).
    pub target: Name,
}

/// All records of one owner name in the zone. Most owners hold one record of one type:
/// an empty type is one null pointer with no allocation, which at 100k Services is the
/// difference between the zone fitting a small pod or not; a held one is shared, so
/// copying a set for a change is counter increments, not allocations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RRSet {
    pub a: Shared<Ipv4Addr>,
    pub aaaa: Shared<Ipv6Addr>,
    pub srv: Shared<Srv>,
    pub cname: Option<Box<[u8]>>,
    pub txt: Shared<String>,
}

/// One PTR record of an address: the name it points to, held as the Service name it is
/// under (shared with that name's records) and the label in front. Every endpoint of the
/// cluster has one (500k at 100k Services): kept this way, a reverse name costs no name
/// of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ptr {
    pub under: Name,
    pub host: Host,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// The target is `under` itself (a cluster IP names its Service).
    Bare,
    /// The address dashed (`10-1-0-5`), an endpoint with no hostname.
    Dashed,
    Label(Box<str>),
}

impl Ptr {
    /// An endpoint's record, `host` in front of `under`; a label equal to the dashed
    /// address is held as [`Host::Dashed`], so equal targets are equal records.
    pub fn endpoint(under: Name, host: Option<&str>, ip: IpAddr) -> Self {
        let host = match host {
            Some(h) if h != name::dashed(ip) => Host::Label(h.into()),
            _ => Host::Dashed,
        };
        Self { under, host }
    }

    /// The target name in wire form, for the address `ip` the record is at.
    pub fn target(&self, ip: IpAddr) -> Vec<u8> {
        match &self.host {
            Host::Bare => self.under.to_vec(),
            Host::Dashed => name::child(&self.under, &[&name::dashed(ip)]),
            Host::Label(l) => name::child(&self.under, &[l]),
        }
    }
}

/// The PTR records of one address: one in practice, held inline.
pub type Ptrs = smallvec::SmallVec<[Ptr; 1]>;

/// One answer record; owners and targets are lower-case wire names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv(Srv),
    Ptr(Vec<u8>),
    Cname(Vec<u8>),
    Txt(String),
    Ns(Vec<u8>),
    Soa(Soa),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub owner: Vec<u8>,
    pub data: RData,
}

/// Query types the model distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    A,
    Aaaa,
    Srv,
    Ptr,
    Cname,
    Txt,
    Soa,
    Ns,
    Other,
}

/// What the zone holds for a (name, type).
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not ours to answer: outside the zone, or a reverse name we hold nothing for
    /// (the seed Corefile's `fallthrough in-addr.arpa ip6.arpa`).
    OutOfZone,
    NxDomain,
    /// The name exists without records of this type.
    NoData,
    /// Answer records (a CNAME chain first), and additional records (SRV targets).
    Answer {
        answers: Vec<Rec>,
        additional: Vec<Rec>,
    },
    /// A CNAME chain whose target, inside the zone, does not exist: NXDOMAIN with the chain.
    CnameToNxDomain(Vec<Rec>),
}

/// Every record of the zone and its reverse zones, keyed by lower-case wire name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Records {
    pub cfg: ZoneConfig,
    pub serial: u32,
    /// False until the source delivered its first full view: the zone then answers
    /// SERVFAIL rather than a false NXDOMAIN.
    pub synced: bool,
    // Sharded maps: a snapshot for the answer path copies shard pointers, and a change to
    // a few names copies only their shards.
    rrsets: DenseMap<Name, RRSet>,
    /// The reverse zones: PTR records by address.
    reverse: reverse::Reverse,
    /// Every in-zone name that exists, empty non-terminals included.
    names: DenseSet<Name>,
    /// Namespaces served (existing, and passing the namespace filters).
    namespaces: imbl::OrdSet<String>,
    /// `pods verified`: (namespace, address) of every pod.
    pod_ips: imbl::OrdSet<(String, IpAddr)>,
}

impl Records {
    /// Builds the zone from the cluster view.
    pub fn build(cfg: &ZoneConfig, view: &view::ClusterView) -> Self {
        build::build(cfg, view)
    }

    /// The zone before the first full view: no records, not synced.
    pub fn unsynced(cfg: &ZoneConfig) -> Self {
        let mut r = build::build(cfg, &view::ClusterView::default());
        r.synced = false;
        r
    }

    /// Merges a batch's writes into the maps (they read their own writes before this).
    fn flush(&mut self) {
        self.rrsets.flush();
        self.reverse.flush();
        self.names.flush();
    }

    pub fn soa(&self) -> Soa {
        Soa {
            mname: name::child(&self.cfg.zone, &["ns", "dns"]),
            rname: name::child(&self.cfg.zone, &["hostmaster"]),
            serial: self.serial,
            refresh: SOA_REFRESH,
            retry: SOA_RETRY,
            expire: SOA_EXPIRE,
            minimum: self.cfg.ttl,
        }
    }

    pub fn rrset(&self, owner: &[u8]) -> Option<&RRSet> {
        self.rrsets.get(owner)
    }

    /// The PTR records of an address.
    pub fn ptrs(&self, ip: IpAddr) -> Option<Ptrs> {
        self.reverse.get(ip)
    }

    /// Every owner name in the zone with records, lower-case wire form.
    pub fn owners(&self) -> impl Iterator<Item = &[u8]> {
        self.rrsets.keys().map(|k| &k[..])
    }

    /// Every address with PTR records.
    pub fn reverse_addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.reverse.addrs()
    }

    /// Number of owner names with records (reverse names included).
    pub fn len(&self) -> usize {
        self.rrsets.len() + self.reverse.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks up a lower-case wire name.
    pub fn lookup(&self, qname: &[u8], qtype: QType) -> Lookup {
        if name::is_within(qname, &self.cfg.zone) {
            return self.lookup_in_zone(qname, qtype, 0);
        }
        let found = name::unreverse(qname).and_then(|ip| Some((ip, self.reverse.get(ip)?)));
        match found {
            Some((ip, ptrs)) => match qtype {
                QType::Ptr => answer(ptrs.iter().map(|p| rec(qname, RData::Ptr(p.target(ip))))),
                _ => Lookup::NoData,
            },
            None => Lookup::OutOfZone,
        }
    }

    fn lookup_in_zone(&self, qname: &[u8], qtype: QType, depth: usize) -> Lookup {
        if qname == self.cfg.zone.as_slice() {
            return match qtype {
                QType::Soa => answer([rec(qname, RData::Soa(self.soa()))]),
                QType::Ns => answer([rec(qname, RData::Ns(self.soa().mname))]),
                _ => Lookup::NoData,
            };
        }
        if let Some(found) = self.pod_lookup(qname, qtype) {
            return found;
        }
        let Some(set) = self.rrsets.get(qname) else {
            return if self.names.contains(qname) {
                Lookup::NoData
            } else {
                Lookup::NxDomain
            };
        };
        if let Some(target) = &set.cname {
            let cname = rec(qname, RData::Cname(target.to_vec()));
            if qtype == QType::Cname || !name::is_within(target, &self.cfg.zone) {
                return answer([cname]);
            }
            if depth >= MAX_CNAME_CHAIN {
                return answer([cname]);
            }
            return match self.lookup_in_zone(target, qtype, depth + 1) {
                Lookup::Answer {
                    mut answers,
                    additional,
                } => {
                    answers.insert(0, cname);
                    Lookup::Answer {
                        answers,
                        additional,
                    }
                }
                Lookup::NxDomain => Lookup::CnameToNxDomain(vec![cname]),
                Lookup::CnameToNxDomain(mut chain) => {
                    chain.insert(0, cname);
                    Lookup::CnameToNxDomain(chain)
                }
                // NODATA at the target: the chain alone.
                _ => answer([cname]),
            };
        }
        let answers: Vec<Rec> = match qtype {
            QType::A => set.a.iter().map(|a| rec(qname, RData::A(*a))).collect(),
            QType::Aaaa => set
                .aaaa
                .iter()
                .map(|a| rec(qname, RData::Aaaa(*a)))
                .collect(),
            QType::Srv => set
                .srv
                .iter()
                .map(|s| rec(qname, RData::Srv(s.clone())))
                .collect(),
            QType::Txt => set
                .txt
                .iter()
                .map(|t| rec(qname, RData::Txt(t.clone())))
                .collect(),
            _ => Vec::new(),
        };
        if answers.is_empty() {
            return Lookup::NoData;
        }
        let mut additional = Vec::new();
        if qtype == QType::Srv {
            // As CoreDNS does: the targets' addresses, so clients need no second round.
            for s in &set.srv {
                if let Some(t) = self.rrsets.get(&s.target[..]) {
                    additional.extend(t.a.iter().map(|a| rec(&s.target, RData::A(*a))));
                    additional.extend(t.aaaa.iter().map(|a| rec(&s.target, RData::Aaaa(*a))));
                }
            }
            additional.dedup();
        }
        Lookup::Answer {
            answers,
            additional,
        }
    }

    /// `<address>.<ns>.pod.<zone>`; `None` when `qname` is not a pod name.
    fn pod_lookup(&self, qname: &[u8], qtype: QType) -> Option<Lookup> {
        let pod_zone = name::child(&self.cfg.zone, &["pod"]);
        if !name::is_within(qname, &pod_zone) || qname == pod_zone.as_slice() {
            return None;
        }
        if self.cfg.pods == PodMode::Disabled {
            return Some(Lookup::NxDomain);
        }
        let extra = name::labels(&qname[..qname.len() - pod_zone.len()]).len();
        let labels = name::labels(qname);
        let ns = std::str::from_utf8(labels[extra - 1]).ok()?;
        if !self.namespaces.contains(ns) {
            return Some(Lookup::NxDomain);
        }
        if extra == 1 {
            return Some(Lookup::NoData);
        }
        if extra > 2 {
            return Some(Lookup::NxDomain);
        }
        let Some(ip) = std::str::from_utf8(labels[0]).ok().and_then(name::undash) else {
            return Some(Lookup::NxDomain);
        };
        if self.cfg.pods == PodMode::Verified && !self.pod_ips.contains(&(ns.to_owned(), ip)) {
            return Some(Lookup::NxDomain);
        }
        Some(match (qtype, ip) {
            (QType::A, IpAddr::V4(v4)) => answer([rec(qname, RData::A(v4))]),
            (QType::Aaaa, IpAddr::V6(v6)) => answer([rec(qname, RData::Aaaa(v6))]),
            _ => Lookup::NoData,
        })
    }
}

fn rec(owner: &[u8], data: RData) -> Rec {
    Rec {
        owner: owner.to_vec(),
        data,
    }
}

fn answer(records: impl IntoIterator<Item = Rec>) -> Lookup {
    Lookup::Answer {
        answers: records.into_iter().collect(),
        additional: Vec::new(),
    }
}
