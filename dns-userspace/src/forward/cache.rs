//! The answer cache in front of the upstreams (CoreDNS `cache 30`): positive answers for
//! their smallest TTL, negative ones for the SOA's negative TTL (RFC 2308), both capped and
//! floored; bounded by entries and by bytes, least recently used out first; and serve-stale
//! (RFC 8767) only while the upstreams fail.
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use lru::LruCache;

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
    /// What the entry counts against the byte bound (see [`entry_bytes`]).
    bytes: usize,
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
    /// Bytes of cached answers at most (see [`entry_bytes`]): 10000 answers of up to 64 KiB
    /// each would otherwise be a bound only in name.
    pub max_bytes: usize,
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

/// The entries in recency order and the bytes they count.
struct Entries {
    lru: LruCache<Key, Entry>,
    bytes: usize,
}

pub struct Cache {
    o: Options,
    map: Mutex<Entries>,
}

/// What an entry counts against [`Options::max_bytes`]: its answer's wire size plus its
/// key, with a fixed allowance for the parsed message's own structures (a record parsed is
/// a few times its wire size).
fn entry_bytes(key: &Key, wire: usize) -> usize {
    const PER_ENTRY: usize = 256;
    PER_ENTRY + key.name.len() + wire * 3
}

impl Cache {
    pub fn new(o: Options) -> Self {
        Self {
            o,
            map: Mutex::new(Entries {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        match self.map.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A fresh answer, TTLs reduced by its age.
    pub fn get(&self, key: &Key, now: Instant) -> Option<Hit> {
        let mut map = self.lock();
        let e = map.lru.get_mut(key)?;
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
        if let Some(e) = self.lock().lru.peek_mut(key) {
            e.refreshing = false;
        }
    }

    /// An expired answer still within the stale window, its TTLs set to [`STALE_TTL`].
    pub fn get_stale(&self, key: &Key, now: Instant) -> Option<Hit> {
        let map = self.lock();
        let e = map.lru.peek(key)?;
        let expired_at = e.stored + Duration::from_secs(e.ttl as u64);
        (now <= expired_at + self.o.stale_for).then(|| Hit {
            msg: with_ttls(&e.msg, |_| STALE_TTL),
            stale: true,
            prefetch: false,
        })
    }

    /// Stores `msg` for `key` if it is cacheable; returns the TTL it got. Makes room by
    /// dropping the least recently used answers: O(1) each.
    pub fn put(&self, key: Key, msg: &Message, now: Instant) -> Option<u32> {
        let ttl = cache_ttl(msg)?.clamp(self.o.min_ttl, self.o.max_ttl.max(self.o.min_ttl));
        let wire = msg.to_vec().map(|w| w.len()).unwrap_or(usize::MAX / 8);
        let bytes = entry_bytes(&key, wire);
        if bytes > self.o.max_bytes {
            return None;
        }
        let mut map = self.lock();
        let entry = Entry {
            msg: msg.clone(),
            bytes,
            stored: now,
            ttl,
            hits: 0,
            refreshing: false,
        };
        if let Some((_, old)) = map.lru.push(key, entry) {
            map.bytes -= old.bytes;
        }
        map.bytes += bytes;
        while map.lru.len() > self.o.capacity.max(1) || map.bytes > self.o.max_bytes {
            match map.lru.pop_lru() {
                Some((_, e)) => map.bytes -= e.bytes,
                None => break,
            }
        }
        Some(ttl)
    }

    /// Bytes the cached answers count (see [`entry_bytes`]).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn len(&self) -> usize {
        self.lock().lru.len()
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

    fn options(capacity: usize) -> Options {
        Options {
            max_ttl: 30,
            min_ttl: 5,
            capacity,
            max_bytes: 1 << 20,
            stale_for: Duration::from_secs(3600),
            prefetch_hits: 2,
            prefetch_percent: 50,
        }
    }

    fn cache(capacity: usize) -> Cache {
        Cache::new(options(capacity))
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

    /// A large answer: `n` TXT records of 200 bytes.
    fn large(n: usize) -> Message {
        let mut m = answer(&[]);
        let name = Name::from_ascii("big.example.").unwrap();
        for i in 0..n {
            let txt = hickory_proto::rr::rdata::TXT::new(vec![format!("{i:0200}")]);
            m.add_answer(Record::from_rdata(name.clone(), 30, RData::TXT(txt)));
        }
        m
    }

    #[test]
    fn bytes_are_bounded_least_recently_used_first() {
        let c = Cache::new(Options {
            max_bytes: 2 << 20,
            ..options(10000)
        });
        let t0 = Instant::now();
        c.put(key("kept"), &answer(&[30]), t0);
        for i in 0..10000 {
            // Kept in use: the one a busy client keeps asking for stays.
            assert!(c.get(&key("kept"), t0).is_some(), "after {i} puts");
            c.put(key(&format!("n{i}")), &large(40), t0);
            assert!(c.bytes() <= 2 << 20, "{} bytes after {i} puts", c.bytes());
        }
        // 40 × 200 bytes of TXT: about 8.6 KB on the wire, 26 KB counted.
        assert!(
            (60..=90).contains(&c.len()),
            "{} answers held in 2 MiB",
            c.len()
        );
        assert!(c.get(&key("n9999"), t0).is_some(), "the newest stays");
        assert!(c.get(&key("n0"), t0).is_none(), "the oldest went");
        assert!(
            c.put(key("huge"), &large(200), t0).is_some(),
            "one 40 KB answer fits"
        );
        let tiny = Cache::new(Options {
            max_bytes: 4096,
            ..options(10)
        });
        assert!(
            tiny.put(key("huge"), &large(40), t0).is_none(),
            "an answer larger than the whole bound is not cached"
        );
        assert_eq!(tiny.bytes(), 0);
    }
}
