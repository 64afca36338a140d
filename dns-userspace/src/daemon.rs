//! `xdns run`: wires source → model → sinks and runs until SIGTERM or Ctrl-C.
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
    answer::server::{self, Swap, Zone},
    dataplane::{
        self, bpffs,
        discover::{LinkEvents, Pattern, CNI_PATTERNS},
        kernel::{Change, Kernel},
        links::Outcome,
        snapshot::Held,
    },
    forward::{loopdetect::LoopProbe, upstreams::MAX_UPSTREAMS, Upstreams},
    model::{
        live::{LiveZone, Touched},
        Records, ZoneConfig,
    },
    node::{local_iface, notrack},
    ops::{self, health::Readiness, metrics::Metrics},
    source::{Keep, Source},
};
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::cli::{RunArgs, Settings};

/// A line on stdout for whoever runs the daemon (tests wait on them); a closed stdout (the
/// reader gone) loses the line, never the daemon: `println!` would panic on EPIPE.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// A new source keeping the fields `cfg` reads, and its first full view.
async fn relisted(
    args: &Settings,
    cfg: &ZoneConfig,
    within: Duration,
) -> anyhow::Result<(Source, Vec<dns_userspace::model::live::Change>)> {
    tracing::info!("the zone options read other object fields: listing again");
    let mut fresh = args.source.open(cfg).await?;
    let first = tokio::time::timeout(within, fresh.first())
        .await
        .context("no full list in time")??;
    Ok((fresh, first))
}

fn report(changes: Vec<Change>) {
    for c in changes {
        match &c {
            Change::Served {
                iface,
                outcome: Outcome::Attached { mode, note },
            } => tracing::info!(iface, %mode, note = note.as_deref(), "attached"),
            Change::Served {
                iface,
                outcome: Outcome::Adopted(mode),
            } => tracing::info!(iface, %mode, "adopted the pinned link"),
            Change::Gone { iface } => tracing::info!(iface, "interface gone"),
            Change::Failed { iface, error } => {
                tracing::warn!(
                    iface,
                    error,
                    "attach failed; retried on the next link event"
                )
            }
        }
        // One line per interface on stdout, for scripts and tests.
        say!("{c}");
    }
}

/// How the zone reaches its sinks: the kernel maps (if loaded) and the userspace answer
/// path. Kept for the daemon's life, so a write that failed is remembered.
struct Sinks {
    nxdomain: bool,
    /// A write failed to land: the next publish rewrites the maps whole.
    needs_full: bool,
    /// The kernel passes every query: its maps could not be made whole (see
    /// [`dns_common::ZONE_DEGRADED`]); `/ready` reads it.
    degraded: Arc<AtomicBool>,
    /// The maps' sizes for `/metrics`, kept here so a scrape walks no keys.
    held: Arc<Held>,
    /// The snapshot the answer path served before the last publish, dropped by
    /// [`Sinks::retire`] once the change is programmed.
    retired: Option<Arc<Records>>,
}

impl Sinks {
    /// Frees what only the previous snapshot held (the records a batch replaced).
    fn retire(&mut self) {
        self.retired = None;
    }

