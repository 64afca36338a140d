//! Kernel answers sampled for the daemon's query log (`--log-kernel-sample N`): one answer
//! in N is written to a ring buffer the daemon reads. With sampling off (the default) an
//! answer pays one comparison of a value already loaded.
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_get_prandom_u32,
    macros::map,
    maps::RingBuf,
};
use dns_common::{maps as m, Counter, KernelLogEntry, Scratch, ZoneInfo, NAME_KEY_LEN};

use crate::{
    frame::Frame,
    headers::{Ipv4, Ipv6, Udp, ETH_LEN},
    packet::ptr_at,
    parse::Query,
};

#[map(name = "KERNEL_LOG")]
static KERNEL_LOG: RingBuf = RingBuf::with_byte_size(m::KERNEL_LOG_BYTES, 0);

/// Logs the answer just written into `f`, one time in `z.log_sample`.
#[inline(always)]
pub fn sample(f: &impl Frame, s: *const Scratch, q: &Query, z: &ZoneInfo, rcode: u8) {
    let n = z.log_sample;
    if n == 0 {
        return;
    }
    if n > 1 && unsafe { bpf_get_prandom_u32() } % n != 0 {
        return;
    }
    // A full ring (the daemon behind) or a short frame loses the sample, never the answer.
    let _ = write(f, s, q, rcode);
}

#[inline(always)]
fn write(f: &impl Frame, s: *const Scratch, q: &Query, rcode: u8) -> Result<(), Counter> {
    let b = f.bounds();
    // The answer is addressed back to whoever asked: its destination is the client.
    let mut client = [0u8; 16];
    if q.v6 == 1 {
        let ip: *const Ipv6 = ptr_at(&b, ETH_LEN)?;
        client = unsafe { (*ip).dst };
    } else {
        let ip: *const Ipv4 = ptr_at(&b, ETH_LEN)?;
        let dst = unsafe { (*ip).dst };
        client[..4].copy_from_slice(&dst);
    }
    let udp: *const Udp = ptr_at(&b, q.l4_off)?;
    let port = u16::from_ne_bytes(unsafe { (*udp).dport });
    // Reserved only once nothing can fail: an entry must be submitted or discarded.
    let Some(mut e) = KERNEL_LOG.reserve::<KernelLogEntry>(0) else {
        return Ok(());
    };
    let p = e.as_mut_ptr();
    unsafe {
        (*p).ifindex = f.ifindex();
        (*p).qtype = q.qtype;
        (*p).rcode = rcode;
        (*p).v6 = q.v6;
        (*p).client = client;
        (*p).port = port;
        (*p).qlen = q.qlen as u16;
        (*p)._pad = 0;
        // Word by word, volatile, so the compiler emits no memcpy call.
        let from = addr_of!((*s).key).cast::<u64>();
        let to = addr_of_mut!((*p).name).cast::<u64>();
        for i in 0..NAME_KEY_LEN / 8 {
            write_volatile(to.add(i), read_volatile(from.add(i)));
        }
    }
    // A wakeup costs microseconds (an interrupt to schedule the reader; an IPI in a VM):
    // the daemon polls the ring, and is woken only when it fills past half.
    let wake = if KERNEL_LOG.query(BPF_RB_AVAIL_DATA as u64) > u64::from(m::KERNEL_LOG_BYTES / 2) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    e.submit(wake as u64);
    Ok(())
}
