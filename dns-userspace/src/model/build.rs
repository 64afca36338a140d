//! Cluster view → records.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::{
    name::{self, child, dashed, reverse},
    view::{ClusterView, EndpointView, PortView, ServiceKind, ServiceView, SliceView},
    PodMode, RRSet, Records, Srv, ZoneConfig, SCHEMA_VERSION,
};

pub(super) fn build(cfg: &ZoneConfig, view: &ClusterView) -> Records {
    let mut b = Builder {
        cfg,
        rrsets: BTreeMap::new(),
        names: BTreeSet::new(),
    };
    let namespaces: BTreeSet<String> = view
        .namespaces
        .iter()
        .filter(|ns| cfg.namespaces.is_empty() || cfg.namespaces.contains(&ns.name))
        .filter(|ns| cfg.namespace_labels.matches(&ns.labels))
        .map(|ns| ns.name.clone())
        .collect();

    for l in [&["svc"][..], &["pod"]] {
        b.names.insert(child(&cfg.zone, l));
    }
    b.set(child(&cfg.zone, &["dns-version"]))
        .txt
        .push(SCHEMA_VERSION.into());
    let ns_owner = child(&cfg.zone, &["ns", "dns"]);
    for ip in &cfg.ns_addrs {
        b.add_addr(&ns_owner, *ip);
    }
    for ns in &namespaces {
        b.names.insert(child(&cfg.zone, &[ns, "svc"]));
        if cfg.pods != PodMode::Disabled {
            b.names.insert(child(&cfg.zone, &[ns, "pod"]));
        }
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
    for svc in &view.services {
        if !namespaces.contains(&svc.namespace) || !cfg.labels.matches(&svc.labels) {
            continue;
        }
        let svc_slices = slices
            .get(&(svc.namespace.as_str(), svc.name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        match &svc.kind {
            ServiceKind::ClusterIp(ips) => b.cluster_ip(svc, ips, svc_slices),
            ServiceKind::Headless => b.headless(svc, svc_slices),
            ServiceKind::ExternalName(target) => b.external_name(svc, target),
        }
    }

    let pod_ips = if cfg.pods == PodMode::Verified {
        view.pods
            .iter()
            .filter(|p| namespaces.contains(&p.namespace))
            .flat_map(|p| p.ips.iter().map(move |ip| (p.namespace.clone(), *ip)))
            .collect()
    } else {
        BTreeSet::new()
    };

    b.finish_srv_weights();
    let Builder { rrsets, names, .. } = b;
    let mut r = Records {
        cfg: cfg.clone(),
        serial: 0,
        synced: true,
        rrsets,
        names,
        namespaces,
        pod_ips,
    };
    r.serial = content_serial(&r);
    r
}

struct Builder<'a> {
    cfg: &'a ZoneConfig,
    rrsets: BTreeMap<Vec<u8>, RRSet>,
    names: BTreeSet<Vec<u8>>,
}

impl Builder<'_> {
    /// The record set at `owner`, registering the name and, in the zone, its ancestors.
    fn set(&mut self, owner: Vec<u8>) -> &mut RRSet {
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

    fn add_ptr(&mut self, ip: IpAddr, target: &[u8]) {
        let set = self.set(reverse(ip));
        if !set.ptr.iter().any(|t| t == target) {
            set.ptr.push(target.to_vec());
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
            target: target.to_vec(),
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
        for ip in ips {
            self.add_addr(&owner, *ip);
            self.add_ptr(*ip, &owner);
        }
        for p in &svc.ports {
            self.add_srv(&owner, p, &owner);
        }
    }

    fn headless(&mut self, svc: &ServiceView, slices: &[&SliceView]) {
        if self.cfg.noendpoints {
            return;
        }
        let owner = self.owner(svc);
        for (slice, ep) in ready(svc, slices) {
            for ip in &ep.addresses {
                let host = match (&ep.hostname, &ep.pod_name) {
                    (Some(h), _) => h.clone(),
                    (None, Some(pod)) if self.cfg.endpoint_pod_names => pod.clone(),
                    _ => dashed(*ip),
                };
                let ep_owner = prefix(&owner, &[&host]);
                self.add_addr(&owner, *ip);
                self.add_addr(&ep_owner, *ip);
                // PTR for every endpoint address (CoreDNS reverted the hostname-only reading).
                self.add_ptr(*ip, &ep_owner);
                for p in &slice.ports {
                    self.add_srv(&owner, p, &ep_owner);
                }
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
        self.set(owner).cname = Some(target);
    }

    /// Equal weights summing to about 100 per owner, as CoreDNS splits them.
    fn finish_srv_weights(&mut self) {
        for set in self.rrsets.values_mut() {
            let n = set.srv.len() as u16;
            for s in &mut set.srv {
                s.weight = (100 / n.max(1)).max(1);
            }
        }
    }
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

/// The SOA serial is a hash of the zone's contents: it changes when a record does, and every
/// node (and every restart) serving the same records gives the same serial, so answers do
/// not depend on which daemon, or which path, gave them.
fn content_serial(r: &Records) -> u32 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ *b as u32).wrapping_mul(0x0100_0193);
        }
    };
    eat(&r.cfg.ttl.to_be_bytes());
    for (n, set) in &r.rrsets {
        eat(n);
        set.a.iter().for_each(|a| eat(&a.octets()));
        set.aaaa.iter().for_each(|a| eat(&a.octets()));
        for s in &set.srv {
            eat(&[s.priority, s.weight, s.port]
                .map(u16::to_be_bytes)
                .concat());
            eat(&s.target);
        }
        set.ptr.iter().for_each(|p| eat(p));
        set.cname.iter().for_each(|c| eat(c));
        set.txt.iter().for_each(|t| eat(t.as_bytes()));
    }
    for n in &r.names {
        eat(n);
    }
    r.namespaces.iter().for_each(|n| eat(n.as_bytes()));
    h.max(1)
}
