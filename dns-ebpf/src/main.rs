//! xdns kernel path: answers queries for cluster names from BPF maps, in place.
//!
//! The same core serves two hooks: XDP (native or generic) replies with `XDP_TX`; the tc
//! ingress twin redirects the answer back out of the interface it came in on, which is what
//! delivers it on a pod's veth where native XDP_TX would be dropped. Names under
//! `pod.<zone>`, and answers that are one stored name (PTR, an ExternalName's CNAME), are
//! tail-called into programs of their own, each with its own verifier budget.
#![no_std]
#![no_main]

mod csum;
mod frame;
mod handoff;
mod headers;
mod log;
mod packet;
mod parse;
mod pod;
mod respond;
mod seal;
mod zone;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns, bpf_redirect},
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, PerCpuArray, ProgramArray},
    programs::{TcContext, XdpContext},
};
use dns_common::{
    maps as m, Counter, IfaceCounters, NameKey, NameRecords, PodKey, RecordKey, Scratch,
    ServiceAddr, TargetRecord, ZoneInfo, COUNTER_COUNT, MAX_ADDRS, MAX_QUERY_UDP_LEN,
    NAME_OTHER_TYPES, NAME_PASS, NAME_TARGET, RTYPE_CNAME, RTYPE_PTR, TAIL_ANSWER, TAIL_COUNT,
    TAIL_POD, TAIL_TARGET, TARGET_REVERSE, ZONE_COMPLETE, ZONE_DEGRADED, ZONE_ROTATE,
};
use frame::{Frame, Tc, Xdp};
use headers::{TYPE_A, TYPE_AAAA, TYPE_PTR};
use parse::{Query, ServiceAddrs};
use respond::Body;

#[map(name = "RECORDS")]
static RECORDS: HashMap<RecordKey, NameRecords> =
    HashMap::with_max_entries(m::RECORDS_MAX, m::NO_PREALLOC);

#[map(name = "ZONE")]
static ZONE: Array<ZoneInfo> = Array::with_max_entries(1, 0);

#[map(name = "ZONE_NAME")]
static ZONE_NAME: Array<NameKey> = Array::with_max_entries(1, 0);

#[map(name = "SERVICE_ADDRS")]
static SERVICE_ADDRS: HashMap<ServiceAddr, u32> =
    HashMap::with_max_entries(m::SERVICE_ADDRS_MAX, 0);

#[map(name = "POD_NS")]
static POD_NS: HashMap<PodKey, u8> = HashMap::with_max_entries(m::POD_NS_MAX, m::NO_PREALLOC);

#[map(name = "POD_ADDRS")]
static POD_ADDRS: HashMap<PodKey, u8> = HashMap::with_max_entries(m::POD_ADDRS_MAX, m::NO_PREALLOC);

#[map(name = "TARGETS")]
static TARGETS: HashMap<RecordKey, TargetRecord> =
    HashMap::with_max_entries(m::TARGETS_MAX, m::NO_PREALLOC);

#[map(name = "XDP_TAILS")]
static XDP_TAILS: ProgramArray = ProgramArray::with_max_entries(TAIL_COUNT, 0);

#[map(name = "TC_TAILS")]
static TC_TAILS: ProgramArray = ProgramArray::with_max_entries(TAIL_COUNT, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

#[map(name = "IFACE_COUNTERS")]
static IFACE_COUNTERS: PerCpuArray<IfaceCounters> =
    PerCpuArray::with_max_entries(m::IFACE_SLOTS_MAX, 0);

#[map(name = "IFACE_SLOTS")]
static IFACE_SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(m::IFACE_SLOTS_MAX, 0);

#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The longest frame that can hold a query the kernel answers.
const MAX_QUERY_FRAME: usize = headers::ETH_LEN + headers::IPV6_LEN + MAX_QUERY_UDP_LEN;

struct Addrs;
impl ServiceAddrs for Addrs {
    #[inline(always)]
    fn contains(&self, addr: &ServiceAddr) -> bool {
        unsafe { SERVICE_ADDRS.get(addr).is_some() }
    }
}

/// Counts `c` in the global array and, for DNS to us, in the slot the daemon gave
/// `ifindex` (none yet: the global count only).
#[inline(always)]
fn count(ifindex: u32, c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // Per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *p += 1 };
    }
    if !c.per_iface() {
        return;
    }
    let Some(slot) = (unsafe { IFACE_SLOTS.get(ifindex) }) else {
        return;
    };
    let Some(p) = IFACE_COUNTERS.get_ptr_mut(*slot) else {
        return;
    };
    let i = c as usize;
    if i < COUNTER_COUNT as usize {
        unsafe { (*p).n[i] += 1 };
    }
}

