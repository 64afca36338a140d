//! The run loop: one event at a time, each handled by a named step (links, pins, node,
//! config, a batch of changes), until SIGTERM or Ctrl-C.
use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use dns_userspace::{
    answer::server::{self, Zone},
    dataplane::{self, bpffs, discover::LinkEvents, kernel::Kernel},
    model::{
        live::{Change, LiveZone},
        ZoneConfig,
    },
    node::{local_iface, notrack},
    ops::{health::Readiness, metrics::Metrics},
    source::{Batch, Keep, Source},
};
use tokio::sync::mpsc;

use super::{
    finish, load_kernel, relisted, report,
    sinks::{sync_served, sync_upstreams, Sinks},
};
use dns_userspace::settings::Settings;

use crate::cli::RunArgs;

/// Changes between two hand-backs of freed memory.
const TRIM_EVERY: usize = 1000;

/// What the daemon runs with once it is ready.
pub(super) struct Running {
    pub flags: RunArgs,
    /// The settings as they run: the file's as last reloaded, `node` and `source` as
    /// started.
    pub settings: Settings,
    pub cfg: ZoneConfig,
    pub source: Source,
    pub live: LiveZone,
    pub zone: Zone,
    pub kernel: Option<Kernel>,
    pub sinks: Sinks,
    pub handler: server::Handler,
    pub metrics: Arc<Metrics>,
    pub log_queries: Arc<AtomicBool>,
    pub readiness: Readiness,
    /// The addresses the kernel answers for, as last written.
    pub served: Vec<IpAddr>,
    /// The upstream Service's endpoints as last set (`None`: nothing yet, or a new
    /// resolver).
    pub upstreams: Option<Vec<SocketAddr>>,
    pub events: Option<LinkEvents>,
    /// Waiting for another daemon's pins until then (`--pin-wait`).
    pub pins_wanted_until: Option<Instant>,
    /// Node-local addresses or NOTRACK rules to keep in place.
    pub node_changed: bool,
    /// Changes since freed memory was last handed back.
    pub since_trim: usize,
}

/// What woke the loop.
enum Event {
    Links { alive: bool },
    Rescan,
    PinPoll,
    NodeCheck,
    Heartbeat,
    ConfigTick,
    Stop,
    Term,
    Down(String),
    Batch(Option<Batch>),
}

impl Running {
    /// `term` is the SIGTERM stream the start-up steps listened on, so none is lost
    /// between them and the loop.
    pub async fn run(
        mut self,
        mut down: mpsc::UnboundedReceiver<String>,
        mut term: tokio::signal::unix::Signal,
    ) -> anyhow::Result<()> {
        let mut config_stamp = config_fingerprint(&self.flags);
        // A backstop for events lost to a full netlink socket buffer.
        let mut rescan = tokio::time::interval(Duration::from_secs(10));
        let mut config_tick = tokio::time::interval(Duration::from_secs(1));
        let fresh_for = self.settings.node.stale_after.max(Duration::from_secs(1));
        let mut heartbeat = tokio::time::interval(fresh_for.div_f64(6.0));
        let mut pin_poll = tokio::time::interval(Duration::from_millis(200));
        let mut node_check = tokio::time::interval(Duration::from_secs(60));
        node_check.tick().await;
        loop {
            let event = tokio::select! {
                alive = async { self.events.as_mut()?.next_burst().await.then_some(()) },
                    if self.events.is_some() => Event::Links { alive: alive.is_some() },
                _ = rescan.tick(), if self.kernel.is_some() => Event::Rescan,
                _ = pin_poll.tick(), if self.pins_wanted_until.is_some() => Event::PinPoll,
                _ = node_check.tick(), if self.node_changed => Event::NodeCheck,
                _ = heartbeat.tick(), if self.kernel.is_some() => Event::Heartbeat,
                _ = config_tick.tick(), if self.flags.config.is_some() => Event::ConfigTick,
                _ = tokio::signal::ctrl_c() => Event::Stop,
                _ = term.recv() => Event::Term,
                Some(why) = down.recv() => Event::Down(why),
                v = self.source.next() => Event::Batch(v?),
            };
            match event {
                Event::Links { alive } => self.links_changed(alive),
                Event::Rescan => self.rescan(),
                Event::PinPoll => self.take_over_pins().await?,
                Event::NodeCheck => self.recheck_node().await,
                Event::Heartbeat => {
                    if let Some(k) = self.kernel.as_mut() {
                        k.heartbeat();
                    }
                }
                Event::ConfigTick => {
                    let stamp = config_fingerprint(&self.flags);
                    if stamp != config_stamp {
                        config_stamp = stamp;
                        self.config_changed().await;
                    }
                }
                Event::Stop => break,
                Event::Term => {
                    self.lameduck().await;
                    break;
                }
                Event::Down(why) => bail!("{why}"),
                Event::Batch(None) => {}
                Event::Batch(Some(batch)) => self.apply(batch),
            }
        }
        finish(self.kernel, &self.settings)
    }

