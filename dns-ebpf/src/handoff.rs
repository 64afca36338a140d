//! The parsed query, handed from the main program to the one it tail-calls through the
//! per-CPU scratch value (a tail call keeps the CPU and the packet, not the registers).
use core::ptr::{read_volatile, write_volatile};

use dns_common::{Counter, QueryState, Scratch};

use crate::{
    headers::{ETH_LEN, IPV4_LEN, IPV6_LEN},
    parse::Query,
};

#[inline(always)]
pub fn save(s: *mut Scratch, q: &Query, arg: usize) {
    let st = QueryState {
        v6: q.v6,
        has_opt: q.has_opt,
        rd: q.rd,
        _pad: 0,
        do_bit: q.do_bit,
        qtype: q.qtype,
        qlen: q.qlen as u32,
        arg: arg as u32,
    };
    unsafe { write_volatile(&mut (*s).query, st) };
}

/// The query as the main program saved it, with every field bounded again for the
/// verifier, which sees this program on its own; and the argument for the callee.
#[inline(always)]
pub fn restore(s: *const Scratch) -> Result<(Query, usize), Counter> {
    let st = unsafe { read_volatile(&(*s).query) };
    let v6 = st.v6 & 1;
    let qlen = st.qlen as usize & 0xff;
    if qlen == 0 {
        return Err(Counter::Malformed);
    }
    let q = Query {
        v6,
        l4_off: ETH_LEN + if v6 == 1 { IPV6_LEN } else { IPV4_LEN },
        qlen,
        has_opt: st.has_opt & 1,
        do_bit: st.do_bit & 0x8000,
        rd: st.rd & 1,
        qtype: st.qtype,
    };
    Ok((q, st.arg as usize & 0xff))
}
