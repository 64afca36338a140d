//! The cluster as the record model sees it: Kubernetes objects trimmed on arrival to the
//! fields DNS needs. Sources (API reflectors, manifest files) produce these.
use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

pub use smallvec::SmallVec;

pub type Labels = BTreeMap<String, String>;

/// A namespace or object name. Shared, not copied: the zone keys its maps by the same
/// allocation the view holds, and every object of a namespace shares its name (a node
/// holds every Service and EndpointSlice of the cluster).
pub type Str = Arc<str>;

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
    pub namespace: Str,
    pub name: Str,
    pub kind: ServiceKind,
    pub ports: Box<[PortView]>,
    pub publish_not_ready: bool,
    pub labels: Labels,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// Allocated cluster IPs, in `spec.clusterIPs` order (empty until allocated).
    ClusterIp(Box<[IpAddr]>),
    /// `clusterIP: None`: records come from the endpoints.
    Headless,
    ExternalName(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortView {
    /// Empty for an unnamed port, which gets no SRV record.
    pub name: Box<str>,
    /// `TCP`, `UDP` or `SCTP`: one of the three, not a copy per port.
    pub protocol: &'static str,
    pub port: u16,
}

/// One EndpointSlice, keyed to its service by the `kubernetes.io/service-name` label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceView {
    pub namespace: Str,
    pub name: Str,
    pub service: Str,
    pub endpoints: Box<[EndpointView]>,
    pub ports: Box<[PortView]>,
}

/// One address of an endpoint: an endpoint the API lists with several addresses is one
/// of these per address, as CoreDNS flattens them. A node holds one per endpoint of the
/// cluster (500k at 100k Services), so the usual one is 32 bytes: the address inline,
/// the rare names behind one pointer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointView {
    pub address: IpAddr,
    /// `conditions.ready`; an absent condition counts as ready, as the API documents.
    pub ready: bool,
    names: Option<Box<EndpointNames>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct EndpointNames {
    hostname: Option<Box<str>>,
    /// The pod behind the endpoint (`targetRef` of kind Pod), for `endpoint_pod_names`.
    pod_name: Option<Box<str>>,
}

impl EndpointView {
    pub fn new(
        address: IpAddr,
        ready: bool,
        hostname: Option<&str>,
        pod_name: Option<&str>,
    ) -> Self {
        let names = (hostname.is_some() || pod_name.is_some()).then(|| {
            Box::new(EndpointNames {
                hostname: hostname.map(Into::into),
                pod_name: pod_name.map(Into::into),
            })
        });
        Self {
            address,
            ready,
            names,
        }
    }

    pub fn hostname(&self) -> Option<&str> {
        self.names.as_ref()?.hostname.as_deref()
    }

    pub fn pod_name(&self) -> Option<&str> {
        self.names.as_ref()?.pod_name.as_deref()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceView {
    pub name: Str,
    pub labels: Labels,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub namespace: Str,
    pub name: Str,
    pub ips: Box<[IpAddr]>,
}
