//! Attach modes. A pod's query arrives on the host end of its veth; native XDP_TX there is
//! dropped unless the pod end runs XDP too, so such links get tc (or generic XDP).
//!
//! Every attachment is a bpf link handed back to the caller, who pins it: a pinned link keeps
//! the program answering after the daemon exits, and the next daemon swaps its own program
//! into the same link atomically (`BPF_LINK_UPDATE`), so a restart drops nothing.
use std::{fmt, fs};

use aya::{
    programs::{
        links::FdLink,
        tc::{SchedClassifierLink, TcAttachOptions},
        xdp::XdpLink,
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf,
};
use dns_common::programs;

use super::{Error, Result};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
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

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::Tc => "tc",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        [Self::Auto, Self::Native, Self::Generic, Self::Tc]
            .into_iter()
            .find(|m| m.name() == s)
    }

    fn is_xdp(self) -> bool {
        matches!(self, AttachMode::Native | AttachMode::Generic)
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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

/// How an attachment went: the mode used (never `Auto`), the link to pin, and why it is not
/// the mode asked for, if it is not.
pub struct Attached {
    pub mode: AttachMode,
    pub link: FdLink,
    pub note: Option<String>,
}

/// Another program already holds the interface's XDP hook (the kernel says EBUSY/EEXIST).
fn xdp_taken(e: &ProgramError) -> bool {
    matches!(e, ProgramError::SyscallError(s)
        if matches!(s.io_error.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST)))
}

fn fail(iface: &str, e: &dyn fmt::Display) -> Error {
    Error::Attach {
        iface: iface.to_owned(),
        message: e.to_string(),
    }
}

fn xdp_prog(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(programs::XDP)
        .ok_or(Error::MissingProgram(programs::XDP))?
        .try_into()
        .map_err(|source| Error::Program {
            name: programs::XDP,
            source,
        })
}

fn tc_prog(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    ebpf.program_mut(programs::TC)
        .ok_or(Error::MissingProgram(programs::TC))?
        .try_into()
        .map_err(|source| Error::Program {
            name: programs::TC,
            source,
        })
}

/// A link the kernel can hand over to another program: netlink attachments (kernels
/// without bpf links for XDP, before 5.9, or for tc, before 6.6) cannot be pinned.
fn pinnable<L>(iface: &str, link: L) -> Result<FdLink>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    FdLink::try_from(link).map_err(|e| {
        fail(
            iface,
            &format!(
                "no bpf link on this kernel ({e}); restarts need XDP links (5.9+) and tcx (6.6+)"
            ),
        )
    })
}

fn attach_xdp(xdp: &mut Xdp, iface: &str, mode: AttachMode) -> Result<XdpLink, ProgramError> {
    let flags = if mode == AttachMode::Native {
        XdpMode::Driver
    } else {
        XdpMode::Skb
    };
    let id = xdp.attach(iface, flags)?;
    xdp.take_link(id)
}

fn attach_tc(ebpf: &mut Ebpf, iface: &str) -> Result<FdLink> {
    let cls = tc_prog(ebpf)?;
    // First in the tcx chain: a CNI's own program behind us may redirect the packet away
    // before we see it.
    let id = cls
        .attach_with_options(
            iface,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::first()),
        )
        .map_err(|e| fail(iface, &e))?;
    let link: SchedClassifierLink = cls.take_link(id).map_err(|e| fail(iface, &e))?;
    pinnable(iface, link)
}

/// Attaches to `iface` in `mode`. Where another program holds the XDP hook, it is left in
/// place and tc is used beside it.
pub fn attach(ebpf: &mut Ebpf, iface: &str, mode: AttachMode) -> Result<Attached> {
    let done = |mode, link| Attached {
        mode,
        link,
        note: None,
    };
    match mode {
        AttachMode::Tc => Ok(done(AttachMode::Tc, attach_tc(ebpf, iface)?)),
        AttachMode::Auto if is_virtual(iface) => Ok(done(AttachMode::Tc, attach_tc(ebpf, iface)?)),
        AttachMode::Auto | AttachMode::Native | AttachMode::Generic => {
            let first = if mode == AttachMode::Generic {
                AttachMode::Generic
            } else {
                AttachMode::Native
            };
            let xdp = xdp_prog(ebpf)?;
            let mut result = attach_xdp(xdp, iface, first).map(|l| (first, l));
            if mode == AttachMode::Auto && matches!(&result, Err(e) if !xdp_taken(e)) {
                result =
                    attach_xdp(xdp, iface, AttachMode::Generic).map(|l| (AttachMode::Generic, l));
            }
            match result {
                Ok((used, link)) => Ok(done(used, pinnable(iface, link)?)),
                Err(e) if xdp_taken(&e) => Ok(Attached {
                    mode: AttachMode::Tc,
                    link: attach_tc(ebpf, iface)?,
                    note: Some(
                        "another XDP program is attached here; it is left in place and tc is \
                         used beside it"
                            .into(),
                    ),
                }),
                Err(e) => Err(fail(iface, &e)),
            }
        }
    }
}

/// Swaps this daemon's program into a link pinned by an earlier one, atomically: the old
/// program answers up to the instant the new one does.
pub fn replace(ebpf: &mut Ebpf, iface: &str, mode: AttachMode, link: FdLink) -> Result<FdLink> {
    if mode.is_xdp() {
        let xdp = xdp_prog(ebpf)?;
        let link = XdpLink::try_from(link).map_err(|e| fail(iface, &e))?;
        let id = xdp.attach_to_link(link).map_err(|e| fail(iface, &e))?;
        pinnable(iface, xdp.take_link(id).map_err(|e| fail(iface, &e))?)
    } else {
        let cls = tc_prog(ebpf)?;
        let link = SchedClassifierLink::try_from(link).map_err(|e| fail(iface, &e))?;
        let id = cls.attach_to_link(link).map_err(|e| fail(iface, &e))?;
        pinnable(iface, cls.take_link(id).map_err(|e| fail(iface, &e))?)
    }
}
