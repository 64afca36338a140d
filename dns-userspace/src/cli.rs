//! The `run` command line, and the configuration file laid over it.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use dns_userspace::{
    config::{self, FileConfig, ServiceRef},
    dataplane::attach::AttachMode,
    forward::resolve::Resolver,
    forward::{cache, exchange, stubs, Cache, Forwarder, Policy, Upstreams},
    model::{selector::Selector, PodMode, ZoneConfig},
    ops::metrics::Metrics,
    swap::Swap,
};

#[derive(Parser, Clone, Debug)]
pub struct RunArgs {
    /// Directory of manifests (Services, EndpointSlices, Namespaces, Pods; YAML or JSON as
    /// `kubectl get -o yaml` prints them), re-read when it changes.
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// Watch the Kubernetes API with this kubeconfig.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Watch the Kubernetes API with the pod's service account.
    #[arg(long)]
    pub in_cluster: bool,
    /// Client-side limit on API requests per second (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub kube_api_qps: f64,
    /// Requests allowed at once above the QPS limit.
    #[arg(long, default_value_t = 10)]
    pub kube_api_burst: u32,
    /// Forward names outside the zone to these upstreams (IP or IP:port; repeatable).
    #[arg(long = "upstream")]
    pub upstreams: Vec<String>,
    /// Without --upstream: the nameservers of this resolv.conf (CoreDNS `forward .
    /// /etc/resolv.conf`).
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Forward names outside the zone to this Service's ready endpoints (NAMESPACE/NAME;
    /// NodeLocal DNSCache's `kube-system/kube-dns-upstream`), following them as they
    /// change; the upstreams above while it has none.
    #[arg(long = "upstream-service", value_parser = ServiceRef::parse)]
    pub upstream_service: Option<ServiceRef>,
    /// A stub domain: names under DOMAIN go to these upstreams (DOMAIN=IP[:PORT],...;
    /// repeatable).
    #[arg(long = "stub")]
    pub stubs: Vec<String>,
    /// Import `stubDomains` and `upstreamNameservers` from a kube-dns ConfigMap (YAML).
    #[arg(long)]
    pub kube_dns_configmap: Option<PathBuf>,
    /// Log one line per query (client, name, type, rcode, microseconds, path).
    #[arg(long)]
    pub log_queries: bool,
    /// Keep address records in their order instead of rotating them per answer (CoreDNS
    /// `loadbalance`, on by default as in the seed Corefile).
    #[arg(long)]
    pub no_loadbalance: bool,
    /// Answer REFUSED outside the zone instead of forwarding.
    #[arg(long)]
    pub no_forward: bool,
    /// Which upstream first.
    #[arg(long, value_enum, default_value_t = Policy::Random)]
    pub policy: Policy,
    /// Upstream queries in flight at most; REFUSED past it.
    #[arg(long, default_value_t = 1000)]
    pub max_concurrent: usize,
    /// Always TCP to upstreams.
    #[arg(long)]
    pub force_tcp: bool,
    /// Keep truncated UDP answers from upstreams instead of retrying over TCP.
    #[arg(long)]
    pub prefer_udp: bool,
    /// Read timeout per upstream try, milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub forward_timeout_ms: u64,
    /// Longest time an upstream answer is cached, seconds (CoreDNS `cache 30`).
    #[arg(long, default_value_t = 30)]
    pub cache_ttl: u32,
    /// Shortest time an upstream answer is cached, seconds.
    #[arg(long, default_value_t = 5)]
    pub cache_min_ttl: u32,
    /// If another daemon holds the pin folder, serve userspace and take the kernel path over
    /// when it exits, waiting up to this many seconds (a rollout with the new pod beside the
    /// old one); 0: refuse to start.
    #[arg(long, default_value_t = 0)]
    pub pin_wait: u64,
    /// Names the kernel's records map holds at most. A zone that does not fit degrades the
    /// kernel path (every query passes to userspace) rather than answering from a partial
    /// map. A pinned map keeps the size it was made with.
    #[arg(long, default_value_t = dns_common::maps::RECORDS_MAX)]
    pub kernel_records_max: u32,
    /// Cached answers at most.
    #[arg(long, default_value_t = 10000)]
    pub cache_size: usize,
    /// Bytes of cached answers at most (three times an answer's wire size plus its key and
    /// 256 bytes each, about what it holds in memory); the least recently used go first.
    #[arg(long, default_value_t = 32 << 20)]
    pub cache_max_bytes: usize,
    /// Refresh an answer in the background once it has been hit this many times and has
    /// less than --prefetch-percent of its TTL left (CoreDNS `prefetch`; 0: never).
    #[arg(long, default_value_t = 0)]
    pub prefetch: u32,
    #[arg(long, default_value_t = 10)]
    pub prefetch_percent: u32,
    /// Serve expired answers for up to this many seconds while every upstream fails
    /// (RFC 8767; 0: never).
    #[arg(long, default_value_t = 0)]
    pub serve_stale: u64,
    /// On SIGTERM: not ready at once, still answering (and `/health` 200) for this many
    /// seconds, then exit (CoreDNS `health { lameduck 5s }`; the DaemonSet sets 5).
    #[arg(long, default_value_t = 0)]
    pub lameduck_secs: u64,
    /// `/ready` turns 503 once an API watch has failed for this many seconds (or ended);
    /// the last good records keep serving either way.
    #[arg(long, default_value_t = 60)]
    pub watch_failing_after: u64,
    /// Where `/metrics` (Prometheus, CoreDNS names) is served.
    #[arg(long, default_value = "0.0.0.0:9153")]
    pub metrics_addr: SocketAddr,
    /// Where `/health` is served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub health_addr: SocketAddr,
    /// Where `/ready` is served: ready once the zone is synced and the kernel path attached.
    #[arg(long, default_value = "0.0.0.0:8181")]
    pub ready_addr: SocketAddr,
    /// Warn (and stay not ready) if the API has not synced after this many seconds; the
    /// zone answers SERVFAIL until it has (CoreDNS `startup_timeout`).
    #[arg(long, default_value_t = 5)]
    pub startup_timeout: u64,
    /// The cluster zone.
    #[arg(long, default_value = "cluster.local")]
    pub zone: String,
    /// TTL of the zone's records, seconds.
    #[arg(long, default_value_t = 30)]
    pub ttl: u32,
    /// Configuration file (YAML; see docs/node.md), laid over these flags and reloaded when it
    /// changes. A bad file is refused with its line and field; the running config stays.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Addresses served here: the kernel answers queries sent to them, userspace listens on
    /// them for the rest (node-local mode).
    #[arg(long = "listen")]
    pub listen: Vec<IpAddr>,
    /// Addresses the kernel answers for without userspace listening: what the kernel cannot
    /// answer passes on, untouched, to whatever serves the address (accelerator mode in
    /// front of CoreDNS's ClusterIP).
    #[arg(long = "accelerate")]
    pub accelerate: Vec<IpAddr>,
    /// Accelerate a Service (`NAMESPACE/NAME`, e.g. `kube-system/kube-dns`): its cluster
    /// IPs and every ready endpoint address, kept current as its pods come and go. With a
    /// socket-level load balancer (Cilium, Calico eBPF) a pod's query to the ClusterIP
    /// leaves the pod addressed to a CoreDNS pod; this is how the kernel still sees it.
    #[arg(long = "accelerate-service", value_parser = ServiceRef::parse)]
    pub accelerate_services: Vec<ServiceRef>,
    /// Put the --listen addresses on this dummy interface (created if missing, as
    /// NodeLocal DNSCache's `nodelocaldns`); on `lo` if the kernel has no dummy driver.
    #[arg(long)]
    pub local_iface: Option<String>,
    /// Install NOTRACK rules (nftables) so queries to the --listen addresses and their
    /// answers skip conntrack; removed on exit.
    #[arg(long)]
    pub notrack: bool,
    #[arg(long, default_value_t = 53)]
    pub port: u16,
    /// Interfaces to attach the kernel path to.
    #[arg(long = "iface")]
    pub ifaces: Vec<String>,
    /// Also every interface whose name matches (`veth*`, `cali*`, `lxc*`...), attached as it
    /// appears (rtnetlink link events) and forgotten as it goes; repeatable.
    #[arg(long = "iface-pattern")]
    pub iface_patterns: Vec<String>,
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,
    /// bpffs folder for the pinned maps (mounted if there is no bpffs).
    #[arg(long, default_value = "/sys/fs/bpf/xdns")]
    pub pin_dir: PathBuf,
    /// On exit, detach from every interface and remove the pins (for an uninstall). Without
    /// it the pinned programs keep answering until the next daemon adopts them.
    #[arg(long)]
    pub detach_on_exit: bool,
    /// Seconds the kernel keeps answering after the daemon last refreshed its records; past
    /// that (daemon gone: uninstalled, crash-looping) every query passes to the servers
    /// behind it. Refreshed six times per period.
    #[arg(long, default_value_t = 60)]
    pub stale_after: u64,
    /// With `--log-queries`, log one in N of the queries the kernel answered (path
    /// `kernel`: name, type, rcode, client, interface), through a BPF ring buffer; 0 (the
    /// default) logs none and leaves the kernel's answer path as it is.
    #[arg(long, default_value_t = 0)]
    pub log_kernel_sample: u32,
    /// Leave NXDOMAIN to the server behind: the kernel answers only names that exist (for
    /// comparisons, or in accelerator mode to let records a Corefile adds inside the zone
    /// through; the kernel's NXDOMAIN is byte for byte userspace's).
    #[arg(long)]
    pub no_kernel_nxdomain: bool,
    /// Serve from userspace only: load no kernel program.
    #[arg(long)]
    pub no_kernel: bool,
    /// Pod records (CoreDNS `pods`).
    #[arg(long, value_enum, default_value_t = PodMode::Insecure)]
    pub pods: PodMode,
    /// Serve only these namespaces (CoreDNS `namespaces`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Serve only services matching this label selector (CoreDNS `labels`).
    #[arg(long, default_value = "")]
    pub labels: String,
    /// Serve only namespaces matching this label selector (CoreDNS `namespace_labels`).
    #[arg(long, default_value = "")]
    pub namespace_labels: String,
    /// Name endpoints without a hostname by their pod (CoreDNS `endpoint_pod_names`).
    #[arg(long)]
    pub endpoint_pod_names: bool,
    /// No endpoint records (CoreDNS `noendpoints`).
    #[arg(long)]
    pub noendpoints: bool,
    /// NXDOMAIN for ClusterIP services without ready endpoints (CoreDNS `ignore empty_service`).
    #[arg(long)]
    pub ignore_empty_service: bool,
}

