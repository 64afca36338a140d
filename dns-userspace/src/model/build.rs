//! Cluster view → records.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{
    name::{self, child, dashed},
    serial,
    view::{
        ClusterView, EndpointView, NamespaceView, PortView, ServiceKind, ServiceView, SliceView,
    },
    Host, Name, PodMode, Ptr, Ptrs, RRSet, Records, Srv, ZoneConfig, SCHEMA_VERSION,
};

/// What one unit of the cluster contributes to the zone: the records at each owner and
/// every in-zone name it makes exist (owners, their ancestors, empty non-terminals).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Part {
    pub rrsets: BTreeMap<Vec<u8>, RRSet>,
    pub ptrs: BTreeMap<IpAddr, Ptrs>,
    pub names: BTreeSet<Vec<u8>>,
}

/// Whether the zone serves a namespace (`--namespaces`, `--namespace-labels`).
pub(super) fn serves_namespace(cfg: &ZoneConfig, ns: &NamespaceView) -> bool {
    (cfg.namespaces.is_empty() || cfg.namespaces.iter().any(|n| **n == *ns.name))
        && cfg.namespace_labels.matches(&ns.labels)
}

/// The names every zone has: `svc`, `pod`, `dns-version` and the NS record's addresses.
pub(super) fn static_part(cfg: &ZoneConfig) -> Part {
    let mut b = Builder::new(cfg);
    b.statics();
    b.into_part()
}

/// A served namespace's empty non-terminals.
pub(super) fn namespace_part(cfg: &ZoneConfig, ns: &str) -> Part {
    let mut b = Builder::new(cfg);
    b.namespace(ns);
    b.into_part()
}

/// A Service's records (in a served namespace), from its slices in name order. SRV weights
/// are left at 0: they depend on the whole set at an owner.
pub(super) fn service_part(cfg: &ZoneConfig, svc: &ServiceView, slices: &[&SliceView]) -> Part {
    let mut b = Builder::new(cfg);
    b.service(svc, slices);
    b.into_part()
}

/// The whole zone from a view in one pass: the reference the incremental zone
/// ([`super::live`]) is checked against.
pub(super) fn build(cfg: &ZoneConfig, view: &ClusterView) -> Records {
    let mut b = Builder::new(cfg);
    let namespaces: BTreeSet<&str> = view
        .namespaces
        .iter()
        .filter(|ns| serves_namespace(cfg, ns))
        .map(|ns| &*ns.name)
        .collect();
    b.statics();
    for ns in &namespaces {
        b.namespace(ns);
    }
    let mut slices: BTreeMap<(&str, &str), Vec<&SliceView>> = BTreeMap::new();
    for s in &view.slices {
        slices
            .entry((&s.namespace, &s.service))
            .or_default()
            .push(s);
    }
    for v in slices.values_mut() {
        // Slice order is the API's list order; names give a stable one across sources.
        v.sort_by(|a, b| a.name.cmp(&b.name));
    }
    // Services in (namespace, name) order: where two share a reverse name, its PTR
    // records come in that order whatever order the source listed them in.
    let mut services: Vec<&ServiceView> = view.services.iter().collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for svc in services {
        if !namespaces.contains(&*svc.namespace) {
            continue;
        }
        let svc_slices = slices
            .get(&(&*svc.namespace, &*svc.name))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        b.service(svc, svc_slices);
    }

    let pod_ips = if cfg.pods == PodMode::Verified {
        view.pods
            .iter()
            .filter(|p| namespaces.contains(&*p.namespace))
            .flat_map(|p| p.ips.iter().map(move |ip| (p.namespace.to_string(), *ip)))
            .collect()
    } else {
        imbl::OrdSet::new()
    };

    let Part {
        mut rrsets,
        ptrs,
        names,
    } = b.into_part();
    for set in rrsets.values_mut() {
        finish_srv(set, Name::clone);
    }
    let mut r = Records {
        cfg: cfg.clone(),
        serial: 0,
        synced: true,
        rrsets: rrsets
            .into_iter()
            .map(|(k, v)| (Name::from(k), v))
            .collect(),
        reverse: ptrs.into_iter().collect(),
        names: names.into_iter().map(Name::from).collect(),
        namespaces: namespaces.into_iter().map(str::to_owned).collect(),
        pod_ips,
    };
    r.serial = serial::of(&r);
    r
}

