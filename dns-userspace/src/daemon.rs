//! `xdns run`: wires source → model → sinks and runs until SIGTERM or Ctrl-C.
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use dns_userspace::{
    answer::server::{self, Swap, Zone},
    dataplane::{
        discover::{LinkEvents, Pattern, CNI_PATTERNS},
        kernel::{Change, Kernel},
        links::Outcome,
    },
    forward::loopdetect::LoopProbe,
    model::{view::ClusterView, PodMode, Records, ZoneConfig},
    node::{local_iface, notrack},
    ops::{self, health::Readiness, metrics::Metrics},
    source::{kube as kube_source, manifests},
};
use tokio::sync::Notify;

use crate::cli::RunArgs;

/// Where the cluster view comes from.
enum Source {
    Manifests {
        dir: PathBuf,
        fingerprint: Option<(Option<std::time::SystemTime>, usize)>,
        /// The next poll, kept across cancellations so other events cannot postpone it.
        next_poll: Option<Instant>,
    },
    Kube {
        stores: Box<kube_source::Stores>,
        changed: Arc<Notify>,
        /// When a change was seen and not yet taken: kept across cancellations (the main
        /// loop's select drops `next` whenever another branch fires), so a notification
        /// consumed mid-coalescing is never lost.
        pending: Option<Instant>,
    },
}

impl Source {
    async fn new(args: &RunArgs, cfg: &ZoneConfig) -> anyhow::Result<Self> {
        Ok(match (&args.manifests, &args.kubeconfig, args.in_cluster) {
            (Some(dir), None, false) => Source::Manifests {
                dir: dir.clone(),
                fingerprint: None,
                next_poll: None,
            },
            (None, kubeconfig, _) if kubeconfig.is_some() || args.in_cluster => {
                let limits = kube_source::ApiLimits {
                    qps: args.kube_api_qps,
                    burst: args.kube_api_burst,
                };
                let client = kube_source::client(kubeconfig.as_deref(), limits).await?;
                let changed = Arc::new(Notify::new());
                let stores = Box::new(kube_source::Stores::start(
                    client,
                    cfg.pods == PodMode::Verified,
                    changed.clone(),
                ));
                Source::Kube {
                    stores,
                    changed,
                    pending: None,
                }
            }
            _ => {
                bail!("give exactly one source: --manifests DIR, --kubeconfig FILE or --in-cluster")
            }
        })
    }

    /// The first complete view: the manifests as read, or the API once every kind has had
    /// its first full list.
    async fn first(&mut self) -> anyhow::Result<ClusterView> {
        match self {
            Source::Manifests {
                dir, fingerprint, ..
            } => {
                // Taken before reading, so a change made while reading is seen next time.
                *fingerprint = manifests::fingerprint(dir).ok();
                Ok(manifests::load_dir(dir)?)
            }
            Source::Kube { stores, .. } => {
                stores.wait_synced().await;
                Ok(stores.view())
            }
        }
    }

    /// Waits for the next change and returns the new view and when the change was seen;
    /// `None` when nothing usable changed (a rejected manifest keeps the last good view).
    async fn next(&mut self) -> anyhow::Result<Option<(ClusterView, Instant)>> {
        match self {
            Source::Manifests {
                dir,
                fingerprint,
                next_poll,
            } => {
                let at = *next_poll.get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
                tokio::time::sleep_until(at.into()).await;
                *next_poll = None;
                let now = manifests::fingerprint(dir).ok();
                if now == *fingerprint {
                    return Ok(None);
                }
                let seen = Instant::now();
                *fingerprint = now;
                match manifests::load_dir(dir) {
                    Ok(v) => Ok(Some((v, seen))),
                    Err(e) => {
                        tracing::error!(error = %e, "manifests rejected; the last good records keep serving");
                        Ok(None)
                    }
                }
            }
            Source::Kube {
                stores,
                changed,
                pending,
            } => {
                let seen = match *pending {
                    Some(t) => t,
                    None => {
                        changed.notified().await;
                        *pending.insert(Instant::now())
                    }
                };
                // Coalesce a burst of events (a relist, a rollout) into one rebuild.
                tokio::time::sleep_until((seen + Duration::from_millis(20)).into()).await;
                *pending = None;
                let t = Instant::now();
                let view = stores.view();
                tracing::debug!(view_ms = t.elapsed().as_secs_f64() * 1e3, "view taken");
                Ok(Some((view, seen)))
            }
        }
    }
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
        println!("{c}");
    }
}

/// Makes every sink serve `records`: kernel maps first, then userspace.
fn publish(zone: &Zone, kernel: Option<&mut Kernel>, records: Records, nxdomain: bool) {
    let t = Instant::now();
    if let Some(k) = kernel {
        match k
            .maps
            .publish(&records.kernel_view(), nxdomain && records.synced)
        {
            Ok(stats) => tracing::info!(
                ?stats,
                sync_ms = t.elapsed().as_secs_f64() * 1e3,
                "kernel records in sync"
            ),
            Err(e) => tracing::error!(error = %e, "kernel map sync failed"),
        }
    }
    tracing::info!(
        records = records.len(),
        serial = records.serial,
        "zone updated"
    );
    zone.set(records);
}

