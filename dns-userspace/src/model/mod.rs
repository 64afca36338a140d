//! The record model: pure functions from the cluster view to the zone's records, and the
//! lookups both answer paths use. No I/O here.
pub mod name;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use dns_common::{ARecords, NameKey, MAX_A_RECORDS};

use crate::source::ServiceView;
pub use name::{wire_from_dotted, NameError};

/// SOA timers, as CoreDNS's kubernetes plugin sets them; the minimum is the record TTL.
pub const SOA_REFRESH: u32 = 7200;
pub const SOA_RETRY: u32 = 1800;
pub const SOA_EXPIRE: u32 = 86400;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneConfig {
    /// Lower-case wire form of the zone, e.g. `cluster.local.`.
    pub zone: Vec<u8>,
    pub ttl: u32,
}

impl ZoneConfig {
    pub fn new(zone: &str, ttl: u32) -> Result<Self, NameError> {
        Ok(Self {
            zone: wire_from_dotted(zone)?,
            ttl,
        })
    }
}

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

/// Every record of the zone, keyed by lower-case wire name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Records {
    pub cfg: ZoneConfig,
    pub serial: u32,
    a: BTreeMap<Vec<u8>, Vec<Ipv4Addr>>,
    aaaa: BTreeMap<Vec<u8>, Vec<Ipv6Addr>>,
    /// Every name that exists, empty non-terminals included.
    names: BTreeSet<Vec<u8>>,
}

/// What the zone holds for a (name, type).
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The name is not in this zone: not ours to answer.
    OutOfZone,
    NxDomain,
    /// The name exists, without records of this type.
    NoData,
    A(&'a [Ipv4Addr]),
    Aaaa(&'a [Ipv6Addr]),
    Soa,
}

/// Query types the model distinguishes; everything else is [`QType::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    A,
    Aaaa,
    Soa,
    Other,
}

impl Records {
    /// Builds the zone from services: `<svc>.<ns>.svc.<zone>` A/AAAA for each cluster IP,
    /// in the order the Service lists them.
    pub fn build(cfg: &ZoneConfig, services: &[ServiceView]) -> Self {
        let mut r = Records {
            cfg: cfg.clone(),
            serial: 0,
            a: BTreeMap::new(),
            aaaa: BTreeMap::new(),
            names: BTreeSet::new(),
        };
        r.names.insert(cfg.zone.clone());
        for svc in services {
            let owner = name::child(&cfg.zone, &[&svc.name, &svc.namespace, "svc"]);
            for ip in &svc.cluster_ips {
                match ip {
                    IpAddr::V4(v4) => r.a.entry(owner.clone()).or_default().push(*v4),
                    IpAddr::V6(v6) => r.aaaa.entry(owner.clone()).or_default().push(*v6),
                }
            }
            if !svc.cluster_ips.is_empty() {
                r.add_with_ancestors(owner);
            }
        }
        r.serial = r.content_serial();
        r
    }

