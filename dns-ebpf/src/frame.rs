//! What differs between the hooks: where the packet is and how it is resized.
use aya_ebpf::{
    helpers::{bpf_skb_change_tail, bpf_xdp_adjust_tail},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use dns_common::Counter;

use crate::packet::Bounds;

pub trait Frame {
    fn bounds(&self) -> Bounds;
    /// Makes the frame `len` bytes long; the old bounds are invalid afterwards.
    fn resize(&self, len: usize) -> Result<(), Counter>;
    /// The interface the packet came in on.
    fn ifindex(&self) -> u32;
}

pub struct Xdp<'a>(pub &'a XdpContext);
impl Frame for Xdp<'_> {
    #[inline(always)]
    fn bounds(&self) -> Bounds {
        Bounds {
            data: self.0.data(),
            end: self.0.data_end(),
        }
    }
    #[inline(always)]
    fn resize(&self, len: usize) -> Result<(), Counter> {
        let delta = len as i32 - self.bounds().len() as i32;
        if delta == 0 {
            return Ok(());
        }
        match unsafe { bpf_xdp_adjust_tail(self.0.as_ptr().cast(), delta) } {
            0 => Ok(()),
            _ => Err(Counter::ResizeFailed),
        }
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.0.ingress_ifindex() as u32
    }
}

pub struct Tc<'a>(pub &'a TcContext);
impl Frame for Tc<'_> {
    #[inline(always)]
    fn bounds(&self) -> Bounds {
        Bounds {
            data: self.0.data(),
            end: self.0.data_end(),
        }
    }
    #[inline(always)]
    fn resize(&self, len: usize) -> Result<(), Counter> {
        if unsafe { bpf_skb_change_tail(self.0.skb.skb, len as u32, 0) } != 0 {
            return Err(Counter::ResizeFailed);
        }
        // change_tail may leave the new tail in a fragment; the writer needs it linear.
        self.0
            .pull_data(len as u32)
            .map_err(|_| Counter::ResizeFailed)
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        unsafe { (*self.0.skb.skb).ifindex }
    }
}
