//! `xdns`: the daemon's command line.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use dns_userspace::{
    answer::{
        resolve::Resolver,
        server::{self, Zone},
    },
    dataplane::{
        self,
        attach::AttachMode,
        discover::{LinkEvents, Pattern},
        kernel::{Change, Kernel},
        links::Outcome,
    },
    forward::{cache, exchange, loopdetect::LoopProbe, stubs, Cache, Forwarder, Policy, Upstreams},
    model::view::ClusterView,
    model::{selector::Selector, PodMode, Records, ZoneConfig},
    ops::{self, health::Readiness, metrics::Metrics},
    source::kube as kube_source,
    source::manifests,
};
use tokio::sync::Notify;

#[derive(Parser)]
#[command(name = "xdns", version, about = "Cluster DNS answered in the kernel")]
struct Cli {
    /// Log as JSON lines (one object per event) instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run(Box<RunArgs>),
    /// Print the kernel path's counters from the pinned map.
    Counters {
        #[arg(long, default_value = "/sys/fs/bpf/xdns")]
        pin_dir: PathBuf,
    },
}

#[derive(Parser)]
struct RunArgs {
    /// Directory of manifests (Services, EndpointSlices, Namespaces, Pods; YAML or JSON as
    /// `kubectl get -o yaml` prints them), re-read when it changes.
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// Watch the Kubernetes API with this kubeconfig.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Watch the Kubernetes API with the pod's service account.
    #[arg(long)]
    in_cluster: bool,
    /// Client-side limit on API requests per second (0: none).
    #[arg(long, default_value_t = 0.0)]
    kube_api_qps: f64,
    /// Requests allowed at once above the QPS limit.
    #[arg(long, default_value_t = 10)]
    kube_api_burst: u32,
    /// Forward names outside the zone to these upstreams (IP or IP:port; repeatable).
    #[arg(long = "upstream")]
    upstreams: Vec<String>,
    /// Without --upstream: the nameservers of this resolv.conf (CoreDNS `forward .
    /// /etc/resolv.conf`).
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// A stub domain: names under DOMAIN go to these upstreams (DOMAIN=IP[:PORT],...;
    /// repeatable).
    #[arg(long = "stub")]
    stubs: Vec<String>,
    /// Import `stubDomains` and `upstreamNameservers` from a kube-dns ConfigMap (YAML).
    #[arg(long)]
    kube_dns_configmap: Option<PathBuf>,
    /// Log one line per query (client, name, type, rcode, microseconds, path).
    #[arg(long)]
    log_queries: bool,
    /// Keep address records in their order instead of rotating them per answer (CoreDNS
    /// `loadbalance`, on by default as in the seed Corefile).
    #[arg(long)]
    no_loadbalance: bool,
    /// Answer REFUSED outside the zone instead of forwarding.
    #[arg(long)]
    no_forward: bool,
    /// Which upstream first.
    #[arg(long, value_enum, default_value_t = Policy::Random)]
    policy: Policy,
    /// Upstream queries in flight at most; REFUSED past it.
    #[arg(long, default_value_t = 1000)]
    max_concurrent: usize,
    /// Always TCP to upstreams.
    #[arg(long)]
    force_tcp: bool,
    /// Keep truncated UDP answers from upstreams instead of retrying over TCP.
    #[arg(long)]
    prefer_udp: bool,
    /// Read timeout per upstream try, milliseconds.
    #[arg(long, default_value_t = 2000)]
    forward_timeout_ms: u64,
    /// Longest time an upstream answer is cached, seconds (CoreDNS `cache 30`).
    #[arg(long, default_value_t = 30)]
    cache_ttl: u32,
    /// Shortest time an upstream answer is cached, seconds.
    #[arg(long, default_value_t = 5)]
    cache_min_ttl: u32,
    /// Cached answers at most.
    #[arg(long, default_value_t = 10000)]
    cache_size: usize,
    /// Refresh an answer in the background once it has been hit this many times and has
    /// less than --prefetch-percent of its TTL left (CoreDNS `prefetch`; 0: never).
    #[arg(long, default_value_t = 0)]
    prefetch: u32,
    #[arg(long, default_value_t = 10)]
    prefetch_percent: u32,
    /// Serve expired answers for up to this many seconds while every upstream fails
    /// (RFC 8767; 0: never).
    #[arg(long, default_value_t = 0)]
    serve_stale: u64,
    /// On SIGTERM: not ready at once, still answering (and `/health` 200) for this many
    /// seconds, then exit (CoreDNS `health { lameduck 5s }`; the DaemonSet sets 5).
    #[arg(long, default_value_t = 0)]
    lameduck_secs: u64,
    /// Where `/metrics` (Prometheus, CoreDNS names) is served.
    #[arg(long, default_value = "0.0.0.0:9153")]
    metrics_addr: SocketAddr,
    /// Where `/health` is served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    health_addr: SocketAddr,
    /// Where `/ready` is served: ready once the zone is synced and the kernel path attached.
    #[arg(long, default_value = "0.0.0.0:8181")]
    ready_addr: SocketAddr,
    /// Warn (and stay not ready) if the API has not synced after this many seconds; the
    /// zone answers SERVFAIL until it has (CoreDNS `startup_timeout`).
    #[arg(long, default_value_t = 5)]
    startup_timeout: u64,
    /// The cluster zone.
    #[arg(long, default_value = "cluster.local")]
    zone: String,
    /// TTL of the zone's records, seconds.
    #[arg(long, default_value_t = 30)]
    ttl: u32,
    /// Service addresses: the kernel answers queries sent to them, userspace listens on them.
    #[arg(long = "listen", required = true)]
    listen: Vec<IpAddr>,
    #[arg(long, default_value_t = 53)]
    port: u16,
    /// Interfaces to attach the kernel path to.
    #[arg(long = "iface")]
    ifaces: Vec<String>,
    /// Also every interface whose name matches (`veth*`, `cali*`, `lxc*`...), attached as it
    /// appears (rtnetlink link events) and forgotten as it goes; repeatable.
    #[arg(long = "iface-pattern")]
    iface_patterns: Vec<String>,
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    attach: AttachMode,
    /// bpffs folder for the pinned maps (mounted if there is no bpffs).
    #[arg(long, default_value = "/sys/fs/bpf/xdns")]
    pin_dir: PathBuf,
    /// On exit, detach from every interface and remove the pins (for an uninstall). Without
    /// it the pinned programs keep answering until the next daemon adopts them.
    #[arg(long)]
    detach_on_exit: bool,
    /// Serve from userspace only: load no kernel program.
    #[arg(long)]
    no_kernel: bool,
    /// Pod records (CoreDNS `pods`).
    #[arg(long, value_enum, default_value_t = PodMode::Insecure)]
    pods: PodMode,
    /// Serve only these namespaces (CoreDNS `namespaces`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Serve only services matching this label selector (CoreDNS `labels`).
    #[arg(long, default_value = "")]
    labels: String,
    /// Serve only namespaces matching this label selector (CoreDNS `namespace_labels`).
    #[arg(long, default_value = "")]
    namespace_labels: String,
    /// Name endpoints without a hostname by their pod (CoreDNS `endpoint_pod_names`).
    #[arg(long)]
    endpoint_pod_names: bool,
    /// No endpoint records (CoreDNS `noendpoints`).
    #[arg(long)]
    noendpoints: bool,
    /// NXDOMAIN for ClusterIP services without ready endpoints (CoreDNS `ignore empty_service`).
    #[arg(long)]
    ignore_empty_service: bool,
}

