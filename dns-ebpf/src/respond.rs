//! Turns a validated query into its answer, in place: the question stays where it is, the
//! headers are rewritten, the records and OPT are written after the question.
use dns_common::{ARecords, Counter, EDNS_PAYLOAD, MAX_A_RECORDS};

use crate::{
    csum::{finish_udp, fold, word, words},
    headers::*,
    packet::{ptr_at, Bounds},
    parse::Query,
};

const REPLY_TTL: u8 = 64;

/// Frame length of the answer to `q` with `count` A records.
#[inline(always)]
pub fn reply_len(q: &Query, count: usize) -> usize {
    q.l4_off + UDP_LEN + DNS_LEN + q.qlen + 4 + count * A_RECORD_LEN + q.has_opt as usize * OPT_LEN
}

/// Writes the answer into a frame already resized to `reply_len(q, count)`.
/// `name_sum` is the QNAME's checksum contribution, summed during the parse.
#[inline(always)]
pub fn write(
    b: &Bounds,
    q: &Query,
    rec: &ARecords,
    count: usize,
    name_sum: u64,
) -> Result<(), Counter> {
    let udp_len = reply_len(q, count) - q.l4_off;
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
        // QR AA, RD copied; RA, AD, CD clear; NOERROR.
        (*dns).flags = [0x84 | q.rd, 0];
        (*dns).qdcount = 1u16.to_be_bytes();
        (*dns).ancount = (count as u16).to_be_bytes();
        (*dns).nscount = [0, 0];
        (*dns).arcount = (q.has_opt as u16).to_be_bytes();
        sum += word((*dns).id[0], (*dns).id[1]) + word((*dns).flags[0], 0) + 1 + count as u64;
        sum += q.has_opt as u64;
    }
    sum += name_sum;

    // Everything after the name, summed as if it started on an even offset; it starts on an
    // odd one when the name's length is odd, which a byte swap of the folded sum corrects.
    let mut tail = (TYPE_A + CLASS_IN) as u64;
    let ans_off = q.l4_off + UDP_LEN + DNS_LEN + q.qlen + 4;
    let ttl = rec.ttl.to_be_bytes();
    let mut i = 0;
    while i < MAX_A_RECORDS {
        if i >= count {
            break;
        }
        let r: *mut ARecord = ptr_at(b, ans_off + i * A_RECORD_LEN)?;
        let addr = rec.addrs[i];
        unsafe {
            (*r).name_ptr = [0xc0, DNS_LEN as u8];
            (*r).rtype = TYPE_A.to_be_bytes();
            (*r).class = CLASS_IN.to_be_bytes();
            (*r).ttl = ttl;
            (*r).rdlen = 4u16.to_be_bytes();
            (*r).addr = addr;
        }
        tail += 0xc000 + DNS_LEN as u64 + TYPE_A as u64 + CLASS_IN as u64 + 4;
        tail += word(ttl[0], ttl[1]) + word(ttl[2], ttl[3]);
        tail += word(addr[0], addr[1]) + word(addr[2], addr[3]);
        i += 1;
    }
    if q.has_opt == 1 {
        let o: *mut Opt = ptr_at(b, ans_off + count * A_RECORD_LEN)?;
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
        tail += word(TYPE_OPT as u8, payload[0]) + word(payload[1], 0);
        tail += (q.do_bit >> 8) as u64;
    }
    let tail = fold(tail);
    sum += if q.qlen & 1 == 1 {
        tail.swap_bytes()
    } else {
        tail
    } as u64;

    unsafe {
        (*udp).csum = finish_udp(sum).to_be_bytes();
    }
    Ok(())
}