    /// The SOA serial is a hash of the zone's contents: it changes when a record does, and
    /// every node (and every restart) serving the same records gives the same serial, so
    /// answers do not depend on which daemon, or which path, gave them.
    fn content_serial(&self) -> u32 {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let mut h: u32 = 0x811c_9dc5;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h = (h ^ *b as u32).wrapping_mul(0x0100_0193);
            }
        };
        eat(&self.cfg.ttl.to_be_bytes());
        for (n, v) in &self.a {
            eat(n);
            v.iter().for_each(|a| eat(&a.octets()));
        }
        for (n, v) in &self.aaaa {
            eat(n);
            v.iter().for_each(|a| eat(&a.octets()));
        }
        for n in &self.names {
            eat(n);
        }
        h.max(1)
    }

    fn add_with_ancestors(&mut self, mut name: Vec<u8>) {
        while name.len() > self.cfg.zone.len() && self.names.insert(name.clone()) {
            name = name::parent(&name).to_vec();
        }
    }

    /// Looks up a lower-case wire name.
    pub fn lookup(&self, qname: &[u8], qtype: QType) -> Lookup<'_> {
        if !name::is_within(qname, &self.cfg.zone) {
            return Lookup::OutOfZone;
        }
        if !self.names.contains(qname) {
            return Lookup::NxDomain;
        }
        let found = match qtype {
            QType::A => self.a.get(qname).map(|v| Lookup::A(v)),
            QType::Aaaa => self.aaaa.get(qname).map(|v| Lookup::Aaaa(v)),
            QType::Soa if qname == self.cfg.zone.as_slice() => Some(Lookup::Soa),
            _ => None,
        };
        found.unwrap_or(Lookup::NoData)
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

    /// The kernel map's desired contents: every A set small enough for one map value.
    pub fn kernel_a(&self) -> BTreeMap<NameKey, ARecords> {
        let mut out = BTreeMap::new();
        for (owner, addrs) in &self.a {
            if addrs.is_empty()
                || addrs.len() > MAX_A_RECORDS
                || owner.len() > dns_common::MAX_NAME_LEN
            {
                continue;
            }
            let mut key = NameKey::zeroed();
            key.name[..owner.len()].copy_from_slice(owner);
            let mut v = ARecords {
                ttl: self.cfg.ttl,
                count: addrs.len() as u32,
                addrs: [[0; 4]; MAX_A_RECORDS],
            };
            for (slot, a) in v.addrs.iter_mut().zip(addrs) {
                *slot = a.octets();
            }
            out.insert(key, v);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ips: &[&str]) -> ServiceView {
        ServiceView {
            namespace: ns.into(),
            name: name.into(),
            cluster_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        }
    }

    fn w(s: &str) -> Vec<u8> {
        wire_from_dotted(s).unwrap()
    }

    fn zone() -> Records {
        let cfg = ZoneConfig::new("cluster.local", 30).unwrap();
        Records::build(
            &cfg,
            &[
                svc("default", "kubernetes", &["10.96.0.1"]),
                svc("shop", "web", &["10.96.1.2", "fd00::12"]),
                svc("shop", "v6only", &["fd00::13"]),
                svc("shop", "headless", &[]),
            ],
        )
    }

    #[test]
    fn spec_rows() {
        let z = zone();
        let a1 = ["10.96.0.1".parse().unwrap()];
        let a2 = ["10.96.1.2".parse().unwrap()];
        let aaaa = ["fd00::12".parse().unwrap()];
        let rows: &[(&str, QType, Lookup)] = &[
            (
                "kubernetes.default.svc.cluster.local",
                QType::A,
                Lookup::A(&a1),
            ),
            ("web.shop.svc.cluster.local", QType::A, Lookup::A(&a2)),
            (
                "web.shop.svc.cluster.local",
                QType::Aaaa,
                Lookup::Aaaa(&aaaa),
            ),
            ("v6only.shop.svc.cluster.local", QType::A, Lookup::NoData),
            ("web.shop.svc.cluster.local", QType::Other, Lookup::NoData),
            ("shop.svc.cluster.local", QType::A, Lookup::NoData),
            ("svc.cluster.local", QType::A, Lookup::NoData),
            ("cluster.local", QType::Soa, Lookup::Soa),
            ("cluster.local", QType::A, Lookup::NoData),
            (
                "headless.shop.svc.cluster.local",
                QType::A,
                Lookup::NxDomain,
            ),
            ("nope.shop.svc.cluster.local", QType::A, Lookup::NxDomain),
            ("web.nope.svc.cluster.local", QType::A, Lookup::NxDomain),
            ("x.web.shop.svc.cluster.local", QType::A, Lookup::NxDomain),
            ("example.com", QType::A, Lookup::OutOfZone),
            ("local", QType::A, Lookup::OutOfZone),
            ("xcluster.local", QType::A, Lookup::OutOfZone),
        ];
        for (qname, qtype, want) in rows {
            assert_eq!(&z.lookup(&w(qname), *qtype), want, "{qname} {qtype:?}");
        }
    }

    #[test]
    fn kernel_entries_hold_ipv4_sets_with_ttl() {
        let k = zone().kernel_a();
        assert_eq!(k.len(), 2);
        let mut key = NameKey::zeroed();
        let n = w("web.shop.svc.cluster.local");
        key.name[..n.len()].copy_from_slice(&n);
        let v = k.get(&key).expect("web has an entry");
        assert_eq!((v.ttl, v.count, v.addrs[0]), (30, 1, [10, 96, 1, 2]));
    }

    #[test]
    fn more_addresses_than_a_map_value_holds_stay_in_userspace() {
        let cfg = ZoneConfig::new("cluster.local", 30).unwrap();
        let ips: Vec<String> = (1..=9).map(|i| format!("10.0.0.{i}")).collect();
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        let z = Records::build(&cfg, &[svc("a", "big", &ips)]);
        assert!(z.kernel_a().is_empty());
        assert!(
            matches!(z.lookup(&w("big.a.svc.cluster.local"), QType::A), Lookup::A(v) if v.len() == 9)
        );
    }

    #[test]
    fn soa_follows_coredns() {
        let soa = zone().soa();
        assert_eq!(soa.mname, w("ns.dns.cluster.local"));
        assert_eq!(soa.rname, w("hostmaster.cluster.local"));
        assert_eq!(
            (soa.refresh, soa.retry, soa.expire, soa.minimum, soa.serial),
            (7200, 1800, 86400, 30, zone().serial)
        );
    }
}
