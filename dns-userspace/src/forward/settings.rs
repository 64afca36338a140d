//! The `forward` and `cache` sections: names outside the zone, and the cache in front of
//! the upstreams, as flags and as file keys; a change to either builds a new resolver.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{
    cache, exchange,
    resolve::Resolver,
    stubs::{self, Stub},
    Cache, Forwarder, Policy, Upstreams,
};
use crate::{
    config::{self, Invalid, ServiceRef},
    ops::metrics::Metrics,
    swap::Swap,
};

#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ForwardSettings {
    /// Forward names outside the zone (CoreDNS `forward`); `--no-forward` answers REFUSED
    /// there instead.
    #[arg(long = "no-forward", action = clap::ArgAction::SetFalse)]
    pub enabled: bool,
    /// Upstreams: `IP`, `IP:PORT`, or a resolv.conf path whose nameservers are used
    /// (repeatable; file key `to`).
    #[arg(long = "upstream", value_parser = Upstream::parse)]
    pub to: Vec<Upstream>,
    /// Without upstreams: the nameservers of this resolv.conf (CoreDNS `forward .
    /// /etc/resolv.conf`).
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Forward names outside the zone to this Service's ready endpoints (NAMESPACE/NAME;
    /// NodeLocal DNSCache's `kube-system/kube-dns-upstream`), following them as they
    /// change; the upstreams above while it has none.
    #[arg(long, value_parser = ServiceRef::parse)]
    pub upstream_service: Option<ServiceRef>,
    /// A stub domain: names under DOMAIN go to these upstreams (DOMAIN=IP[:PORT],...;
    /// repeatable; in the file a map DOMAIN: [IP[:PORT], ...]).
    #[arg(long = "stub", value_parser = stubs::parse_stub)]
    #[serde(with = "stub_map")]
    pub stubs: Vec<Stub>,
    /// Import `stubDomains` and `upstreamNameservers` from a kube-dns ConfigMap (YAML).
    #[arg(long)]
    pub kube_dns_configmap: Option<PathBuf>,
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
    /// Read timeout per upstream try: milliseconds on the command line, a duration
    /// (`500ms`, `2s`) in the file's `timeout`.
    #[arg(long = "forward-timeout-ms", default_value = "2000", value_parser = config::millis)]
    #[serde(with = "config::span")]
    pub timeout: Duration,
}

#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CacheSettings {
    /// Longest time an upstream answer is cached, seconds (CoreDNS `cache 30`).
    #[arg(id = "cache_ttl", long = "cache-ttl", default_value_t = 30)]
    pub ttl: u32,
    /// Shortest time an upstream answer is cached, seconds.
    #[arg(id = "cache_min_ttl", long = "cache-min-ttl", default_value_t = 5)]
    pub min_ttl: u32,
    /// Cached answers at most.
    #[arg(id = "cache_size", long = "cache-size", default_value_t = 10000)]
    pub size: usize,
    /// Bytes of cached answers at most (three times an answer's wire size plus its key and
    /// 256 bytes each, about what it holds in memory); the least recently used go first.
    #[arg(id = "cache_max_bytes", long = "cache-max-bytes", default_value_t = 32 << 20)]
    pub max_bytes: usize,
    /// Serve expired answers for up to this long while every upstream fails (RFC 8767; 0:
    /// never). Seconds, or `1h`.
    #[arg(long, default_value = "0", value_parser = config::secs)]
    #[serde(with = "config::span")]
    pub serve_stale: Duration,
    /// Refresh an answer in the background once it has been hit this many times and has
    /// less than --prefetch-percent of its TTL left (CoreDNS `prefetch`; 0: never).
    #[arg(long, default_value_t = 0)]
    pub prefetch: u32,
    #[arg(long, default_value_t = 10)]
    pub prefetch_percent: u32,
}

/// One upstream as written: an address, or a resolv.conf whose nameservers are taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Upstream {
    Addr(SocketAddr),
    ResolvConf(PathBuf),
}

impl Upstream {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with('/') {
            return Ok(Upstream::ResolvConf(PathBuf::from(s)));
        }
        s.parse::<SocketAddr>()
            .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map(Upstream::Addr)
            .map_err(|_| format!("upstream `{s}`: not an IP, IP:port or resolv.conf path"))
    }
}

impl TryFrom<String> for Upstream {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<Upstream> for String {
    fn from(u: Upstream) -> String {
        match u {
            Upstream::Addr(a) => a.to_string(),
            Upstream::ResolvConf(p) => p.display().to_string(),
        }
    }
}

/// Stub domains in the file: `corp.example: [10.1.1.1, 10.1.1.2:5353]`.
mod stub_map {
    use super::*;

