//! Query validation: everything the kernel path must be sure of before it answers.
use core::ptr::{read_volatile, write_volatile};

use dns_common::{
    Counter, NameHash, Scratch, ServiceAddr, MAX_NAME_LEN, MAX_QUERY_UDP_LEN, NAME_KEY_LEN,
};

use crate::{
    headers::*,
    packet::{ptr_at, Bounds},
};

/// A query the kernel may answer, with the offsets the reply writer needs.
pub struct Query {
    /// 1 for IPv6, 0 for IPv4.
    pub v6: u8,
    /// Offset of the UDP header.
    pub l4_off: usize,
    /// Wire length of the QNAME, root label included (1..=255).
    pub qlen: usize,
    /// 1 if the query carried an OPT record.
    pub has_opt: u8,
    /// The DO bit (0x8000) of the query's OPT flags, echoed as RFC 3225 asks.
    pub do_bit: u16,
    /// The query's RD bit, copied into the reply.
    pub rd: u8,
    /// A data type (1..=127, not OPT).
    pub qtype: u16,
}

pub trait ServiceAddrs {
    fn contains(&self, addr: &ServiceAddr) -> bool;
}

#[inline(always)]
pub fn parse(b: &Bounds, addrs: &impl ServiceAddrs, s: *mut Scratch) -> Result<Query, Counter> {
    let eth: *const Eth = ptr_at(b, 0)?;
    let proto = be16(unsafe { (*eth).proto });
    let (l4_off, l4_len, v6, dst) = if proto == ETH_P_IP {
        ipv4(b)?
    } else if proto == ETH_P_IPV6 {
        ipv6(b)?
    } else {
        return Err(Counter::NotIp);
    };

    // The port before the address: most UDP on a pod's veth is not DNS, and the port
    // costs a load where the address costs a hash lookup.
    let udp: *const Udp = ptr_at(b, l4_off)?;
    if be16(unsafe { (*udp).dport }) != DNS_PORT {
        return Err(Counter::NotDnsPort);
    }
    if !addrs.contains(&dst) {
        return Err(Counter::NotServiceAddr);
    }
    if be16(unsafe { (*udp).len }) as usize != l4_len || l4_len < UDP_LEN + DNS_LEN {
        return Err(Counter::Malformed);
    }
    // Also keeps every packet offset below the verifier's limit.
    if l4_len > MAX_QUERY_UDP_LEN {
        return Err(Counter::Oversize);
    }
    let dns_off = l4_off + UDP_LEN;
    let msg_end = l4_off + l4_len;

    let dns: *const Dns = ptr_at(b, dns_off)?;
    let (flags, counts) = unsafe {
        (
            (*dns).flags,
            [
                be16((*dns).qdcount),
                be16((*dns).ancount),
                be16((*dns).nscount),
                be16((*dns).arcount),
            ],
        )
    };
    // QR=0, opcode QUERY, AA=0, TC=0 (RD free); Z=0 and RCODE=0 (RA, AD, CD free).
    if flags[0] & 0xfe != 0 || flags[1] & 0x4f != 0 {
        return Err(Counter::NotPlainQuery);
    }
    if counts[0] != 1 || counts[1] != 0 || counts[2] != 0 || counts[3] > 1 {
        return Err(Counter::NotPlainQuery);
    }

    let qname_off = dns_off + DNS_LEN;
    let qlen = walk_name(b, qname_off, s)?;
    let q_end = qname_off + qlen + 4;
    let qtc: *const [u8; 4] = ptr_at(b, qname_off + qlen)?;
    let qtc = unsafe { *qtc };
    if be16([qtc[2], qtc[3]]) != CLASS_IN {
        return Err(Counter::NotClassIn);
    }
    let qtype = be16([qtc[0], qtc[1]]);
    // Data types only: meta types and QTYPE-only ones (OPT, TSIG, AXFR, ANY...) from 128
    // up are userspace's.
    if qtype == 0 || qtype > 127 || qtype == TYPE_OPT {
        return Err(Counter::OtherType);
    }

    let (has_opt, do_bit) = if counts[3] == 1 {
        (1, edns(b, q_end, msg_end)?)
    } else {
        if q_end != msg_end {
            return Err(Counter::Malformed);
        }
        (0, 0)
    };

    Ok(Query {
        v6,
        l4_off,
        qlen,
        has_opt,
        do_bit,
        rd: flags[0] & 1,
        qtype,
    })
}