    fn links_changed(&mut self, alive: bool) {
        if !alive {
            tracing::warn!("link events stopped; rescanning every 10 s");
            self.events = None;
        }
        self.rescan();
    }

    fn rescan(&mut self) {
        if let Some(k) = self.kernel.as_mut() {
            report(k.rescan());
        }
    }

    /// `--pin-wait`: takes the kernel path over once the daemon holding the pins exits,
    /// or gives up at the deadline.
    async fn take_over_pins(&mut self) -> anyhow::Result<()> {
        let node = &self.settings.node;
        match bpffs::lock(&node.pin_dir) {
            Ok(p) => {
                self.pins_wanted_until = None;
                let mut k = load_kernel(p, node, &self.log_queries).await?;
                self.sinks
                    .publish_full(&self.zone, Some(&mut k), &self.live);
                self.served.clear();
                sync_served(node, &self.live, Some(&mut k), &mut self.served);
                self.events = Some(LinkEvents::subscribe().context("subscribing to link events")?);
                report(k.attach_all()?);
                self.kernel = Some(k);
                tracing::info!("took the kernel path over");
                say!("kernel path taken over");
            }
            Err(dataplane::Error::PinsInUse(dir))
                if self.pins_wanted_until.is_some_and(|u| Instant::now() >= u) =>
            {
                bail!(dataplane::Error::PinsInUse(dir));
            }
            Err(dataplane::Error::PinsInUse(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Someone (a CNI, an nft flush) may have taken the node-local addresses or the
    /// NOTRACK rules away: put them back.
    async fn recheck_node(&self) {
        let node = &self.settings.node;
        if let Some(name) = &node.local_iface {
            if let Err(e) = local_iface::ensure(name, &node.listen).await {
                tracing::warn!(error = %e, "re-checking the node-local addresses");
            }
        }
        if node.notrack {
            if let Err(e) = notrack::install(&node.listen, node.port) {
                tracing::warn!(error = %e, "re-checking the NOTRACK rules");
            }
        }
    }

    /// The config file changed: applies it (see [`reload`]), and the zone options with it.
    async fn config_changed(&mut self) {
        let Some((new_cfg, new_resolver)) = reload(
            &self.flags,
            &mut self.settings,
            &self.handler,
            &self.metrics,
        ) else {
            return;
        };
        if new_resolver {
            // A new resolver starts from the configured upstreams.
            self.upstreams = None;
            sync_upstreams(
                &self.settings.forward,
                &self.live,
                &self.handler,
                &mut self.upstreams,
            );
        }
        if new_cfg != self.cfg {
            if Keep::of(&new_cfg) != Keep::of(&self.cfg) {
                // The objects held lack fields the new config reads (labels, pod names):
                // the zone changes once a source keeping them has listed everything.
                let within = self.settings.zone.startup_timeout;
                match relisted(&self.settings, &new_cfg, within).await {
                    Ok((fresh, first)) => {
                        self.source = fresh;
                        self.live = LiveZone::new(&new_cfg);
                        self.live.load(first);
                        self.live.set_synced();
                        self.cfg = new_cfg;
                    }
                    Err(e) => tracing::error!(
                        error = format!("{e:#}"),
                        "zone options not applied: listing again failed; the zone keeps the \
                         last ones"
                    ),
                }
            } else {
                self.live = self.live.reconfigured(&new_cfg);
                self.cfg = new_cfg;
            }
            self.sinks
                .publish_full(&self.zone, self.kernel.as_mut(), &self.live);
        }
        say!("config reloaded");
    }

    /// CoreDNS `health { lameduck }`: not ready at once, so the Service stops sending
    /// queries, but alive and answering for a while longer.
    async fn lameduck(&self) {
        self.readiness.set(false);
        let lameduck = self.settings.ops.lameduck;
        if !lameduck.is_zero() {
            tracing::info!(seconds = lameduck.as_secs_f64(), "SIGTERM: lameduck");
            tokio::time::sleep(lameduck).await;
        }
    }

    /// One batch of changes into the zone and out to every sink.
    fn apply(&mut self, batch: Batch) {
        let t = Instant::now();
        let n = batch.changes.len();
        let relisted = batch
            .changes
            .iter()
            .any(|c| matches!(c, Change::Relist(..)));
        let touched = self.live.apply(batch.changes);
        tracing::debug!(
            changes = n,
            apply_us = t.elapsed().as_micros() as u64,
            "zone changed"
        );
        if !touched.is_empty() {
            self.sinks
                .publish(&self.zone, self.kernel.as_mut(), &self.live, &touched);
            let s = &self.settings;
            sync_served(&s.node, &self.live, self.kernel.as_mut(), &mut self.served);
            sync_upstreams(&s.forward, &self.live, &self.handler, &mut self.upstreams);
        }
        let since_event = batch.seen.elapsed();
        // The bench reads this line: event arrival to every sink written.
        tracing::debug!(
            changes = n,
            names = touched.owners.len(),
            event_us = since_event.as_micros() as u64,
            "change programmed"
        );
        self.metrics.programmed(since_event);
        self.sinks.retire();
        // Each change copies the zone's pages it writes and frees the old ones once
        // programmed; glibc keeps those pages. Handed back after a relist and every so
        // many changes (about 2 ms at 100k Services, after this batch is counted).
        self.since_trim += n;
        if relisted || self.since_trim >= TRIM_EVERY {
            release_freed_memory();
            self.since_trim = 0;
        }
    }
}

/// Applies a changed config file: the resolver, query log and zone options change in place;
/// node settings wait for a restart. A bad file changes nothing. Returns the zone config to
/// serve and whether the resolver is new, if the file was good.
fn reload(
    flags: &RunArgs,
    live: &mut Settings,
    handler: &server::Handler,
    metrics: &Arc<Metrics>,
) -> Option<(ZoneConfig, bool)> {
    let rejected = |e: anyhow::Error| {
        tracing::error!(
            error = format!("{e:#}"),
            "config rejected; the running config stays"
        );
        metrics.reload_failed();
        say!("config rejected: {e:#}");
    };
    let new = match flags.effective() {
        Ok(a) => live.reload(a),
        Err(e) => {
            rejected(e);
            return None;
        }
    };
    let cfg = match new.settings.zone_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            rejected(e.into());
            return None;
        }
    };
    if new.new_resolver {
        let s = &new.settings;
        match s.forward.resolver(&s.cache, s.zone.loadbalance, metrics) {
            Ok(r) => {
                let r = r.map(Arc::new);
                if let Some(r) = &r {
                    r.spawn_health_checks();
                }
                handler.resolver.set(r);
                tracing::info!("forwarding and cache reconfigured");
            }
            Err(e) => {
                rejected(e.into());
                return None;
            }
        }
    }
    if new.restart_needed {
        tracing::warn!(
            "the config changes node or source settings (addresses, interfaces, attach mode, \
             ports, pin folder, API access); they take effect at the next restart"
        );
    }
    handler
        .log_queries
        .store(new.settings.ops.log_queries, Ordering::Relaxed);
    *live = new.settings;
    tracing::info!("config reloaded");
    Some((cfg, new.new_resolver))
}

/// A list's parse buffers are freed once it is applied, but glibc keeps the pages in its
/// arenas; hand them back so the resident size is what the zone holds, not the peak.
pub(super) fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// When the config file last changed (and its size): polled, as a ConfigMap mount updates
/// by swapping a symlink that inotify on the file would not see.
fn config_fingerprint(flags: &RunArgs) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(flags.config.as_ref()?).ok()?;
    Some((m.modified().ok()?, m.len()))
}