impl RunArgs {
    /// Stub domains from --stub and the kube-dns ConfigMap, and the ConfigMap's upstreams.
    pub fn stub_list(&self) -> anyhow::Result<(Vec<stubs::Stub>, Vec<SocketAddr>)> {
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
        Ok((stub_list, imported_upstreams))
    }

    /// The upstreams: --upstream, else the ConfigMap's, else resolv.conf's nameservers.
    pub fn upstream_list(&self) -> anyhow::Result<Upstreams> {
        let (_, imported) = self.stub_list()?;
        Ok(if !imported.is_empty() && self.upstreams.is_empty() {
            Upstreams::new(imported)?
        } else if self.upstreams.is_empty() {
            Upstreams::from_resolv_conf(&self.resolv_conf)?
        } else {
            let mut list = Vec::new();
            for u in &self.upstreams {
                let addr = u
                    .parse::<SocketAddr>()
                    .or_else(|_| u.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| anyhow::anyhow!("upstream `{u}`: not an IP or IP:port"))?;
                list.push(addr);
            }
            Upstreams::new(list)?
        })
    }

    /// The resolver for names outside the zone, unless forwarding is off.
    pub fn resolver(&self, metrics: &Arc<Metrics>) -> anyhow::Result<Option<Resolver>> {
        if self.no_forward {
            return Ok(None);
        }
        let (stub_list, _) = self.stub_list()?;
        let upstreams = self.upstream_list()?;
        tracing::info!(upstreams = ?upstreams.0, policy = ?self.policy, "forwarding");
        let options = || exchange::Options {
            policy: self.policy,
            timeout: Duration::from_millis(self.forward_timeout_ms),
            max_concurrent: self.max_concurrent,
            force_tcp: self.force_tcp,
            prefer_udp: self.prefer_udp,
        };
        let forwarder = Forwarder::new(upstreams, options()).with_metrics(metrics.clone());
        let mut stub_forwarders = Vec::new();
        for s in stub_list {
            tracing::info!(domain = ?s.domain, upstreams = ?s.upstreams, "stub domain");
            let f = Forwarder::new(Upstreams::new(s.upstreams)?, options())
                .with_metrics(metrics.clone());
            stub_forwarders.push((s.domain, Arc::new(f)));
        }
        let cache = Cache::new(cache::Options {
            max_ttl: self.cache_ttl,
            min_ttl: self.cache_min_ttl,
            capacity: self.cache_size,
            max_bytes: self.cache_max_bytes,
            stale_for: Duration::from_secs(self.serve_stale),
            prefetch_hits: self.prefetch,
            prefetch_percent: self.prefetch_percent,
        });
        Ok(Some(Resolver {
            forwarder: Swap::new(forwarder),
            options: options(),
            stubs: stub_forwarders,
            cache,
            loadbalance: !self.no_loadbalance,
            metrics: metrics.clone(),
        }))
    }

