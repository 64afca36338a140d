//! The answer cache in front of the upstreams (CoreDNS `cache 30`): positive answers for
//! their smallest TTL, negative ones for the SOA's negative TTL (RFC 2308), both capped and
//! floored; a size bound; and serve-stale (RFC 8767) only while the upstreams fail.
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{RData, RecordType},
};

/// TTL given to stale answers (RFC 8767 §4 recommends 30 s).
pub const STALE_TTL: u32 = 30;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// Lower-case wire name.
    pub name: Vec<u8>,
    pub qtype: u16,
    pub dnssec_ok: bool,
}

struct Entry {
    msg: Message,
    stored: Instant,
    ttl: u32,
    /// Hits since stored, for prefetch.
    hits: u32,
    /// A refresh is under way (one per name).
    refreshing: bool,
}

pub struct Options {
    pub max_ttl: u32,
    pub min_ttl: u32,
    pub capacity: usize,
    /// How long past expiry an answer may still be served while upstreams fail; 0: never.
    pub stale_for: Duration,
    /// Prefetch (CoreDNS `prefetch`): an answer hit at least this many times (0: never) is
    /// refreshed in the background once less than `prefetch_percent` of its TTL is left.
    pub prefetch_hits: u32,
    pub prefetch_percent: u32,
}

/// A cached answer: the message with TTLs already aged, whether it is stale, and whether
/// the caller should refresh it now (it is the one refresh in flight for this name).
pub struct Hit {
    pub msg: Message,
    pub stale: bool,
    pub prefetch: bool,
}

pub struct Cache {
    o: Options,
    map: Mutex<HashMap<Key, Entry>>,
}

