//! What the server holds: objects by kind, each kind's watch cache (a bounded window of
//! events, as kube-apiserver's watch cache), the list snapshots continue tokens page from,
//! and the metadata the server writes on every object (resourceVersion, uid,
//! creationTimestamp, generated names, managedFields).
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{json, Map, Value};

use super::{Kind, Options};

/// One change, as a watch sees it. `prev` is the object before a MODIFIED, so a selector
/// watch can tell an object that starts or stops matching.
pub struct Event {
    pub rv: u64,
    pub kind: Kind,
    pub ty: EventType,
    pub object: Arc<Value>,
    pub prev: Option<Arc<Value>>,
    at: Instant,
}

impl Event {
    #[cfg(test)]
    pub fn for_test(
        rv: u64,
        kind: Kind,
        ty: EventType,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) -> Self {
        Self {
            rv,
            kind,
            ty,
            object,
            prev,
            at: Instant::now(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One kind's watch cache: the retained events and the oldest version a watch may resume
/// from (older ones get 410 Gone).
#[derive(Default)]
struct Cache {
    events: VecDeque<Arc<Event>>,
    floor: u64,
}

/// A list's view at its first page, which every continue token of that list pages from.
pub struct Snapshot {
    pub rv: u64,
    pub items: Arc<Vec<Arc<Value>>>,
    taken: Instant,
}

pub type Name = (String, String);

pub struct Store {
    pub rv: u64,
    objects: BTreeMap<Kind, BTreeMap<Name, Arc<Value>>>,
    caches: BTreeMap<Kind, Cache>,
    snapshots: HashMap<u64, Snapshot>,
    next_snapshot: u64,
    /// etcd's compacted revision: continue tokens of lists older than this are expired.
    compacted: u64,
    rng: u64,
}

/// Why a watch cannot start from the version it asked for.
pub struct TooOld;

/// Where a watch starts: the synthetic ADDED events of `resourceVersion=0`, or the events
/// after a version.
pub enum Start {
    Current(Vec<Arc<Value>>),
    After(Vec<Arc<Event>>),
}

fn now_rfc3339() -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

pub fn rfc3339_in(d: Duration) -> String {
    let at = jiff::Timestamp::now().as_second() + d.as_secs() as i64;
    jiff::Timestamp::from_second(at)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A managedFields `fieldsV1` tree for `v`: one `f:` entry per field, as big as a real
/// one's, so clients parse production-sized objects.
fn fields_v1(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "managedFields"
                            | "resourceVersion"
                            | "uid"
                            | "creationTimestamp"
                            | "apiVersion"
                            | "kind"
                    )
                })
                .map(|(k, v)| (format!("f:{k}"), fields_v1(v)))
                .collect(),
        ),
        Value::Array(items) => {
            let mut m = Map::new();
            m.insert(".".into(), json!({}));
            for (i, item) in items.iter().enumerate() {
                m.insert(format!("i:{{\"index\":{i}}}"), fields_v1(item));
            }
            Value::Object(m)
        }
        _ => json!({}),
    }
}

fn manager(kind: Kind) -> &'static str {
    match kind {
        Kind::Service => "kubectl-client-side-apply",
        Kind::EndpointSlice => "kube-controller-manager",
        Kind::Namespace => "kubectl-create",
        Kind::Pod => "kubelet",
    }
}

