//! What the operator chooses about the zone: CoreDNS's kubernetes plugin options that shape
//! records (the ones that shape the API watch live with the source).
use std::net::IpAddr;

use super::{name::wire_from_dotted, selector::Selector, NameError};

/// CoreDNS `pods` modes.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum PodMode {
    /// No pod records.
    Disabled,
    /// `a-b-c-d.<ns>.pod.<zone>` answers for any well-formed address in an existing namespace
    /// (the seed Corefile's `pods insecure`).
    #[default]
    Insecure,
    /// Only addresses of pods that exist in that namespace (needs the Pod watch).
    Verified,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneConfig {
    /// Lower-case wire form of the zone, e.g. `cluster.local.`.
    pub zone: Vec<u8>,
    pub ttl: u32,
    pub pods: PodMode,
    /// Only these namespaces are served (CoreDNS `namespaces`); empty serves all.
    pub namespaces: Vec<String>,
    /// Only services matching this selector (CoreDNS `labels`).
    pub labels: Selector,
    /// Only namespaces matching this selector (CoreDNS `namespace_labels`).
    pub namespace_labels: Selector,
    /// Endpoint names from the pod name when the endpoint has no hostname.
    pub endpoint_pod_names: bool,
    /// No endpoint records at all (headless services then have none).
    pub noendpoints: bool,
    /// ClusterIP services with no ready endpoint are NXDOMAIN (`ignore empty_service`).
    pub ignore_empty_service: bool,
    /// Addresses of this DNS service, served at `ns.dns.<zone>` (the apex NS).
    pub ns_addrs: Vec<IpAddr>,
    /// Rotate address answers to a random start (CoreDNS `loadbalance`).
    pub loadbalance: bool,
}

impl ZoneConfig {
    pub fn new(zone: &str, ttl: u32) -> Result<Self, NameError> {
        Ok(Self {
            zone: wire_from_dotted(zone)?,
            ttl,
            pods: PodMode::default(),
            namespaces: Vec::new(),
            labels: Selector::default(),
            namespace_labels: Selector::default(),
            endpoint_pod_names: false,
            noendpoints: false,
            ignore_empty_service: false,
            ns_addrs: Vec::new(),
            loadbalance: false,
        })
    }
}

/// The zone's settings (the file's `kubernetes` section, as CoreDNS's plugin): the options
/// that shape records, as flags and as file keys; applied on reload.
#[derive(clap::Args, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ZoneSettings {
    /// The cluster zone.
    #[arg(long = "zone", default_value = "cluster.local")]
    #[serde(rename = "zone")]
    pub name: String,
    /// TTL of the zone's records, seconds.
    #[arg(long, default_value_t = 30)]
    pub ttl: u32,
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
    /// Warn (and stay not ready) if the API has not synced after this long; the zone
    /// answers SERVFAIL until it has (CoreDNS `startup_timeout`). Seconds, or `5s`.
    #[arg(long, default_value = "5", value_parser = crate::config::secs)]
    #[serde(with = "crate::config::span")]
    pub startup_timeout: std::time::Duration,
    /// Rotate address records per answer, zone and cached ones (CoreDNS `loadbalance`, on
    /// as in the seed Corefile); `--no-loadbalance` keeps their order.
    #[arg(long = "no-loadbalance", action = clap::ArgAction::SetFalse)]
    pub loadbalance: bool,
}

impl ZoneSettings {
    /// The zone's config; `ns_addrs` are the addresses this server answers on.
    pub fn zone_config(&self, ns_addrs: Vec<IpAddr>) -> Result<ZoneConfig, crate::config::Invalid> {
        use crate::config::Invalid;
        let mut cfg = ZoneConfig::new(&self.name, self.ttl)
            .map_err(|e| Invalid::new("kubernetes.zone", e))?;
        cfg.pods = self.pods;
        cfg.namespaces = self.namespaces.clone();
        cfg.labels =
            Selector::parse(&self.labels).map_err(|e| Invalid::new("kubernetes.labels", e))?;
        cfg.namespace_labels = Selector::parse(&self.namespace_labels)
            .map_err(|e| Invalid::new("kubernetes.namespaceLabels", e))?;
        cfg.endpoint_pod_names = self.endpoint_pod_names;
        cfg.noendpoints = self.noendpoints;
        cfg.ignore_empty_service = self.ignore_empty_service;
        cfg.ns_addrs = ns_addrs;
        cfg.loadbalance = self.loadbalance;
        Ok(cfg)
    }
}