    pub fn zone_config(&self) -> anyhow::Result<ZoneConfig> {
        let mut cfg = ZoneConfig::new(&self.zone, self.ttl).context("--zone")?;
        cfg.pods = self.pods;
        cfg.namespaces = self.namespaces.clone();
        cfg.labels = Selector::parse(&self.labels).context("--labels")?;
        cfg.namespace_labels =
            Selector::parse(&self.namespace_labels).context("--namespace-labels")?;
        cfg.endpoint_pod_names = self.endpoint_pod_names;
        cfg.noendpoints = self.noendpoints;
        cfg.ignore_empty_service = self.ignore_empty_service;
        cfg.ns_addrs = self.served_addrs();
        cfg.loadbalance = !self.no_loadbalance;
        Ok(cfg)
    }
}

impl RunArgs {
    /// Every address the kernel answers for.
    /// The served addresses the flags name (see also `accelerate_services`).
    pub fn served_addrs(&self) -> Vec<IpAddr> {
        let mut v = self.listen.clone();
        v.extend(&self.accelerate);
        v
    }

    /// These flags with the file's fields laid over them.
    pub fn with_file(&self, f: &FileConfig) -> RunArgs {
        let mut a = self.clone();
        fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
            if let Some(v) = src {
                *dst = v.clone();
            }
        }
        fn secs(dst: &mut u64, src: &Option<Duration>) {
            if let Some(d) = src {
                *dst = d.as_secs();
            }
        }
        if let Some(k) = &f.kubernetes {
            set(&mut a.zone, &k.zone);
            set(&mut a.ttl, &k.ttl);
            set(&mut a.pods, &k.pods);
            set(&mut a.namespaces, &k.namespaces);
            set(&mut a.labels, &k.labels);
            set(&mut a.namespace_labels, &k.namespace_labels);
            set(&mut a.endpoint_pod_names, &k.endpoint_pod_names);
            set(&mut a.noendpoints, &k.noendpoints);
            set(&mut a.ignore_empty_service, &k.ignore_empty_service);
            secs(&mut a.startup_timeout, &k.startup_timeout);
        }
        if let Some(fw) = &f.forward {
            if let Some(on) = fw.enabled {
                a.no_forward = !on;
            }
            if let Some(to) = &fw.to {
                a.upstreams.clear();
                for t in to {
                    if t.starts_with('/') {
                        a.resolv_conf = PathBuf::from(t);
                    } else {
                        a.upstreams.push(t.clone());
                    }
                }
            }
            if let Some(s) = &fw.upstream_service {
                a.upstream_service = Some(s.clone());
            }
            set(&mut a.policy, &fw.policy);
            set(&mut a.max_concurrent, &fw.max_concurrent);
            set(&mut a.force_tcp, &fw.force_tcp);
            set(&mut a.prefer_udp, &fw.prefer_udp);
            if let Some(t) = fw.timeout {
                a.forward_timeout_ms = t.as_millis() as u64;
            }
            if let Some(stubs) = &fw.stubs {
                a.stubs = stubs
                    .iter()
                    .map(|(d, ups)| format!("{d}={}", ups.join(",")))
                    .collect();
            }
        }
        if let Some(c) = &f.cache {
            set(&mut a.cache_ttl, &c.ttl);
            set(&mut a.cache_min_ttl, &c.min_ttl);
            set(&mut a.cache_size, &c.size);
            set(&mut a.cache_max_bytes, &c.max_bytes);
            secs(&mut a.serve_stale, &c.serve_stale);
            set(&mut a.prefetch, &c.prefetch);
            set(&mut a.prefetch_percent, &c.prefetch_percent);
        }
        if let Some(lb) = f.loadbalance {
            a.no_loadbalance = !lb;
        }
        set(&mut a.log_queries, &f.log);
        if let Some(h) = &f.health {
            set(&mut a.health_addr, &h.addr);
            secs(&mut a.lameduck_secs, &h.lameduck);
            secs(&mut a.watch_failing_after, &h.watch_failing_after);
        }
        set(&mut a.ready_addr, &f.ready);
        set(&mut a.metrics_addr, &f.prometheus);
        if let Some(n) = &f.node {
            set(&mut a.listen, &n.listen);
            set(&mut a.accelerate, &n.accelerate);
            set(&mut a.accelerate_services, &n.accelerate_services);
            set(&mut a.port, &n.port);
            set(&mut a.ifaces, &n.ifaces);
            set(&mut a.iface_patterns, &n.iface_patterns);
            set(&mut a.attach, &n.attach);
            set(&mut a.pin_dir, &n.pin_dir);
            if n.local_iface.is_some() {
                a.local_iface = n.local_iface.clone();
            }
            set(&mut a.notrack, &n.notrack);
            set(&mut a.detach_on_exit, &n.detach_on_exit);
            set(&mut a.stale_after, &n.stale_after);
            set(&mut a.log_kernel_sample, &n.log_kernel_sample);
        }
        a
    }

    /// Reads `--config` (if given) and lays it over the flags; the error names the line
    /// and field of whatever the file gets wrong, including values only checked here.
    pub fn effective(&self) -> anyhow::Result<RunArgs> {
        let Some(path) = &self.config else {
            return Ok(self.clone());
        };
        let file = config::load(path)?;
        let a = self.with_file(&file);
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let name = path.display().to_string();
        let field = |f: &str, e: anyhow::Error| {
            config::ConfigError::field(&name, &text, f, format!("{e:#}"))
        };
        ZoneConfig::new(&a.zone, a.ttl).map_err(|e| field("kubernetes.zone", e.into()))?;
        Selector::parse(&a.labels).map_err(|e| field("kubernetes.labels", e.into()))?;
        Selector::parse(&a.namespace_labels)
            .map_err(|e| field("kubernetes.namespaceLabels", e.into()))?;
        if !a.no_forward {
            a.upstream_list().map_err(|e| field("forward.to", e))?;
            a.stub_list().map_err(|e| field("forward.stubs", e))?;
        }
        Ok(a)
    }

    /// What the resolver is built from: a change means a new resolver.
    pub fn forwarding(&self) -> String {
        format!(
            "{:?}",
            (
                (self.no_forward, &self.upstreams, &self.resolv_conf),
                &self.upstream_service,
                (&self.stubs, &self.kube_dns_configmap),
                self.policy,
                self.max_concurrent,
                self.force_tcp,
                self.prefer_udp,
                self.forward_timeout_ms,
                (self.cache_ttl, self.cache_min_ttl, self.cache_size),
                self.cache_max_bytes,
                (self.prefetch, self.prefetch_percent, self.serve_stale),
                self.no_loadbalance,
            )
        )
    }
}