/// How the main program's answer ended: the reply is written, the packet passes, or a
/// program of the tail-call slot takes over.
enum Outcome {
    Answered,
    Pass(Counter),
    Tail(u32),
}

impl From<Result<(), Counter>> for Outcome {
    #[inline(always)]
    fn from(r: Result<(), Counter>) -> Self {
        match r {
            Ok(()) => Outcome::Answered,
            Err(c) => Outcome::Pass(c),
        }
    }
}

/// Answers the query in `f` in place, or says why it passes or who takes it over.
/// Nothing is written to the packet before the last check that could fail, so a pass is
/// always the untouched packet.
#[inline(always)]
fn answer(f: &impl Frame) -> Outcome {
    match answer_main(f) {
        Ok(o) => o,
        Err(c) => Outcome::Pass(c),
    }
}

#[inline(always)]
fn answer_main(f: &impl Frame) -> Result<Outcome, Counter> {
    let s = SCRATCH.get_ptr_mut(0).ok_or(Counter::Malformed)?;
    let q = parse::parse(&f.bounds(), &Addrs, s)?;
    let z = ZONE.get(0).ok_or(Counter::NoRecord)?;
    // No daemon keeping the records true: let the servers behind us answer. The coarse
    // clock (a tick behind at most) is plenty against a window of a minute, and cheaper.
    if unsafe { bpf_ktime_get_coarse_ns() } > z.fresh_until_ns {
        return Err(Counter::Stale);
    }
    // Maps the daemon could not make whole: an entry may be old.
    if z.flags & ZONE_DEGRADED != 0 {
        return Err(Counter::Degraded);
    }
    let zone_name = ZONE_NAME.get(0).ok_or(Counter::NoRecord)?;
    let place = zone::place(s, q.qlen, zone_name, z.zone_len as usize)?;
    // Only now, for a name under a zone served here: an outside one costs no hashing.
    parse::record_key(s, z.seed);
    let zone::Place::Zone(start) = place else {
        // A reverse name's one answer is its stored PTR: the target program's single
        // lookup. Anything else about it is userspace's (forwarded: `fallthrough`).
        if q.qtype == TYPE_PTR {
            return Ok(hand_over(s, &q, TAIL_TARGET, TARGET_REVERSE as usize));
        }
        return Err(Counter::OutOfZone);
    };
    // A PTR query for a name in the zone is like any other type: NODATA or NXDOMAIN (an
    // ExternalName's CNAME owner is flagged in its record and handed over below).
    #[allow(clippy::needless_borrows_for_generic_args)]
    let entry = unsafe { RECORDS.get(&(*s).rkey) };
    let rec = match entry {
        Some(m) => Some(seal::record(s, m, q.qtype == TYPE_AAAA)?),
        None => None,
    };
    let body = match rec {
        Some(rec) => {
            if rec.flags & NAME_PASS != 0 {
                return Err(Counter::NamePass);
            }
            if rec.flags & NAME_TARGET != 0 {
                return Ok(hand_over(s, &q, TAIL_TARGET, 0));
            }
            let (a, aaaa) = (rec.a_count as usize, rec.aaaa_count as usize);
            if a > MAX_ADDRS || aaaa > MAX_ADDRS {
                return Err(Counter::NamePass);
            }
            let addr = q.qtype == TYPE_A || q.qtype == TYPE_AAAA;
            if !addr && rec.flags & NAME_OTHER_TYPES != 0 {
                return Err(Counter::OtherType);
            }
            match (q.qtype, a, aaaa) {
                (TYPE_A, 1.., _) => Body::A(a),
                (TYPE_AAAA, _, 1..) => Body::Aaaa(aaaa),
                // The name exists without this type: NODATA, with the zone's SOA.
                _ => negative(s, &q, z, false)?,
            }
        }
        None => {
            // Only a complete map can say a name does not exist.
            if z.flags & ZONE_COMPLETE == 0 {
                return Err(Counter::NoRecord);
            }
            match zone::under(s, start) {
                zone::Under::Zone => negative(s, &q, z, true)?,
                zone::Under::Pods(pod_label) => return Ok(hand_over(s, &q, TAIL_POD, pod_label)),
            }
        }
    };
    Ok(hand_over(s, &q, TAIL_ANSWER, encode(&body)))
}

/// A body as the writer's hand-over argument: its kind, and its count less one.
#[inline(always)]
fn encode(body: &Body) -> usize {
    match *body {
        Body::A(n) => (n.wrapping_sub(1) & 7) << 2,
        Body::Aaaa(n) => 1 | (n.wrapping_sub(1) & 7) << 2,
        Body::NoData => 2,
        Body::NxDomain => 3,
    }
}

