//! Names under `pod.<zone>`, answered as the record model's pod lookup does:
//! `<ns>.pod.<zone>` exists (NODATA) when `<ns>` is a namespace served; `a-b-c-d.<ns>.pod.<zone>`
//! has the A record a.b.c.d (`pods insecure`; `pods verified` also needs a pod of that
//! namespace with that address); a first label of three dashes that is no IPv4 address
//! (Rust's parser: no leading zeros, octets ≤ 255), an unknown namespace, or more labels
//! are NXDOMAIN. The IPv6 dashed form passes to userspace.
use core::ptr::{read_volatile, write_volatile};

use dns_common::{
    Counter, NameRecords, Scratch, ZoneInfo, NAME_KEY_LEN, NS_KEY_LEN, ZONE_PODS_DISABLED,
    ZONE_PODS_VERIFIED,
};

/// What a name under `pod.<zone>` comes to.
pub enum Pod {
    NxDomain,
    NoData,
    /// The pod's address, filled into the scratch value's `pod` record.
    Address,
}

#[inline(always)]
fn key_at(s: *const Scratch, off: usize) -> u8 {
    unsafe { read_volatile(&(*s).key.name[off & (NAME_KEY_LEN - 1)]) }
}

/// `pod_label` is the offset of the `pod` label (its length octet) in the walked name;
/// `lookup` says whether the scratch value's pod key is in the namespaces map (`false`) or
/// the verified pods map (`true`).
#[inline(always)]
pub fn classify(
    s: *mut Scratch,
    pod_label: usize,
    z: &ZoneInfo,
    lookup: impl Fn(*const Scratch, bool) -> bool,
) -> Result<Pod, Counter> {
    // `pod.<zone>` itself is an ordinary name of the records map.
    if pod_label == 0 {
        return Err(Counter::PodName);
    }
    if z.flags & ZONE_PODS_DISABLED != 0 {
        return Ok(Pod::NxDomain);
    }
    let l1 = key_at(s, 0) as usize;
    // The namespace is the label right above `pod`: the first or the second.
    let (ns_at, ln, extra) = if 1 + l1 == pod_label {
        (0, l1, 1)
    } else {
        let at = 1 + l1;
        let ln = key_at(s, at) as usize;
        if at + 1 + ln != pod_label {
            // Three labels or more below `pod`: nothing exists there.
            return Ok(Pod::NxDomain);
        }
        (at, ln, 2)
    };
    if ln >= NS_KEY_LEN {
        return Ok(Pod::NxDomain);
    }
    unsafe {
        let k = &mut (*s).pod_key;
        let ns = k.ns.as_mut_ptr();
        let mut w = 0;
        while w < NS_KEY_LEN {
            write_volatile(ns.add(w) as *mut u64, 0);
            w += 8;
        }
        write_volatile(k.addr.as_mut_ptr() as *mut [u64; 2], [0, 0]);
        let mut i = 0;
        while i < NS_KEY_LEN - 1 {
            if i >= ln {
                break;
            }
            write_volatile(ns.add(i), key_at(s, ns_at + 1 + i));
            i += 1;
        }
    }
    if !lookup(s, false) {
        return Ok(Pod::NxDomain);
    }
    if extra == 1 {
        return Ok(Pod::NoData);
    }
    match address(s, l1)? {
        false => Ok(Pod::NxDomain),
        true if z.flags & ZONE_PODS_VERIFIED != 0 && !lookup(s, true) => Ok(Pod::NxDomain),
        true => unsafe {
            let r = &mut (*s).pod;
            r.ttl = z.record_ttl;
            r.a_count = 1;
            r.aaaa_count = 0;
            r.flags = 0;
            Ok(Pod::Address)
        },
    }
}

/// Parses the first label (`l1` bytes) as a dashed IPv4 address into the scratch value's
/// pod record and pod key. `Ok(false)`: three dashes but no address (NXDOMAIN); `Err`:
/// the IPv6 form, which userspace parses.
#[inline(always)]
fn address(s: *mut Scratch, l1: usize) -> Result<bool, Counter> {
    // The parser's state lives in the scratch map: registers holding it would multiply
    // the verifier's states.
    let st = unsafe { (*s).pod_parse.as_mut_ptr() };
    let get = |k: usize| unsafe { read_volatile(st.add(k)) };
    let set = |k: usize, v: u32| unsafe { write_volatile(st.add(k), v) };
    const DASHES: usize = 0;
    const PART: usize = 1;
    const VALUE: usize = 2;
    const DIGITS: usize = 3;
    const FIRST: usize = 4;
    const BAD: usize = 5;
    // The label's length, read back from memory at every use: a register would carry what
    // each loop exit learned of it (`l1 <= i`) into the next loop, one verifier state per
    // exit, 63 × 64 iterations.
    const LEN: usize = 6;
    let mut k = 0;
    while k < 8 {
        set(k, 0);
        k += 1;
    }
    set(LEN, l1 as u32);
    let mut i = 0;
    while i < 63 {
        if i >= get(LEN) as usize {
            break;
        }
        if key_at(s, 1 + i) == b'-' {
            set(DASHES, get(DASHES) + 1);
            if i + 1 < get(LEN) as usize && key_at(s, 2 + i) == b'-' {
                set(BAD, 1);
            }
        }
        i += 1;
    }
    if get(DASHES) != 3 || get(BAD) != 0 {
        return Err(Counter::PodName);
    }
    let mut i = 0;
    while i < 64 {
        // One past the label: the end of the last part.
        let end = i >= get(LEN) as usize;
        let c = if end { b'-' } else { key_at(s, 1 + i) };
        if c == b'-' {
            let (digits, value) = (get(DIGITS), get(VALUE));
            if digits == 0 || (digits > 1 && get(FIRST) == b'0' as u32) || value > 255 {
                set(BAD, 1);
                break;
            }
            let part = get(PART) as usize & 3;
            unsafe {
                write_volatile(&mut (*s).pod.a[0][part], value as u8);
                write_volatile(&mut (*s).pod_key.addr[12 + part], value as u8);
            }
            set(PART, part as u32 + 1);
            set(VALUE, 0);
            set(DIGITS, 0);
            if end {
                break;
            }
        } else if c.is_ascii_digit() {
            if get(DIGITS) == 0 {
                set(FIRST, c as u32);
            }
            set(DIGITS, get(DIGITS) + 1);
            if get(DIGITS) > 3 {
                set(BAD, 1);
                break;
            }
            set(VALUE, get(VALUE) * 10 + (c - b'0') as u32);
        } else {
            set(BAD, 1);
            break;
        }
        i += 1;
    }
    if get(BAD) != 0 || get(PART) != 4 {
        return Ok(false);
    }
    unsafe {
        (*s).pod_key.addr[10] = 0xff;
        (*s).pod_key.addr[11] = 0xff;
    }
    Ok(true)
}

/// The scratch value's pod record, as the reply writer takes it.
#[inline(always)]
pub fn record(s: *const Scratch) -> &'static NameRecords {
    unsafe { &(*s).pod }
}