/// A record set while a unit's records are gathered: appended to, then frozen into an
/// [`RRSet`] whose lists are shared.
#[derive(Default)]
struct Draft {
    a: Vec<Ipv4Addr>,
    aaaa: Vec<Ipv6Addr>,
    srv: Vec<Srv>,
    cname: Option<Box<[u8]>>,
    txt: Vec<String>,
}

impl From<Draft> for RRSet {
    fn from(d: Draft) -> Self {
        RRSet {
            a: d.a.into(),
            aaaa: d.aaaa.into(),
            srv: d.srv.into(),
            cname: d.cname,
            txt: d.txt.into(),
        }
    }
}

struct Builder<'a> {
    cfg: &'a ZoneConfig,
    rrsets: BTreeMap<Vec<u8>, Draft>,
    ptrs: BTreeMap<IpAddr, Ptrs>,
    names: BTreeSet<Vec<u8>>,
}

impl<'a> Builder<'a> {
    fn new(cfg: &'a ZoneConfig) -> Self {
        Self {
            cfg,
            rrsets: BTreeMap::new(),
            ptrs: BTreeMap::new(),
            names: BTreeSet::new(),
        }
    }

    fn into_part(self) -> Part {
        Part {
            rrsets: self
                .rrsets
                .into_iter()
                .map(|(owner, d)| (owner, d.into()))
                .collect(),
            ptrs: self.ptrs,
            names: self.names,
        }
    }

    fn statics(&mut self) {
        let cfg = self.cfg;
        for l in [&["svc"][..], &["pod"]] {
            self.names.insert(child(&cfg.zone, l));
        }
        self.set(child(&cfg.zone, &["dns-version"]))
            .txt
            .push(SCHEMA_VERSION.into());
        let ns_owner = child(&cfg.zone, &["ns", "dns"]);
        for ip in &cfg.ns_addrs {
            self.add_addr(&ns_owner, *ip);
        }
    }

    fn namespace(&mut self, ns: &str) {
        let cfg = self.cfg;
        self.names.insert(child(&cfg.zone, &[ns, "svc"]));
        if cfg.pods != PodMode::Disabled {
            self.names.insert(child(&cfg.zone, &[ns, "pod"]));
        }
    }

    fn service(&mut self, svc: &ServiceView, slices: &[&SliceView]) {
        if !self.cfg.labels.matches(&svc.labels) {
            return;
        }
        match &svc.kind {
            ServiceKind::ClusterIp(ips) => self.cluster_ip(svc, ips, slices),
            ServiceKind::Headless => self.headless(svc, slices),
            ServiceKind::ExternalName(target) => self.external_name(svc, target),
        }
    }

    /// The record set at `owner`, registering the name and, in the zone, its ancestors.
    fn set(&mut self, owner: Vec<u8>) -> &mut Draft {
        if name::is_within(&owner, &self.cfg.zone) {
            let mut n = owner.clone();
            while n.len() > self.cfg.zone.len() && self.names.insert(n.clone()) {
                n = name::parent(&n).to_vec();
            }
        }
        self.rrsets.entry(owner).or_default()
    }

    fn add_addr(&mut self, owner: &[u8], ip: IpAddr) {
        let set = self.set(owner.to_vec());
        match ip {
            IpAddr::V4(v4) if !set.a.contains(&v4) => set.a.push(v4),
            IpAddr::V6(v6) if !set.aaaa.contains(&v6) => set.aaaa.push(v6),
            _ => {}
        }
    }

    fn add_ptr(&mut self, ip: IpAddr, ptr: Ptr) {
        let set = self.ptrs.entry(ip).or_default();
        if !set.contains(&ptr) {
            set.push(ptr);
        }
    }

    fn add_srv(&mut self, svc_owner: &[u8], port: &PortView, target: &[u8]) {
        if port.name.is_empty() {
            return;
        }
        let proto = port.protocol.to_ascii_lowercase();
        let owner = prefix(
            svc_owner,
            &[&format!("_{}", port.name), &format!("_{proto}")],
        );
        let srv = Srv {
            priority: 0,
            weight: 0,
            port: port.port,
            target: Name::from(target),
        };
        let set = self.set(owner);
        if !set.srv.contains(&srv) {
            set.srv.push(srv);
        }
    }

