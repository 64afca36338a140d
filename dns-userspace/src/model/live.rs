//! The zone kept current one change at a time. Each unit of the cluster (the zone's fixed
//! names, a served namespace, a Service with its EndpointSlices) contributes records at a
//! few owners; a change recomputes the units it affects and merges again only the owners
//! whose contributions moved. The result equals [`Records::build`] on the same objects
//! (the property tests hold it to that), and says which names it touched so the kernel
//! maps are written for those alone.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use super::{
    build::{self, Part},
    name, serial,
    view::{ClusterView, NamespaceView, PodView, PortView, ServiceView, SliceView, SmallVec, Str},
    Name, PodMode, Ptr, Ptrs, Records, ZoneConfig,
};

/// One object of the cluster view, as a source delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    Service(ServiceView),
    Slice(SliceView),
    Namespace(NamespaceView),
    Pod(PodView),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Service,
    Slice,
    Namespace,
    Pod,
}

impl ObjectKind {
    /// The Kubernetes kind, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Service => "Service",
            ObjectKind::Slice => "EndpointSlice",
            ObjectKind::Namespace => "Namespace",
            ObjectKind::Pod => "Pod",
        }
    }
}

/// (namespace, name); a Namespace's namespace is "".
pub type Key = (Str, Str);

impl Object {
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Service(_) => ObjectKind::Service,
            Object::Slice(_) => ObjectKind::Slice,
            Object::Namespace(_) => ObjectKind::Namespace,
            Object::Pod(_) => ObjectKind::Pod,
        }
    }

    pub fn key(&self) -> Key {
        match self {
            Object::Service(s) => (s.namespace.clone(), s.name.clone()),
            Object::Slice(s) => (s.namespace.clone(), s.name.clone()),
            Object::Namespace(n) => ("".into(), n.name.clone()),
            Object::Pod(p) => (p.namespace.clone(), p.name.clone()),
        }
    }
}

/// What a source says changed.
#[derive(Clone, Debug)]
pub enum Change {
    Upsert(Object),
    Delete(ObjectKind, Key),
    /// A full list of one kind: whatever it lacks is gone.
    Relist(ObjectKind, Vec<Object>),
}

/// A whole view as relists, one per kind: the zone diffs each against what it holds.
pub fn relists(view: ClusterView) -> Vec<Change> {
    vec![
        Change::Relist(
            ObjectKind::Namespace,
            view.namespaces.into_iter().map(Object::Namespace).collect(),
        ),
        Change::Relist(
            ObjectKind::Service,
            view.services.into_iter().map(Object::Service).collect(),
        ),
        Change::Relist(
            ObjectKind::Slice,
            view.slices.into_iter().map(Object::Slice).collect(),
        ),
        Change::Relist(
            ObjectKind::Pod,
            view.pods.into_iter().map(Object::Pod).collect(),
        ),
    ]
}

/// What a batch of changes touched: the kernel entries to rewrite.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Names whose records or existence changed (reverse names included).
    pub owners: BTreeSet<Vec<u8>>,
    /// Namespaces that started or stopped being served.
    pub namespaces: BTreeSet<String>,
    /// (namespace, address) pairs of `pods verified` that came or went.
    pub pod_ips: BTreeSet<(String, IpAddr)>,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty() && self.namespaces.is_empty() && self.pod_ips.is_empty()
    }
}

/// A unit of contribution. The order is the merge order where units share an owner (only
/// reverse names are shared): the same order [`Records::build`] adds them in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Unit {
    Static,
    Namespace(String),
    Service(Str, Str),
}

/// The units a batch changes, each with the owners it had records at before.
type Dirty = BTreeMap<Unit, Box<[Owner]>>;

/// Where a unit has records: a name in the zone, or an address's PTRs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    Name(Name),
    Addr(IpAddr),
}

