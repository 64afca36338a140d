//! Prometheus metrics under CoreDNS's names and labels where the meaning is the same, so
//! existing dashboards keep working. (The kernel path's own counters live in its per-CPU
//! map; `xdns counters` reads them.)
use std::sync::Arc;

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// CoreDNS labels every series with the server block; ours is the one `.:53` block.
const SERVER: &str = "dns://:53";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub server: String,
    pub zone: String,
    pub proto: String,
    pub family: String,
    #[prometheus(flatten)]
    pub qtype: TypeLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub server: String,
    pub zone: String,
    pub rcode: String,
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub server: String,
    pub zones: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheHitLabels {
    pub server: String,
    pub zones: String,
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToLabel {
    pub to: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub responses: Family<ResponseLabels, Counter>,
    cache_hits: Family<CacheHitLabels, Counter>,
    cache_misses: Family<CacheLabels, Counter>,
    cache_stale: Family<CacheLabels, Counter>,
    pub forward_requests: Family<ToLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        let responses = Family::default();
        let cache_hits = Family::default();
        let cache_misses = Family::default();
        let cache_stale = Family::default();
        let forward_requests = Family::default();
        registry.register(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family",
            requests.clone(),
        );
        registry.register(
            "coredns_dns_responses",
            "Counter of response status codes",
            responses.clone(),
        );
        registry.register(
            "coredns_cache_hits",
            "The count of cache hits",
            cache_hits.clone(),
        );
        registry.register(
            "coredns_cache_misses",
            "The count of cache misses",
            cache_misses.clone(),
        );
        registry.register(
            "coredns_cache_served_stale",
            "The number of requests served from stale cache entries",
            cache_stale.clone(),
        );
        registry.register(
            "coredns_forward_requests",
            "Counter of requests made per upstream",
            forward_requests.clone(),
        );
        Self {
            registry,
            requests,
            responses,
            cache_hits,
            cache_misses,
            cache_stale,
            forward_requests,
        }
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
        self.cache_hits
            .get_or_create(&CacheHitLabels {
                server: SERVER.into(),
                zones: ".".into(),
                r#type: t.into(),
            })
            .inc();
    }

    pub fn cache_miss(&self) {
        self.cache_misses.get_or_create(&Self::cache_labels()).inc();
    }

    pub fn served_stale(&self) {
        self.cache_stale.get_or_create(&Self::cache_labels()).inc();
    }

    pub fn request(&self, zone: &str, proto: &str, v6: bool, qtype: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                server: SERVER.into(),
                zone: zone.into(),
                proto: proto.into(),
                family: if v6 { "2" } else { "1" }.into(),
                qtype: TypeLabel {
                    r#type: qtype.into(),
                },
            })
            .inc();
    }

    pub fn response(&self, zone: &str, rcode: &str, plugin: &str) {
        self.responses
            .get_or_create(&ResponseLabels {
                server: SERVER.into(),
                zone: zone.into(),
                rcode: rcode.into(),
                plugin: plugin.into(),
            })
            .inc();
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
            async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
        }),
    );
    let l = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(l, app).await
}
