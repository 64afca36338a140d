//! Turns a validated query into its answer, in place: the question stays where it is, the
//! headers are rewritten, the records (or the zone's SOA, for NODATA) and the OPT are
//! written after the question.
use dns_common::{
    Counter, NameRecords, TargetRecord, ZoneInfo, EDNS_PAYLOAD, MAX_ADDRS, NAME_KEY_LEN,
};

use crate::{
    csum::{finish_udp, fold, word, words},
    headers::*,
    packet::{ptr_at, Bounds},
    parse::Query,
};

const REPLY_TTL: u8 = 64;

/// What the reply carries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `n` A records.
    A(usize),
    /// `n` AAAA records.
    Aaaa(usize),
    /// No answer; the zone's SOA in the authority section.
    NoData,
    /// The name does not exist: NXDOMAIN, the zone's SOA in the authority section.
    NxDomain,
}

impl Body {
    #[inline(always)]
    fn len(&self) -> usize {
        match self {
            Body::A(n) => n * A_RECORD_LEN,
            Body::Aaaa(n) => n * AAAA_RECORD_LEN,
            Body::NoData | Body::NxDomain => SOA_RECORD_LEN,
        }
    }
}

/// Frame length of the answer to `q`.
#[inline(always)]
pub fn reply_len(q: &Query, body: &Body) -> usize {
    q.l4_off + UDP_LEN + DNS_LEN + q.qlen + 4 + body.len() + q.has_opt as usize * OPT_LEN
}

/// The fixed part of a resource record after its owner: type, class IN, TTL, RDLENGTH.
#[inline(always)]
fn rr_fixed(rtype: u16, ttl: u32, rdlen: u16) -> [u8; 10] {
    let t = rtype.to_be_bytes();
    let l = ttl.to_be_bytes();
    let r = rdlen.to_be_bytes();
    [
        t[0],
        t[1],
        0,
        CLASS_IN as u8,
        l[0],
        l[1],
        l[2],
        l[3],
        r[0],
        r[1],
    ]
}

/// Rewrites the Ethernet, IP, UDP and DNS headers of a frame already resized to
/// `reply_len`, and returns the UDP checksum's partial sum over all of them, the
/// pseudo-header and the QNAME (`name_sum`, summed during the parse as little-endian
/// 32-bit halves: folded and byte-swapped, the sum of its big-endian 16-bit words).
#[inline(always)]
fn headers(
    b: &Bounds,
    q: &Query,
    udp_len: usize,
    counts: (u16, u16),
    rcode: u8,
    name_sum: u64,
) -> Result<u64, Counter> {
    let (ancount, nscount) = counts;
    let eth: *mut Eth = ptr_at(b, 0)?;
    unsafe {
        core::mem::swap(&mut (*eth).dst, &mut (*eth).src);
    }

    // Pseudo-header: both addresses (their order does not change the sum), protocol, length.
    let mut sum = IPPROTO_UDP as u64 + udp_len as u64;
    if q.v6 == 1 {
        let ip: *mut Ipv6 = ptr_at(b, ETH_LEN)?;
        unsafe {
            core::mem::swap(&mut (*ip).src, &mut (*ip).dst);
            (*ip).payload_len = (udp_len as u16).to_be_bytes();
            (*ip).hop_limit = REPLY_TTL;
            sum += words(&(*ip).src) + words(&(*ip).dst);
        }
    } else {
        let ip: *mut Ipv4 = ptr_at(b, ETH_LEN)?;
        unsafe {
            core::mem::swap(&mut (*ip).src, &mut (*ip).dst);
            (*ip).tot_len = ((IPV4_LEN + udp_len) as u16).to_be_bytes();
            (*ip).ttl = REPLY_TTL;
            (*ip).csum = [0, 0];
            let hdr: *const [u8; IPV4_LEN] = ip as *const [u8; IPV4_LEN];
            (*ip).csum = (!fold(words(&*hdr))).to_be_bytes();
            sum += words(&(*ip).src) + words(&(*ip).dst);
        }
    }

    let udp: *mut Udp = ptr_at(b, q.l4_off)?;
    unsafe {
        core::mem::swap(&mut (*udp).sport, &mut (*udp).dport);
        (*udp).len = (udp_len as u16).to_be_bytes();
        (*udp).csum = [0, 0];
        sum += word((*udp).sport[0], (*udp).sport[1]) + word((*udp).dport[0], (*udp).dport[1]);
    }
    sum += udp_len as u64;

    let dns: *mut Dns = ptr_at(b, q.l4_off + UDP_LEN)?;
    unsafe {
        // QR AA, RD copied; RA, AD, CD clear.
        (*dns).flags = [0x84 | q.rd, rcode];
        (*dns).qdcount = 1u16.to_be_bytes();
        (*dns).ancount = ancount.to_be_bytes();
        (*dns).nscount = nscount.to_be_bytes();
        (*dns).arcount = (q.has_opt as u16).to_be_bytes();
        sum += word((*dns).id[0], (*dns).id[1]) + word((*dns).flags[0], rcode) + 1;
        sum += ancount as u64 + nscount as u64 + q.has_opt as u64;
    }
    Ok(sum + fold(name_sum).swap_bytes() as u64)
}