/// Returns (UDP offset, UDP length from the IP header, v6 flag, destination).
#[inline(always)]
fn ipv4(b: &Bounds) -> Result<(usize, usize, u8, ServiceAddr), Counter> {
    let ip: *const Ipv4 = ptr_at(b, ETH_LEN)?;
    let (vihl, frag, proto, tot_len, dst) = unsafe {
        (
            (*ip).version_ihl,
            be16((*ip).frag),
            (*ip).proto,
            be16((*ip).tot_len) as usize,
            (*ip).dst,
        )
    };
    if vihl != 0x45 {
        return Err(if vihl >> 4 == 4 && vihl & 0xf > 5 {
            Counter::IpOptions
        } else {
            Counter::Malformed
        });
    }
    // MF set or a fragment offset: only a whole datagram can be answered.
    if frag & 0x3fff != 0 {
        return Err(Counter::Fragment);
    }
    if proto != IPPROTO_UDP {
        return Err(Counter::NotUdp);
    }
    // Ethernet may pad short frames, so the IP length, not the frame, bounds the datagram.
    if tot_len < IPV4_LEN || ETH_LEN + tot_len > b.len() {
        return Err(Counter::Malformed);
    }
    Ok((
        ETH_LEN + IPV4_LEN,
        tot_len - IPV4_LEN,
        0,
        ServiceAddr::v4(dst),
    ))
}

#[inline(always)]
fn ipv6(b: &Bounds) -> Result<(usize, usize, u8, ServiceAddr), Counter> {
    let ip: *const Ipv6 = ptr_at(b, ETH_LEN)?;
    let (v, next, plen, dst) = unsafe {
        (
            (*ip).vtcfl[0] >> 4,
            (*ip).next,
            be16((*ip).payload_len) as usize,
            (*ip).dst,
        )
    };
    if v != 6 {
        return Err(Counter::Malformed);
    }
    if next != IPPROTO_UDP {
        // Hop-by-hop, routing, fragment, destination options: not parsed here.
        return Err(if matches!(next, 0 | 43 | 44 | 60) {
            Counter::Ipv6ExtHeader
        } else {
            Counter::NotUdp
        });
    }
    if ETH_LEN + IPV6_LEN + plen > b.len() {
        return Err(Counter::Malformed);
    }
    Ok((ETH_LEN + IPV6_LEN, plen, 1, ServiceAddr::v6(dst)))
}

/// The walked name's [`dns_common::RecordKey`] under `seed`, into the scratch value: the
/// key words as written, the same function the daemon keys its entries with. Called
/// only for names under a zone the kernel serves.
#[inline(always)]
pub fn record_key(s: *mut Scratch, seed: [u64; 2]) {
    unsafe {
        let qlen = read_volatile(&(*s).qlen) as usize & 0xff;
        write_volatile(&mut (*s).hash, NameHash::start(seed, qlen as u64).lanes);
        let key = (*s).key.name.as_ptr() as *const u64;
        let mut k = 0;
        while k < NAME_KEY_LEN / 8 {
            // Read each time, as in the walk: a kept copy would split the verifier's paths.
            let qlen = read_volatile(&(*s).qlen) as usize & 0xff;
            if k * 8 >= qlen {
                break;
            }
            let h = NameHash {
                lanes: read_volatile(&(*s).hash),
            };
            write_volatile(&mut (*s).hash, h.word(read_volatile(key.add(k))).lanes);
            k += 1;
        }
        let h = NameHash {
            lanes: read_volatile(&(*s).hash),
        };
        write_volatile(&mut (*s).rkey, h.finish());
    }
}