pub struct LiveZone {
    records: Records,
    /// The serial's running sum (see [`serial`]).
    sum: u64,
    services: BTreeMap<Key, ServiceView>,
    slices: BTreeMap<Key, SliceView>,
    /// (namespace, service) → its slices' names, sorted (a Service has one or a few: a
    /// vector, not a tree node per Service).
    by_service: HashMap<Key, SmallVec<[Str; 1]>>,
    namespaces: BTreeMap<Str, NamespaceView>,
    /// Every namespace name seen (a few hundred): the one copy objects share.
    namespace_names: HashSet<Str>,
    pods: BTreeMap<Key, PodView>,
    /// The names the fixed and namespace units make exist beyond their owners' (empty
    /// non-terminals such as `<ns>.svc.<zone>`).
    unit_names: HashMap<Unit, Box<[Name]>>,
    /// How many units make each shared name exist (a Service's own names have one).
    name_refs: HashMap<Name, u32>,
    /// What each Pod adds to `pods verified`, and how many Pods hold each pair.
    pod_parts: HashMap<Key, Vec<(String, IpAddr)>>,
    pod_refs: HashMap<(String, IpAddr), u32>,
    /// Off while a first view loads: what it touched is not collected.
    tracking: bool,
}

impl LiveZone {
    /// An empty cluster: the zone's fixed names only, not synced.
    pub fn new(cfg: &ZoneConfig) -> Self {
        let records = Records {
            cfg: cfg.clone(),
            serial: 0,
            synced: false,
            rrsets: Default::default(),
            reverse: Default::default(),
            names: Default::default(),
            namespaces: imbl::OrdSet::new(),
            pod_ips: imbl::OrdSet::new(),
        };
        let mut z = Self {
            records,
            sum: serial::base(cfg.ttl),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            by_service: HashMap::new(),
            namespaces: BTreeMap::new(),
            namespace_names: HashSet::new(),
            pods: BTreeMap::new(),
            unit_names: HashMap::new(),
            name_refs: HashMap::new(),
            pod_parts: HashMap::new(),
            pod_refs: HashMap::new(),
            tracking: true,
        };
        z.refresh(Unit::Static, Box::default(), &mut Touched::default());
        z.records.flush();
        z.records.serial = serial::fold(z.sum);
        z
    }

    /// The zone as the answer path serves it (a cheap snapshot).
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Marks the zone as holding the source's first full view.
    pub fn set_synced(&mut self) {
        self.records.synced = true;
    }

    /// The same objects under another configuration, built afresh.
    pub fn reconfigured(&self, cfg: &ZoneConfig) -> Self {
        let mut z = Self::new(cfg);
        z.load(self.objects());
        z.records.synced = self.records.synced;
        z
    }

    /// Every object held, as relists (what a new zone needs to hold the same).
    pub fn objects(&self) -> Vec<Change> {
        relists(ClusterView {
            services: self.services.values().cloned().collect(),
            slices: self.slices.values().cloned().collect(),
            namespaces: self.namespaces.values().cloned().collect(),
            pods: self.pods.values().cloned().collect(),
        })
    }