    /// Notes the maps' sizes for `/metrics`, and says when the kernel path degrades or
    /// recovers (log; `/ready` and the metric follow).
    fn note_kernel(&self, kernel: Option<&Kernel>) {
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
    fn publish_full(&mut self, zone: &Zone, kernel: Option<&mut Kernel>, live: &LiveZone) {
        let records = live.records();
        let t = Instant::now();
        if let Some(k) = kernel {
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
    fn publish(
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
fn sync_served(
    args: &Settings,
    live: &LiveZone,
    kernel: Option<&mut Kernel>,
    last: &mut Vec<IpAddr>,
) {
    let Some(k) = kernel else { return };
    let mut addrs = args.node.served_addrs();
    for s in &args.node.accelerate_services {
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
fn sync_upstreams(
    args: &Settings,
    live: &LiveZone,
    handler: &server::Handler,
    last: &mut Option<Vec<SocketAddr>>,
) {
    let (Some(svc), Some(resolver)) = (
        &args.forward.upstream_service,
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
        match args.forward.upstream_list() {
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

/// Loads the kernel path on the pins this daemon holds (not attached yet).
fn load_kernel(
    pins: bpffs::PinLock,
    args: &Settings,
    log_queries: &Arc<AtomicBool>,
) -> anyhow::Result<Kernel> {
    let mut k = Kernel::load(
        pins,
        &args.node.pin_dir,
        &args.node.served_addrs(),
        args.node.ifaces.clone(),
        patterns(args),
        args.node.attach,
        args.node.kernel_records_max,
    )
    .map_err(|e| {
        let e = anyhow::Error::new(e);
        // EPERM: a privilege (capability, seccomp), not a bug; say which.
        match format!("{e:#}").contains("os error 1)") {
            true => e.context(privilege_hint()),
            false => e,
        }
    })
    .context("loading the kernel path")?;
    k.maps
        .set_fresh_for(args.node.stale_after.max(Duration::from_secs(1)));
    for (prog, n) in k.verified_insns() {
        tracing::info!(program = prog, verified_insns = n, "loaded");
    }
    if args.node.log_kernel_sample > 0 {
        k.maps.set_log_sample(args.node.log_kernel_sample);
        let ring = k.take_log().context("the kernel answers' log ring")?;
        tokio::spawn(dataplane::kernel_log::run(ring, log_queries.clone()));
    }
    Ok(k)
}

/// What a refused `bpf()` usually means in a pod, said next to the bare errno: which
/// capabilities the process lacks, and whether seccomp is in the way.
fn privilege_hint() -> String {
    let (have, missing) = missing_capabilities();
    let seccomp = seccomp_mode();
    let mut hint = String::from("the kernel refused: ");
    if !missing.is_empty() {
        hint += &format!(
            "capabilities {} missing (have {have}); ",
            missing.join(", ")
        );
    }
    if seccomp == Some(2) {
        hint += "a seccomp filter is active (the runtime's default profile refuses bpf(): \
                 set seccompProfile Unconfined, or a Localhost profile allowing bpf and \
                 perf_event_open); ";
    }
    hint + "the DaemonSet needs BPF, NET_ADMIN and PERFMON (docs/node.md, deploy/)"
}

/// The capabilities the daemon needs that its effective set lacks, and the set in hex.
fn missing_capabilities() -> (String, Vec<&'static str>) {
    const NEEDED: [(&str, u32); 3] = [("NET_ADMIN", 12), ("PERFMON", 38), ("BPF", 39)];
    let eff = status_field("CapEff:").and_then(|v| u64::from_str_radix(&v, 16).ok());
    let missing = NEEDED
        .iter()
        .filter(|(_, bit)| eff.is_some_and(|e| e & (1 << bit) == 0))
        .map(|(name, _)| *name)
        .collect();
    (eff.map_or("unknown".into(), |e| format!("{e:#x}")), missing)
}

/// `Seccomp:` of /proc/self/status: 0 none, 1 strict, 2 filter.
fn seccomp_mode() -> Option<u32> {
    status_field("Seccomp:")?.parse().ok()
}

fn status_field(name: &str) -> Option<String> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
}

/// The interface patterns, with `cni` standing for the common CNIs' prefixes.
fn patterns(args: &Settings) -> Vec<Pattern> {
    let mut out = Vec::new();
    for p in &args.node.iface_patterns {
        if p == "cni" {
            out.extend(CNI_PATTERNS.iter().map(|c| Pattern::new(c)));
        } else {
            out.push(Pattern::new(p));
        }
    }
    out
}

/// What the daemon changed on the node besides BPF, undone on exit.
#[derive(Default)]
struct NodeChanges {
    local: Option<local_iface::LocalIface>,
    notrack: bool,
}

impl NodeChanges {
    async fn undo(self) {
        if self.notrack {
            match notrack::remove() {
                Ok(()) => tracing::info!("NOTRACK rules removed"),
                Err(e) => tracing::warn!(error = %e, "removing the NOTRACK rules"),
            }
        }
        if let Some(l) = self.local {
            let iface = l.iface.clone();
            match l.remove().await {
                Ok(()) => tracing::info!(iface, "node-local addresses removed"),
                Err(e) => tracing::warn!(iface, error = %e, "removing the node-local addresses"),
            }
        }
    }
}

pub async fn run(flags: RunArgs) -> anyhow::Result<()> {
    let args = flags.effective()?;
    args.node.check()?;
    let mut node = NodeChanges::default();
    let result = serve(flags, &args, &mut node).await;
    // Left for the next daemon (a rollout, a restart): removing them would fail every
    // query userspace answers until it is up (kubernetes/dns#732).
    if args.ops.detach_on_exit {
        node.undo().await;
    } else if node.local.is_some() || node.notrack {
        tracing::info!("node-local addresses and NOTRACK rules left for the next daemon");
    }
    result
}

/// The pins, before any change to the node: a second daemon on them must not touch the
/// first one's addresses, rules or maps on its way out. With --pin-wait it is the next one
/// in a rollout: it serves userspace now and takes the kernel path over (by the returned
/// deadline) once the daemon holding the pins exits.
fn take_pins(args: &Settings) -> anyhow::Result<(Option<bpffs::PinLock>, Option<Instant>)> {
    if args.node.no_kernel {
        return Ok((None, None));
    }
    match bpffs::lock(&args.node.pin_dir) {
        Ok(l) => Ok((Some(l), None)),
        Err(dataplane::Error::PinsInUse(_)) if !args.node.pin_wait.is_zero() => {
            tracing::info!(
                seconds = args.node.pin_wait.as_secs_f64(),
                "another daemon holds the pins: serving userspace, taking the kernel path \
                 over when it exits"
            );
            Ok((None, Some(Instant::now() + args.node.pin_wait)))
        }
        Err(e) => Err(e.into()),
    }
}

/// The node-local addresses and the NOTRACK rules, as asked; noted in `node` so they are
/// undone on the way out.
async fn prepare_node(args: &Settings, node: &mut NodeChanges) -> anyhow::Result<()> {
    if let Some(name) = &args.node.local_iface {
        let l = local_iface::ensure(name, &args.node.listen)
            .await
            .with_context(|| format!("putting the --listen addresses on {name}"))?;
        tracing::info!(iface = l.iface, addrs = ?args.node.listen, "node-local addresses in place");
        node.local = Some(l);
    }
    if args.node.notrack {
        notrack::install(&args.node.listen, args.node.port).context("--notrack")?;
        node.notrack = true;
        tracing::info!(table = notrack::TABLE, "NOTRACK rules installed");
    }
    Ok(())
}

/// CoreDNS's series, the kernel path's (read from the pins, with the map sizes the sinks
/// note in `held`) and the watches'.
fn metrics(args: &Settings, source: &Source, held: &Arc<Held>) -> Metrics {
    let mut m = Metrics::new();
    if !args.node.no_kernel {
        m.register(dataplane::collector::KernelCollector::new(
            args.node.pin_dir.clone(),
            held.clone(),
        ));
    }
    if let Some(health) = source.health() {
        m.register(dns_userspace::source::collector::WatchCollector::new(
            health,
        ));
    }
    m
}

/// Every listener is watched: one that ends fails `/health` and stops the daemon, so
/// kubelet restarts it rather than leaving a node half served behind a green probe.
struct Supervisor {
    readiness: Readiness,
    down: mpsc::UnboundedSender<String>,
}

impl Supervisor {
    fn watch(&self, name: String, task: BoxFuture<'static, std::io::Result<()>>) {
        let (r, tx) = (self.readiness.clone(), self.down.clone());
        tokio::spawn(async move {
            let why = match tokio::spawn(task).await {
                Ok(Ok(())) => format!("{name} stopped"),
                Ok(Err(e)) => format!("{name} stopped: {e}"),
                Err(e) => format!("{name} stopped: {e}"),
            };
            tracing::error!(listener = name, "{why}");
            r.listener_down(why.clone());
            let _ = tx.send(why);
        });
    }
}

/// UDP and TCP on every --listen address, bound before going on: a failure is a start-up
/// error, and the loop probe finds us listening.
fn serve_dns(
    args: &Settings,
    handler: &server::Handler,
    listeners: &Supervisor,
) -> anyhow::Result<()> {
    for ip in &args.node.listen {
        let addr = SocketAddr::new(*ip, args.node.port);
        let sockets = server::bind(addr).with_context(|| format!("binding {addr}"))?;
        listeners.watch(
            format!("dns listener {addr}"),
            Box::pin(server::serve(sockets, handler.clone())),
        );
        tracing::info!(%addr, "serving udp and tcp");
    }
    Ok(())
}

/// `/health`, `/ready` and `/metrics`, each bound now, so a taken port is a start-up
/// error, not a silent missing probe.
fn serve_ops(
    args: &Settings,
    metrics: &Arc<Metrics>,
    listeners: &Supervisor,
) -> anyhow::Result<()> {
    let (h, r) = (args.node.health_addr, args.node.ready_addr);
    drop(ops::http::listen(h).with_context(|| format!("binding {h}"))?);
    if r != h {
        drop(ops::http::listen(r).with_context(|| format!("binding {r}"))?);
    }
    let rd = listeners.readiness.clone();
    listeners.watch(
        format!("health listener {h}"),
        Box::pin(async move { ops::health::serve(h, r, rd).await }),
    );
    let (m, maddr) = (metrics.clone(), args.node.metrics_addr);
    drop(ops::http::listen(maddr).with_context(|| format!("binding {maddr}"))?);
    listeners.watch(
        format!("metrics listener {maddr}"),
        Box::pin(async move { ops::http::serve_metrics(maddr, m).await }),
    );
    Ok(())
}

/// The zone from the source's first full view; `None` if a signal came first. Until
/// then the zone answers SERVFAIL, and past the start-up timeout that is said once.
async fn first_view(
    args: &Settings,
    cfg: &ZoneConfig,
    source: &mut Source,
    term: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<Option<LiveZone>> {
    let startup = tokio::time::sleep(args.zone.startup_timeout);
    tokio::pin!(startup);
    let mut warned = false;
    let first = loop {
        tokio::select! {
            v = source.first() => break v?,
            _ = &mut startup, if !warned => {
                warned = true;
                tracing::warn!(
                    seconds = args.zone.startup_timeout.as_secs_f64(),
                    "no full view yet (startup timeout); the zone answers SERVFAIL until there is one"
                );
            }
            _ = tokio::signal::ctrl_c() => return Ok(None),
            _ = term.recv() => return Ok(None),
        }
    };
    let built = Instant::now();
    let mut live = LiveZone::new(cfg);
    live.load(first);
    live.set_synced();
    let [services, slices, namespaces, pods] = live.counts();
    let build_ms = built.elapsed().as_millis() as u64;
    // The bench reads this line: a stage of the first sync.
    tracing::info!(
        services,
        slices,
        namespaces,
        pods,
        build_ms,
        "first full view"
    );
    Ok(Some(live))
}

async fn serve(flags: RunArgs, args: &Settings, node: &mut NodeChanges) -> anyhow::Result<()> {
    let args = args.clone();
    let (pins, mut pins_wanted_until) = take_pins(&args)?;
    let mut cfg = args.zone_config()?;
    let mut source = args.source.open(&cfg).await?;
    prepare_node(&args, node).await?;

    // The query log's switch, shared by the answer path and the kernel answers' reader.
    let log_queries = Arc::new(AtomicBool::new(args.ops.log_queries));
    let mut kernel = match pins {
        Some(p) => Some(load_kernel(p, &args, &log_queries)?),
        None => None,
    };

    // Until the first full view, the zone answers SERVFAIL, never a false NXDOMAIN.
    let zone = Zone::new(Records::unsynced(&cfg));
    // The kernel maps' sizes as the sinks write them, for the kernel collector's scrapes.
    let held = Arc::new(Held::default());
    let metrics = Arc::new(metrics(&args, &source, &held));
    // Accelerator only (nothing to listen on): no misses reach us, so nothing to forward.
    let resolver = if args.node.listen.is_empty() {
        None
    } else {
        let (f, c) = (&args.forward, &args.cache);
        f.resolver(c, args.zone.loadbalance, &metrics)?
            .map(Arc::new)
    };
    if let Some(r) = &resolver {
        r.spawn_health_checks();
    }
    let probe = resolver.as_ref().map(|_| Arc::new(LoopProbe::new()));
    let handler = server::Handler {
        zone: zone.clone(),
        resolver: Swap::new(resolver.clone()),
        probe: probe.clone(),
        log_queries: log_queries.clone(),
        metrics: metrics.clone(),
    };
    let readiness = Readiness::default();
    let (down_tx, mut down_rx) = mpsc::unbounded_channel::<String>();
    let listeners = Supervisor {
        readiness: readiness.clone(),
        down: down_tx,
    };
    serve_dns(&args, &handler, &listeners)?;
    if let Some(h) = source.health() {
        let grace = args.source.watch_failing_after;
        readiness.check(Arc::new(move || h.problem(grace)));
    }
    serve_ops(&args, &metrics, &listeners)?;

    if let (Some(r), Some(p), false) = (&resolver, &probe, args.node.listen.is_empty()) {
        if p.run(&r.forwarder.get()).await {
            bail!(
                "forwarding loop: a query sent to the upstreams came back to this server; \
                 an upstream forwards to us (check --upstream / {})",
                args.forward.resolv_conf.display()
            );
        }
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let Some(mut live) = first_view(&args, &cfg, &mut source, &mut term).await? else {
        return finish(kernel, &args);
    };
    let mut sinks = Sinks {
        nxdomain: !args.node.no_kernel_nxdomain,
        needs_full: false,
        degraded: Arc::new(AtomicBool::new(false)),
        held,
        retired: None,
    };
    let degraded = sinks.degraded.clone();
    readiness.check(Arc::new(move || {
        degraded
            .load(Ordering::SeqCst)
            .then(|| "kernel maps degraded: every query passes to userspace".to_owned())
    }));
    sinks.publish_full(&zone, kernel.as_mut(), &live);
    let mut served = Vec::new();
    let mut since_trim = 0;
    sync_served(&args, &live, kernel.as_mut(), &mut served);
    let mut upstreams = None;
    sync_upstreams(&args, &live, &handler, &mut upstreams);
    release_freed_memory();
    // The kernel path goes on (or takes over from the last daemon's program) only once its
    // maps hold the whole zone.
    let mut events = None;
    if let Some(k) = kernel.as_mut() {
        // Subscribed before the first scan, so no interface slips between the two.
        events = Some(LinkEvents::subscribe().context("subscribing to link events")?);
        report(k.attach_all()?);
    }
    readiness.set(true);
    say!("ready");

    let mut running = args.clone();
    let mut config_stamp = config_fingerprint(&flags);
    // A backstop for events lost to a full netlink socket buffer.
    let mut rescan = tokio::time::interval(Duration::from_secs(10));
    let mut config_tick = tokio::time::interval(Duration::from_secs(1));
    let mut heartbeat = tokio::time::interval(
        args.node
            .stale_after
            .max(Duration::from_secs(1))
            .div_f64(6.0),
    );
    let mut pin_poll = tokio::time::interval(Duration::from_millis(200));
    let mut node_check = tokio::time::interval(Duration::from_secs(60));
    node_check.tick().await;
    loop {
        let next = tokio::select! {
            alive = async { events.as_mut()?.next_burst().await.then_some(()) }, if events.is_some() => {
                if alive.is_none() {
                    tracing::warn!("link events stopped; rescanning every 10 s");
                    events = None;
                }
                if let Some(k) = kernel.as_mut() {
                    report(k.rescan());
                }
                continue;
            }
            _ = rescan.tick(), if kernel.is_some() => {
                if let Some(k) = kernel.as_mut() {
                    report(k.rescan());
                }
                continue;
            }
            _ = pin_poll.tick(), if pins_wanted_until.is_some() => {
                match bpffs::lock(&args.node.pin_dir) {
                    Ok(p) => {
                        pins_wanted_until = None;
                        let mut k = load_kernel(p, &args, &log_queries)?;
                        sinks.publish_full(&zone, Some(&mut k), &live);
                        served.clear();
                        sync_served(&args, &live, Some(&mut k), &mut served);
                        events = Some(LinkEvents::subscribe().context("subscribing to link events")?);
                        report(k.attach_all()?);
                        kernel = Some(k);
                        tracing::info!("took the kernel path over");
                        say!("kernel path taken over");
                    }
                    Err(dataplane::Error::PinsInUse(dir))
                        if pins_wanted_until.is_some_and(|u| Instant::now() >= u) =>
                    {
                        bail!(dataplane::Error::PinsInUse(dir));
                    }
                    Err(dataplane::Error::PinsInUse(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            _ = node_check.tick(), if node.local.is_some() || node.notrack => {
                // Someone (a CNI, an nft flush) may have taken them away: put them back.
                if let Some(name) = &args.node.local_iface {
                    if let Err(e) = local_iface::ensure(name, &args.node.listen).await {
                        tracing::warn!(error = %e, "re-checking the node-local addresses");
                    }
                }
                if node.notrack {
                    if let Err(e) = notrack::install(&args.node.listen, args.node.port) {
                        tracing::warn!(error = %e, "re-checking the NOTRACK rules");
                    }
                }
                continue;
            }
            _ = heartbeat.tick(), if kernel.is_some() => {
                if let Some(k) = kernel.as_mut() {
                    k.heartbeat();
                }
                continue;
            }
            _ = config_tick.tick(), if flags.config.is_some() => {
                let stamp = config_fingerprint(&flags);
                if stamp == config_stamp {
                    continue;
                }
                config_stamp = stamp;
                if let Some((new_cfg, new_resolver)) = reload(&flags, &mut running, &handler, &metrics) {
                    if new_resolver {
                        // A new resolver starts from the configured upstreams.
                        upstreams = None;
                        sync_upstreams(&running, &live, &handler, &mut upstreams);
                    }
                    if new_cfg != cfg {
                        if Keep::of(&new_cfg) != Keep::of(&cfg) {
                            // The objects held lack fields the new config reads (labels, pod
                            // names): the zone changes once a source keeping them has listed
                            // everything.
                            let within = running.zone.startup_timeout;
                            match relisted(&running, &new_cfg, within).await {
                                Ok((fresh, first)) => {
                                    source = fresh;
                                    live = LiveZone::new(&new_cfg);
                                    live.load(first);
                                    live.set_synced();
                                    cfg = new_cfg;
                                }
                                Err(e) => tracing::error!(
                                    error = format!("{e:#}"),
                                    "zone options not applied: listing again failed; the zone \
                                     keeps the last ones"
                                ),
                            }
                        } else {
                            live = live.reconfigured(&new_cfg);
                            cfg = new_cfg;
                        }
                        sinks.publish_full(&zone, kernel.as_mut(), &live);
                    }
                    say!("config reloaded");
                }
                continue;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => {
                // CoreDNS `health { lameduck }`: not ready at once, so the Service stops
                // sending queries, but alive and answering for a while longer.
                readiness.set(false);
                if !running.ops.lameduck.is_zero() {
                    tracing::info!(seconds = running.ops.lameduck.as_secs_f64(), "SIGTERM: lameduck");
                    tokio::time::sleep(running.ops.lameduck).await;
                }
                break;
            }
            Some(why) = down_rx.recv() => bail!("{why}"),
            v = source.next() => v?,
        };
        if let Some(batch) = next {
            let t = Instant::now();
            let n = batch.changes.len();
            let relisted = batch
                .changes
                .iter()
                .any(|c| matches!(c, dns_userspace::model::live::Change::Relist(..)));
            let touched = live.apply(batch.changes);
            tracing::debug!(
                changes = n,
                apply_us = t.elapsed().as_micros() as u64,
                "zone changed"
            );
            if !touched.is_empty() {
                sinks.publish(&zone, kernel.as_mut(), &live, &touched);
                sync_served(&args, &live, kernel.as_mut(), &mut served);
                sync_upstreams(&running, &live, &handler, &mut upstreams);
            }
            let since_event = batch.seen.elapsed();
            // The bench reads this line: event arrival to every sink written.
            tracing::debug!(
                changes = n,
                names = touched.owners.len(),
                event_us = since_event.as_micros() as u64,
                "change programmed"
            );
            metrics.programmed(since_event);
            sinks.retire();
            // Each change copies the zone's pages it writes and frees the old ones once
            // programmed; glibc keeps those pages. Handed back after a relist and every
            // so many changes (about 2 ms at 100k Services, after this batch is counted).
            since_trim += n;
            if relisted || since_trim >= TRIM_EVERY {
                release_freed_memory();
                since_trim = 0;
            }
        }
    }
    finish(kernel, &running)
}

/// Changes between two hand-backs of freed memory.
const TRIM_EVERY: usize = 1000;

/// A list's parse buffers are freed once it is applied, but glibc keeps the pages in its
/// arenas; hand them back so the resident size is what the zone holds, not the peak.
fn release_freed_memory() {
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

/// Leaves the kernel path pinned (or detaches it with `--detach-on-exit`) and prints its
/// counters.
fn finish(kernel: Option<Kernel>, args: &Settings) -> anyhow::Result<()> {
    if let Some(k) = kernel {
        let counters = k.counters()?;
        if args.ops.detach_on_exit {
            tracing::info!("detaching and removing the pins");
        } else {
            tracing::info!(
                "the pinned links keep answering from the pinned maps until the next daemon takes over"
            );
        }
        k.finish(args.ops.detach_on_exit, &args.node.pin_dir);
        say!("kernel path counters:\n{counters}");
    }
    Ok(())
}
