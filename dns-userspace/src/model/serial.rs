//! The SOA serial: a hash of the zone's contents. It changes when a record does, and every
//! node (and every restart) serving the same records gives the same serial, so answers do
//! not depend on which daemon, or which path, gave them. It is a wrapping sum of one hash
//! per owner, name and namespace, so a change to a few names updates it without a walk of
//! the zone.
use std::net::IpAddr;

use super::{Host, Ptrs, RRSet, Records};

/// FNV-1a 64: stable across builds and platforms, unlike std's hasher.
struct Fnv(u64);

impl Fnv {
    fn new(tag: u8) -> Self {
        let mut h = Self(0xcbf2_9ce4_8422_2325);
        h.eat(&[tag]);
        h
    }

    fn eat(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// One more mixing round, so that sums of related items do not cancel out.
    fn finish(self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
}

pub(super) fn rrset(owner: &[u8], set: &RRSet) -> u64 {
    let mut h = Fnv::new(b'R');
    h.eat(owner);
    // Lengths between the fields keep (a: [x], aaaa: []) apart from (a: [], aaaa: [x]).
    h.eat(&(set.a.len() as u32).to_be_bytes());
    set.a.iter().for_each(|a| h.eat(&a.octets()));
    h.eat(&(set.aaaa.len() as u32).to_be_bytes());
    set.aaaa.iter().for_each(|a| h.eat(&a.octets()));
    h.eat(&(set.srv.len() as u32).to_be_bytes());
    for s in &set.srv {
        h.eat(
            &[s.priority, s.weight, s.port]
                .map(u16::to_be_bytes)
                .concat(),
        );
        h.eat(&s.target);
    }
    h.eat(&[u8::from(set.cname.is_some())]);
    set.cname.iter().for_each(|c| h.eat(c));
    h.eat(&(set.txt.len() as u32).to_be_bytes());
    set.txt.iter().for_each(|t| h.eat(t.as_bytes()));
    h.finish()
}

/// An address's PTR records, hashed as the address and each record's parts (no name is
/// built: the zone holds one per endpoint of the cluster).
pub(super) fn ptrs(ip: IpAddr, ptrs: &Ptrs) -> u64 {
    let mut h = Fnv::new(b'P');
    match ip {
        IpAddr::V4(v4) => h.eat(&v4.octets()),
        IpAddr::V6(v6) => h.eat(&v6.octets()),
    }
    for p in ptrs {
        h.eat(&(p.under.len() as u32).to_be_bytes());
        h.eat(&p.under);
        match &p.host {
            Host::Bare => h.eat(b"B"),
            Host::Dashed => h.eat(b"D"),
            Host::Label(l) => {
                h.eat(&(l.len() as u32).to_be_bytes());
                h.eat(l.as_bytes());
            }
        }
    }
    h.finish()
}

pub(super) fn name(n: &[u8]) -> u64 {
    let mut h = Fnv::new(b'N');
    h.eat(n);
    h.finish()
}

pub(super) fn namespace(ns: &str) -> u64 {
    let mut h = Fnv::new(b'S');
    h.eat(ns.as_bytes());
    h.finish()
}

/// What the sum starts from: the TTL (the SOA's minimum) is part of the contents.
pub(super) fn base(ttl: u32) -> u64 {
    let mut h = Fnv::new(b'T');
    h.eat(&ttl.to_be_bytes());
    h.finish()
}

/// The serial for a sum of item hashes (never 0).
pub(super) fn fold(sum: u64) -> u32 {
    ((sum ^ (sum >> 32)) as u32).max(1)
}

/// The serial of a whole zone, summed from scratch.
pub(super) fn of(r: &Records) -> u32 {
    fold(sum(r))
}

pub(super) fn sum(r: &Records) -> u64 {
    let mut s = base(r.cfg.ttl);
    for (owner, set) in r.rrsets.iter() {
        s = s.wrapping_add(rrset(owner, set));
    }
    for (ip, p) in r.reverse.iter() {
        s = s.wrapping_add(ptrs(ip, &p));
    }
    for n in r.names.keys() {
        s = s.wrapping_add(name(n));
    }
    for ns in r.namespaces.iter() {
        s = s.wrapping_add(namespace(ns));
    }
    s
}
