//! RFC 1071 ones'-complement sums, accumulated in 64 bits and folded once.

#[inline(always)]
pub fn word(hi: u8, lo: u8) -> u64 {
    ((hi as u64) << 8) | lo as u64
}

#[inline(always)]
pub fn words<const N: usize>(b: &[u8; N]) -> u64 {
    let mut s = 0u64;
    let mut i = 0;
    while i + 1 < N {
        s += word(b[i], b[i + 1]);
        i += 2;
    }
    if N % 2 == 1 {
        s += word(b[N - 1], 0);
    }
    s
}

#[inline(always)]
pub fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum field value for a sum; UDP sends an all-zero result as 0xffff (RFC 768).
#[inline(always)]
pub fn finish_udp(s: u64) -> u16 {
    let c = !fold(s);
    if c == 0 {
        0xffff
    } else {
        c
    }
}