    fn owner(&self, svc: &ServiceView) -> Vec<u8> {
        child(&self.cfg.zone, &[&svc.name, &svc.namespace, "svc"])
    }

    fn cluster_ip(&mut self, svc: &ServiceView, ips: &[IpAddr], slices: &[&SliceView]) {
        if ips.is_empty() {
            return;
        }
        // CoreDNS's `ignore empty_service`: no ready endpoint, no name.
        if self.cfg.ignore_empty_service && ready(svc, slices).next().is_none() {
            return;
        }
        let owner = self.owner(svc);
        let under = Name::from(owner.as_slice());
        for ip in ips {
            self.add_addr(&owner, *ip);
            let bare = Ptr {
                under: under.clone(),
                host: Host::Bare,
            };
            self.add_ptr(*ip, bare);
        }
        for p in &svc.ports {
            self.add_srv(&owner, p, &owner);
        }
        // CoreDNS answers the reverse name of a ClusterIP Service's endpoints too (its
        // serviceRecordForIP searches every endpoint once no cluster IP matches), naming
        // the endpoint as a headless Service's would be named.
        if !self.cfg.noendpoints {
            for (_, ep) in ready(svc, slices) {
                let ptr = Ptr::endpoint(under.clone(), self.endpoint_label(ep), ep.address);
                self.add_ptr(ep.address, ptr);
            }
        }
    }

    /// An endpoint's label: its hostname, else its pod's name under
    /// `endpoint_pod_names`, else (`None`) its address dashed.
    fn endpoint_label<'e>(&self, ep: &'e EndpointView) -> Option<&'e str> {
        match (ep.hostname(), ep.pod_name()) {
            (Some(h), _) => Some(h),
            (None, Some(pod)) if self.cfg.endpoint_pod_names => Some(pod),
            _ => None,
        }
    }

    fn headless(&mut self, svc: &ServiceView, slices: &[&SliceView]) {
        if self.cfg.noendpoints {
            return;
        }
        let owner = self.owner(svc);
        let under = Name::from(owner.as_slice());
        for (slice, ep) in ready(svc, slices) {
            let ip = &ep.address;
            let host = self
                .endpoint_label(ep)
                .map_or_else(|| dashed(*ip), str::to_owned);
            let ep_owner = prefix(&owner, &[&host]);
            self.add_addr(&owner, *ip);
            self.add_addr(&ep_owner, *ip);
            // PTR for every endpoint address (CoreDNS reverted the hostname-only reading).
            let ptr = Ptr::endpoint(under.clone(), self.endpoint_label(ep), *ip);
            self.add_ptr(*ip, ptr);
            for p in &slice.ports {
                self.add_srv(&owner, p, &ep_owner);
            }
        }
    }

    fn external_name(&mut self, svc: &ServiceView, target: &str) {
        // An IP in externalName is no name: no record, as CoreDNS.
        if target.parse::<IpAddr>().is_ok() {
            return;
        }
        let Ok(target) = name::wire_from_dotted(target) else {
            return;
        };
        let owner = self.owner(svc);
        self.set(owner).cname = Some(target.into());
    }
}

/// Equal weights summing to about 100 per owner, as CoreDNS splits them; `target` gives
/// each record's target name (the live zone's shared copy).
pub(super) fn finish_srv(set: &mut RRSet, mut target: impl FnMut(&Name) -> Name) {
    if set.srv.is_empty() {
        return;
    }
    let weight = (100 / set.srv.len() as u16).max(1);
    set.srv = set
        .srv
        .iter()
        .map(|s| Srv {
            weight,
            target: target(&s.target),
            ..s.clone()
        })
        .collect();
}

/// Endpoints that get records: ready ones, or all with `publishNotReadyAddresses`.
fn ready<'a>(
    svc: &'a ServiceView,
    slices: &'a [&'a SliceView],
) -> impl Iterator<Item = (&'a SliceView, &'a EndpointView)> + 'a {
    slices.iter().flat_map(move |s| {
        s.endpoints
            .iter()
            .filter(move |e| e.ready || svc.publish_not_ready)
            .map(move |e| (*s, e))
    })
}

/// `labels` prepended to a wire name.
fn prefix(base: &[u8], labels: &[&str]) -> Vec<u8> {
    child(base, labels)
}