/// The interface patterns, with `cni` standing for the common CNIs' prefixes.
fn patterns(args: &RunArgs) -> Vec<Pattern> {
    let mut out = Vec::new();
    for p in &args.iface_patterns {
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
    if args.listen.is_empty() && args.accelerate.is_empty() {
        bail!("nothing to serve: give --listen ADDR (node-local) and/or --accelerate ADDR (in front of CoreDNS)");
    }
    if args.no_kernel
        && (!args.accelerate.is_empty()
            || !args.ifaces.is_empty()
            || !args.iface_patterns.is_empty())
    {
        bail!("--accelerate, --iface and --iface-pattern need the kernel path; drop --no-kernel");
    }
    let mut node = NodeChanges::default();
    let result = serve(flags, args, &mut node).await;
    node.undo().await;
    result
}

async fn serve(flags: RunArgs, args: RunArgs, node: &mut NodeChanges) -> anyhow::Result<()> {
    let mut cfg = args.zone_config()?;
    let mut source = Source::new(&args, &cfg).await?;

    if let Some(name) = &args.local_iface {
        let l = local_iface::ensure(name, &args.listen)
            .await
            .with_context(|| format!("putting the --listen addresses on {name}"))?;
        tracing::info!(iface = l.iface, addrs = ?args.listen, "node-local addresses in place");
        node.local = Some(l);
    }
    if args.notrack {
        notrack::install(&args.listen, args.port).context("--notrack")?;
        node.notrack = true;
        tracing::info!(table = notrack::TABLE, "NOTRACK rules installed");
    }

    let mut kernel = None;
    if !args.no_kernel {
        let mut k = Kernel::load(
            &args.pin_dir,
            &args.served_addrs(),
            args.ifaces.clone(),
            patterns(&args),
            args.attach,
        )
        .context("loading the kernel path")?;
        k.maps
            .set_fresh_for(Duration::from_secs(args.stale_after.max(1)));
        for (prog, n) in k.verified_insns() {
            tracing::info!(program = prog, verified_insns = n, "loaded");
        }
        kernel = Some(k);
    }

    // Until the first full view, the zone answers SERVFAIL, never a false NXDOMAIN.
    let zone = Zone::new(Records::unsynced(&cfg));
    let metrics = Arc::new(Metrics::new(
        (!args.no_kernel).then(|| args.pin_dir.clone()),
    ));
    // Accelerator only (nothing to listen on): no misses reach us, so nothing to forward.
    let resolver = if args.listen.is_empty() {
        None
    } else {
        args.resolver(&metrics)?.map(Arc::new)
    };
    if let Some(r) = &resolver {
        r.spawn_health_checks();
    }
    let probe = resolver.as_ref().map(|_| Arc::new(LoopProbe::new()));
    let handler = server::Handler {
        zone: zone.clone(),
        resolver: Swap::new(resolver.clone()),
        probe: probe.clone(),
        log_queries: Arc::new(args.log_queries.into()),
        metrics: metrics.clone(),
    };
    let mut servers = Vec::new();
    for ip in &args.listen {
        let addr = SocketAddr::new(*ip, args.port);
        // Bind before going on, so a failure is a start-up error.
        let udp = std::net::UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
        drop(udp);
        servers.push(tokio::spawn(server::serve(addr, handler.clone())));
        tracing::info!(%addr, "serving udp and tcp");
    }

    let readiness = Readiness::default();
    {
        let (h, r) = (args.health_addr, args.ready_addr);
        // Bind now, so a taken port is a start-up error, not a silent missing probe.
        drop(std::net::TcpListener::bind(h).with_context(|| format!("binding {h}"))?);
        if r != h {
            drop(std::net::TcpListener::bind(r).with_context(|| format!("binding {r}"))?);
        }
        let rd = readiness.clone();
        servers.push(tokio::spawn(
            async move { ops::health::serve(h, r, rd).await },
        ));
        let (m, maddr) = (metrics.clone(), args.metrics_addr);
        drop(std::net::TcpListener::bind(maddr).with_context(|| format!("binding {maddr}"))?);
        servers.push(tokio::spawn(
            async move { ops::metrics::serve(maddr, m).await },
        ));
    }

    if let (Some(r), Some(p), false) = (&resolver, &probe, args.listen.is_empty()) {
        if p.run(&r.forwarder).await {
            bail!(
                "forwarding loop: a query sent to the upstreams came back to this server; \
                 an upstream forwards to us (check --upstream / {})",
                args.resolv_conf.display()
            );
        }
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let startup = tokio::time::sleep(Duration::from_secs(args.startup_timeout));
    tokio::pin!(startup);
    let mut warned = false;
    let mut view = loop {
        tokio::select! {
            v = source.first() => break v?,
            _ = &mut startup, if !warned => {
                warned = true;
                tracing::warn!(
                    seconds = args.startup_timeout,
                    "no full view yet (startup timeout); the zone answers SERVFAIL until there is one"
                );
            }
            _ = tokio::signal::ctrl_c() => return finish(kernel, &args),
            _ = term.recv() => return finish(kernel, &args),
        }
    };
    tracing::info!(
        services = view.services.len(),
        slices = view.slices.len(),
        namespaces = view.namespaces.len(),
        pods = view.pods.len(),
        "first full view"
    );
    publish(
        &zone,
        kernel.as_mut(),
        Records::build(&cfg, &view),
        !args.no_kernel_nxdomain,
    );
    // The kernel path goes on (or takes over from the last daemon's program) only once its
    // maps hold the whole zone.
    let mut events = None;
    if let Some(k) = kernel.as_mut() {
        // Subscribed before the first scan, so no interface slips between the two.
        events = Some(LinkEvents::subscribe().context("subscribing to link events")?);
        report(k.attach_all()?);
    }
    readiness.set(true);
    println!("ready");

    let mut live = args.clone();
    let mut config_stamp = config_fingerprint(&flags);
    // A backstop for events lost to a full netlink socket buffer.
    let mut rescan = tokio::time::interval(Duration::from_secs(10));
    let mut config_tick = tokio::time::interval(Duration::from_secs(1));
    let mut heartbeat =
        tokio::time::interval(Duration::from_secs(args.stale_after.max(1)).div_f64(6.0));
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
                if let Some(new_cfg) = reload(&flags, &mut live, &handler, &metrics) {
                    if new_cfg != cfg {
                        cfg = new_cfg;
                        publish(&zone, kernel.as_mut(), Records::build(&cfg, &view), !args.no_kernel_nxdomain);
                    }
                    println!("config reloaded");
                }
                continue;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => {
                // CoreDNS `health { lameduck }`: not ready at once, so the Service stops
                // sending queries, but alive and answering for a while longer.
                readiness.set(false);
                if live.lameduck_secs > 0 {
                    tracing::info!(seconds = live.lameduck_secs, "SIGTERM: lameduck");
                    tokio::time::sleep(Duration::from_secs(live.lameduck_secs)).await;
                }
                break;
            }
            v = source.next() => v?,
        };
        if servers.iter().any(|s| s.is_finished()) {
            bail!("a listener stopped");
        }
        if let Some((v, seen)) = next {
            let t = Instant::now();
            let records = Records::build(&cfg, &v);
            tracing::debug!(build_ms = t.elapsed().as_secs_f64() * 1e3, "zone built");
            publish(&zone, kernel.as_mut(), records, !args.no_kernel_nxdomain);
            metrics.programmed(seen.elapsed());
            view = v;
        }
    }
    finish(kernel, &live)
}

