//! What the operator chooses about the zone: CoreDNS's kubernetes plugin options that shape
//! records (the ones that shape the API watch live with the source).
use std::net::IpAddr;

use super::{name::wire_from_dotted, selector::Selector, NameError};

/// CoreDNS `pods` modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
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