/// Most labels a name can have: every label but the root takes two bytes at least.
const MAX_LABELS: usize = MAX_NAME_LEN / 2 + 1;
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Walks the QNAME at `off`: checks the label structure, writes the lower-cased name into the
/// scratch key (zero padded) and the name's checksum contribution, and returns its length.
///
/// Two passes: the labels' length octets first (one step a label), then the name eight
/// bytes at a time (lower case, checksum and the last upper-case letter by word
/// arithmetic). The walk's state lives in the per-CPU scratch value, read and written
/// volatile: the verifier then sees the same register state at the top of every
/// iteration, whichever path led there, and prunes instead of exploring every path.
#[inline(always)]
fn walk_name(b: &Bounds, off: usize, s: *mut Scratch) -> Result<usize, Counter> {
    unsafe {
        write_volatile(&mut (*s).next_label, 0);
        write_volatile(&mut (*s).qlen, 0);
        write_volatile(&mut (*s).name_sum, 0);
        write_volatile(&mut (*s).upper_end, 0);
        let starts = (*s).label_starts.as_mut_ptr();
        let mut w = 0;
        while w < NAME_KEY_LEN / 8 {
            write_volatile(starts.add(w) as *mut u64, 0);
            w += 8;
        }

        let mut n = 0;
        while n < MAX_LABELS {
            let i = read_volatile(&(*s).next_label) as usize & (NAME_KEY_LEN - 1);
            let c = *ptr_at::<u8>(b, off + i)?;
            if c == 0 {
                write_volatile(&mut (*s).qlen, i as u32 + 1);
                break;
            }
            // 0xc0 is a compression pointer, 0x40/0x80 are obsolete label types.
            if c > 63 {
                return Err(Counter::BadName);
            }
            let bit = starts.add(i >> 3);
            write_volatile(bit, read_volatile(bit) | (1 << (i & 7)));
            // The root label must sit at offset 254 at most: 255 bytes in all.
            let next = i + 1 + c as usize;
            if next >= MAX_NAME_LEN {
                return Err(Counter::BadName);
            }
            write_volatile(&mut (*s).next_label, next as u32);
            n += 1;
        }
        // Masked, not only compared: the compiler may reuse an unchecked copy of the loaded
        // value for offsets, and the mask bounds every copy derived after it.
        let qlen = read_volatile(&(*s).qlen) as usize & 0xff;
        if qlen == 0 {
            return Err(Counter::BadName);
        }
        // Zeroed first, then only the name's words written: pod names and the zone
        // checks read the key past the last word.
        let key = (*s).key.name.as_mut_ptr() as *mut u64;
        let mut k = 0;
        while k < NAME_KEY_LEN / 8 {
            write_volatile(key.add(k), 0);
            k += 1;
        }
        let mut k = 0;
        while k < NAME_KEY_LEN / 8 {
            let at = k * 8;
            // Read each time, not kept in a register: `at < qlen` would narrow a kept
            // copy's range differently on each path, and the verifier would then walk
            // the rest of the program once per range instead of pruning.
            let qlen = read_volatile(&(*s).qlen) as usize & 0xff;
            if at >= qlen {
                break;
            }
            // The packet offset through memory: a constant one would leave each word's
            // bounds check on the packet's base pointer, so the loop's 32 exits would reach
            // the rest of the program with 32 different checked ranges, each verified anew
            // (240k of the main program's instructions).
            write_volatile(&mut (*s).word_at, at as u32);
            let at = read_volatile(&(*s).word_at) as usize & 0xff;
            write_volatile(key.add(k), name_word(b, off, at, qlen, s)?);
            k += 1;
        }
        // Read again: each word's `at < qlen` narrowed the register's range on its own
        // path, and the verifier would walk everything after once per range.
        Ok(read_volatile(&(*s).qlen) as usize & 0xff)
    }
}

