//! `xdns run`: wires source → model → sinks and runs until SIGTERM or Ctrl-C.
use std::{
    net::SocketAddr,
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
    forward::loopdetect::LoopProbe,
    model::{live::LiveZone, Records, ZoneConfig},
    node::{local_iface, notrack},
    ops::{self, health::Readiness, metrics::Metrics},
    source::Source,
};
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use dns_userspace::node::settings::NodeSettings;

use dns_userspace::settings::Settings;

use crate::cli::RunArgs;

/// A line on stdout for whoever runs the daemon (tests wait on them); a closed stdout (the
/// reader gone) loses the line, never the daemon: `println!` would panic on EPIPE.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod privilege;
mod running;
mod sinks;

use running::{release_freed_memory, Running};
use sinks::{sync_served, sync_upstreams, Sinks};

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

/// Loads the kernel path on the pins this daemon holds (not attached yet). The verifier
/// takes most of a second of CPU for the main programs, so it runs on a blocking thread:
/// the listeners answer meanwhile (a restart after kill -9 serves userspace within a
/// stub's retry, not after the load).
async fn load_kernel(
    pins: bpffs::PinLock,
    node: &NodeSettings,
    log_queries: &Arc<AtomicBool>,
) -> anyhow::Result<Kernel> {
    let loading = start_kernel_load(pins, node);
    kernel_loaded(loading, node, log_queries).await
}

/// The load, started on a blocking thread; [`kernel_loaded`] waits for it.
fn start_kernel_load(
    pins: bpffs::PinLock,
    node: &NodeSettings,
) -> tokio::task::JoinHandle<anyhow::Result<Kernel>> {
    let node = node.clone();
    tokio::task::spawn_blocking(move || {
        let k = Kernel::load(
            pins,
            &node.pin_dir,
            &node.served_addrs(),
            node.ifaces.clone(),
            patterns(&node),
            node.attach,
            node.kernel_records_max,
        )
        .map_err(|e| {
            let e = anyhow::Error::new(e);
            // EPERM: a privilege (capability, seccomp), not a bug; say which.
            match format!("{e:#}").contains("os error 1)") {
                true => e.context(privilege::privilege_hint()),
                false => e,
            }
        })
        .context("loading the kernel path")?;
        Ok(k)
    })
}

/// The kernel path once its load is done, with its freshness and query log set.
async fn kernel_loaded(
    loading: tokio::task::JoinHandle<anyhow::Result<Kernel>>,
    node: &NodeSettings,
    log_queries: &Arc<AtomicBool>,
) -> anyhow::Result<Kernel> {
    let mut k = loading.await.context("the kernel path's load")??;
    k.maps
        .set_fresh_for(node.stale_after.max(Duration::from_secs(1)));
    for (prog, n) in k.verified_insns() {
        tracing::info!(program = prog, verified_insns = n, "loaded");
    }
    if node.log_kernel_sample > 0 {
        k.maps.set_log_sample(node.log_kernel_sample);
        let ring = k.take_log().context("the kernel answers' log ring")?;
        tokio::spawn(dataplane::kernel_log::run(ring, log_queries.clone()));
    }
    Ok(k)
}