/// Writes the OPT record at `off` (when the query had one); returns its words' sum as if
/// it started on an even offset.
#[inline(always)]
fn opt(b: &Bounds, q: &Query, off: usize) -> Result<u64, Counter> {
    if q.has_opt != 1 {
        return Ok(0);
    }
    let o: *mut Opt = ptr_at(b, off)?;
    let payload = EDNS_PAYLOAD.to_be_bytes();
    unsafe {
        (*o).name = 0;
        (*o).rtype = TYPE_OPT.to_be_bytes();
        (*o).payload = payload;
        (*o).ext_rcode = 0;
        (*o).version = 0;
        (*o).flags = q.do_bit.to_be_bytes();
        (*o).rdlen = [0, 0];
    }
    // Bytes: 00 | 00 29 | payload(2) | 00 | 00 | flags(2) | 00 00, paired from the start.
    Ok(word(TYPE_OPT as u8, payload[0]) + word(payload[1], 0) + (q.do_bit >> 8) as u64)
}

/// Adds the sum of everything after the QNAME (`tail`, summed as if it started on an even
/// offset: it starts on an odd one when the name's length is odd, which a byte swap of the
/// folded sum corrects) and stores the UDP checksum.
#[inline(always)]
fn finish(b: &Bounds, q: &Query, sum: u64, tail: u64) -> Result<(), Counter> {
    let tail = fold(tail);
    let sum = sum
        + if q.qlen & 1 == 1 {
            tail.swap_bytes()
        } else {
            tail
        } as u64;
    let udp: *mut Udp = ptr_at(b, q.l4_off)?;
    unsafe {
        (*udp).csum = finish_udp(sum).to_be_bytes();
    }
    Ok(())
}

/// A record's first 12 bytes when its owner is the question: a pointer to it, then
/// [`rr_fixed`].
#[inline(always)]
fn rr_head(rtype: u16, ttl: u32, rdlen: u16) -> [u8; 12] {
    let f = rr_fixed(rtype, ttl, rdlen);
    let mut h = [0u8; 12];
    h[0] = 0xc0;
    h[1] = QNAME_OFF as u8;
    h[2..].copy_from_slice(&f);
    h
}

/// Writes the answer into a frame already resized to `reply_len(q, body)`.
/// Address records start at `start` (mod their count) and wrap; `name_sum` is the QNAME's
/// checksum contribution, summed during the parse.
#[inline(always)]
pub fn write(
    b: &Bounds,
    q: &Query,
    z: &ZoneInfo,
    rec: Option<&NameRecords>,
    body: &Body,
    start: usize,
    name_sum: u64,
) -> Result<(), Counter> {
    // Address records need their value: checked before the first write.
    if matches!(body, Body::A(_) | Body::Aaaa(_)) && rec.is_none() {
        return Err(Counter::NoRecord);
    }
    let udp_len = reply_len(q, body) - q.l4_off;
    let counts = match body {
        Body::A(n) | Body::Aaaa(n) => (*n as u16, 0u16),
        Body::NoData | Body::NxDomain => (0, 1),
    };
    let rcode = if matches!(body, Body::NxDomain) {
        RCODE_NXDOMAIN
    } else {
        0
    };
    let sum = headers(b, q, udp_len, counts, rcode, name_sum)?;

    let mut tail = q.qtype as u64 + CLASS_IN as u64;
    let body_off = q.l4_off + UDP_LEN + DNS_LEN + q.qlen + 4;
    let owner = [0xc0, QNAME_OFF as u8];
    match body {
        Body::A(n) => {
            let Some(rec) = rec else {
                return Err(Counter::NoRecord);
            };
            let fixed = rr_fixed(TYPE_A, rec.ttl, 4);
            let mut i = 0;
            while i < MAX_ADDRS && i < *n {
                // MAX_ADDRS is a power of two: the mask bounds the index for the verifier.
                let a = rec.a[((start + i) % *n) & (MAX_ADDRS - 1)];
                let r = [
                    owner[0], owner[1], fixed[0], fixed[1], fixed[2], fixed[3], fixed[4], fixed[5],
                    fixed[6], fixed[7], fixed[8], fixed[9], a[0], a[1], a[2], a[3],
                ];
                let p: *mut [u8; A_RECORD_LEN] = ptr_at(b, body_off + i * A_RECORD_LEN)?;
                unsafe { *p = r };
                tail += words(&r);
                i += 1;
            }
        }
        Body::Aaaa(n) => {
            let Some(rec) = rec else {
                return Err(Counter::NoRecord);
            };
            let head = rr_head(TYPE_AAAA, rec.ttl, 16);
            let mut i = 0;
            while i < MAX_ADDRS && i < *n {
                let off = body_off + i * AAAA_RECORD_LEN;
                let h: *mut [u8; 12] = ptr_at(b, off)?;
                let a: *mut [u8; 16] = ptr_at(b, off + 12)?;
                let addr = rec.aaaa[((start + i) % *n) & (MAX_ADDRS - 1)];
                unsafe {
                    *h = head;
                    *a = addr;
                }
                tail += words(&head) + words(&addr);
                i += 1;
            }
        }
        Body::NoData | Body::NxDomain => {
            let soa = soa_record(q, z);
            let p: *mut [u8; SOA_RECORD_LEN] = ptr_at(b, body_off)?;
            unsafe { *p = soa };
            tail += words(&soa);
        }
    }
    tail += opt(b, q, body_off + body.len())?;
    finish(b, q, sum, tail)
}

