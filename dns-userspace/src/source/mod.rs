//! Record sources. Each yields a whole snapshot of the cluster view; a snapshot that fails
//! to load is reported and the previous one keeps serving.
pub mod manifests;

use std::net::IpAddr;

/// What the record model needs of a Service, and nothing more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    /// Allocated cluster IPs; empty for headless and ExternalName services.
    pub cluster_ips: Vec<IpAddr>,
}