/// The interface patterns, with `cni` standing for the common CNIs' prefixes.
fn patterns(node: &NodeSettings) -> Vec<Pattern> {
    let mut out = Vec::new();
    for p in &node.iface_patterns {
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
fn take_pins(node: &NodeSettings) -> anyhow::Result<(Option<bpffs::PinLock>, Option<Instant>)> {
    if node.no_kernel {
        return Ok((None, None));
    }
    match bpffs::lock(&node.pin_dir) {
        Ok(l) => Ok((Some(l), None)),
        Err(dataplane::Error::PinsInUse(_)) if !node.pin_wait.is_zero() => {
            tracing::info!(
                seconds = node.pin_wait.as_secs_f64(),
                "another daemon holds the pins: serving userspace, taking the kernel path \
                 over when it exits"
            );
            Ok((None, Some(Instant::now() + node.pin_wait)))
        }
        Err(e) => Err(e.into()),
    }
}

/// The node-local addresses and the NOTRACK rules, as asked; noted in `changes` so they
/// are undone on the way out.
async fn prepare_node(node: &NodeSettings, changes: &mut NodeChanges) -> anyhow::Result<()> {
    if let Some(name) = &node.local_iface {
        let l = local_iface::ensure(name, &node.listen)
            .await
            .with_context(|| format!("putting the --listen addresses on {name}"))?;
        tracing::info!(iface = l.iface, addrs = ?node.listen, "node-local addresses in place");
        changes.local = Some(l);
    }
    if node.notrack {
        notrack::install(&node.listen, node.port).context("--notrack")?;
        changes.notrack = true;
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
    node: &NodeSettings,
    handler: &server::Handler,
    listeners: &Supervisor,
) -> anyhow::Result<()> {
    for ip in &node.listen {
        let addr = SocketAddr::new(*ip, node.port);
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
    node: &NodeSettings,
    metrics: &Arc<Metrics>,
    listeners: &Supervisor,
) -> anyhow::Result<()> {
    let (h, r) = (node.health_addr, node.ready_addr);
    drop(ops::http::listen(h).with_context(|| format!("binding {h}"))?);
    if r != h {
        drop(ops::http::listen(r).with_context(|| format!("binding {r}"))?);
    }
    let rd = listeners.readiness.clone();
    listeners.watch(
        format!("health listener {h}"),
        Box::pin(async move { ops::health::serve(h, r, rd).await }),
    );
    let (m, maddr) = (metrics.clone(), node.metrics_addr);
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
    startup_timeout: Duration,
    cfg: &ZoneConfig,
    source: &mut Source,
    term: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<Option<LiveZone>> {
    let startup = tokio::time::sleep(startup_timeout);
    tokio::pin!(startup);
    let mut warned = false;
    let first = loop {
        tokio::select! {
            v = source.first() => break v?,
            _ = &mut startup, if !warned => {
                warned = true;
                tracing::warn!(
                    seconds = startup_timeout.as_secs_f64(),
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
    let (pins, pins_wanted_until) = take_pins(&args.node)?;
    let cfg = args.zone_config()?;
    let mut source = args.source.open(&cfg).await?;
    prepare_node(&args.node, node).await?;

    // The query log's switch, shared by the answer path and the kernel answers' reader.
    let log_queries = Arc::new(AtomicBool::new(args.ops.log_queries));
    let loading = pins.map(|p| start_kernel_load(p, &args.node));

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
    let (down_tx, down_rx) = mpsc::unbounded_channel::<String>();
    let listeners = Supervisor {
        readiness: readiness.clone(),
        down: down_tx,
    };
    serve_dns(&args.node, &handler, &listeners)?;
    if let Some(h) = source.health() {
        let grace = args.source.watch_failing_after;
        readiness.check(Arc::new(move || h.problem(grace)));
    }
    serve_ops(&args.node, &metrics, &listeners)?;

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
    let startup = args.zone.startup_timeout;
    let first = first_view(startup, &cfg, &mut source, &mut term).await?;
    let mut sinks = Sinks {
        nxdomain: !args.node.no_kernel_nxdomain,
        needs_full: false,
        degraded: Arc::new(AtomicBool::new(false)),
        held,
        retired: None,
    };
    // Userspace answers the view at once; the kernel path, still loading perhaps, after.
    if let Some(live) = &first {
        sinks.publish_zone(&zone, live);
    }
    let mut kernel = match loading {
        Some(l) => Some(kernel_loaded(l, &args.node, &log_queries).await?),
        None => None,
    };
    let Some(live) = first else {
        return finish(kernel, &args);
    };
    let degraded = sinks.degraded.clone();
    readiness.check(Arc::new(move || {
        degraded
            .load(Ordering::SeqCst)
            .then(|| "kernel maps degraded: every query passes to userspace".to_owned())
    }));
    if let Some(k) = kernel.as_mut() {
        sinks.publish_kernel_full(k, &live);
    }
    let mut served = Vec::new();
    sync_served(&args.node, &live, kernel.as_mut(), &mut served);
    let mut upstreams = None;
    sync_upstreams(&args.forward, &live, &handler, &mut upstreams);
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
    let running = Running {
        flags,
        settings: args.clone(),
        cfg,
        source,
        live,
        zone,
        kernel,
        sinks,
        handler,
        metrics,
        log_queries,
        readiness,
        served,
        upstreams,
        events,
        pins_wanted_until,
        node_changed: node.local.is_some() || node.notrack,
        since_trim: 0,
    };
    running.run(down_rx, term).await
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
