//! The `node` section: how the daemon sits on the node (addresses, interfaces, attach mode,
//! ports, pins, its HTTP endpoints). Read at start only: a reload that changes it is logged
//! as needing a restart.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{config, config::ServiceRef, dataplane::attach::AttachMode};

#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSettings {
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
    /// If another daemon holds the pin folder, serve userspace and take the kernel path over
    /// when it exits, waiting up to this long (a rollout with the new pod beside the old
    /// one); 0: refuse to start. Seconds, or `2m`.
    #[arg(long, default_value = "0", value_parser = config::secs)]
    #[serde(with = "config::span")]
    pub pin_wait: Duration,
    /// How long the kernel keeps answering after the daemon last refreshed its records;
    /// past that (daemon gone: uninstalled, crash-looping) every query passes to the
    /// servers behind it. Refreshed six times per period. Seconds, or `1m`.
    #[arg(long, default_value = "60", value_parser = config::secs)]
    #[serde(with = "config::span")]
    pub stale_after: Duration,
    /// Names the kernel's records map holds at most. A zone that does not fit degrades the
    /// kernel path (every query passes to userspace) rather than answering from a partial
    /// map. A pinned map keeps the size it was made with.
    #[arg(long, default_value_t = dns_common::maps::RECORDS_MAX)]
    pub kernel_records_max: u32,
    /// Serve from userspace only: load no kernel program.
    #[arg(long)]
    pub no_kernel: bool,
    /// Leave NXDOMAIN to the server behind: the kernel answers only names that exist (for
    /// comparisons, or in accelerator mode to let records a Corefile adds inside the zone
    /// through; the kernel's NXDOMAIN is byte for byte userspace's).
    #[arg(long)]
    pub no_kernel_nxdomain: bool,
    /// With query logging on, log one in N of the queries the kernel answered (path
    /// `kernel`: name, type, rcode, client, interface), through a BPF ring buffer; 0 (the
    /// default) logs none and leaves the kernel's answer path as it is.
    #[arg(long, default_value_t = 0)]
    pub log_kernel_sample: u32,
    /// Where `/health` is served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub health_addr: SocketAddr,
    /// Where `/ready` is served: ready once the zone is synced and the kernel path attached.
    #[arg(long, default_value = "0.0.0.0:8181")]
    pub ready_addr: SocketAddr,
    /// Where `/metrics` (Prometheus, CoreDNS names) is served.
    #[arg(long, default_value = "0.0.0.0:9153")]
    pub metrics_addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nothing to serve: give --listen ADDR (node-local) and/or --accelerate ADDR (in front of CoreDNS)")]
    NothingServed,
    #[error("--accelerate, --iface and --iface-pattern need the kernel path; drop --no-kernel")]
    KernelNeeded,
}

impl NodeSettings {
    /// The served addresses named here (see also `accelerate_services`).
    pub fn served_addrs(&self) -> Vec<IpAddr> {
        let mut v = self.listen.clone();
        v.extend(&self.accelerate);
        v
    }

    /// Settings that cannot work together.
    pub fn check(&self) -> Result<(), Error> {
        if self.listen.is_empty()
            && self.accelerate.is_empty()
            && self.accelerate_services.is_empty()
        {
            return Err(Error::NothingServed);
        }
        let kernel_only = !self.accelerate.is_empty()
            || !self.accelerate_services.is_empty()
            || !self.ifaces.is_empty()
            || !self.iface_patterns.is_empty();
        if self.no_kernel && kernel_only {
            return Err(Error::KernelNeeded);
        }
        Ok(())
    }
}
