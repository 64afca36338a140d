//! `xdns`: the daemon's command line.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use dns_userspace::{
    answer::server::{self, Zone},
    dataplane::{self, attach::AttachMode, maps::KernelMaps},
    model::{selector::Selector, PodMode, Records, ZoneConfig},
    source::manifests,
};

#[derive(Parser)]
#[command(name = "xdns", version, about = "Cluster DNS answered in the kernel")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run(RunArgs),
    /// Print the kernel path's counters from the pinned map.
    Counters {
        #[arg(long, default_value = "/sys/fs/bpf/xdns")]
        pin_dir: PathBuf,
    },
}

#[derive(Parser)]
struct RunArgs {
    /// Directory of Service manifests (YAML/JSON as `kubectl get -o yaml` prints them).
    #[arg(long)]
    manifests: PathBuf,
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
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    attach: AttachMode,
    /// bpffs folder for the pinned maps (mounted if there is no bpffs).
    #[arg(long, default_value = "/sys/fs/bpf/xdns")]
    pin_dir: PathBuf,
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
        Ok(cfg)
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().cmd {
        Cmd::Run(args) => tokio::runtime::Runtime::new()?.block_on(run(args)),
        Cmd::Counters { pin_dir } => {
            let c = dataplane::maps::pinned_counters(&pin_dir)
                .with_context(|| format!("reading counters under {}", pin_dir.display()))?;
            print!("{c}");
            Ok(())
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let cfg = args.zone_config()?;
    // Taken before reading, so a change made while reading is seen on the next tick.
    let mut fingerprint = manifests::fingerprint(&args.manifests).ok();
    let view = manifests::load_dir(&args.manifests)?;
    let records = Records::build(&cfg, &view);
    tracing::info!(
        services = view.services.len(),
        slices = view.slices.len(),
        namespaces = view.namespaces.len(),
        "loaded manifests"
    );

    let mut kernel = None;
    if !args.no_kernel {
        let mut ebpf = dataplane::load(Some(&args.pin_dir)).context("loading the kernel path")?;
        for (prog, n) in dataplane::verified_insns(&ebpf) {
            tracing::info!(program = prog, verified_insns = n, "loaded");
        }
        let mut maps = KernelMaps::take(&mut ebpf)?;
        maps.sync_service_addrs(&args.listen)?;
        let stats = maps.sync_records(&records.kernel_a())?;
        tracing::info!(?stats, "kernel records in sync");
        for iface in &args.ifaces {
            let mode = dataplane::attach::attach(&mut ebpf, iface, args.attach)?;
            tracing::info!(iface, %mode, "attached");
            // One line per interface on stdout, for scripts and tests.
            println!("attached {iface} {mode}");
        }
        kernel = Some((ebpf, maps));
    } else if !args.ifaces.is_empty() {
        bail!("--iface needs the kernel path; drop --no-kernel");
    }

    let zone = Zone::new(records);
    let mut servers = Vec::new();
    for ip in &args.listen {
        let addr = SocketAddr::new(*ip, args.port);
        // Bind before reporting ready, so a failure is a start-up error.
        let udp = std::net::UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
        drop(udp);
        servers.push(tokio::spawn(server::serve(addr, zone.clone())));
        tracing::info!(%addr, "serving udp and tcp");
    }
    println!("ready");

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {}
        }
        if servers.iter().any(|s| s.is_finished()) {
            bail!("a listener stopped");
        }
        let now = manifests::fingerprint(&args.manifests).ok();
        if now == fingerprint {
            continue;
        }
        fingerprint = now;
        match manifests::load_dir(&args.manifests) {
            Ok(view) => {
                let records = Records::build(&cfg, &view);
                if let Some((_, maps)) = kernel.as_mut() {
                    match maps.sync_records(&records.kernel_a()) {
                        Ok(stats) => tracing::info!(?stats, "kernel records in sync"),
                        Err(e) => tracing::error!(error = %e, "kernel map sync failed"),
                    }
                }
                let records_len = records.len();
                zone.set(records);
                tracing::info!(
                    services = view.services.len(),
                    records = records_len,
                    "reloaded manifests"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "manifests rejected; the last good records keep serving")
            }
        }
    }

    if let Some((ebpf, maps)) = kernel {
        let counters = maps.counters()?;
        // Dropping the object detaches every program; the pinned maps stay.
        drop(ebpf);
        println!("kernel path counters:\n{counters}");
    }
    Ok(())
}