impl Cache {
    pub fn new(o: Options) -> Self {
        Self {
            o,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        match self.map.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A fresh answer, TTLs reduced by its age.
    pub fn get(&self, key: &Key, now: Instant) -> Option<Hit> {
        let mut map = self.lock();
        let e = map.get_mut(key)?;
        let elapsed = now.saturating_duration_since(e.stored);
        let age = elapsed.as_secs() as u32;
        if age >= e.ttl {
            return None;
        }
        e.hits += 1;
        let left_pct = 100 - (elapsed.as_millis() * 100 / (e.ttl as u128 * 1000)).min(100) as u32;
        let prefetch = self.o.prefetch_hits > 0
            && e.hits >= self.o.prefetch_hits
            && left_pct < self.o.prefetch_percent
            && !e.refreshing;
        if prefetch {
            e.refreshing = true;
        }
        Some(Hit {
            msg: with_ttls(&e.msg, |t| t.saturating_sub(age)),
            stale: false,
            prefetch,
        })
    }

    /// A refresh that failed: let a later hit try again.
    pub fn refresh_failed(&self, key: &Key) {
        if let Some(e) = self.lock().get_mut(key) {
            e.refreshing = false;
        }
    }

    /// An expired answer still within the stale window, its TTLs set to [`STALE_TTL`].
    pub fn get_stale(&self, key: &Key, now: Instant) -> Option<Hit> {
        let map = self.lock();
        let e = map.get(key)?;
        let expired_at = e.stored + Duration::from_secs(e.ttl as u64);
        (now <= expired_at + self.o.stale_for).then(|| Hit {
            msg: with_ttls(&e.msg, |_| STALE_TTL),
            stale: true,
            prefetch: false,
        })
    }

    /// Stores `msg` for `key` if it is cacheable; returns the TTL it got.
    pub fn put(&self, key: Key, msg: &Message, now: Instant) -> Option<u32> {
        let ttl = cache_ttl(msg)?.clamp(self.o.min_ttl, self.o.max_ttl.max(self.o.min_ttl));
        let mut map = self.lock();
        if map.len() >= self.o.capacity && !map.contains_key(&key) {
            let horizon = self.o.stale_for;
            // First what cannot be served any more, then the oldest.
            map.retain(|_, e| now < e.stored + Duration::from_secs(e.ttl as u64) + horizon);
            while map.len() >= self.o.capacity {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, e)| e.stored)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => map.remove(&k),
                    None => break,
                };
            }
        }
        map.insert(
            key,
            Entry {
                msg: msg.clone(),
                stored: now,
                ttl,
                hits: 0,
                refreshing: false,
            },
        );
        Some(ttl)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How long an upstream answer may be cached: the smallest answer TTL for a positive one,
/// min(SOA TTL, SOA minimum) for NXDOMAIN/NODATA (RFC 2308 §5); `None` for errors and
/// truncated answers.
pub fn cache_ttl(msg: &Message) -> Option<u32> {
    if msg.truncated() {
        return None;
    }
    let soa_ttl = || {
        msg.name_servers().iter().find_map(|r| match r.data() {
            RData::SOA(s) => Some(r.ttl().min(s.minimum())),
            _ => None,
        })
    };
    match msg.response_code() {
        ResponseCode::NoError if !msg.answers().is_empty() => {
            msg.answers().iter().map(|r| r.ttl()).min()
        }
        ResponseCode::NoError | ResponseCode::NXDomain => soa_ttl(),
        _ => None,
    }
}

fn with_ttls(msg: &Message, f: impl Fn(u32) -> u32) -> Message {
    let mut m = msg.clone();
    for r in m.answers_mut().iter_mut() {
        r.set_ttl(f(r.ttl()));
    }
    for r in m.name_servers_mut().iter_mut() {
        r.set_ttl(f(r.ttl()));
    }
    for r in m.additionals_mut().iter_mut() {
        if r.record_type() != RecordType::OPT {
            r.set_ttl(f(r.ttl()));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::Query,
        rr::{rdata::SOA, Name, Record},
    };

    use super::*;

    fn key(n: &str) -> Key {
        Key {
            name: n.as_bytes().to_vec(),
            qtype: 1,
            dnssec_ok: false,
        }
    }

    fn answer(ttls: &[u32]) -> Message {
        let mut m = Message::new();
        let name = Name::from_ascii("a.example.").unwrap();
        m.add_query(Query::query(name.clone(), RecordType::A));
        for t in ttls {
            m.add_answer(Record::from_rdata(
                name.clone(),
                *t,
                RData::A("192.0.2.1".parse().unwrap()),
            ));
        }
        m
    }

    fn negative(rcode: ResponseCode, soa_ttl: u32, minimum: u32) -> Message {
        let mut m = answer(&[]);
        m.set_response_code(rcode);
        let zone = Name::from_ascii("example.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 2, 3, 4, minimum);
        m.add_name_server(Record::from_rdata(zone, soa_ttl, RData::SOA(soa)));
        m
    }

    fn cache(capacity: usize) -> Cache {
        Cache::new(Options {
            max_ttl: 30,
            min_ttl: 5,
            capacity,
            stale_for: Duration::from_secs(3600),
            prefetch_hits: 2,
            prefetch_percent: 50,
        })
    }

    #[test]
    fn ttls_follow_rfc_2308_with_cap_and_floor() {
        assert_eq!(cache_ttl(&answer(&[300, 60])), Some(60));
        assert_eq!(
            cache_ttl(&negative(ResponseCode::NXDomain, 900, 120)),
            Some(120)
        );
        assert_eq!(
            cache_ttl(&negative(ResponseCode::NoError, 50, 120)),
            Some(50)
        );
        assert_eq!(cache_ttl(&negative(ResponseCode::ServFail, 50, 120)), None);
        assert_eq!(cache_ttl(&answer(&[])), None, "NODATA without an SOA");
        let c = cache(10);
        let t0 = Instant::now();
        assert_eq!(c.put(key("a"), &answer(&[300]), t0), Some(30), "capped");
        assert_eq!(c.put(key("b"), &answer(&[1]), t0), Some(5), "floored");
    }

    #[test]
    fn ages_expires_and_serves_stale_only_when_asked() {
        let c = cache(10);
        let t0 = Instant::now();
        c.put(key("a"), &answer(&[20]), t0);
        let hit = c.get(&key("a"), t0 + Duration::from_secs(12)).unwrap();
        assert_eq!(hit.msg.answers()[0].ttl(), 8);
        assert!(
            c.get(&key("a"), t0 + Duration::from_secs(20)).is_none(),
            "expired"
        );
        let stale = c
            .get_stale(&key("a"), t0 + Duration::from_secs(600))
            .unwrap();
        assert!(stale.stale);
        assert_eq!(stale.msg.answers()[0].ttl(), STALE_TTL);
        assert!(c
            .get_stale(&key("a"), t0 + Duration::from_secs(20 + 3601))
            .is_none());
    }

    #[test]
    fn prefetch_once_per_name_when_popular_and_nearly_expired() {
        let c = cache(10);
        let t0 = Instant::now();
        c.put(key("a"), &answer(&[20]), t0);
        assert!(
            !c.get(&key("a"), t0 + Duration::from_secs(15))
                .unwrap()
                .prefetch,
            "one hit is not popular"
        );
        assert!(
            !c.get(&key("a"), t0 + Duration::from_secs(5))
                .unwrap()
                .prefetch,
            "too fresh"
        );
        assert!(
            c.get(&key("a"), t0 + Duration::from_secs(15))
                .unwrap()
                .prefetch,
            "popular, 25% left"
        );
        assert!(
            !c.get(&key("a"), t0 + Duration::from_secs(16))
                .unwrap()
                .prefetch,
            "one refresh in flight"
        );
        c.refresh_failed(&key("a"));
        assert!(
            c.get(&key("a"), t0 + Duration::from_secs(17))
                .unwrap()
                .prefetch,
            "retried after a failure"
        );
    }

    #[test]
    fn size_is_bounded() {
        let c = cache(3);
        let t0 = Instant::now();
        for (i, n) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            c.put(key(n), &answer(&[30]), t0 + Duration::from_secs(i as u64));
        }
        assert_eq!(c.len(), 3);
        assert!(
            c.get(&key("a"), t0 + Duration::from_secs(5)).is_none(),
            "oldest evicted"
        );
        assert!(c.get(&key("e"), t0 + Duration::from_secs(5)).is_some());
    }
}