impl RunArgs {
    /// The resolver for names outside the zone, unless forwarding is off.
    fn resolver(&self, metrics: &Arc<Metrics>) -> anyhow::Result<Option<Resolver>> {
        if self.no_forward {
            return Ok(None);
        }
        let mut stub_list = Vec::new();
        for spec in &self.stubs {
            stub_list.push(stubs::parse_stub(spec).context("--stub")?);
        }
        let mut imported_upstreams = Vec::new();
        if let Some(path) = &self.kube_dns_configmap {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let cm = stubs::import_kube_dns(&path.display().to_string(), &text)?;
            stub_list.extend(cm.stubs);
            imported_upstreams = cm.upstreams;
        }
        let upstreams = if !imported_upstreams.is_empty() && self.upstreams.is_empty() {
            Upstreams::new(imported_upstreams)?
        } else if self.upstreams.is_empty() {
            Upstreams::from_resolv_conf(&self.resolv_conf)?
        } else {
            let mut list = Vec::new();
            for u in &self.upstreams {
                let addr = u
                    .parse::<SocketAddr>()
                    .or_else(|_| u.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| anyhow::anyhow!("--upstream `{u}`: not an IP or IP:port"))?;
                list.push(addr);
            }
            Upstreams::new(list)?
        };
        tracing::info!(upstreams = ?upstreams.0, policy = ?self.policy, "forwarding");
        let options = || exchange::Options {
            policy: self.policy,
            timeout: Duration::from_millis(self.forward_timeout_ms),
            max_concurrent: self.max_concurrent,
            force_tcp: self.force_tcp,
            prefer_udp: self.prefer_udp,
        };
        let forwarder = Arc::new(Forwarder::new(upstreams, options()));
        let mut stub_forwarders = Vec::new();
        for s in stub_list {
            tracing::info!(domain = ?s.domain, upstreams = ?s.upstreams, "stub domain");
            let f = Forwarder::new(Upstreams::new(s.upstreams)?, options());
            stub_forwarders.push((s.domain, Arc::new(f)));
        }
        let cache = Cache::new(cache::Options {
            max_ttl: self.cache_ttl,
            min_ttl: self.cache_min_ttl,
            capacity: self.cache_size,
            stale_for: Duration::from_secs(self.serve_stale),
            prefetch_hits: self.prefetch,
            prefetch_percent: self.prefetch_percent,
        });
        Ok(Some(Resolver {
            forwarder,
            stubs: stub_forwarders,
            cache,
            loadbalance: !self.no_loadbalance,
            metrics: metrics.clone(),
        }))
    }

