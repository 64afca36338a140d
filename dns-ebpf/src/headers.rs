//! On-the-wire header layouts. Byte arrays only: alignment 1, so the compiler never emits a
//! wide load the verifier would reject as misaligned.

#[repr(C)]
pub struct Eth {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: [u8; 2],
}

#[repr(C)]
pub struct Ipv4 {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    pub csum: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

#[repr(C)]
pub struct Ipv6 {
    pub vtcfl: [u8; 4],
    pub payload_len: [u8; 2],
    pub next: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

#[repr(C)]
pub struct Udp {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub len: [u8; 2],
    pub csum: [u8; 2],
}

#[repr(C)]
pub struct Dns {
    pub id: [u8; 2],
    pub flags: [u8; 2],
    pub qdcount: [u8; 2],
    pub ancount: [u8; 2],
    pub nscount: [u8; 2],
    pub arcount: [u8; 2],
}

/// The OPT pseudo-record (RFC 6891 §6.1.2) with an empty RDATA.
#[repr(C)]
pub struct Opt {
    pub name: u8,
    pub rtype: [u8; 2],
    pub payload: [u8; 2],
    pub ext_rcode: u8,
    pub version: u8,
    pub flags: [u8; 2],
    pub rdlen: [u8; 2],
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_UDP: u8 = 17;
pub const DNS_PORT: u16 = 53;
pub const TYPE_A: u16 = 1;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = dns_common::RTYPE_PTR;
/// RCODE 3, in the header's second flags byte.
pub const RCODE_NXDOMAIN: u8 = 3;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const CLASS_IN: u16 = 1;
pub const ETH_LEN: usize = core::mem::size_of::<Eth>();
pub const IPV4_LEN: usize = core::mem::size_of::<Ipv4>();
pub const IPV6_LEN: usize = core::mem::size_of::<Ipv6>();
pub const UDP_LEN: usize = core::mem::size_of::<Udp>();
pub const DNS_LEN: usize = core::mem::size_of::<Dns>();
/// An A record with its owner a pointer to the question: 2 + 10 + 4.
pub const A_RECORD_LEN: usize = 16;
/// An AAAA record likewise: 2 + 10 + 16.
pub const AAAA_RECORD_LEN: usize = 28;
/// The zone's SOA, every name in it a pointer into the question: owner 2, fixed 10,
/// `\x02ns\x03dns` + pointer 9, `\x0ahostmaster` + pointer 13, five numbers 20.
pub const SOA_RECORD_LEN: usize = 54;
/// A PTR record before its target: owner pointer, type, class, TTL, RDLENGTH.
pub const TARGET_FIXED_LEN: usize = 12;
/// Offset of the question name in the DNS message.
pub const QNAME_OFF: usize = 12;
pub const OPT_LEN: usize = core::mem::size_of::<Opt>();

const _: () = assert!(ETH_LEN == 14 && IPV4_LEN == 20 && IPV6_LEN == 40 && UDP_LEN == 8);
const _: () = assert!(DNS_LEN == 12 && QNAME_OFF == DNS_LEN && OPT_LEN == 11);

#[inline(always)]
pub fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}
