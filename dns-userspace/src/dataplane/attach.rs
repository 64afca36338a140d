//! Attach modes. A pod's query arrives on the host end of its veth; native XDP_TX there is
//! dropped unless the pod end runs XDP too, so such links get tc (or generic XDP).
use std::{fmt, fs};

use aya::{
    programs::{tc, SchedClassifier, TcAttachType, Xdp, XdpMode},
    Ebpf,
};
use dns_common::programs;

use super::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Per interface: tc on links whose native XDP_TX depends on the peer (veth and other
    /// virtual links), native XDP elsewhere, generic XDP if the driver has no native XDP.
    Auto,
    /// XDP in the driver.
    Native,
    /// XDP on the kernel's skb path (works on any interface).
    Generic,
    /// tc ingress classifier, redirecting the answer back out of the same interface.
    Tc,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::Tc => "tc",
        })
    }
}

/// Virtual links (veth, vlan, bridge...) sit under /sys/devices/virtual. Native XDP_TX on
/// a veth only delivers if the peer runs XDP too, so such links get tc. (`iflink` cannot
/// tell: a veth's peer index lives in another namespace and may equal its own.)
fn is_virtual(iface: &str) -> bool {
    fs::canonicalize(format!("/sys/class/net/{iface}"))
        .map(|p| p.starts_with("/sys/devices/virtual"))
        .unwrap_or(false)
}

/// Attaches to `iface` in `mode` and returns the mode used (never `Auto`).
pub fn attach(ebpf: &mut Ebpf, iface: &str, mode: AttachMode) -> Result<AttachMode> {
    let fail = |e: &dyn fmt::Display| Error::Attach {
        iface: iface.to_owned(),
        message: e.to_string(),
    };
    match mode {
        AttachMode::Auto if is_virtual(iface) => attach(ebpf, iface, AttachMode::Tc),
        AttachMode::Auto => attach(ebpf, iface, AttachMode::Native)
            .or_else(|_| attach(ebpf, iface, AttachMode::Generic)),
        AttachMode::Native | AttachMode::Generic => {
            let xdp: &mut Xdp = ebpf
                .program_mut(programs::XDP)
                .ok_or(Error::MissingProgram(programs::XDP))?
                .try_into()
                .map_err(|e| fail(&e))?;
            let flags = if mode == AttachMode::Native {
                XdpMode::Driver
            } else {
                XdpMode::Skb
            };
            xdp.attach(iface, flags).map_err(|e| fail(&e))?;
            Ok(mode)
        }
        AttachMode::Tc => {
            let cls: &mut SchedClassifier = ebpf
                .program_mut(programs::TC)
                .ok_or(Error::MissingProgram(programs::TC))?
                .try_into()
                .map_err(|e| fail(&e))?;
            // Kernels with tcx (6.6+) need no qdisc; older ones need clsact first.
            if cls.attach(iface, TcAttachType::Ingress).is_err() {
                let _ = tc::qdisc_add_clsact(iface);
                cls.attach(iface, TcAttachType::Ingress)
                    .map_err(|e| fail(&e))?;
            }
            Ok(mode)
        }
    }
}
