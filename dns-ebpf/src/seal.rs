//! Map entries copied out before an answer reads them, and checked there.
//!
//! The kernel hands a hash map element that an update replaced or a delete removed to the
//! next insert at once, so a program still reading it can see another entry's bytes, or
//! half of them. Each entry carries a seal over its key and what an answer reads (see
//! [`dns_common::Seal`]); the copy in the per-CPU scratch, which nothing else writes, is
//! checked against it, and an entry that does not match passes to userspace.
use core::ptr::{read_volatile, write_volatile};

use dns_common::{Counter, NameRecords, Scratch, TargetRecord, NAME_KEY_LEN};

/// Words of a [`NameRecords`] before its addresses: head, two seals.
const RECORD_HEAD: usize = 3;
/// Words of `a` and of `aaaa`.
const A_WORDS: usize = 4;
const AAAA_WORDS: usize = 16;
/// Words of a [`TargetRecord`] before its name: head, sum, seal.
const TARGET_HEAD: usize = 3;

/// Copies words `from..from + n` of `src` to `dst`, each read once: volatile, so the
/// compiler neither reads the shared entry again later nor reads it in place of the copy.
#[inline(always)]
unsafe fn copy_words(src: *const u64, dst: *mut u64, from: usize, n: usize) {
    let mut i = 0;
    while i < n {
        unsafe { write_volatile(dst.add(from + i), read_volatile(src.add(from + i))) };
        i += 1;
    }
}

/// The record entry `m` as the answer reads it (the head and the family asked for), from
/// the scratch copy whose seal matched.
#[inline(always)]
pub fn record<'a>(
    s: *mut Scratch,
    m: &NameRecords,
    aaaa: bool,
) -> Result<&'a NameRecords, Counter> {
    unsafe {
        let src = m as *const NameRecords as *const u64;
        let dst = &mut (*s).rec as *mut NameRecords as *mut u64;
        copy_words(src, dst, 0, RECORD_HEAD);
        if aaaa {
            copy_words(src, dst, RECORD_HEAD + A_WORDS, AAAA_WORDS);
        } else {
            copy_words(src, dst, RECORD_HEAD, A_WORDS);
        }
        // Borrowed only now, after the last write through `dst`.
        let r = &(*s).rec;
        let ok = if aaaa {
            r.seal_aaaa(&(*s).rkey) == r.seal[1]
        } else {
            r.seal_a(&(*s).rkey) == r.seal[0]
        };
        if !ok {
            return Err(Counter::Resealed);
        }
        Ok(r)
    }
}

/// The target entry `m` from the scratch copy whose seal matched; its length is 2..=255.
#[inline(always)]
pub fn target<'a>(s: *mut Scratch, m: &TargetRecord) -> Result<&'a TargetRecord, Counter> {
    unsafe {
        let src = m as *const TargetRecord as *const u64;
        let t = &mut (*s).target as *mut TargetRecord;
        let dst = t as *mut u64;
        copy_words(src, dst, 0, TARGET_HEAD);
        let len = read_volatile(&(*t).len) as usize;
        if !(2..=255).contains(&len) {
            return Err(Counter::PtrPass);
        }
        let words = TargetRecord::words(len);
        let mut i = 0;
        while i < NAME_KEY_LEN / 8 {
            if i >= words {
                break;
            }
            copy_words(src, dst, TARGET_HEAD + i, 1);
            i += 1;
        }
        // Borrowed only now, after the last write through `dst`.
        let r = &*t;
        if r.seal_of(&(*s).rkey) != r.seal {
            return Err(Counter::Resealed);
        }
        Ok(r)
    }
}