/// When the config file last changed (and its size): polled, as a ConfigMap mount updates
/// by swapping a symlink that inotify on the file would not see.
fn config_fingerprint(flags: &RunArgs) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(flags.config.as_ref()?).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Applies a changed config file: the resolver, query log and zone options change in place;
/// node settings wait for a restart. A bad file changes nothing. Returns the zone config to
/// serve, if the file was good.
fn reload(
    flags: &RunArgs,
    live: &mut RunArgs,
    handler: &server::Handler,
    metrics: &Arc<Metrics>,
) -> Option<ZoneConfig> {
    let rejected = |e: anyhow::Error| {
        tracing::error!(
            error = format!("{e:#}"),
            "config rejected; the running config stays"
        );
        metrics.reload_failed();
        println!("config rejected: {e:#}");
    };
    let new = match flags.effective() {
        Ok(a) => a,
        Err(e) => {
            rejected(e);
            return None;
        }
    };
    if new.forwarding() != live.forwarding() {
        match new.resolver(metrics) {
            Ok(r) => {
                let r = r.map(Arc::new);
                if let Some(r) = &r {
                    r.spawn_health_checks();
                }
                handler.resolver.set(r);
                tracing::info!("forwarding and cache reconfigured");
            }
            Err(e) => {
                rejected(e);
                return None;
            }
        }
    }
    if new.restart_only() != live.restart_only() {
        tracing::warn!(
            "the config changes node settings (addresses, interfaces, attach mode, ports, pin \
             folder); they take effect at the next restart"
        );
    }
    handler
        .log_queries
        .store(new.log_queries, Ordering::Relaxed);
    let running = std::mem::replace(live, new);
    live.keep_restart_only(&running);
    match live.zone_config() {
        Ok(cfg) => {
            tracing::info!("config reloaded");
            Some(cfg)
        }
        Err(e) => {
            rejected(e);
            None
        }
    }
}

/// Leaves the kernel path pinned (or detaches it with `--detach-on-exit`) and prints its
/// counters.
fn finish(kernel: Option<Kernel>, args: &RunArgs) -> anyhow::Result<()> {
    if let Some(k) = kernel {
        let counters = k.counters()?;
        if args.detach_on_exit {
            tracing::info!("detaching and removing the pins");
        } else {
            tracing::info!(
                "the pinned links keep answering from the pinned maps until the next daemon takes over"
            );
        }
        k.finish(args.detach_on_exit, &args.pin_dir);
        println!("kernel path counters:\n{counters}");
    }
    Ok(())
}
