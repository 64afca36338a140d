//! Prometheus metrics under CoreDNS's names and labels where the meaning is the same, so
//! existing dashboards keep working. The kernel path's own (`xdns_kernel_*`) and the
//! watches' are collectors their layers define and the daemon registers.
use std::time::Duration;

use prometheus_client::{
    collector::Collector,
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

/// Which part of the server gave an answer: the query log's `path`, and the plugin
/// CoreDNS's metrics name for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The cluster zone (and a chased ExternalName's answer, which starts there).
    Zone,
    Cache,
    Upstream,
    /// A cached answer past its TTL, served because the upstreams failed.
    Stale,
    /// SERVFAIL: the upstreams gave nothing usable.
    Error,
    /// Outside the zone with no forwarder.
    Refused,
    /// Our own forwarding-loop probe, come back.
    LoopProbe,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Zone => "zone",
            Path::Cache => "cache",
            Path::Upstream => "upstream",
            Path::Stale => "stale",
            Path::Error => "error",
            Path::Refused => "refused",
            Path::LoopProbe => "loop-probe",
        }
    }

    /// CoreDNS's `plugin` label: the zone is its `kubernetes` plugin, the rest `forward`.
    pub fn plugin(self) -> &'static str {
        match self {
            Path::Zone => "kubernetes",
            _ => "forward",
        }
    }
}

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
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// CoreDNS's series; other layers add theirs with [`Metrics::register`].
    pub fn new() -> Self {
        let mut r = Registry::default();
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
        }
    }

    /// Adds series a layer encodes itself at each scrape (the kernel path's, the watches').
    pub fn register(&mut self, c: impl Collector + 'static) {
        self.registry.register_collector(Box::new(c));
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