/// The settings only a restart applies (the node's addresses, interfaces, attach mode,
/// ports, pin folder), listed once for both of their uses.
macro_rules! restart_only {
    ($($f:ident),* $(,)?) => {
        impl RunArgs {
            /// What only a restart changes, for a warning when a reload touches it.
            pub fn restart_only(&self) -> String {
                [$(format!("{:?}", self.$f)),*].join(" ")
            }

            /// Takes the restart-only settings from `running`: a reload leaves them as they
            /// run, so later comparisons stay honest.
            pub fn keep_restart_only(&mut self, running: &RunArgs) {
                $(self.$f = running.$f.clone();)*
            }
        }
    };
}

restart_only!(
    listen,
    accelerate,
    accelerate_services,
    port,
    ifaces,
    iface_patterns,
    attach,
    pin_dir,
    local_iface,
    notrack,
    stale_after,
    log_kernel_sample,
    watch_failing_after,
    health_addr,
    ready_addr,
    metrics_addr,
);

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::RunArgs;

    #[test]
    fn a_reload_keeps_what_only_a_restart_changes() {
        let running = RunArgs::parse_from(["xdns", "--listen", "10.96.0.10", "--ttl", "30"]);
        let mut new = RunArgs::parse_from(["xdns", "--listen", "10.96.0.11", "--ttl", "10"]);
        assert_ne!(new.restart_only(), running.restart_only());
        new.keep_restart_only(&running);
        assert_eq!(new.restart_only(), running.restart_only());
        assert_eq!(format!("{:?}", new.listen), format!("{:?}", running.listen));
        // Everything else is the new file's.
        assert_eq!(new.ttl, 10);
    }
}
