//! The cluster as the record model sees it: Kubernetes objects trimmed on arrival to the
//! fields DNS needs. Sources (API reflectors, manifest files) produce these.
use std::{collections::BTreeMap, net::IpAddr};

pub use smallvec::SmallVec;

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub services: Vec<ServiceView>,
    pub slices: Vec<SliceView>,
    pub namespaces: Vec<NamespaceView>,
    /// Only filled when a pod mode needs them (`verified`).
    pub pods: Vec<PodView>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    pub kind: ServiceKind,
    pub ports: Vec<PortView>,
    pub publish_not_ready: bool,
    pub labels: Labels,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// Allocated cluster IPs, in `spec.clusterIPs` order (empty until allocated).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: records come from the endpoints.
    Headless,
    ExternalName(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortView {
    /// Empty for an unnamed port, which gets no SRV record.
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    pub port: u16,
}

/// One EndpointSlice, keyed to its service by the `kubernetes.io/service-name` label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceView {
    pub namespace: String,
    pub name: String,
    pub service: String,
    pub endpoints: Vec<EndpointView>,
    pub ports: Vec<PortView>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointView {
    /// One address in practice (the API allows more): held inline, not on the heap, as a
    /// node holds one of these per endpoint of the cluster.
    pub addresses: SmallVec<[IpAddr; 1]>,
    pub hostname: Option<Box<str>>,
    /// `conditions.ready`; an absent condition counts as ready, as the API documents.
    pub ready: bool,
    /// The pod behind the endpoint (`targetRef` of kind Pod), for `endpoint_pod_names`.
    pub pod_name: Option<Box<str>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceView {
    pub name: String,
    pub labels: Labels,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
}