    fn zone_config(&self) -> anyhow::Result<ZoneConfig> {
        let mut cfg = ZoneConfig::new(&self.zone, self.ttl).context("--zone")?;
        cfg.pods = self.pods;
        cfg.namespaces = self.namespaces.clone();
        cfg.labels = Selector::parse(&self.labels).context("--labels")?;
        cfg.namespace_labels =
            Selector::parse(&self.namespace_labels).context("--namespace-labels")?;
        cfg.endpoint_pod_names = self.endpoint_pod_names;
        cfg.noendpoints = self.noendpoints;
        cfg.ignore_empty_service = self.ignore_empty_service;
        cfg.ns_addrs = self.listen.clone();
        cfg.loadbalance = !self.no_loadbalance;
        Ok(cfg)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        fmt.json().init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    match cli.cmd {
        Cmd::Run(args) => tokio::runtime::Runtime::new()?.block_on(run(*args)),
        Cmd::Counters { pin_dir } => {
            let c = dataplane::maps::pinned_counters(&pin_dir)
                .with_context(|| format!("reading counters under {}", pin_dir.display()))?;
            print!("{c}");
            Ok(())
        }
    }
}

/// Where the cluster view comes from.
enum Source {
    Manifests {
        dir: PathBuf,
        fingerprint: Option<(Option<std::time::SystemTime>, usize)>,
    },
    Kube {
        stores: Box<kube_source::Stores>,
        changed: Arc<Notify>,
    },
}

impl Source {
    /// The first complete view: the manifests as read, or the API once every kind has had
    /// its first full list.
    async fn first(&mut self) -> anyhow::Result<ClusterView> {
        match self {
            Source::Manifests { dir, fingerprint } => {
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

    /// Waits for the next change and returns the new view; `Ok(None)` when nothing usable
    /// changed (a rejected manifest keeps the last good view).
    async fn next(&mut self) -> anyhow::Result<Option<ClusterView>> {
        match self {
            Source::Manifests { dir, fingerprint } => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = manifests::fingerprint(dir).ok();
                if now == *fingerprint {
                    return Ok(None);
                }
                *fingerprint = now;
                match manifests::load_dir(dir) {
                    Ok(v) => Ok(Some(v)),
                    Err(e) => {
                        tracing::error!(error = %e, "manifests rejected; the last good records keep serving");
                        Ok(None)
                    }
                }
            }
            Source::Kube { stores, changed } => {
                changed.notified().await;
                // Coalesce a burst of events (a relist, a rollout) into one rebuild.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let t = std::time::Instant::now();
                let view = stores.view();
                tracing::debug!(view_ms = t.elapsed().as_secs_f64() * 1e3, "view taken");
                Ok(Some(view))
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
fn publish(zone: &Zone, kernel: Option<&mut Kernel>, records: Records) {
    let t = std::time::Instant::now();
    if let Some(k) = kernel {
        // The SOA before the records it describes.
        if let Err(e) = k.maps.set_zone(&records.kernel_zone()) {
            tracing::error!(error = %e, "kernel zone update failed");
        }
        match k.maps.sync_records(&records.kernel_records()) {
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

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let cfg = args.zone_config()?;
    let mut source = match (&args.manifests, &args.kubeconfig, args.in_cluster) {
        (Some(dir), None, false) => Source::Manifests {
            dir: dir.clone(),
            fingerprint: None,
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
            Source::Kube { stores, changed }
        }
        _ => bail!("give exactly one source: --manifests DIR, --kubeconfig FILE or --in-cluster"),
    };

    let mut kernel = None;
    if !args.no_kernel {
        let patterns = args
            .iface_patterns
            .iter()
            .map(|p| Pattern::new(p))
            .collect();
        let k = Kernel::load(
            &args.pin_dir,
            &args.listen,
            args.ifaces.clone(),
            patterns,
            args.attach,
        )
        .context("loading the kernel path")?;
        for (prog, n) in k.verified_insns() {
            tracing::info!(program = prog, verified_insns = n, "loaded");
        }
        kernel = Some(k);
    } else if !args.ifaces.is_empty() || !args.iface_patterns.is_empty() {
        bail!("--iface and --iface-pattern need the kernel path; drop --no-kernel");
    }

    // Until the first full view, the zone answers SERVFAIL, never a false NXDOMAIN.
    let zone = Zone::new(Records::unsynced(&cfg));
    let metrics = Arc::new(Metrics::new());
    let resolver = args.resolver(&metrics)?.map(Arc::new);
    if let Some(r) = &resolver {
        r.spawn_health_checks();
    }
    let probe = resolver.as_ref().map(|_| Arc::new(LoopProbe::new()));
    let handler = server::Handler {
        zone: zone.clone(),
        resolver: resolver.clone(),
        probe: probe.clone(),
        log_queries: args.log_queries,
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

    if let (Some(r), Some(p)) = (&resolver, &probe) {
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
    let first = loop {
        tokio::select! {
            v = source.first() => break v?,
            _ = &mut startup, if !warned => {
                warned = true;
                tracing::warn!(
                    seconds = args.startup_timeout,
                    "no full view yet (startup timeout); the zone answers SERVFAIL until there is one"
                );
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
        }
    };
    tracing::info!(
        services = first.services.len(),
        slices = first.slices.len(),
        namespaces = first.namespaces.len(),
        pods = first.pods.len(),
        "first full view"
    );
    publish(&zone, kernel.as_mut(), Records::build(&cfg, &first));
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

    // A backstop for events lost to a full netlink socket buffer.
    let mut rescan = tokio::time::interval(Duration::from_secs(10));
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
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => {
                // CoreDNS `health { lameduck }`: not ready at once, so the Service stops
                // sending queries, but alive and answering for a while longer.
                readiness.set(false);
                if args.lameduck_secs > 0 {
                    tracing::info!(seconds = args.lameduck_secs, "SIGTERM: lameduck");
                    tokio::time::sleep(Duration::from_secs(args.lameduck_secs)).await;
                }
                break;
            }
            v = source.next() => v?,
        };
        if servers.iter().any(|s| s.is_finished()) {
            bail!("a listener stopped");
        }
        if let Some(view) = next {
            let t = std::time::Instant::now();
            let records = Records::build(&cfg, &view);
            tracing::debug!(build_ms = t.elapsed().as_secs_f64() * 1e3, "zone built");
            publish(&zone, kernel.as_mut(), records);
        }
    }

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