/// Frame length of the PTR or CNAME answer to `q` with a target of `len` bytes.
#[inline(always)]
pub fn target_reply_len(q: &Query, len: usize) -> usize {
    q.l4_off
        + UDP_LEN
        + DNS_LEN
        + q.qlen
        + 4
        + TARGET_FIXED_LEN
        + len
        + q.has_opt as usize * OPT_LEN
}

/// Writes a one-record PTR or CNAME answer into a frame already resized to
/// `target_reply_len`.
/// The target is written as it is stored, uncompressed, as userspace writes it: the
/// daemon stores only targets that share no suffix with their owner, the question.
#[inline(always)]
pub fn write_target(
    b: &Bounds,
    q: &Query,
    rec: &TargetRecord,
    name_sum: u64,
) -> Result<(), Counter> {
    let len = rec.len as usize & (NAME_KEY_LEN - 1);
    let udp_len = target_reply_len(q, len) - q.l4_off;
    let sum = headers(b, q, udp_len, (1, 0), 0, name_sum)?;
    let body_off = q.l4_off + UDP_LEN + DNS_LEN + q.qlen + 4;
    let head = rr_head(rec.rtype, rec.ttl, len as u16);
    let h: *mut [u8; TARGET_FIXED_LEN] = ptr_at(b, body_off)?;
    unsafe { *h = head };
    // Two bytes at a time (an odd length rewrites its second-to-last byte): LLVM turns a
    // one-byte bounds check into `p >= end`, which gives the verifier no range.
    let target = body_off + TARGET_FIXED_LEN;
    let mut i = 0;
    while i < NAME_KEY_LEN {
        if i + 2 > len {
            break;
        }
        copy_pair(b, target, rec, i)?;
        i += 2;
    }
    if len & 1 == 1 {
        copy_pair(b, target, rec, len - 2)?;
    }
    let mut tail = q.qtype as u64 + CLASS_IN as u64 + words(&head) + rec.sum as u64;
    // The OPT follows the target: on an odd offset when the target's length is odd.
    let o = fold(opt(b, q, body_off + TARGET_FIXED_LEN + len)?);
    tail += if len & 1 == 1 { o.swap_bytes() } else { o } as u64;
    finish(b, q, sum, tail)
}

/// Copies target bytes `i` and `i + 1` to `off + i`.
#[inline(always)]
fn copy_pair(b: &Bounds, off: usize, rec: &TargetRecord, i: usize) -> Result<(), Counter> {
    let i = i & (NAME_KEY_LEN - 1);
    if i + 1 >= NAME_KEY_LEN {
        return Err(Counter::Malformed);
    }
    let p: *mut [u8; 2] = ptr_at(b, off + i)?;
    unsafe { *p = [rec.target[i], rec.target[i + 1]] };
    Ok(())
}

/// The zone's SOA with every name compressed against the question, whose last `zone_len`
/// bytes are the zone apex: owner, `ns.dns.<zone>`, `hostmaster.<zone>`.
#[inline(always)]
fn soa_record(q: &Query, z: &ZoneInfo) -> [u8; SOA_RECORD_LEN] {
    let apex = (QNAME_OFF + q.qlen - z.zone_len as usize) as u16;
    let ptr = (0xc000 | apex).to_be_bytes();
    let f = rr_fixed(TYPE_SOA, z.soa_ttl, (SOA_RECORD_LEN - 12) as u16);
    let n = [z.serial, z.refresh, z.retry, z.expire, z.minimum];
    let mut r = [0u8; SOA_RECORD_LEN];
    r[0] = ptr[0];
    r[1] = ptr[1];
    r[2..12].copy_from_slice(&f);
    r[12..21].copy_from_slice(&[2, b'n', b's', 3, b'd', b'n', b's', ptr[0], ptr[1]]);
    r[21..34].copy_from_slice(&[
        10, b'h', b'o', b's', b't', b'm', b'a', b's', b't', b'e', b'r', ptr[0], ptr[1],
    ]);
    let mut i = 0;
    while i < 5 {
        let v = n[i].to_be_bytes();
        r[34 + i * 4] = v[0];
        r[35 + i * 4] = v[1];
        r[36 + i * 4] = v[2];
        r[37 + i * 4] = v[3];
        i += 1;
    }
    r
}
