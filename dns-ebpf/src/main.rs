//! xdns kernel path: answers A queries for cluster names from BPF maps, in place.
//!
//! The same core serves two hooks: XDP (native or generic) replies with `XDP_TX`; the tc
//! ingress twin redirects the answer back out of the interface it came in on, which is what
//! delivers it on a pod's veth where native XDP_TX would be dropped.
#![no_std]
#![no_main]

mod csum;
mod headers;
mod packet;
mod parse;
mod respond;
mod zone;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    helpers::{
        bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_redirect, bpf_skb_change_tail,
        bpf_xdp_adjust_tail,
    },
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use dns_common::{
    maps as m, Counter, IfaceCounters, NameKey, NameRecords, Scratch, ServiceAddr, ZoneInfo,
    COUNTER_COUNT, MAX_ADDRS, NAME_PASS, ZONE_COMPLETE, ZONE_ROTATE,
};
use headers::TYPE_A;
use packet::Bounds;
use parse::ServiceAddrs;
use respond::Body;

#[map(name = "RECORDS")]
static RECORDS: HashMap<NameKey, NameRecords> =
    HashMap::with_max_entries(m::RECORDS_MAX, m::NO_PREALLOC);

#[map(name = "ZONE")]
static ZONE: Array<ZoneInfo> = Array::with_max_entries(1, 0);

#[map(name = "ZONE_NAME")]
static ZONE_NAME: Array<NameKey> = Array::with_max_entries(1, 0);

#[map(name = "SERVICE_ADDRS")]
static SERVICE_ADDRS: HashMap<ServiceAddr, u32> =
    HashMap::with_max_entries(m::SERVICE_ADDRS_MAX, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

#[map(name = "IFACE_COUNTERS")]
static IFACE_COUNTERS: PerCpuHashMap<u32, IfaceCounters> =
    PerCpuHashMap::with_max_entries(m::IFACE_COUNTERS_MAX, 0);

/// One all-zero value to create an interface's counters from: 168 bytes would not fit the
/// stack beside the answer path's frame.
#[map(name = "IFACE_ZERO")]
static IFACE_ZERO: PerCpuArray<IfaceCounters> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

struct Addrs;
impl ServiceAddrs for Addrs {
    #[inline(always)]
    fn contains(&self, addr: &ServiceAddr) -> bool {
        unsafe { SERVICE_ADDRS.get(addr).is_some() }
    }
}

/// Counts `c` in the global array and, for DNS to us, in `ifindex`'s entry (created on
/// its first packet).
#[inline(always)]
fn count(ifindex: u32, c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // Per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *p += 1 };
    }
    if !c.per_iface() {
        return;
    }
    let p = match IFACE_COUNTERS.get_ptr_mut(ifindex) {
        Some(p) => p,
        None => {
            let Some(zero) = IFACE_ZERO.get(0) else {
                return;
            };
            // BPF_NOEXIST: another CPU may have created it meanwhile; either way it exists.
            let _ = IFACE_COUNTERS.insert(ifindex, zero, 1);
            match IFACE_COUNTERS.get_ptr_mut(ifindex) {
                Some(p) => p,
                None => return,
            }
        }
    };
    let i = c as usize;
    if i < COUNTER_COUNT as usize {
        unsafe { (*p).n[i] += 1 };
    }
}

/// What differs between the hooks: where the packet is and how it is resized.
trait Frame {
    fn bounds(&self) -> Bounds;
    /// Makes the frame `len` bytes long; the old bounds are invalid afterwards.
    fn resize(&self, len: usize) -> Result<(), Counter>;
}

struct Xdp<'a>(&'a XdpContext);
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
}

struct Tc<'a>(&'a TcContext);
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
}

/// Answers the query in `f` in place, or says why it passes. Nothing is written to the
/// packet before the last check that could fail, so a pass is always the untouched packet.
#[inline(always)]
fn answer(f: &impl Frame) -> Result<(), Counter> {
    let s = SCRATCH.get_ptr_mut(0).ok_or(Counter::Malformed)?;
    let q = parse::parse(&f.bounds(), &Addrs, s)?;
    let z = ZONE.get(0).ok_or(Counter::NoRecord)?;
    // No daemon keeping the records true: let the servers behind us answer.
    if unsafe { bpf_ktime_get_ns() } > z.fresh_until_ns {
        return Err(Counter::Stale);
    }
    // By reference: the 256-byte key stays in the scratch map value, off the 512-byte stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let rec = unsafe { RECORDS.get(&(*s).key) };
    let body = match rec {
        Some(rec) => {
            if rec.flags & NAME_PASS != 0 {
                return Err(Counter::NamePass);
            }
            let (a, aaaa) = (rec.a_count as usize, rec.aaaa_count as usize);
            if a > MAX_ADDRS || aaaa > MAX_ADDRS {
                return Err(Counter::NamePass);
            }
            match (q.qtype == TYPE_A, a, aaaa) {
                (true, 1.., _) => Body::A(a),
                (false, _, 1..) => Body::Aaaa(aaaa),
                // The name exists without this type: NODATA, with the zone's SOA.
                _ => {
                    if z.zone_len == 0 || z.zone_len as usize > q.qlen {
                        return Err(Counter::NoRecord);
                    }
                    zone::owner_case_matches(s, q.qlen, z.zone_len as usize)?;
                    Body::NoData(*z)
                }
            }
        }
        None => {
            // Only a complete map can say a name does not exist.
            if z.flags & ZONE_COMPLETE == 0 {
                return Err(Counter::NoRecord);
            }
            let zone = ZONE_NAME.get(0).ok_or(Counter::NoRecord)?;
            zone::nxdomain_applies(s, q.qlen, zone, z.zone_len as usize)?;
            zone::owner_case_matches(s, q.qlen, z.zone_len as usize)?;
            Body::NxDomain(*z)
        }
    };
    // CoreDNS `loadbalance`: the same cyclic order, from a random start.
    let start = if z.flags & ZONE_ROTATE != 0 {
        unsafe { bpf_get_prandom_u32() as usize }
    } else {
        0
    };
    let name_sum = unsafe { core::ptr::read_volatile(&(*s).name_sum) };
    f.resize(respond::reply_len(&q, &body))?;
    // From here the packet may be changed: a failure can only mean the resize did not give
    // the length asked for, which the bounds checks catch before any write.
    respond::write(&f.bounds(), &q, rec, &body, start, name_sum)
}

#[xdp]
pub fn xdns_xdp(ctx: XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    match answer(&Xdp(&ctx)) {
        Ok(()) => {
            count(ifindex, Counter::Answered);
            xdp_action::XDP_TX
        }
        Err(c) => {
            count(ifindex, c);
            xdp_action::XDP_PASS
        }
    }
}

#[classifier]
pub fn xdns_tc(ctx: TcContext) -> i32 {
    // Queries are small; a non-linear skb is made linear so the parser sees all of it.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if ctx.data_end() - ctx.data() < ctx.len() as usize && ctx.pull_data(ctx.len()).is_err() {
        count(ifindex, Counter::Malformed);
        return TC_ACT_OK;
    }
    match answer(&Tc(&ctx)) {
        Ok(()) => {
            count(ifindex, Counter::Answered);
            // Out of the interface it came in on: back to the pod.
            unsafe { bpf_redirect(ifindex, 0) as i32 }
        }
        Err(c) => {
            count(ifindex, c);
            TC_ACT_OK
        }
    }
}

/// Does nothing: the benchmark's baseline for the cost of running any XDP program.
#[xdp]
pub fn xdns_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