/// The main program's answer, written by a program of its own: the writer (resize, headers,
/// records, checksums) is verified once, not once per path of the parse that reaches it.
#[inline(always)]
fn answer_write(f: &impl Frame) -> Result<(), Counter> {
    let s = SCRATCH.get_ptr_mut(0).ok_or(Counter::Malformed)?;
    let (q, arg) = handoff::restore(s)?;
    let z = ZONE.get(0).ok_or(Counter::NoRecord)?;
    let n = (arg >> 2 & 7) + 1;
    let (body, rec) = match arg & 3 {
        // The record copied and its seal checked by the main program.
        0 => (Body::A(n), Some(unsafe { &(*s).rec })),
        1 => (Body::Aaaa(n), Some(unsafe { &(*s).rec })),
        2 => (Body::NoData, None),
        _ => (Body::NxDomain, None),
    };
    reply(f, s, &q, z, rec, &body)
}

/// Leaves the query to the program in tail-call `slot`.
#[inline(always)]
fn hand_over(s: *mut Scratch, q: &Query, slot: u32, arg: usize) -> Outcome {
    handoff::save(s, q, arg);
    Outcome::Tail(slot)
}

/// NODATA or NXDOMAIN with the zone's SOA, whose owner points into the question.
#[inline(always)]
fn negative(s: *mut Scratch, q: &Query, z: &ZoneInfo, nx: bool) -> Result<Body, Counter> {
    if z.zone_len == 0 || z.zone_len as usize > q.qlen {
        return Err(Counter::NoRecord);
    }
    zone::owner_case_matches(s, q.qlen, z.zone_len as usize)?;
    zone::soa_names_apart(s, q.qlen, z.zone_len as usize)?;
    Ok(if nx { Body::NxDomain } else { Body::NoData })
}

/// Resizes the frame and writes `body` into it.
#[inline(always)]
fn reply(
    f: &impl Frame,
    s: *const Scratch,
    q: &Query,
    z: &ZoneInfo,
    rec: Option<&NameRecords>,
    body: &Body,
) -> Result<(), Counter> {
    // CoreDNS `loadbalance`: the same cyclic order, from a random start.
    let start = if z.flags & ZONE_ROTATE != 0 {
        unsafe { bpf_get_prandom_u32() as usize }
    } else {
        0
    };
    let name_sum = unsafe { core::ptr::read_volatile(&(*s).name_sum) };
    f.resize(respond::reply_len(q, body))?;
    // From here the packet may be changed: a failure can only mean the resize did not give
    // the length asked for, which the bounds checks catch before any write.
    respond::write(&f.bounds(), q, z, rec, body, start, name_sum)?;
    let rcode = if matches!(body, Body::NxDomain) {
        headers::RCODE_NXDOMAIN
    } else {
        0
    };
    log::sample(f, s, q, z, rcode);
    Ok(())
}

/// A name under `pod.<zone>` the records map does not hold (see [`pod`]).
#[inline(always)]
fn answer_pod() -> Result<Outcome, Counter> {
    let s = SCRATCH.get_ptr_mut(0).ok_or(Counter::Malformed)?;
    let (q, pod_label) = handoff::restore(s)?;
    let z = ZONE.get(0).ok_or(Counter::NoRecord)?;
    let lookup = |s: *const Scratch, verified: bool| unsafe {
        let key = &(*s).pod_key;
        if verified {
            POD_ADDRS.get(key).is_some()
        } else {
            POD_NS.get(key).is_some()
        }
    };
    // An address answer's record is the one `classify` computed into the scratch, where
    // the writer reads it.
    let body = match pod::classify(s, pod_label, z, lookup)? {
        pod::Pod::NxDomain => negative(s, &q, z, true)?,
        pod::Pod::NoData => negative(s, &q, z, false)?,
        pod::Pod::V4 if q.qtype == TYPE_A => Body::A(1),
        pod::Pod::V6 if q.qtype == TYPE_AAAA => Body::Aaaa(1),
        pod::Pod::V4 | pod::Pod::V6 => negative(s, &q, z, false)?,
    };
    Ok(hand_over(s, &q, TAIL_ANSWER, encode(&body)))
}