    pub fn serialize<S: serde::Serializer>(v: &[Stub], s: S) -> Result<S::Ok, S::Error> {
        let map: BTreeMap<String, Vec<String>> = v
            .iter()
            .map(|st| {
                let ups = st.upstreams.iter().map(|u| u.to_string()).collect();
                (crate::model::name::dotted(&st.domain), ups)
            })
            .collect();
        map.serialize(s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Stub>, D::Error> {
        BTreeMap::<String, Vec<String>>::deserialize(d)?
            .into_iter()
            .map(|(domain, ups)| stubs::parse_stub(&format!("{domain}={}", ups.join(","))))
            .collect::<Result<_, _>>()
            .map_err(serde::de::Error::custom)
    }
}

impl ForwardSettings {
    /// Stub domains given here and in the kube-dns ConfigMap, and the ConfigMap's upstreams.
    pub fn stub_list(&self) -> Result<(Vec<Stub>, Vec<SocketAddr>), Invalid> {
        let mut list = self.stubs.clone();
        let mut imported = Vec::new();
        if let Some(path) = &self.kube_dns_configmap {
            let field = "forward.kubeDnsConfigmap";
            let text = std::fs::read_to_string(path)
                .map_err(|e| Invalid::new(field, format!("reading {}: {e}", path.display())))?;
            let cm = stubs::import_kube_dns(&path.display().to_string(), &text)
                .map_err(|e| Invalid::new(field, e))?;
            list.extend(cm.stubs);
            imported = cm.upstreams;
        }
        Ok((list, imported))
    }

    /// The upstreams: those given (a resolv.conf path stands for its nameservers), else the
    /// ConfigMap's, else resolv.conf's.
    pub fn upstream_list(&self) -> Result<Upstreams, Invalid> {
        let bad = |e: super::upstreams::Error| Invalid::new("forward.to", e);
        if self.to.is_empty() {
            let (_, imported) = self.stub_list()?;
            return match imported.is_empty() {
                true => Upstreams::from_resolv_conf(&self.resolv_conf),
                false => Upstreams::new(imported),
            }
            .map_err(bad);
        }
        let mut list = Vec::new();
        for u in &self.to {
            match u {
                Upstream::Addr(a) => list.push(*a),
                Upstream::ResolvConf(p) => {
                    list.extend(Upstreams::from_resolv_conf(p).map_err(bad)?.0)
                }
            }
        }
        Upstreams::new(list).map_err(bad)
    }

    fn options(&self) -> exchange::Options {
        exchange::Options {
            policy: self.policy,
            timeout: self.timeout,
            max_concurrent: self.max_concurrent,
            force_tcp: self.force_tcp,
            prefer_udp: self.prefer_udp,
        }
    }

    /// The resolver for names outside the zone, unless forwarding is off.
    pub fn resolver(
        &self,
        cache: &CacheSettings,
        loadbalance: bool,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<Resolver>, Invalid> {
        if !self.enabled {
            return Ok(None);
        }
        let (stub_list, _) = self.stub_list()?;
        let upstreams = self.upstream_list()?;
        tracing::info!(upstreams = ?upstreams.0, policy = ?self.policy, "forwarding");
        let forwarder = Forwarder::new(upstreams, self.options()).with_metrics(metrics.clone());
        let mut stub_forwarders = Vec::new();
        for s in stub_list {
            tracing::info!(domain = ?s.domain, upstreams = ?s.upstreams, "stub domain");
            let ups = Upstreams::new(s.upstreams).map_err(|e| Invalid::new("forward.stubs", e))?;
            let f = Forwarder::new(ups, self.options()).with_metrics(metrics.clone());
            stub_forwarders.push((s.domain, Arc::new(f)));
        }
        Ok(Some(Resolver {
            forwarder: Swap::new(forwarder),
            options: self.options(),
            stubs: stub_forwarders,
            cache: Cache::new(cache.options()),
            loadbalance,
            metrics: metrics.clone(),
        }))
    }
}

impl CacheSettings {
    pub fn options(&self) -> cache::Options {
        cache::Options {
            max_ttl: self.ttl,
            min_ttl: self.min_ttl,
            capacity: self.size,
            max_bytes: self.max_bytes,
            stale_for: self.serve_stale,
            prefetch_hits: self.prefetch,
            prefetch_percent: self.prefetch_percent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_addresses_or_resolv_conf_paths() {
        assert_eq!(
            Upstream::parse("10.0.0.1"),
            Ok(Upstream::Addr("10.0.0.1:53".parse().unwrap()))
        );
        assert_eq!(
            Upstream::parse("[fd00::1]:5353"),
            Ok(Upstream::Addr("[fd00::1]:5353".parse().unwrap()))
        );
        assert_eq!(
            Upstream::parse("/etc/resolv.conf"),
            Ok(Upstream::ResolvConf("/etc/resolv.conf".into()))
        );
        assert!(Upstream::parse("dns.example").is_err());
    }

    #[test]
    fn stubs_read_back_as_written() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct S {
            #[serde(with = "stub_map")]
            stubs: Vec<Stub>,
        }
        let s: S =
            serde_yaml::from_str("stubs:\n  corp.example: [10.1.1.1, 10.1.1.2:5353]\n").unwrap();
        assert_eq!(
            s.stubs,
            vec![stubs::parse_stub("corp.example=10.1.1.1,10.1.1.2:5353").unwrap()]
        );
        let again: S = serde_yaml::from_str(&serde_yaml::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
        assert!(serde_yaml::from_str::<S>("stubs:\n  corp.example: [nope]\n").is_err());
    }
}
