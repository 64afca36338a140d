//! The reverse zones' PTR records by address. Every cluster IP and every endpoint has
//! one (590k at 100k Services); nearly all are an IPv4 address naming its Service or its
//! dashed self under the Service. Those are held in 36 bytes (the address as 4 bytes,
//! the Service's shared name, a flag); the rest (IPv6, hostnames, an address several
//! Services hold) as general records. Same answers, half the memory of one general map.
use std::net::IpAddr;

use super::{dense::DenseMap, Host, Name, Ptr, Ptrs};

/// An IPv4 address's one PTR to its Service's name, or to the address dashed under it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Plain {
    under: Name,
    dashed: bool,
}

impl Plain {
    fn of(ip: IpAddr, ptrs: &Ptrs) -> Option<(u32, Plain)> {
        let (IpAddr::V4(v4), [p]) = (ip, ptrs.as_slice()) else {
            return None;
        };
        let dashed = match p.host {
            Host::Bare => false,
            Host::Dashed => true,
            Host::Label(_) => return None,
        };
        let under = p.under.clone();
        Some((u32::from(v4), Plain { under, dashed }))
    }

    fn ptrs(&self) -> Ptrs {
        let host = if self.dashed {
            Host::Dashed
        } else {
            Host::Bare
        };
        smallvec::smallvec![Ptr {
            under: self.under.clone(),
            host,
        }]
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reverse {
    plain: DenseMap<u32, Plain>,
    other: DenseMap<IpAddr, Ptrs>,
}

impl Reverse {
    /// The PTR records of `ip` (a copy: one shared name per record).
    pub fn get(&self, ip: IpAddr) -> Option<Ptrs> {
        if let IpAddr::V4(v4) = ip {
            if let Some(p) = self.plain.get(&u32::from(v4)) {
                return Some(p.ptrs());
            }
        }
        // Nearly always empty: skip its lookup (a cache miss per address in a first build).
        if self.other.is_empty() {
            return None;
        }
        self.other.get(&ip).cloned()
    }

    pub fn insert(&mut self, ip: IpAddr, ptrs: Ptrs) {
        match Plain::of(ip, &ptrs) {
            Some((key, plain)) => {
                self.plain.insert(key, plain);
                if !self.other.is_empty() {
                    self.other.remove(&ip);
                }
            }
            None => {
                if let IpAddr::V4(v4) = ip {
                    self.plain.remove(&u32::from(v4));
                }
                self.other.insert(ip, ptrs);
            }
        }
    }

    pub fn remove(&mut self, ip: IpAddr) {
        if let IpAddr::V4(v4) = ip {
            self.plain.remove(&u32::from(v4));
        }
        if !self.other.is_empty() {
            self.other.remove(&ip);
        }
    }

    /// Ends a batch of writes (see [`DenseMap::flush`]).
    pub fn flush(&mut self) {
        self.plain.flush();
        self.other.flush();
    }

    pub fn len(&self) -> usize {
        self.plain.len() + self.other.len()
    }

    /// Every address with PTR records, in no particular order.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let plain = self.plain.keys().map(|k| IpAddr::from(k.to_be_bytes()));
        plain.chain(self.other.keys().copied())
    }

    /// Every address with its records, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, Ptrs)> + '_ {
        let plain = self
            .plain
            .iter()
            .map(|(k, p)| (IpAddr::from(k.to_be_bytes()), p.ptrs()));
        plain.chain(self.other.iter().map(|(ip, p)| (*ip, p.clone())))
    }
}

impl FromIterator<(IpAddr, Ptrs)> for Reverse {
    fn from_iter<I: IntoIterator<Item = (IpAddr, Ptrs)>>(iter: I) -> Self {
        let mut r = Self::default();
        for (ip, ptrs) in iter {
            r.insert(ip, ptrs);
        }
        r.flush();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ptr(under: &str, host: Host) -> Ptr {
        Ptr {
            under: Name::from(under.as_bytes()),
            host,
        }
    }

    /// Whatever form an address's records take, they read back as written, and a record
    /// moving between the forms leaves no copy behind.
    #[test]
    fn records_read_back_in_either_form() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        let forms: [Ptrs; 4] = [
            smallvec::smallvec![ptr("a", Host::Bare)],
            smallvec::smallvec![ptr("a", Host::Dashed)],
            smallvec::smallvec![ptr("a", Host::Label("web-0".into()))],
            smallvec::smallvec![ptr("a", Host::Dashed), ptr("b", Host::Dashed)],
        ];
        let mut r = Reverse::default();
        for ip in [v4, v6] {
            for f in forms.iter().chain(forms.iter().rev()) {
                r.insert(ip, f.clone());
                r.flush();
                assert_eq!(r.get(ip).as_ref(), Some(f));
                assert_eq!(r.len(), if ip == v6 { 2 } else { 1 });
                assert_eq!(r.iter().filter(|(a, _)| *a == ip).count(), 1);
            }
        }
        assert_eq!(
            r.addrs().collect::<std::collections::BTreeSet<_>>().len(),
            2
        );
        r.remove(v4);
        r.remove(v6);
        assert_eq!((r.len(), r.get(v4), r.get(v6)), (0, None, None));
    }
}