/// A name whose answer is one stored name: a reverse name's PTR (to a PTR query), an
/// ExternalName's CNAME (to any).
#[inline(always)]
fn answer_target(f: &impl Frame) -> Result<(), Counter> {
    let s = SCRATCH.get_ptr_mut(0).ok_or(Counter::Malformed)?;
    let (q, arg) = handoff::restore(s)?;
    let missing = if arg == TARGET_REVERSE as usize {
        Counter::OutOfZone
    } else {
        Counter::PtrPass
    };
    #[allow(clippy::needless_borrows_for_generic_args)]
    let entry = unsafe { TARGETS.get(&(*s).rkey) }.ok_or(missing)?;
    let rec = seal::target(s, entry)?;
    let len = rec.len as usize;
    // A PTR answers PTR queries only; a CNAME (to outside the zone) every type but A and
    // AAAA, whose answer carries the target's addresses, which userspace resolves.
    match rec.rtype {
        RTYPE_PTR if q.qtype == TYPE_PTR => {}
        RTYPE_CNAME if q.qtype != TYPE_A && q.qtype != TYPE_AAAA => {}
        _ => return Err(Counter::PtrPass),
    }
    // Without EDNS, or with a client payload of 512, a longer answer is truncated by
    // userspace; a long name and a long target can come to that.
    let frame_len = respond::target_reply_len(&q, len);
    if frame_len - q.l4_off - headers::UDP_LEN > 512 {
        return Err(Counter::PtrPass);
    }
    let name_sum = unsafe { core::ptr::read_volatile(&(*s).name_sum) };
    f.resize(frame_len)?;
    respond::write_target(&f.bounds(), &q, rec, name_sum)?;
    if let Some(z) = ZONE.get(0) {
        log::sample(f, s, &q, z, 0);
    }
    Ok(())
}

#[inline(always)]
fn xdp_verdict(ctx: &XdpContext, o: Outcome) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    match o {
        Outcome::Answered => {
            count(ifindex, Counter::Answered);
            xdp_action::XDP_TX
        }
        Outcome::Pass(c) => {
            count(ifindex, c);
            xdp_action::XDP_PASS
        }
        Outcome::Tail(slot) => {
            // Returns only when the slot is empty (a daemon mid-load): pass.
            unsafe { XDP_TAILS.tail_call(ctx, slot) };
            count(ifindex, Counter::TailCall);
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn tc_verdict(ctx: &TcContext, o: Outcome) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    match o {
        Outcome::Answered => {
            count(ifindex, Counter::Answered);
            // Out of the interface it came in on: back to the pod.
            unsafe { bpf_redirect(ifindex, 0) as i32 }
        }
        Outcome::Pass(c) => {
            count(ifindex, c);
            TC_ACT_OK
        }
        Outcome::Tail(slot) => {
            unsafe { TC_TAILS.tail_call(ctx, slot) };
            count(ifindex, Counter::TailCall);
            TC_ACT_OK
        }
    }
}

#[xdp]
pub fn xdns_xdp(ctx: XdpContext) -> u32 {
    xdp_verdict(&ctx, answer(&Xdp(&ctx)))
}

#[xdp]
pub fn xdns_xdp_pod(ctx: XdpContext) -> u32 {
    xdp_verdict(&ctx, answer_pod().unwrap_or_else(Outcome::Pass))
}

#[xdp]
pub fn xdns_xdp_target(ctx: XdpContext) -> u32 {
    xdp_verdict(&ctx, answer_target(&Xdp(&ctx)).into())
}

#[classifier]
pub fn xdns_tc(ctx: TcContext) -> i32 {
    // A query small enough to answer is made linear so the parser sees all of it; a
    // larger packet (bulk TCP in GSO segments) is never pulled, which would copy it: the
    // parser reads its headers where they are and passes it.
    let len = ctx.len() as usize;
    if ctx.data_end() - ctx.data() < len
        && len <= MAX_QUERY_FRAME
        && ctx.pull_data(len as u32).is_err()
    {
        return tc_verdict(&ctx, Outcome::Pass(Counter::Malformed));
    }
    tc_verdict(&ctx, answer(&Tc(&ctx)))
}

#[classifier]
pub fn xdns_tc_pod(ctx: TcContext) -> i32 {
    tc_verdict(&ctx, answer_pod().unwrap_or_else(Outcome::Pass))
}

#[classifier]
pub fn xdns_tc_target(ctx: TcContext) -> i32 {
    tc_verdict(&ctx, answer_target(&Tc(&ctx)).into())
}

#[xdp]
pub fn xdns_xdp_answer(ctx: XdpContext) -> u32 {
    xdp_verdict(&ctx, answer_write(&Xdp(&ctx)).into())
}

#[classifier]
pub fn xdns_tc_answer(ctx: TcContext) -> i32 {
    tc_verdict(&ctx, answer_write(&Tc(&ctx)).into())
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