/// Name bytes `at..at + 8` (zero past the name), lower-cased; adds the raw bytes to the
/// checksum and notes the last upper-case letter.
#[inline(always)]
fn name_word(
    b: &Bounds,
    off: usize,
    at: usize,
    qlen: usize,
    s: *mut Scratch,
) -> Result<u64, Counter> {
    let valid = qlen - at;
    let raw = match ptr_at::<u64>(b, off + at) {
        Ok(p) => unsafe { core::ptr::read_unaligned(p) },
        // The name's last word would run past the packet: the eight bytes that end with
        // QCLASS hold it, shifted (little endian: the first byte is the lowest). A packet
        // too short for those is malformed whichever way it is read.
        Err(_) => {
            let back = (at + 8 - (qlen + 4)) & 7;
            // Laundered through memory and masked: LLVM would otherwise address the load
            // as 4 bytes before a checked pointer, which the verifier refuses.
            let start = unsafe {
                write_volatile(&mut (*s).next_label, (off + qlen - 4) as u32);
                read_volatile(&(*s).next_label) as usize & 0x7ff
            };
            let p = ptr_at::<u64>(b, start)?;
            unsafe { core::ptr::read_unaligned(p) >> (back * 8) }
        }
    };
    let raw = if valid >= 8 {
        raw
    } else {
        raw & ((1u64 << ((valid & 7) * 8)) - 1)
    };
    // Bytes 'A'..='Z': the top bit of each byte set where it is at least 'A' and not past
    // 'Z' (computed on the low seven bits, so no carry crosses a byte), and was clear.
    let low7 = raw & !HIGH;
    let ge_a = low7 + ONES * (0x80 - b'A' as u64);
    let gt_z = low7 + ONES * (0x80 - b'Z' as u64 - 1);
    let upper = ge_a & !gt_z & !raw & HIGH;
    unsafe {
        // Little-endian 32-bit halves: folded and byte-swapped once, the same ones'-
        // complement sum as the name's big-endian 16-bit words (it starts on an even offset
        // of the UDP segment, 8 + 12).
        let sum = read_volatile(&(*s).name_sum) + (raw & 0xffff_ffff) + (raw >> 32);
        write_volatile(&mut (*s).name_sum, sum);
        let upper_bytes = bytes_through_last(upper);
        if upper_bytes != 0 {
            write_volatile(&mut (*s).upper_end, (at + upper_bytes) as u32);
        }
    }
    Ok(raw | (upper >> 2))
}

/// One past the index of the highest byte whose top bit is set in `m` (only top bits
/// set), 0 if none. Without branches: a constant left in a register on one path would
/// keep the verifier from merging the paths.
#[inline(always)]
fn bytes_through_last(m: u64) -> usize {
    // One bit per byte, then smeared down: the bytes up to the last are all 1.
    let mut m = m >> 7;
    m |= m >> 8;
    m |= m >> 16;
    m |= m >> 32;
    // Their count, summed into the top byte.
    (m.wrapping_mul(ONES) >> 56) as usize
}

/// Most EDNS options a query may carry and still be answered here.
const MAX_OPTIONS: usize = 4;

/// Validates the OPT record that must end the message; returns the DO bit.
///
/// Options (a cookie from dig, padding, ...) are walked so a malformed list is passed to
/// userspace, and otherwise ignored, as a server that implements none of them must.
#[inline(always)]
fn edns(b: &Bounds, off: usize, msg_end: usize) -> Result<u16, Counter> {
    let opt: *const Opt = ptr_at(b, off)?;
    let (name, rtype, ext_rcode, version, flags, rdlen) = unsafe {
        (
            (*opt).name,
            be16((*opt).rtype),
            (*opt).ext_rcode,
            (*opt).version,
            be16((*opt).flags),
            be16((*opt).rdlen) as usize,
        )
    };
    if name != 0 || rtype != TYPE_OPT || ext_rcode != 0 || version != 0 {
        // Version > 0 needs BADVERS, which userspace gives.
        return Err(Counter::BadEdns);
    }
    if off + OPT_LEN + rdlen != msg_end {
        return Err(Counter::Malformed);
    }
    let mut at = off + OPT_LEN;
    let mut n = 0;
    while n < MAX_OPTIONS {
        if at == msg_end {
            return Ok(flags & 0x8000);
        }
        let hdr: *const [u8; 4] = ptr_at(b, at)?;
        let hdr = unsafe { *hdr };
        let olen = be16([hdr[2], hdr[3]]) as usize;
        if olen > 64 {
            return Err(Counter::BadEdns);
        }
        at += 4 + olen;
        if at > msg_end {
            return Err(Counter::BadEdns);
        }
        n += 1;
    }
    if at == msg_end {
        Ok(flags & 0x8000)
    } else {
        Err(Counter::BadEdns)
    }
}
