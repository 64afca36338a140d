//! Names under `pod.<zone>`, answered as the record model's pod lookup does:
//! `<ns>.pod.<zone>` exists (NODATA) when `<ns>` is a namespace served; `a-b-c-d.<ns>.pod.<zone>`
//! has the A record a.b.c.d (`pods insecure`; `pods verified` also needs a pod of that
//! namespace with that address); a first label of three dashes that is no IPv4 address
//! (Rust's parser: no leading zeros, octets ≤ 255), an unknown namespace, or more labels
//! are NXDOMAIN. The IPv6 dashed form (`fd00--5.<ns>.pod.<zone>`) likewise has its AAAA
//! record; one with an IPv4 tail (a `.` in the label) passes to userspace.
use core::ptr::{read_volatile, write_volatile};

use dns_common::{
    Counter, Scratch, ZoneInfo, NAME_KEY_LEN, NS_KEY_LEN, ZONE_PODS_DISABLED, ZONE_PODS_VERIFIED,
};

/// What a name under `pod.<zone>` comes to.
pub enum Pod {
    NxDomain,
    NoData,
    /// An IPv4 pod address, filled into the scratch value's `pod` record.
    V4,
    /// An IPv6 pod address, likewise.
    V6,
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
    let family = address(s, l1)?;
    if family == Family::None {
        return Ok(Pod::NxDomain);
    }
    if z.flags & ZONE_PODS_VERIFIED != 0 && !lookup(s, true) {
        return Ok(Pod::NxDomain);
    }
    unsafe {
        let r = &mut (*s).rec;
        r.ttl = z.record_ttl;
        r.a_count = (family == Family::V4) as u8;
        r.aaaa_count = (family == Family::V6) as u8;
        r.flags = 0;
    }
    Ok(match family {
        Family::V4 => Pod::V4,
        _ => Pod::V6,
    })
}

/// What the first label of a pod name spells.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    /// No address: NXDOMAIN.
    None,
    V4,
    V6,
}

/// The parsers' state lives in the scratch map, read and written volatile: registers
/// holding it would multiply the verifier's states. The label's length is read back from
/// memory at every use too: a register would carry what each loop exit learned of it
/// (`len <= i`) into the next loop, one verifier state per exit.
struct State(*mut u32);

impl State {
    const LEN: usize = 0;
    const BAD: usize = 1;
    #[inline(always)]
    fn get(&self, k: usize) -> u32 {
        unsafe { read_volatile(self.0.add(k & 15)) }
    }
    #[inline(always)]
    fn set(&self, k: usize, v: u32) {
        unsafe { write_volatile(self.0.add(k & 15), v) }
    }
    #[inline(always)]
    fn add(&self, k: usize, v: u32) {
        self.set(k, self.get(k) + v)
    }
    #[inline(always)]
    fn reset(s: *mut Scratch, len: usize) -> Self {
        let st = State(unsafe { (*s).pod_parse.as_mut_ptr() });
        let mut k = 0;
        while k < 16 {
            st.set(k, 0);
            k += 1;
        }
        st.set(Self::LEN, len as u32);
        st
    }
    /// Past the label's end.
    #[inline(always)]
    fn end(&self, i: usize) -> bool {
        i >= self.get(Self::LEN) as usize
    }
}

/// Parses the first label (`l1` bytes) as `undash` does: exactly three dashes and no `--`
/// is the IPv4 form, anything else the IPv6 one (dashes for colons). The address goes into
/// the scratch value's pod record and pod key. `Err`: a label userspace might read as an
/// IPv6 address with an IPv4 tail (it holds a `.`), which it is left to.
#[inline(always)]
fn address(s: *mut Scratch, l1: usize) -> Result<Family, Counter> {
    let st = State::reset(s, l1);
    const DASHES: usize = 2;
    const DOUBLE: usize = 3;
    let mut i = 0;
    while i < 63 {
        if st.end(i) {
            break;
        }
        if key_at(s, 1 + i) == b'-' {
            st.add(DASHES, 1);
            if !st.end(i + 1) && key_at(s, 2 + i) == b'-' {
                st.set(DOUBLE, 1);
            }
        }
        i += 1;
    }
    // The pod key's address is still all zero from the namespace lookup: each parser
    // writes only the bytes its family has.
    if st.get(DASHES) == 3 && st.get(DOUBLE) == 0 {
        return Ok(if v4(s) { Family::V4 } else { Family::None });
    }
    Ok(if v6(s)? { Family::V6 } else { Family::None })
}

/// Rust's `Ipv4Addr` parser on the dashed label: four parts of one to three digits, no
/// leading zero, at most 255.
#[inline(always)]
fn v4(s: *mut Scratch) -> bool {
    let st = State(unsafe { (*s).pod_parse.as_mut_ptr() });
    const PART: usize = 4;
    const VALUE: usize = 5;
    const DIGITS: usize = 6;
    const FIRST: usize = 7;
    let mut i = 0;
    while i < 64 {
        // One past the label: the end of the last part.
        let end = st.end(i);
        let c = if end { b'-' } else { key_at(s, 1 + i) };
        if c == b'-' {
            let (digits, value) = (st.get(DIGITS), st.get(VALUE));
            if digits == 0 || (digits > 1 && st.get(FIRST) == b'0' as u32) || value > 255 {
                st.set(State::BAD, 1);
                break;
            }
            let part = st.get(PART) as usize & 3;
            unsafe {
                write_volatile(&mut (*s).rec.a[0][part], value as u8);
                write_volatile(&mut (*s).pod_key.addr[12 + part], value as u8);
            }
            st.add(PART, 1);
            st.set(VALUE, 0);
            st.set(DIGITS, 0);
            if end {
                break;
            }
        } else if c.is_ascii_digit() {
            if st.get(DIGITS) == 0 {
                st.set(FIRST, c as u32);
            }
            st.add(DIGITS, 1);
            if st.get(DIGITS) > 3 {
                st.set(State::BAD, 1);
                break;
            }
            st.set(VALUE, st.get(VALUE) * 10 + (c - b'0') as u32);
        } else {
            st.set(State::BAD, 1);
            break;
        }
        i += 1;
    }
    if st.get(State::BAD) != 0 || st.get(PART) != 4 {
        return false;
    }
    unsafe {
        (*s).pod_key.addr[10] = 0xff;
        (*s).pod_key.addr[11] = 0xff;
    }
    true
}