    /// A Service's cluster IPs and its ready endpoints' addresses (what
    /// `--accelerate-service` serves), sorted; none for a Service not held.
    pub fn service_addrs(&self, namespace: &str, name: &str) -> Vec<IpAddr> {
        let key: Key = (namespace.into(), name.into());
        let mut out: Vec<IpAddr> = match self.services.get(&key).map(|s| &s.kind) {
            Some(super::view::ServiceKind::ClusterIp(ips)) => ips.to_vec(),
            Some(_) => Vec::new(),
            None => return Vec::new(),
        };
        for s in self.slices_of(&key) {
            for ep in s.endpoints.iter().filter(|e| e.ready) {
                out.push(ep.address);
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The slices held for a Service, in name order.
    fn slices_of<'a>(&'a self, svc: &'a Key) -> impl Iterator<Item = &'a SliceView> + 'a {
        self.by_service
            .get(svc)
            .into_iter()
            .flatten()
            .filter_map(move |name| self.slices.get(&(svc.0.clone(), name.clone())))
    }

    /// A DNS Service's ready endpoints as upstreams (what `--upstream-service` forwards
    /// to), sorted: each address at its slice's UDP port named `dns` (else its first UDP
    /// port, else 53).
    pub fn service_endpoints(&self, namespace: &str, name: &str) -> Vec<SocketAddr> {
        let key: Key = (namespace.into(), name.into());
        let mut out = Vec::new();
        for s in self.slices_of(&key) {
            let udp = |p: &&PortView| p.protocol == "UDP";
            let port = s
                .ports
                .iter()
                .filter(udp)
                .find(|p| &*p.name == "dns")
                .or_else(|| s.ports.iter().find(udp))
                .map_or(53, |p| p.port);
            for ep in s.endpoints.iter().filter(|e| e.ready) {
                out.push(SocketAddr::new(ep.address, port));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Objects held, by kind (for logs and metrics).
    pub fn counts(&self) -> [usize; 4] {
        [
            self.services.len(),
            self.slices.len(),
            self.namespaces.len(),
            self.pods.len(),
        ]
    }

    /// Applies a batch of changes without saying what they touched: for a first view,
    /// published whole. At 100k Services the touched names alone are 850k copies, a peak
    /// the heap never gives back.
    pub fn load(&mut self, changes: impl IntoIterator<Item = Change>) {
        self.update(changes, false);
        // Objects inserted in key order leave every B-tree node half full (a split keeps
        // half); rebuilt from their sorted entries the nodes are full: -20 MiB at 100k.
        self.services = std::mem::take(&mut self.services).into_iter().collect();
        self.slices = std::mem::take(&mut self.slices).into_iter().collect();
        self.pods = std::mem::take(&mut self.pods).into_iter().collect();
    }

    /// Applies a batch of changes; returns what they touched.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = Change>) -> Touched {
        self.update(changes, true)
    }

    fn update(&mut self, changes: impl IntoIterator<Item = Change>, track: bool) -> Touched {
        let mut dirty = Dirty::new();
        let mut pods = BTreeSet::new();
        for c in changes {
            match c {
                Change::Upsert(o) => self.upsert(o, &mut dirty, &mut pods),
                Change::Delete(kind, key) => self.remove(kind, &key, &mut dirty, &mut pods),
                Change::Relist(kind, items) => {
                    let fresh: BTreeMap<Key, Object> =
                        items.into_iter().map(|o| (o.key(), o)).collect();
                    for key in self.keys(kind) {
                        if !fresh.contains_key(&key) {
                            self.remove(kind, &key, &mut dirty, &mut pods);
                        }
                    }
                    for o in fresh.into_values() {
                        self.upsert(o, &mut dirty, &mut pods);
                    }
                }
            }
        }
        self.tracking = track;
        let mut touched = Touched::default();
        for (unit, before) in dirty {
            self.refresh(unit, before, &mut touched);
            if !track {
                touched = Touched::default();
            }
        }
        for key in pods {
            self.refresh_pod(&key, &mut touched);
            if !track {
                touched = Touched::default();
            }
        }
        self.tracking = true;
        self.records.flush();
        self.records.serial = serial::fold(self.sum);
        touched
    }

    fn keys(&self, kind: ObjectKind) -> Vec<Key> {
        match kind {
            ObjectKind::Service => self.services.keys().cloned().collect(),
            ObjectKind::Slice => self.slices.keys().cloned().collect(),
            ObjectKind::Namespace => self
                .namespaces
                .keys()
                .map(|n| ("".into(), n.clone()))
                .collect(),
            ObjectKind::Pod => self.pods.keys().cloned().collect(),
        }
    }

    fn served(&self, ns: &str) -> bool {
        self.namespaces
            .get(ns)
            .is_some_and(|n| build::serves_namespace(&self.records.cfg, n))
    }

    /// Notes that `unit`'s part is about to change, and where its records are now: called
    /// before the objects it is built from change, once per batch (the first call holds
    /// what the zone holds). Kept only for the batch: no owner list per unit is stored.
    fn mark(&self, unit: Unit, dirty: &mut Dirty) {
        if let std::collections::btree_map::Entry::Vacant(e) = dirty.entry(unit) {
            let owners = self.owners(&self.part_of(e.key()));
            e.insert(owners);
        }
    }

    /// Where a part has records.
    fn owners(&self, part: &Part) -> Box<[Owner]> {
        part.rrsets
            .keys()
            .map(|o| Owner::Name(self.intern(o)))
            .chain(part.ptrs.keys().map(|ip| Owner::Addr(*ip)))
            .collect()
    }

    /// A namespace's served status is about to change: its names, Services and Pods
    /// follow.
    fn namespace_moved(&self, ns: &str, dirty: &mut Dirty, pods: &mut BTreeSet<Key>) {
        self.mark(Unit::Namespace(ns.to_owned()), dirty);
        let from: Key = (ns.into(), "".into());
        for (k, _) in self
            .services
            .range(from.clone()..)
            .take_while(|(k, _)| *k.0 == *ns)
        {
            self.mark(Unit::Service(k.0.clone(), k.1.clone()), dirty);
        }
        for (k, _) in self.pods.range(from..).take_while(|(k, _)| *k.0 == *ns) {
            pods.insert(k.clone());
        }
    }

    /// The held copy of a namespace's name (every object of a namespace shares one).
    fn namespace_name(&mut self, ns: &Str) -> Str {
        match self.namespace_names.get(ns) {
            Some(held) => held.clone(),
            None => {
                self.namespace_names.insert(ns.clone());
                ns.clone()
            }
        }
    }

    /// The object with its names shared with what the zone holds already.
    fn shared(&mut self, o: Object) -> Object {
        match o {
            Object::Service(mut s) => {
                s.namespace = self.namespace_name(&s.namespace);
                Object::Service(s)
            }
            Object::Slice(mut s) => {
                s.namespace = self.namespace_name(&s.namespace);
                let svc = (s.namespace.clone(), s.service.clone());
                if let Some((held, _)) = self.services.get_key_value(&svc) {
                    s.service = held.1.clone();
                } else if let Some((held, _)) = self.by_service.get_key_value(&svc) {
                    s.service = held.1.clone();
                }
                Object::Slice(s)
            }
            Object::Pod(mut p) => {
                p.namespace = self.namespace_name(&p.namespace);
                Object::Pod(p)
            }
            Object::Namespace(mut n) => {
                n.name = self.namespace_name(&n.name);
                Object::Namespace(n)
            }
        }
    }

    fn upsert(&mut self, o: Object, dirty: &mut Dirty, pods: &mut BTreeSet<Key>) {
        let o = self.shared(o);
        let key = o.key();
        match o {
            Object::Service(s) => {
                if self.services.get(&key) != Some(&s) {
                    self.mark(Unit::Service(key.0.clone(), key.1.clone()), dirty);
                    self.services.insert(key, s);
                }
            }
            Object::Slice(s) => {
                let held = self.slices.get(&key);
                if held == Some(&s) {
                    return;
                }
                if let Some(old) = held {
                    self.mark(
                        Unit::Service(old.namespace.clone(), old.service.clone()),
                        dirty,
                    );
                }
                let new_svc = (s.namespace.clone(), s.service.clone());
                self.mark(Unit::Service(new_svc.0.clone(), new_svc.1.clone()), dirty);
                let old_svc = self
                    .slices
                    .insert(key.clone(), s)
                    .map(|old| (old.namespace, old.service));
                if old_svc.as_ref() != Some(&new_svc) {
                    if let Some(old) = &old_svc {
                        self.unlink_slice(old, &key.1);
                    }
                    let names = self.by_service.entry(new_svc.clone()).or_default();
                    if let Err(at) = names.binary_search(&key.1) {
                        names.insert(at, key.1);
                    }
                }
            }
            Object::Namespace(n) => {
                if self.namespaces.get(&*key.1) == Some(&n) {
                    return;
                }
                if self.served(&key.1) != build::serves_namespace(&self.records.cfg, &n) {
                    self.namespace_moved(&key.1, dirty, pods);
                }
                self.namespaces.insert(key.1.clone(), n);
            }
            Object::Pod(p) => {
                if self.pods.get(&key) != Some(&p) {
                    self.pods.insert(key.clone(), p);
                    pods.insert(key);
                }
            }
        }
    }

    fn unlink_slice(&mut self, svc: &Key, slice: &str) {
        if let Some(set) = self.by_service.get_mut(svc) {
            set.retain(|s| **s != *slice);
            if set.is_empty() {
                self.by_service.remove(svc);
            }
        }
    }

    fn remove(&mut self, kind: ObjectKind, key: &Key, dirty: &mut Dirty, pods: &mut BTreeSet<Key>) {
        match kind {
            ObjectKind::Service => {
                if self.services.contains_key(key) {
                    self.mark(Unit::Service(key.0.clone(), key.1.clone()), dirty);
                    self.services.remove(key);
                }
            }
            ObjectKind::Slice => {
                if let Some(old) = self.slices.get(key) {
                    let svc = (old.namespace.clone(), old.service.clone());
                    self.mark(Unit::Service(svc.0.clone(), svc.1.clone()), dirty);
                    self.slices.remove(key);
                    self.unlink_slice(&svc, &key.1);
                }
            }
            ObjectKind::Namespace => {
                if self.served(&key.1) {
                    self.namespace_moved(&key.1, dirty, pods);
                }
                self.namespaces.remove(&*key.1);
            }
            ObjectKind::Pod => {
                if self.pods.remove(key).is_some() {
                    pods.insert(key.clone());
                }
            }
        }
    }

    /// A unit's part as the objects stand now.
    fn part_of(&self, unit: &Unit) -> Part {
        let cfg = &self.records.cfg;
        match unit {
            Unit::Static => build::static_part(cfg),
            Unit::Namespace(ns) if self.served(ns) => build::namespace_part(cfg, ns),
            Unit::Service(ns, name) if self.served(ns) => {
                let key = (ns.clone(), name.clone());
                match self.services.get(&key) {
                    Some(svc) => {
                        let slices: Vec<&SliceView> = self.slices_of(&key).collect();
                        build::service_part(cfg, svc, &slices)
                    }
                    None => Part::default(),
                }
            }
            _ => Part::default(),
        }
    }

    /// The names a unit's records make exist: its in-zone owners and their ancestors
    /// (what [`build`] registers for each owner), plus the unit's own empty non-terminals.
    fn names_of(&self, unit: &Unit, owners: &[Owner]) -> BTreeSet<Vec<u8>> {
        let zone = &self.records.cfg.zone;
        let mut out: BTreeSet<Vec<u8>> = self
            .unit_names
            .get(unit)
            .into_iter()
            .flatten()
            .map(|n| n.to_vec())
            .collect();
        let in_zone = owners.iter().filter_map(|o| match o {
            Owner::Name(n) if name::is_within(n, zone) => Some(n),
            _ => None,
        });
        for o in in_zone {
            let mut n: &[u8] = o;
            while n.len() > zone.len() && out.insert(n.to_vec()) {
                n = name::parent(n);
            }
        }
        out
    }

    /// Recomputes one unit's contribution and merges again every owner it had (`before`)
    /// or has.
    fn refresh(&mut self, unit: Unit, before: Box<[Owner]>, touched: &mut Touched) {
        let new = self.part_of(&unit);
        if let Unit::Namespace(ns) = &unit {
            self.set_namespace_served(ns, self.served(ns), touched);
        }
        let old_owners = before;
        let old_names = self.names_of(&unit, &old_owners);
        self.unit_names.remove(&unit);
        for n in old_names.difference(&new.names) {
            self.name_ref(n, false, touched);
        }
        for n in new.names.difference(&old_names) {
            self.name_ref(n, true, touched);
        }
        let new_owners = self.owners(&new);
        if !matches!(unit, Unit::Service(..)) {
            // Names not under an owner (empty non-terminals) are kept to undo them later.
            let derived = self.names_of(&unit, &new_owners);
            let extra: Box<[Name]> = new
                .names
                .iter()
                .filter(|n| !derived.contains(*n))
                .map(|n| self.intern(n))
                .collect();
            if !extra.is_empty() {
                self.unit_names.insert(unit.clone(), extra);
            }
        }
        let mut owners: BTreeSet<Owner> = old_owners.into_vec().into_iter().collect();
        owners.extend(new_owners.iter().cloned());
        for owner in owners {
            match owner {
                Owner::Name(n) => self.merge(n, &new, touched),
                Owner::Addr(ip) => {
                    self.merge_ptrs(ip, &unit, &new);
                    // Whether a reverse name is in the kernel depends on its target having
                    // addresses, which this unit's other owners decide (a Service turned
                    // headless keeps its endpoints' PTRs and gains their names).
                    if self.tracking {
                        touched.owners.insert(name::reverse(ip));
                    }
                }
            }
        }
    }

    /// The Service a PTR target names (`[host.]<svc>.<ns>.svc.<zone>`).
    fn unit_of_target(&self, target: &[u8]) -> Option<Unit> {
        let zone = &self.records.cfg.zone;
        if !name::is_within(target, zone) {
            return None;
        }
        let labels = name::labels(&target[..target.len() - zone.len()]);
        let label = |i: usize| {
            labels
                .len()
                .checked_sub(i)
                .and_then(|i| std::str::from_utf8(labels[i]).ok())
        };
        (label(1)? == "svc").then_some(())?;
        Some(Unit::Service(label(2)?.into(), label(3)?.into()))
    }

    fn set_namespace_served(&mut self, ns: &str, served: bool, touched: &mut Touched) {
        let had = self.records.namespaces.contains(ns);
        if had == served {
            return;
        }
        if served {
            self.records.namespaces.insert(ns.to_owned());
            self.sum = self.sum.wrapping_add(serial::namespace(ns));
        } else {
            self.records.namespaces.remove(ns);
            self.sum = self.sum.wrapping_sub(serial::namespace(ns));
        }
        touched.namespaces.insert(ns.to_owned());
    }

    /// The zone's shared copy of a name, if it holds one (a new one otherwise).
    fn intern(&self, n: &[u8]) -> Name {
        if let Some((held, _)) = self.name_refs.get_key_value(n) {
            return held.clone();
        }
        if let Some((held, _)) = self.records.rrsets.get_key_value(n) {
            return held.clone();
        }
        match self.records.names.get_key_value(n) {
            Some((held, _)) => held.clone(),
            None => Name::from(n),
        }
    }

    /// Counts one more or one fewer unit making a shared name exist: the count before and
    /// after.
    fn count_ref(&mut self, n: &[u8], add: bool) -> (u32, u32) {
        if !self.name_refs.contains_key(n) {
            let name = self.intern(n);
            self.name_refs.insert(name, 0);
        }
        let Some(count) = self.name_refs.get_mut(n) else {
            return (0, 0);
        };
        let before = *count;
        *count = if add {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        let after = *count;
        if after == 0 {
            self.name_refs.remove(n);
        }
        (before, after)
    }

    /// A name below a Service's (`[...].<svc>.<ns>.svc.<zone>`, the Service's included):
    /// only that Service's unit makes it exist, so it needs no count.
    fn is_services_own(&self, n: &[u8]) -> bool {
        let zone = &self.records.cfg.zone;
        if !name::is_within(n, zone) {
            return false;
        }
        let labels = name::labels(&n[..n.len() - zone.len()]);
        labels.len() >= 3 && labels[labels.len() - 1] == b"svc"
    }

    fn name_ref(&mut self, n: &[u8], add: bool, touched: &mut Touched) {
        let (before, after) = if self.is_services_own(n) {
            (u32::from(self.records.names.contains(n)), u32::from(add))
        } else {
            self.count_ref(n, add)
        };
        if (before == 0) != (after == 0) {
            if add {
                let name = self.intern(n);
                self.records.names.insert(name, ());
                self.sum = self.sum.wrapping_add(serial::name(n));
            } else {
                self.records.names.remove(n);
                self.sum = self.sum.wrapping_sub(serial::name(n));
            }
            touched.owners.insert(n.to_vec());
        }
    }

    /// The records at an in-zone `owner` now that the unit holding it has `part`: one unit
    /// holds each name in the zone (the fixed names, a namespace's, a Service's subtree).
    fn merge(&mut self, owner: Name, part: &Part, touched: &mut Touched) {
        let mut merged = part.rrsets.get(&owner[..]).cloned();
        if let Some(m) = merged.as_mut() {
            build::finish_srv(m, |t| self.intern(t));
        }
        let old = self.records.rrsets.get(&owner[..]);
        if old == merged.as_ref() {
            return;
        }
        if let Some(o) = old {
            self.sum = self.sum.wrapping_sub(serial::rrset(&owner, o));
        }
        match merged {
            Some(m) => {
                self.sum = self.sum.wrapping_add(serial::rrset(&owner, &m));
                self.records.rrsets.insert(owner.clone(), m);
            }
            None => {
                self.records.rrsets.remove(&owner[..]);
            }
        }
        touched.owners.insert(owner.to_vec());
    }

    /// The PTR records of `ip` after `unit`'s part became `part`: every contributing
    /// unit's, in unit order, duplicates dropped as [`Records::build`] drops them. Several
    /// Services may hold one address (a pod behind two); each record names its Service.
    fn merge_ptrs(&mut self, ip: IpAddr, unit: &Unit, part: &Part) {
        let held = self.records.reverse.get(ip);
        let mut merged = Ptrs::new();
        // Almost every address is one Service's: when no other unit's record is held
        // there, the merge is this part's records, with no other unit to look up (half a
        // million addresses in a first build at 100k Services).
        let own = part.ptrs.values().flatten().next().map(|p| &p.under);
        if held.iter().flatten().all(|p| own == Some(&p.under)) {
            self.add_ptrs(&mut merged, part, ip);
        } else {
            let mut units: BTreeSet<Unit> = held
                .iter()
                .flatten()
                .filter_map(|p| self.unit_of_target(&p.under))
                .collect();
            units.remove(unit);
            if part.ptrs.contains_key(&ip) {
                units.insert(unit.clone());
            }
            for u in &units {
                if u == unit {
                    self.add_ptrs(&mut merged, part, ip);
                } else {
                    let other = self.part_of(u);
                    self.add_ptrs(&mut merged, &other, ip);
                }
            }
        }
        if held.as_ref() == Some(&merged) || (held.is_none() && merged.is_empty()) {
            return;
        }
        if let Some(o) = &held {
            self.sum = self.sum.wrapping_sub(serial::ptrs(ip, o));
        }
        if merged.is_empty() {
            self.records.reverse.remove(ip);
        } else {
            self.sum = self.sum.wrapping_add(serial::ptrs(ip, &merged));
            self.records.reverse.insert(ip, merged);
        }
    }

    /// Appends `part`'s PTR records of `ip` not already in `merged`.
    fn add_ptrs(&mut self, merged: &mut Ptrs, part: &Part, ip: IpAddr) {
        for ptr in part.ptrs.get(&ip).into_iter().flatten() {
            if !merged.contains(ptr) {
                // Shares the Service name's one copy rather than the part's.
                merged.push(Ptr {
                    under: self.intern(&ptr.under),
                    host: ptr.host.clone(),
                });
            }
        }
    }

    /// One Pod's (namespace, address) pairs for `pods verified`.
    fn refresh_pod(&mut self, key: &Key, touched: &mut Touched) {
        let new: Vec<(String, IpAddr)> = match self.pods.get(key) {
            Some(p) if self.records.cfg.pods == PodMode::Verified && self.served(&p.namespace) => {
                let mut v: Vec<_> = p
                    .ips
                    .iter()
                    .map(|ip| (p.namespace.to_string(), *ip))
                    .collect();
                v.sort();
                v.dedup();
                v
            }
            _ => Vec::new(),
        };
        let old = self.pod_parts.remove(key).unwrap_or_default();
        for pair in old.iter().filter(|p| !new.contains(p)) {
            let count = self.pod_refs.entry(pair.clone()).or_insert(1);
            *count -= 1;
            if *count == 0 {
                self.pod_refs.remove(pair);
                self.records.pod_ips.remove(pair);
                touched.pod_ips.insert(pair.clone());
            }
        }
        for pair in new.iter().filter(|p| !old.contains(p)) {
            let count = self.pod_refs.entry(pair.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                self.records.pod_ips.insert(pair.clone());
                touched.pod_ips.insert(pair.clone());
            }
        }
        if !new.is_empty() {
            self.pod_parts.insert(key.clone(), new);
        }
    }
}
