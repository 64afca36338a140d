//! Where a change goes: the kernel maps and the userspace answer path (the zone's
//! sinks), the served addresses, and the upstream Service's endpoints.
use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use dns_userspace::{
    answer::server::{self, Zone},
    dataplane::{kernel::Kernel, snapshot::Held},
    forward::{settings::ForwardSettings, upstreams::MAX_UPSTREAMS, Upstreams},
    model::{
        live::{LiveZone, Touched},
        Records,
    },
    node::settings::NodeSettings,
};

/// How the zone reaches its sinks: the kernel maps (if loaded) and the userspace answer
/// path. Kept for the daemon's life, so a write that failed is remembered.
pub(super) struct Sinks {
    pub(super) nxdomain: bool,
    /// A write failed to land: the next publish rewrites the maps whole.
    pub(super) needs_full: bool,
    /// The kernel passes every query: its maps could not be made whole (see
    /// [`dns_common::ZONE_DEGRADED`]); `/ready` reads it.
    pub(super) degraded: Arc<AtomicBool>,
    /// The maps' sizes for `/metrics`, kept here so a scrape walks no keys.
    pub(super) held: Arc<Held>,
    /// The snapshot the answer path served before the last publish, dropped by
    /// [`Sinks::retire`] once the change is programmed.
    pub(super) retired: Option<Arc<Records>>,
}

impl Sinks {
    /// Frees what only the previous snapshot held (the records a batch replaced).
    pub(super) fn retire(&mut self) {
        self.retired = None;
    }

    /// Notes the maps' sizes for `/metrics`, and says when the kernel path degrades or
    /// recovers (log; `/ready` and the metric follow).
    pub(super) fn note_kernel(&self, kernel: Option<&Kernel>) {
        if let Some(k) = kernel {
            self.held.set(k.maps.records_len(), k.maps.targets_len());
        }
        let now = kernel.is_some_and(|k| k.maps.is_degraded());
        if self.degraded.swap(now, Ordering::SeqCst) != now {
            if now {
                tracing::error!(
                    "kernel maps degraded: every query passes to userspace until a full sync \
                     lands (a map full? see xdns_kernel_records_capacity)"
                );
            } else {
                tracing::info!("kernel maps whole again: the kernel answers");
            }
        }
    }

    /// Makes every sink serve the whole zone: kernel maps first (read back and rewritten
    /// where they differ), then userspace.
    pub(super) fn publish_full(
        &mut self,
        zone: &Zone,
        kernel: Option<&mut Kernel>,
        live: &LiveZone,
    ) {
        if let Some(k) = kernel {
            self.publish_kernel_full(k, live);
        }
        self.publish_zone(zone, live);
    }

    /// The kernel maps made to hold the whole zone.
    pub(super) fn publish_kernel_full(&mut self, k: &mut Kernel, live: &LiveZone) {
        let records = live.records();
        let t = Instant::now();
        match k.maps.publish(records, self.nxdomain && records.synced) {
            Ok(stats) => {
                self.needs_full = false;
                tracing::info!(
                    ?stats,
                    sync_ms = t.elapsed().as_secs_f64() * 1e3,
                    "kernel records in sync"
                )
            }
            Err(e) => {
                self.needs_full = true;
                tracing::error!(error = %e, "kernel map sync failed")
            }
        }
        self.note_kernel(Some(k));
    }

    /// The userspace answer path swapped to the whole zone.
    pub(super) fn publish_zone(&mut self, zone: &Zone, live: &LiveZone) {
        let records = live.records();
        tracing::info!(
            records = records.len(),
            serial = records.serial,
            "zone updated"
        );
        self.retired = Some(zone.replace(records.clone()));
    }

    /// Makes every sink serve what one batch touched: only those kernel entries are
    /// written; the answer path swaps to the new snapshot whole, so it never sees half of
    /// a change.
    pub(super) fn publish(
        &mut self,
        zone: &Zone,
        mut kernel: Option<&mut Kernel>,
        live: &LiveZone,
        touched: &Touched,
    ) {
        if self.needs_full {
            return self.publish_full(zone, kernel, live);
        }
        let records = live.records();
        let t = Instant::now();
        if let Some(k) = kernel.as_deref_mut() {
            let delta = records.kernel_delta(touched);
            match k
                .maps
                .publish_delta(&delta, self.nxdomain && records.synced)
            {
                Ok(stats) => {
                    tracing::debug!(
                        ?stats,
                        kernel_us = t.elapsed().as_micros() as u64,
                        "kernel entries written"
                    );
                    self.held.set(k.maps.records_len(), k.maps.targets_len());
                }
                Err(e) => {
                    tracing::error!(error = %e, "kernel map write failed; rewriting the maps whole");
                    return self.publish_full(zone, kernel, live);
                }
            }
        }
        self.retired = Some(zone.replace(records.clone()));
        tracing::debug!(
            names = touched.owners.len(),
            serial = records.serial,
            "zone updated"
        );
    }
}

/// Points the kernel at the addresses it answers for: the flags' and those of the
/// `--accelerate-service` Services as the zone holds them now; written only on a change.
pub(super) fn sync_served(
    node: &NodeSettings,
    live: &LiveZone,
    kernel: Option<&mut Kernel>,
    last: &mut Vec<IpAddr>,
) {
    let Some(k) = kernel else { return };
    let mut addrs = node.served_addrs();
    for s in &node.accelerate_services {
        addrs.extend(live.service_addrs(&s.namespace, &s.name));
    }
    addrs.sort();
    addrs.dedup();
    if addrs == *last {
        return;
    }
    match k.maps.sync_service_addrs(&addrs) {
        Ok(()) => {
            tracing::info!(?addrs, "served addresses");
            *last = addrs;
        }
        Err(e) => tracing::error!(error = %e, "writing the served addresses"),
    }
}

/// `--upstream-service`: its ready endpoints are the upstreams while it has any, the
/// configured ones (resolv.conf) otherwise; said in the log, changed only on a change.
/// `last` is what was set (`None`: nothing yet, or a new resolver).
pub(super) fn sync_upstreams(
    forward: &ForwardSettings,
    live: &LiveZone,
    handler: &server::Handler,
    last: &mut Option<Vec<SocketAddr>>,
) {
    let (Some(svc), Some(resolver)) = (
        &forward.upstream_service,
        handler.resolver.get().as_ref().clone(),
    ) else {
        return;
    };
    let mut endpoints = live.service_endpoints(&svc.namespace, &svc.name);
    if last.as_ref() == Some(&endpoints) {
        return;
    }
    *last = Some(endpoints.clone());
    let service = format!("{}/{}", svc.namespace, svc.name);
    if endpoints.is_empty() {
        match forward.upstream_list() {
            Ok(u) => {
                tracing::warn!(%service, upstreams = ?u.0, "the upstream Service has no ready endpoint; forwarding to the configured upstreams");
                resolver.set_upstreams(u);
            }
            Err(e) => tracing::error!(error = format!("{e:#}"), "no upstream to fall back to"),
        }
        return;
    }
    if endpoints.len() > MAX_UPSTREAMS {
        tracing::warn!(%service, endpoints = endpoints.len(), "forwarding to the first {MAX_UPSTREAMS} endpoints only");
        endpoints.truncate(MAX_UPSTREAMS);
    }
    tracing::info!(%service, upstreams = ?endpoints, "forwarding to the upstream Service's endpoints");
    match Upstreams::new(endpoints) {
        Ok(u) => resolver.set_upstreams(u),
        Err(e) => tracing::error!(error = %e, "upstream Service endpoints"),
    }
}