/// Rust's `Ipv6Addr` parser on the label with dashes read as colons: groups of one to
/// four hex digits; eight of them, or at most seven around one `::`; a single colon only
/// between two groups.
#[inline(always)]
fn v6(s: *mut Scratch) -> Result<bool, Counter> {
    let st = State(unsafe { (*s).pod_parse.as_mut_ptr() });
    const VALUE: usize = 4;
    const DIGITS: usize = 5;
    const HEAD: usize = 6;
    const TAIL: usize = 7;
    const DOUBLE: usize = 8;
    /// Colons in the current run.
    const RUN: usize = 9;
    /// The current run of colons follows a group.
    const AFTER_GROUP: usize = 10;
    let mut i = 0;
    while i < 64 {
        let end = st.end(i);
        let c = if end { 0 } else { key_at(s, 1 + i) };
        let hex = match c {
            b'0'..=b'9' => (c - b'0') as u32,
            b'a'..=b'f' => (c - b'a' + 10) as u32,
            _ => 16,
        };
        if hex < 16 {
            // A group starts after a single colon only if that colon follows a group.
            if st.get(RUN) == 1 && st.get(AFTER_GROUP) == 0 {
                st.set(State::BAD, 1);
                break;
            }
            st.set(RUN, 0);
            st.add(DIGITS, 1);
            if st.get(DIGITS) > 4 {
                st.set(State::BAD, 1);
                break;
            }
            st.set(VALUE, st.get(VALUE) * 16 + hex);
            i += 1;
            continue;
        }
        if c == b'.' {
            // An IPv4 tail (`--ffff-10.0.0.1`): userspace's to parse.
            return Err(Counter::PodName);
        }
        if !end && c != b'-' {
            st.set(State::BAD, 1);
            break;
        }
        if st.get(DIGITS) > 0 {
            // The group ends: the head's before a `::`, the tail's after it, seven at most
            // with one.
            let v = st.get(VALUE) as u16;
            let slot = if st.get(DOUBLE) == 0 {
                if st.get(HEAD) >= 8 {
                    st.set(State::BAD, 1);
                    break;
                }
                st.add(HEAD, 1);
                st.get(HEAD) - 1
            } else {
                if st.get(HEAD) + st.get(TAIL) >= 7 {
                    st.set(State::BAD, 1);
                    break;
                }
                st.add(TAIL, 1);
                // Tail groups go to the pod key first; moved to the end below.
                8 + st.get(TAIL) - 1
            } as usize;
            write_group(s, slot, v);
            st.set(VALUE, 0);
            st.set(DIGITS, 0);
            st.set(AFTER_GROUP, 1);
        } else if st.get(RUN) == 0 {
            st.set(AFTER_GROUP, 0);
        }
        if end {
            // A trailing single colon, or eight groups short without a `::`.
            if st.get(RUN) == 1 || (st.get(DOUBLE) == 0 && st.get(HEAD) != 8) {
                st.set(State::BAD, 1);
            }
            break;
        }
        st.add(RUN, 1);
        if st.get(RUN) == 2 {
            if st.get(DOUBLE) != 0 || st.get(HEAD) >= 8 {
                st.set(State::BAD, 1);
                break;
            }
            st.set(DOUBLE, 1);
        } else if st.get(RUN) > 2 {
            st.set(State::BAD, 1);
            break;
        }
        i += 1;
    }
    if st.get(State::BAD) != 0 {
        return Ok(false);
    }
    // The tail's groups end the address.
    let tail = st.get(TAIL) as usize;
    let mut j = 0;
    while j < 7 {
        if j >= st.get(TAIL) as usize {
            break;
        }
        let v = read_group(s, 8 + j);
        write_group(s, 8 - tail + j, v);
        j += 1;
    }
    unsafe {
        let r = &mut (*s).rec;
        r.aaaa[0] = (*s).pod_key.addr;
    }
    Ok(true)
}

/// Group `slot` (0..8) of the address in the pod key; 8..15 hold the tail's groups, in
/// the pod record's second address, until they are moved.
#[inline(always)]
fn write_group(s: *mut Scratch, slot: usize, v: u16) {
    let b = v.to_be_bytes();
    unsafe {
        let base = if slot & 8 == 0 {
            (*s).pod_key.addr.as_mut_ptr()
        } else {
            (*s).rec.aaaa[1].as_mut_ptr()
        };
        let at = (slot & 7) * 2;
        write_volatile(base.add(at), b[0]);
        write_volatile(base.add(at + 1), b[1]);
    }
}

#[inline(always)]
fn read_group(s: *const Scratch, slot: usize) -> u16 {
    unsafe {
        let base = (*s).rec.aaaa[1].as_ptr();
        let at = (slot & 7) * 2;
        u16::from_be_bytes([read_volatile(base.add(at)), read_volatile(base.add(at + 1))])
    }
}
