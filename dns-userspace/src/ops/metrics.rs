//! Prometheus metrics under CoreDNS's names and labels where the meaning is the same, so
//! existing dashboards keep working, plus the kernel path's own (`xdns_kernel_*`), read
//! from the pinned maps at each scrape.
use std::{path::PathBuf, sync::Arc, time::Duration};

use dns_common::Counter as Reason;
use prometheus_client::{
    collector::Collector,
    encoding::{text::encode, DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

use crate::dataplane::snapshot::{Held, Snapshot};

/// CoreDNS labels every series with the server block; ours is the one `.:53` block.
const SERVER: &str = "dns://:53";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub server: String,
    pub zone: String,
    pub view: String,
    pub proto: String,
    pub family: String,
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub server: String,
    pub zone: String,
    pub view: String,
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SizeLabels {
    pub server: String,
    pub zone: String,
    pub view: String,
    pub proto: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub server: String,
    pub zone: String,
    pub view: String,
    pub rcode: String,
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub server: String,
    pub zones: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheTypeLabels {
    pub server: String,
    pub zones: String,
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToLabel {
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToRcodeLabels {
    pub to: String,
    pub rcode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub service_kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub revision: String,
    pub goversion: String,
}

/// The RCODE as CoreDNS labels it (miekg/dns `RcodeToString`).
pub fn rcode_name(code: u16) -> &'static str {
    match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        23 => "BADCOOKIE",
        _ => "OTHER",
    }
}

fn time_buckets() -> impl Iterator<Item = f64> {
    // CoreDNS: prometheus.ExponentialBuckets(0.00025, 2, 16).
    exponential_buckets(0.00025, 2.0, 16)
}

fn size_buckets() -> impl Iterator<Item = f64> {
    // CoreDNS's request/response size buckets.
    [
        0.0, 100.0, 200.0, 300.0, 400.0, 511.0, 1023.0, 2047.0, 4095.0, 8291.0, 16e3, 32e3, 48e3,
        64e3,
    ]
    .into_iter()
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram>,
    request_sizes: Family<SizeLabels, Histogram>,
    response_sizes: Family<SizeLabels, Histogram>,
    responses: Family<ResponseLabels, Counter>,
    cache_hits: Family<CacheTypeLabels, Counter>,
    cache_misses: Family<CacheLabels, Counter>,
    cache_requests: Family<CacheLabels, Counter>,
    cache_stale: Family<CacheLabels, Counter>,
    cache_entries: Family<CacheTypeLabels, Gauge>,
    forward_requests: Family<ToLabel, Counter>,
    forward_responses: Family<ToRcodeLabels, Counter>,
    forward_durations: Family<ToRcodeLabels, Histogram>,
    forward_hc_failures: Family<ToLabel, Counter>,
    forward_rejects: Counter,
    programming: Family<KindLabel, Histogram>,
    reload_failed: Counter,
    /// The kernel maps' sizes as the daemon writes them (read by the kernel collector).
    held: Arc<Held>,
}

/// A counter family from a list of (labels, value), encoded at scrape time.
fn const_counters<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(L, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn const_gauges<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(L, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// The API watches' health: lists, errors, and whether each is failing now.
#[derive(Debug)]
struct WatchCollector {
    health: Arc<crate::source::kube::WatchHealth>,
}

impl Collector for WatchCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let kinds = self.health.kinds();
        let label = |h: &crate::source::kube::KindHealth| vec![("kind", h.kind.name().to_owned())];
        let rows: Vec<(Labels, u64)> = kinds.iter().map(|h| (label(h), h.lists)).collect();
        const_counters(
            &mut enc,
            "xdns_kube_lists",
            "Full lists completed per kind (the first and every relist)",
            &rows,
        )?;
        let rows: Vec<(Labels, u64)> = kinds.iter().map(|h| (label(h), h.errors)).collect();
        const_counters(
            &mut enc,
            "xdns_kube_watch_errors",
            "List and watch errors per kind (each is retried with backoff)",
            &rows,
        )?;
        let rows: Vec<(Labels, i64)> = kinds
            .iter()
            .map(|h| (label(h), i64::from(h.failing_for(Duration::ZERO).is_some())))
            .collect();
        const_gauges(
            &mut enc,
            "xdns_kube_watch_failing",
            "1 while a kind's watch is failing or has ended: its records are the last good ones",
            &rows,
        )
    }
}

/// The kernel path's counters and occupancy, from the pins.
#[derive(Debug)]
struct KernelCollector {
    pin_dir: PathBuf,
    held: Arc<Held>,
}

type Labels = Vec<(&'static str, String)>;

impl Collector for KernelCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(s) = Snapshot::read_with(&self.pin_dir, Some(&self.held)) else {
            // No kernel path yet (or any more): no kernel series, rather than a failed scrape.
            return Ok(());
        };
        let rows: Vec<(Labels, u64)> = Reason::ALL
            .iter()
            .map(|r| (vec![("reason", r.name().to_owned())], s.counters.get(*r)))
            .collect();
        const_counters(
            &mut enc,
            "xdns_kernel_packets",
            "Packets the kernel path saw, by outcome: answered, or the reason it passed",
            &rows,
        )?;
        let mut rows: Vec<(Labels, u64)> = Vec::new();
        for i in &s.ifaces {
            for r in Reason::ALL.iter().filter(|r| r.per_iface()) {
                let n = i.counters.get(*r);
                if n > 0 || *r == Reason::Answered {
                    rows.push((
                        vec![
                            ("iface", i.iface.clone()),
                            ("mode", i.mode.to_string()),
                            ("reason", r.name().to_owned()),
                        ],
                        n,
                    ));
                }
            }
        }
        const_counters(
            &mut enc,
            "xdns_kernel_interface_packets",
            "DNS packets to the served addresses per interface and attach mode, by outcome",
            &rows,
        )?;
        let mut modes: std::collections::BTreeMap<String, i64> = Default::default();
        for i in s.ifaces.iter().filter(|i| i.present) {
            *modes.entry(i.mode.to_string()).or_default() += 1;
        }
        let rows: Vec<(Labels, i64)> = modes
            .into_iter()
            .map(|(m, n)| (vec![("mode", m)], n))
            .collect();
        const_gauges(
            &mut enc,
            "xdns_kernel_attached_interfaces",
            "Interfaces the kernel path is attached to, by mode",
            &rows,
        )?;
        let none: Labels = Vec::new();
        const_gauges(
            &mut enc,
            "xdns_kernel_records",
            "Names in the kernel's records map",
            &[(none.clone(), s.records as i64)],
        )?;
        const_gauges(
            &mut enc,
            "xdns_kernel_degraded",
            "1 while the kernel passes every query because its maps could not be made whole",
            &[(none.clone(), i64::from(s.degraded))],
        )?;
        const_gauges(
            &mut enc,
            "xdns_kernel_records_capacity",
            "Names the kernel's records map can hold",
            &[(none.clone(), i64::from(s.records_max))],
        )?;
        const_gauges(
            &mut enc,
            "xdns_kernel_target_records",
            "Names the kernel answers with one stored target (PTR, ExternalName CNAME)",
            &[(none, s.target_records as i64)],
        )
    }
}

impl Metrics {
    /// With `pin_dir`, the kernel path's series are read from the pins at each scrape.
    pub fn new(
        pin_dir: Option<PathBuf>,
        watches: Option<Arc<crate::source::kube::WatchHealth>>,
    ) -> Self {
        let mut r = Registry::default();
        let held = Arc::new(Held::default());
        let requests = Family::default();
        let durations = Family::<DurationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(time_buckets())
        });
        let request_sizes =
            Family::<SizeLabels, Histogram>::new_with_constructor(
                || Histogram::new(size_buckets()),
            );
        let response_sizes =
            Family::<SizeLabels, Histogram>::new_with_constructor(
                || Histogram::new(size_buckets()),
            );
        let responses = Family::default();
        let cache_hits = Family::default();
        let cache_misses = Family::default();
        let cache_requests = Family::default();
        let cache_stale = Family::default();
        let cache_entries = Family::default();
        let forward_requests = Family::default();
        let forward_responses = Family::default();
        let forward_durations = Family::<ToRcodeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(time_buckets())
        });
        let forward_hc_failures = Family::default();
        let forward_rejects = Counter::default();
        let programming = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 20))
        });
        let reload_failed = Counter::default();

        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                revision: option_env!("XDNS_REVISION").unwrap_or("unknown").into(),
                // The label dashboards group by; the value says what it really is.
                goversion: "rust".into(),
            })
            .set(1);
        r.register(
            "coredns_build_info",
            "A metric with a constant '1' value labeled by version, revision, and goversion from which CoreDNS was built",
            build,
        );
        r.register(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family",
            requests.clone(),
        );
        r.register(
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took per zone",
            durations.clone(),
        );
        r.register(
            "coredns_dns_request_size_bytes",
            "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol",
            request_sizes.clone(),
        );
        r.register(
            "coredns_dns_response_size_bytes",
            "Size of the returned response in bytes",
            response_sizes.clone(),
        );
        r.register(
            "coredns_dns_responses",
            "Counter of response status codes",
            responses.clone(),
        );
        r.register(
            "coredns_cache_hits",
            "The count of cache hits",
            cache_hits.clone(),
        );
        r.register(
            "coredns_cache_misses",
            "The count of cache misses",
            cache_misses.clone(),
        );
        r.register(
            "coredns_cache_requests",
            "The count of cache requests",
            cache_requests.clone(),
        );
        r.register(
            "coredns_cache_served_stale",
            "The number of requests served from stale cache entries",
            cache_stale.clone(),
        );
        r.register(
            "coredns_cache_entries",
            "The number of elements in the cache",
            cache_entries.clone(),
        );
        r.register(
            "coredns_forward_requests",
            "Counter of requests made per upstream",
            forward_requests.clone(),
        );
        r.register(
            "coredns_forward_responses",
            "Counter of responses received per upstream",
            forward_responses.clone(),
        );
        r.register(
            "coredns_forward_request_duration_seconds",
            "Histogram of the time each request took",
            forward_durations.clone(),
        );
        r.register(
            "coredns_forward_healthcheck_failures",
            "Counter of the number of failed healthchecks",
            forward_hc_failures.clone(),
        );
        r.register(
            "coredns_forward_max_concurrent_rejects",
            "Counter of the number of queries rejected because the concurrent queries were at maximum",
            forward_rejects.clone(),
        );
        r.register(
            "coredns_kubernetes_dns_programming_duration_seconds",
            "Histogram of the time (in seconds) it took to program a dns instance",
            programming.clone(),
        );
        r.register(
            "coredns_reload_failed",
            "Counter of the number of failed reload attempts",
            reload_failed.clone(),
        );
        if let Some(pin_dir) = pin_dir {
            r.register_collector(Box::new(KernelCollector {
                pin_dir,
                held: held.clone(),
            }));
        }
        if let Some(health) = watches {
            r.register_collector(Box::new(WatchCollector { health }));
        }
        // Series dashboards rate() from the start: present at zero before the first event.
        let cache = || CacheLabels {
            server: SERVER.into(),
            zones: ".".into(),
        };
        for t in ["success", "denial"] {
            let _ = cache_hits.get_or_create(&CacheTypeLabels {
                server: SERVER.into(),
                zones: ".".into(),
                r#type: t.into(),
            });
        }
        let _ = cache_entries.get_or_create(&CacheTypeLabels {
            server: SERVER.into(),
            zones: ".".into(),
            r#type: "success".into(),
        });
        let _ = cache_misses.get_or_create(&cache());
        let _ = cache_requests.get_or_create(&cache());
        let _ = cache_stale.get_or_create(&cache());
        let _ = programming.get_or_create(&KindLabel {
            service_kind: "all".into(),
        });
        Self {
            registry: r,
            requests,
            durations,
            request_sizes,
            response_sizes,
            responses,
            cache_hits,
            cache_misses,
            cache_requests,
            cache_stale,
            cache_entries,
            forward_requests,
            forward_responses,
            forward_durations,
            forward_hc_failures,
            forward_rejects,
            programming,
            reload_failed,
            held,
        }
    }

    /// Where the daemon puts the kernel maps' sizes as it writes them.
    pub fn kernel_held(&self) -> Arc<Held> {
        self.held.clone()
    }

    fn cache_labels() -> CacheLabels {
        CacheLabels {
            server: SERVER.into(),
            zones: ".".into(),
        }
    }

    /// A fresh cache hit; `denial` for NXDOMAIN/NODATA.
    pub fn cache_hit(&self, denial: bool) {
        let t = if denial { "denial" } else { "success" };
        self.cache_requests
            .get_or_create(&Self::cache_labels())
            .inc();
        self.cache_hits
            .get_or_create(&CacheTypeLabels {
                server: SERVER.into(),
                zones: ".".into(),
                r#type: t.into(),
            })
            .inc();
    }

    pub fn cache_miss(&self) {
        self.cache_requests
            .get_or_create(&Self::cache_labels())
            .inc();
        self.cache_misses.get_or_create(&Self::cache_labels()).inc();
    }

    pub fn served_stale(&self) {
        self.cache_stale.get_or_create(&Self::cache_labels()).inc();
    }

    /// Cached answers now (CoreDNS splits success/denial; ours are one store).
    pub fn cache_entries(&self, n: usize) {
        self.cache_entries
            .get_or_create(&CacheTypeLabels {
                server: SERVER.into(),
                zones: ".".into(),
                r#type: "success".into(),
            })
            .set(n as i64);
    }

    /// One query answered: its zone, transport, family, type, sizes, time and rcode.
    #[allow(clippy::too_many_arguments)]
    pub fn answered(
        &self,
        zone: &str,
        proto: &str,
        v6: bool,
        qtype: &str,
        request_size: usize,
        response_size: usize,
        took: Duration,
        rcode: &str,
        plugin: &str,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                server: SERVER.into(),
                zone: zone.into(),
                view: String::new(),
                proto: proto.into(),
                family: if v6 { "2" } else { "1" }.into(),
                r#type: qtype.into(),
            })
            .inc();
        self.durations
            .get_or_create(&DurationLabels {
                server: SERVER.into(),
                zone: zone.into(),
                view: String::new(),
                r#type: qtype.into(),
            })
            .observe(took.as_secs_f64());
        let size = SizeLabels {
            server: SERVER.into(),
            zone: zone.into(),
            view: String::new(),
            proto: proto.into(),
        };
        self.request_sizes
            .get_or_create(&size)
            .observe(request_size as f64);
        self.response_sizes
            .get_or_create(&size)
            .observe(response_size as f64);
        self.responses
            .get_or_create(&ResponseLabels {
                server: SERVER.into(),
                zone: zone.into(),
                view: String::new(),
                rcode: rcode.into(),
                plugin: plugin.into(),
            })
            .inc();
    }

    /// One try against an upstream: its rcode, or `None` if it failed (no answer).
    pub fn forwarded(&self, to: std::net::SocketAddr, rcode: Option<&str>, took: Duration) {
        let to = to.to_string();
        self.forward_requests
            .get_or_create(&ToLabel { to: to.clone() })
            .inc();
        if let Some(rcode) = rcode {
            let l = ToRcodeLabels {
                to,
                rcode: rcode.into(),
            };
            self.forward_responses.get_or_create(&l).inc();
            self.forward_durations
                .get_or_create(&l)
                .observe(took.as_secs_f64());
        }
    }

    /// Creates an upstream's series at zero.
    pub fn upstream(&self, to: std::net::SocketAddr) {
        let to = to.to_string();
        let _ = self
            .forward_requests
            .get_or_create(&ToLabel { to: to.clone() });
        let _ = self.forward_hc_failures.get_or_create(&ToLabel { to });
    }

    pub fn healthcheck_failed(&self, to: std::net::SocketAddr) {
        self.forward_hc_failures
            .get_or_create(&ToLabel { to: to.to_string() })
            .inc();
    }

    pub fn max_concurrent_reject(&self) {
        self.forward_rejects.inc();
    }

    /// From a change's arrival to both paths serving it.
    pub fn programmed(&self, took: Duration) {
        self.programming
            .get_or_create(&KindLabel {
                service_kind: "all".into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn reload_failed(&self) {
        self.reload_failed.inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics` on `addr`.
pub async fn serve(addr: std::net::SocketAddr, m: Arc<Metrics>) -> std::io::Result<()> {
    use axum::{routing::get, Router};
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let m = m.clone();
            async move {
                // Reading the pinned maps is blocking syscalls: off the async workers.
                let text = tokio::task::spawn_blocking(move || m.render())
                    .await
                    .unwrap_or_default();
                ([("content-type", "text/plain; version=0.0.4")], text)
            }
        }),
    );
    let l = super::http::Capped::bind(addr).await?;
    axum::serve(l, app).await
}