impl Store {
    pub fn new(seed: u64) -> Self {
        Self {
            rv: 100,
            objects: Kind::ALL.iter().map(|k| (*k, BTreeMap::new())).collect(),
            caches: Kind::ALL.iter().map(|k| (*k, Cache::default())).collect(),
            snapshots: HashMap::new(),
            next_snapshot: 1,
            compacted: 0,
            rng: seed | 1,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: names and uids need only be distinct, not secret.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn uid(&mut self) -> String {
        let (a, b) = (self.random(), self.random());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    /// The five characters `generateName` appends (the apiserver's alphabet, no vowels).
    fn suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let r = self.random();
        (0..5)
            .map(|i| ALPHABET[((r >> (i * 8)) % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }

    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects[&kind]
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    pub fn all(&self, kind: Kind) -> impl Iterator<Item = &Arc<Value>> {
        self.objects[&kind].values()
    }

    /// The objects of `kind` in one namespace, without walking the others.
    pub fn in_namespace<'a>(
        &'a self,
        kind: Kind,
        ns: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Value>> + 'a {
        self.objects[&kind]
            .range((ns.to_owned(), String::new())..)
            .take_while(move |((n, _), _)| n == ns)
            .map(|(_, v)| v)
    }

    /// Names a new object (`generateName`) and fills what the server owns; an update keeps
    /// the uid and creation time of the object it replaces.
    fn stamp(&mut self, kind: Kind, mut object: Value, prev: Option<&Value>) -> Value {
        let meta = &mut object["metadata"];
        if meta["name"].as_str().is_none() {
            let prefix = meta["generateName"].as_str().unwrap_or("obj-").to_owned();
            let name = format!("{prefix}{}", self.suffix());
            object["metadata"]["name"] = json!(name);
        }
        let (uid, created) = match prev {
            Some(p) => (
                p["metadata"]["uid"].clone(),
                p["metadata"]["creationTimestamp"].clone(),
            ),
            None => (json!(self.uid()), json!(now_rfc3339())),
        };
        let meta = &mut object["metadata"];
        meta["uid"] = uid;
        meta["creationTimestamp"] = created;
        if let Some(m) = meta.as_object_mut() {
            m.remove("managedFields");
        }
        let fields = fields_v1(&object);
        object["metadata"]["managedFields"] = json!([{
            "manager": manager(kind), "operation": "Update", "apiVersion": kind.api_version(),
            "time": now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": fields,
        }]);
        object
    }

    /// Writes `object` (ADDED or MODIFIED as the store has it or not, or DELETED) at the
    /// next resourceVersion; returns the event, or `None` for a delete of nothing.
    pub fn commit(
        &mut self,
        kind: Kind,
        delete: bool,
        object: Value,
        opts: &Options,
    ) -> Option<Arc<Event>> {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let named = object["metadata"]["name"].as_str().map(str::to_owned);
        let prev = named.as_ref().and_then(|n| self.get(kind, &ns, n));
        if delete && prev.is_none() {
            return None;
        }
        self.rv += 1;
        let mut object = if delete {
            prev.as_deref().cloned().unwrap_or(object)
        } else {
            self.stamp(kind, object, prev.as_deref())
        };
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let object = Arc::new(object);
        let ty = if delete {
            self.objects.get_mut(&kind)?.remove(&(ns, name));
            EventType::Deleted
        } else {
            let old = self
                .objects
                .get_mut(&kind)?
                .insert((ns, name), object.clone());
            if old.is_some() {
                EventType::Modified
            } else {
                EventType::Added
            }
        };
        let event = Arc::new(Event {
            rv: self.rv,
            kind,
            ty,
            object,
            prev,
            at: Instant::now(),
        });
        let cache = self.caches.get_mut(&kind)?;
        cache.events.push_back(event.clone());
        Self::evict(cache, opts);
        Some(event)
    }

    /// The watch cache drops events older than the window once it holds more than its
    /// minimum, and always beyond its capacity; a watch can then resume only from the
    /// version just before the oldest event kept.
    fn evict(cache: &mut Cache, opts: &Options) {
        let now = Instant::now();
        while let Some(front) = cache.events.front() {
            let stale = now.duration_since(front.at) > opts.history_window
                && cache.events.len() > opts.history_min_events;
            if !stale && cache.events.len() <= opts.history_max_events {
                break;
            }
            let gone = cache.events.pop_front().map(|e| e.rv).unwrap_or(0);
            cache.floor = cache
                .events
                .front()
                .map(|e| e.rv - 1)
                .unwrap_or(gone)
                .max(cache.floor);
        }
    }

    /// What a watch of `kind` from `from` starts with: `0` is "any", served from the cache
    /// as synthetic ADDED events; a version older than the cache's window is `TooOld`.
    pub fn start_watch(&mut self, kind: Kind, from: u64, opts: &Options) -> Result<Start, TooOld> {
        let cache = self.caches.get_mut(&kind).ok_or(TooOld)?;
        Self::evict(cache, opts);
        if from == 0 {
            return Ok(Start::Current(
                self.objects[&kind].values().cloned().collect(),
            ));
        }
        if from < cache.floor {
            return Err(TooOld);
        }
        Ok(Start::After(
            cache
                .events
                .iter()
                .filter(|e| e.rv > from)
                .cloned()
                .collect(),
        ))
    }

    /// A new apiserver process: each kind's cache starts empty at the current version, after
    /// the writes (Leases, Events) a cluster makes meanwhile, so no watch can resume.
    pub fn restart(&mut self) {
        self.rv += 1;
        for c in self.caches.values_mut() {
            c.events.clear();
            c.floor = self.rv;
        }
    }

    /// etcd compaction after other writes: lists started before now can no longer continue.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.compacted = self.rv;
    }

    /// Takes a snapshot of `items` at the current version for a paged list; returns its id.
    pub fn snapshot(&mut self, items: Arc<Vec<Arc<Value>>>, opts: &Options) -> u64 {
        let ttl = opts.continue_ttl;
        self.snapshots.retain(|_, s| s.taken.elapsed() < ttl);
        let id = self.next_snapshot;
        self.next_snapshot += 1;
        self.snapshots.insert(
            id,
            Snapshot {
                rv: self.rv,
                items,
                taken: Instant::now(),
            },
        );
        id
    }

    /// The snapshot a continue token pages from, unless compaction or time expired it.
    pub fn snapshot_for(&self, id: u64, opts: &Options) -> Option<(u64, Arc<Vec<Arc<Value>>>)> {
        let s = self.snapshots.get(&id)?;
        (s.rv >= self.compacted && s.taken.elapsed() < opts.continue_ttl)
            .then(|| (s.rv, s.items.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(window_ms: u64, min: usize) -> Options {
        Options {
            history_window: Duration::from_millis(window_ms),
            history_min_events: min,
            ..Options::default()
        }
    }

    fn svc(name: &str) -> Value {
        json!({"kind": "Service", "metadata": {"name": name, "namespace": "shop"}})
    }

    #[test]
    fn updates_keep_the_uid_and_recreation_gets_a_new_one() {
        let o = Options::default();
        let mut s = Store::new(7);
        let a = s.commit(Kind::Service, false, svc("web"), &o).unwrap();
        let b = s.commit(Kind::Service, false, svc("web"), &o).unwrap();
        assert_eq!((a.ty, b.ty), (EventType::Added, EventType::Modified));
        assert_eq!(a.object["metadata"]["uid"], b.object["metadata"]["uid"]);
        assert!(b.object["metadata"]["managedFields"][0]["fieldsV1"]["f:metadata"].is_object());
        s.commit(Kind::Service, true, svc("web"), &o).unwrap();
        assert!(s.commit(Kind::Service, true, svc("web"), &o).is_none());
        let c = s.commit(Kind::Service, false, svc("web"), &o).unwrap();
        assert_ne!(a.object["metadata"]["uid"], c.object["metadata"]["uid"]);
    }

    #[test]
    fn generate_name_gets_five_characters() {
        let mut s = Store::new(1);
        let o = json!({"kind": "EndpointSlice", "metadata": {"generateName": "web-", "namespace": "shop"}});
        let e = s
            .commit(Kind::EndpointSlice, false, o, &Options::default())
            .unwrap();
        let name = e.object["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    }

    #[test]
    fn the_window_evicts_old_events_and_older_resumes_are_gone() {
        let o = opts(0, 1);
        let mut s = Store::new(1);
        for i in 0..3 {
            s.commit(Kind::Service, false, svc(&format!("s{i}")), &o);
        }
        // Window 0: all but the minimum one event are gone; resuming right before it works.
        let last = s.rv;
        assert!(s.start_watch(Kind::Service, last - 2, &o).is_err());
        match s.start_watch(Kind::Service, last - 1, &o) {
            Ok(Start::After(ev)) => assert_eq!(ev.len(), 1),
            _ => panic!("resume before the kept event"),
        }
        // Other kinds' caches are untouched, and `0` is always served.
        assert!(s.start_watch(Kind::Pod, 101, &o).is_ok());
        assert!(matches!(
            s.start_watch(Kind::Service, 0, &o),
            Ok(Start::Current(v)) if v.len() == 3
        ));
    }

    #[test]
    fn restart_and_compaction_expire_what_they_should() {
        let o = Options::default();
        let mut s = Store::new(1);
        s.commit(Kind::Service, false, svc("a"), &o);
        let id = s.snapshot(Arc::new(vec![]), &o);
        let at = s.rv;
        s.restart();
        assert!(s.start_watch(Kind::Service, at, &o).is_err());
        assert!(s.start_watch(Kind::Service, s.rv, &o).is_ok());
        assert!(
            s.snapshot_for(id, &o).is_some(),
            "a restart keeps etcd's data"
        );
        s.compact();
        assert!(s.snapshot_for(id, &o).is_none());
    }
}
