//! Where a name sits: under the zone (NXDOMAIN when the map does not hold it, once the map
//! is complete), under `pod.<zone>` (pod names are computed: the pod program's), under a
//! reverse zone, or outside them all (userspace forwards it: pass, with no map lookup).
use core::ptr::{read_volatile, write_volatile};

use dns_common::{Counter, NameKey, Scratch, MAX_NAME_LEN, NAME_KEY_LEN};

/// Whether a label starts at offset `off` of the walked name.
#[inline(always)]
fn label_start(s: *const Scratch, off: usize) -> bool {
    let byte = unsafe { read_volatile(&(*s).label_starts[(off >> 3) & (NAME_KEY_LEN / 8 - 1)]) };
    byte & (1 << (off & 7)) != 0
}

#[inline(always)]
fn key_at(s: *const Scratch, off: usize) -> u8 {
    unsafe { read_volatile(&(*s).key.name[off & (NAME_KEY_LEN - 1)]) }
}

/// Where a name under the zone sits.
pub enum Under {
    /// Anywhere but below `pod.<zone>`.
    Zone,
    /// Below `pod.<zone>`; the offset of the `pod` label's length octet.
    Pods(usize),
}

/// Where the walked name sits, found before any map lookup: every other name is
/// userspace's (it forwards them), and costs no hash of its key.
pub enum Place {
    /// Under the zone; the offset where the zone's suffix starts.
    Zone(usize),
    /// Under `in-addr.arpa.` or `ip6.arpa.`.
    Reverse,
}

/// The reverse zones' wire names as little-endian words, zero padded.
const IN_ADDR_ARPA: ([u64; 2], usize) = words(b"\x07in-addr\x04arpa\x00\x00\x00");
const IP6_ARPA: ([u64; 2], usize) = words(b"\x03ip6\x04arpa\x00\x00\x00\x00\x00\x00\x00");

/// A name of up to 16 bytes as two words, and its length (up to the root label).
const fn words(b: &[u8; 16]) -> ([u64; 2], usize) {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    let mut i = 0;
    while i < 8 {
        lo[i] = b[i];
        hi[i] = b[i + 8];
        i += 1;
    }
    // The wire name ends at its first zero length octet, read label by label.
    let mut len = 0;
    while b[len] != 0 {
        len += b[len] as usize + 1;
    }
    ([u64::from_le_bytes(lo), u64::from_le_bytes(hi)], len + 1)
}

/// Whether the walked name (`qlen` bytes, lower-cased in the scratch key) ends in the
/// zone `zone` (`zone_len` bytes) or a reverse zone on a label boundary, and where;
/// `Err(OutOfZone)` if it ends in neither.
#[inline(always)]
pub fn place(
    s: *mut Scratch,
    qlen: usize,
    zone: &NameKey,
    zone_len: usize,
) -> Result<Place, Counter> {
    if let Some(start) = suffix_start(s, qlen, zone_len) {
        let z = zone.name.as_ptr();
        // In bounds: `ends_with` reads whole words below `zone_len` only.
        let zone_word = |j: usize| unsafe {
            core::ptr::read_unaligned(z.add((j * 8) & (NAME_KEY_LEN - 8)) as *const u64)
        };
        if ends_with(s, start, zone_word, zone_len) {
            return Ok(Place::Zone(start));
        }
    }
    for (w, len) in [IN_ADDR_ARPA, IP6_ARPA] {
        if let Some(start) = suffix_start(s, qlen, len) {
            if ends_with(s, start, |j| w[j & 1], len) {
                return Ok(Place::Reverse);
            }
        }
    }
    Err(Counter::OutOfZone)
}

/// Where a suffix of `len` bytes of the walked name starts, if a label starts there.
#[inline(always)]
fn suffix_start(s: *mut Scratch, qlen: usize, len: usize) -> Option<usize> {
    if len == 0 || len > qlen || qlen > MAX_NAME_LEN {
        return None;
    }
    // Laundered through memory: LLVM knows `start < 256` from the checks above and would
    // drop the mask, but the verifier does not relate two registers and needs to see it.
    let start = unsafe {
        write_volatile(&mut (*s).next_label, (qlen - len) as u32);
        read_volatile(&(*s).next_label) as usize & (NAME_KEY_LEN - 1)
    };
    // A suffix that only looks like the zone (its first byte inside a label) is not it.
    label_start(s, start).then_some(start)
}

/// Whether the walked name from `start` on is the `len` bytes `word(0)`, `word(1)`, ...
/// hold (little endian), compared eight bytes at a time.
#[inline(always)]
fn ends_with(s: *const Scratch, start: usize, word: impl Fn(usize) -> u64, len: usize) -> bool {
    let key = unsafe { (*s).key.name.as_ptr() };
    let mut j = 0;
    while j < NAME_KEY_LEN / 8 {
        let at = j * 8;
        if at >= len {
            break;
        }
        // Past the key's end only where the name reaches it, and those bytes are masked
        // out: the scratch value goes on after the key.
        let mine = unsafe {
            core::ptr::read_unaligned(key.add((start + at) & (NAME_KEY_LEN - 1)) as *const u64)
        };
        let rest = len - at;
        let mask = if rest >= 8 {
            u64::MAX
        } else {
            (1u64 << ((rest & 7) * 8)) - 1
        };
        if (mine ^ word(j)) & mask != 0 {
            return false;
        }
        j += 1;
    }
    true
}

/// Where a name under the zone whose suffix starts at `start` sits: below `pod.<zone>`
/// (the pod program's) or anywhere else.
#[inline(always)]
pub fn under(s: *const Scratch, start: usize) -> Under {
    if label_before(s, start, b"pod") {
        return Under::Pods(start - 4);
    }
    Under::Zone
}

/// Whether the label that ends at offset `end` of the walked name is `label`.
#[inline(always)]
fn label_before(s: *const Scratch, end: usize, label: &[u8]) -> bool {
    let n = label.len();
    if end < n + 1 || !label_start(s, end - n - 1) || key_at(s, end - n - 1) != n as u8 {
        return false;
    }
    let mut i = 0;
    while i < n {
        if key_at(s, end - n + i) != label[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `Ok` unless the question ends in `dns.<zone>` or `hostmaster.<zone>`: the SOA's names
/// (`ns.dns.<zone>`, `hostmaster.<zone>`) would share more than the zone with it, and
/// userspace compresses them against it where the kernel points at the zone only.
#[inline(always)]
pub fn soa_names_apart(s: *mut Scratch, qlen: usize, zone_len: usize) -> Result<(), Counter> {
    // Laundered through memory, as in `suffix_start`: the verifier must see the mask.
    let start = unsafe {
        write_volatile(&mut (*s).next_label, qlen.saturating_sub(zone_len) as u32);
        read_volatile(&(*s).next_label) as usize & (NAME_KEY_LEN - 1)
    };
    if label_before(s, start, b"dns") || label_before(s, start, b"hostmaster") {
        return Err(Counter::SoaName);
    }
    Ok(())
}

/// `Ok` when the question spells the zone in lower case, so the SOA owner (a pointer into
/// the question) reads as userspace writes it.
#[inline(always)]
pub fn owner_case_matches(s: *const Scratch, qlen: usize, zone_len: usize) -> Result<(), Counter> {
    let upper_end = unsafe { read_volatile(&(*s).upper_end) } as usize;
    if upper_end > qlen.saturating_sub(zone_len) {
        return Err(Counter::ZoneCase);
    }
    Ok(())
}
