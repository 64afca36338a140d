//! Types shared by the kernel program (`dns-ebpf`) and the daemon (`dns-userspace`).
//!
//! Every type here is a BPF map key or value: `#[repr(C)]`, fixed width, no implicit padding,
//! no `bool`/enum/`Option`, and its size asserted so both sides agree byte for byte.
#![no_std]

use core::mem::size_of;

/// Product name: binary, metrics prefix, bpffs pin folder, DaemonSet.
pub const PRODUCT: &str = "xdns";

/// The maps' layout (every key and value type here, and the set of pinned maps). Pins live
/// in a folder named after it, so a daemon of another layout never adopts maps it would
/// misread: it builds its own beside them and takes the pinned links over once they are
/// filled. Bump it with any change to a pinned map's type.
pub const LAYOUT_VERSION: u32 = 8;

/// Longest name in wire format, root label included (RFC 1035 §3.1).
pub const MAX_NAME_LEN: usize = 255;
/// Key buffer: the wire name zero-padded to a power of two so indexing can be masked.
pub const NAME_KEY_LEN: usize = 256;
/// Addresses of one family one kernel map value carries; larger sets are answered by
/// userspace. Eight AAAA records after a 255-byte name still fit 512 bytes.
pub const MAX_ADDRS: usize = 8;
/// UDP payload size we advertise in our own OPT record (DNS flag day 2020).
pub const EDNS_PAYLOAD: u16 = 1232;
/// Largest UDP datagram (header included) the kernel path parses; queries are far smaller.
pub const MAX_QUERY_UDP_LEN: usize = 1024;

/// Lower-cased wire-format QNAME, zero padded: the records map key.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NameKey {
    pub name: [u8; NAME_KEY_LEN],
}
const _: () = assert!(size_of::<NameKey>() == NAME_KEY_LEN);

impl NameKey {
    pub const LEN: usize = NAME_KEY_LEN;

    pub const fn zeroed() -> Self {
        Self {
            name: [0; NAME_KEY_LEN],
        }
    }

    /// The key of a wire name, zero-padded; `None` if it is longer than a key holds.
    pub fn of(wire: &[u8]) -> Option<Self> {
        let mut key = Self::zeroed();
        key.name.get_mut(..wire.len())?.copy_from_slice(wire);
        Some(key)
    }

    /// The wire name a key holds (its bytes up to the root label), if it holds one.
    pub fn wire(&self) -> Option<&[u8]> {
        let mut i = 0;
        loop {
            let len = usize::from(*self.name.get(i)?);
            if len == 0 {
                return self.name.get(..=i);
            }
            i += len + 1;
        }
    }
}

/// The records and targets maps' key: two independent 64-bit keyed hashes of the lower-
/// cased wire name. Sixteen bytes to hash and compare per lookup instead of 256; the seeds
/// are random per node ([`ZoneInfo::seed`]), so names that collide cannot be chosen from
/// outside, and the daemon writes a name whose key another name shares as one that passes.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct RecordKey {
    pub h: [u64; 2],
}
const _: () = assert!(size_of::<RecordKey>() == 16);

/// Odd multipliers and rotations of the two lanes (from xxHash and the golden ratio).
const LANE_MUL: [u64; 2] = [0x9e37_79b9_7f4a_7c15, 0xc2b2_ae3d_27d4_eb4f];
const LANE_ROT: [u32; 2] = [31, 27];

/// The hash of a name as the kernel computes it while it walks the name: started from
/// the seeds and the name's length, fed one little-endian word of the lower-cased,
/// zero-padded name at a time (words up to the one holding the root label), finished.
#[derive(Clone, Copy, Debug)]
pub struct NameHash {
    pub lanes: [u64; 2],
}

impl NameHash {
    #[inline(always)]
    pub const fn start(seed: [u64; 2], qlen: u64) -> Self {
        Self {
            lanes: [seed[0] ^ qlen, seed[1] ^ qlen.wrapping_mul(LANE_MUL[1])],
        }
    }

    #[inline(always)]
    pub const fn word(self, w: u64) -> Self {
        Self {
            lanes: [
                (self.lanes[0] ^ w)
                    .wrapping_mul(LANE_MUL[0])
                    .rotate_left(LANE_ROT[0]),
                (self.lanes[1] ^ w)
                    .wrapping_mul(LANE_MUL[1])
                    .rotate_left(LANE_ROT[1]),
            ],
        }
    }

    #[inline(always)]
    pub const fn finish(self) -> RecordKey {
        RecordKey {
            h: [fmix64(self.lanes[0]), fmix64(self.lanes[1])],
        }
    }
}

/// MurmurHash3's finaliser: every input bit reaches every output bit.
#[inline(always)]
const fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl RecordKey {
    /// The key of a lower-case wire name under `seed`; `None` if it is no wire name.
    pub fn of(name: &NameKey, seed: [u64; 2]) -> Option<Self> {
        let qlen = name.wire()?.len();
        let mut h = NameHash::start(seed, qlen as u64);
        let mut at = 0;
        while at < qlen {
            // Zero past the root label, as the kernel reads it.
            let mut w = [0u8; 8];
            let end = qlen.min(at + 8);
            w[..end - at].copy_from_slice(name.name.get(at..end)?);
            h = h.word(u64::from_le_bytes(w));
            at += 8;
        }
        Some(h.finish())
    }
}

/// The addresses of one name, each family in answer order. A name in the map exists: a
/// query for a family it has none of gets NODATA (unless [`NAME_PASS`] says otherwise).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NameRecords {
    pub ttl: u32,
    /// Valid entries in `a`, 0..=MAX_ADDRS.
    pub a_count: u8,
    /// Valid entries in `aaaa`, 0..=MAX_ADDRS.
    pub aaaa_count: u8,
    /// `NAME_*` bits.
    pub flags: u8,
    pub _pad: u8,
    /// [`NameRecords::seal_a`] and [`NameRecords::seal_aaaa`] under the entry's key.
    pub seal: [u64; 2],
    pub a: [[u8; 4]; MAX_ADDRS],
    pub aaaa: [[u8; 16]; MAX_ADDRS],
}
const _: () = assert!(size_of::<NameRecords>() == 24 + 4 * MAX_ADDRS + 16 * MAX_ADDRS);

impl NameRecords {
    pub const fn empty(ttl: u32) -> Self {
        Self {
            ttl,
            a_count: 0,
            aaaa_count: 0,
            flags: 0,
            _pad: 0,
            seal: [0; 2],
            a: [[0; 4]; MAX_ADDRS],
            aaaa: [[0; 16]; MAX_ADDRS],
        }
    }

    /// TTL, counts and flags as one word.
    #[inline(always)]
    const fn head(&self) -> u64 {
        self.ttl as u64
            | (self.a_count as u64) << 32
            | (self.aaaa_count as u64) << 40
            | (self.flags as u64) << 48
    }

    /// The seal of what an A query reads (and a NODATA answer: the head).
    #[inline(always)]
    pub fn seal_a(&self, key: &RecordKey) -> u64 {
        let mut h = Seal::start(key).word(self.head());
        let mut i = 0;
        while i < MAX_ADDRS {
            let (x, y) = (self.a[i], self.a[i + 1]);
            h = h.word(u64::from_le_bytes([
                x[0], x[1], x[2], x[3], y[0], y[1], y[2], y[3],
            ]));
            i += 2;
        }
        h.finish()
    }

    /// The seal of what an AAAA query reads.
    #[inline(always)]
    pub fn seal_aaaa(&self, key: &RecordKey) -> u64 {
        let mut h = Seal::start(key).word(self.head());
        let mut i = 0;
        while i < MAX_ADDRS {
            let a = self.aaaa[i];
            h = h.word(u64::from_le_bytes([
                a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7],
            ]));
            h = h.word(u64::from_le_bytes([
                a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15],
            ]));
            i += 1;
        }
        h.finish()
    }

    /// The entry as written under `key`, its seals set.
    pub fn sealed(mut self, key: &RecordKey) -> Self {
        self.seal = [self.seal_a(key), self.seal_aaaa(key)];
        self
    }
}

/// Why map values carry a seal: the kernel frees a hash map element that an update
/// replaced or a delete removed for immediate reuse, so a program still reading it can see
/// another entry's bytes, or half of them (measured: 3 answers of 3.6M with 0.0.0.0 while
/// the records were rewritten). The kernel copies what an answer reads out of the map,
/// checks the copy's seal against its key and contents, and passes the query when they do
/// not match. One hash lane, fixed seed: the seal guards against the kernel's reuse, not
/// against a chosen input (the keys already are keyed).
#[derive(Clone, Copy)]
pub struct Seal(u64);

impl Seal {
    #[inline(always)]
    pub const fn start(key: &RecordKey) -> Self {
        Seal(0x243f_6a88_85a3_08d3).word(key.h[0]).word(key.h[1])
    }

    #[inline(always)]
    pub const fn word(self, w: u64) -> Self {
        Seal(
            (self.0 ^ w)
                .wrapping_mul(LANE_MUL[0])
                .rotate_left(LANE_ROT[0]),
        )
    }

    #[inline(always)]
    pub const fn finish(self) -> u64 {
        fmix64(self.0)
    }
}

/// The cluster zone as negative answers need it: the SOA (owner is the zone apex, which
/// ends every name in the records map, `zone_len` bytes before the end of the QNAME).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ZoneInfo {
    /// Wire length of the zone name, root label included; 0 until the daemon sets it.
    pub zone_len: u32,
    /// TTL of the SOA record in negative answers (RFC 2308: min(TTL, minimum)).
    pub soa_ttl: u32,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
    /// `ZONE_*` bits.
    pub flags: u32,
    /// CLOCK_MONOTONIC nanoseconds (the kernel's `bpf_ktime_get_ns`) after which the
    /// records count as stale and every query passes: the daemon pushes it forward while it
    /// runs, so a node whose daemon is gone (uninstalled, crash-looping) falls back to the
    /// servers behind the kernel path instead of answering from old records forever.
    /// 0: not set, stale.
    pub fresh_until_ns: u64,
    /// TTL of positive answers the kernel computes itself (pod names).
    pub record_ttl: u32,
    /// One kernel answer in this many is written to [`maps::KERNEL_LOG`] for the query
    /// log (`--log-kernel-sample`); 0 writes none and costs one comparison an answer.
    pub log_sample: u32,
    /// The seeds of [`RecordKey`]: random per node, chosen by the daemon that creates the
    /// maps and kept by every daemon that adopts them.
    pub seed: [u64; 2],
}
const _: () = assert!(size_of::<ZoneInfo>() == 64);

/// One answer the kernel gave, sampled for the query log (see [`ZoneInfo::log_sample`]):
/// the question as answered (the lower-cased wire name), the response code and who asked
/// on which interface.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KernelLogEntry {
    pub ifindex: u32,
    pub qtype: u16,
    /// The reply's RCODE (0 NOERROR, 3 NXDOMAIN).
    pub rcode: u8,
    /// 1: `client` is an IPv6 address; 0: IPv4 in its first four bytes.
    pub v6: u8,
    pub client: [u8; 16],
    /// The client's UDP port, in network byte order.
    pub port: u16,
    /// Wire length of `name`, root label included.
    pub qlen: u16,
    pub _pad: u32,
    pub name: NameKey,
}
const _: () = assert!(size_of::<KernelLogEntry>() == 32 + NAME_KEY_LEN);

/// Rotate A/AAAA answers to a random start (CoreDNS `loadbalance`), in both paths.
pub const ZONE_ROTATE: u32 = 1;
/// The records map holds every name of the zone that exists (outside `pod.<zone>`): a name
/// under the zone that is not in it is NXDOMAIN. Set by the daemon once a full sync has
/// landed, cleared when it cannot vouch for the map (a failed write).
pub const ZONE_COMPLETE: u32 = 2;
/// The maps could not be made to hold the zone (a map full, a failed write): some entries
/// may be old, so every query passes until a full sync lands and the daemon clears it.
pub const ZONE_DEGRADED: u32 = 16;
/// CoreDNS `pods disabled`: every name under `pod.<zone>` is NXDOMAIN.
pub const ZONE_PODS_DISABLED: u32 = 4;
/// CoreDNS `pods verified`: a pod name has its address only when [`maps::POD_ADDRS`] holds
/// (namespace, address). Neither bit: `pods insecure`, the address is the name's.
pub const ZONE_PODS_VERIFIED: u32 = 8;

/// The name exists but the kernel cannot answer it as userspace would (a CNAME owner, more
/// addresses than a value holds): its queries pass.
pub const NAME_PASS: u8 = 1;
/// The name has records of types other than A and AAAA (SRV, TXT, the apex's SOA and NS):
/// queries for types other than A and AAAA pass; without it they are NODATA.
pub const NAME_OTHER_TYPES: u8 = 2;
/// The name's answer, whatever the type, is its CNAME in [`maps::TARGETS`].
pub const NAME_TARGET: u8 = 4;
/// Record types a [`TargetRecord`] holds.
pub const RTYPE_CNAME: u16 = 5;
pub const RTYPE_PTR: u16 = 12;

/// A destination address the kernel path answers for; IPv4 is stored IPv4-mapped
/// (`::ffff:a.b.c.d`) so both families share one map.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ServiceAddr {
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<ServiceAddr>() == 16);

impl ServiceAddr {
    pub const fn v4(a: [u8; 4]) -> Self {
        Self {
            addr: [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
            ],
        }
    }
    pub const fn v6(a: [u8; 16]) -> Self {
        Self { addr: a }
    }
}

/// Per-packet scratch space (one per CPU): the name walk keeps its state in memory so the
/// verifier sees one state per loop iteration instead of one per path.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scratch {
    pub key: NameKey,
    /// Offset (within the name) of the next length octet.
    pub next_label: u32,
    /// Wire length of the name, root label included; 0 until the walk finds the end.
    pub qlen: u32,
    /// Ones'-complement partial sum of the name bytes as they sit in the UDP segment, read
    /// as little-endian 32-bit words (fold and swap its bytes for the big-endian sum).
    pub name_sum: u64,
    /// Bit `i` set: offset `i` of the name is a length octet (a label starts there). Tells
    /// a zone suffix that starts on a label from bytes that only look like one.
    pub label_starts: [u8; NAME_KEY_LEN / 8],
    /// One past the offset of the name's last upper-case letter (0: none), for
    /// [`Counter::ZoneCase`].
    pub upper_end: u32,
    /// The offset (within the name) of the word the walk reads, laundered (see the walk).
    pub word_at: u32,
    /// The name's hash lanes while the walk feeds them, then its key.
    pub hash: [u64; 2],
    pub rkey: RecordKey,
    /// The parsed query, handed to a tail-called program.
    pub query: QueryState,
    /// A pod name's namespace and address, the key of the verified pods map.
    pub pod_key: PodKey,
    /// The pod address parser's state, in memory so the verifier does not track every
    /// combination of its values.
    pub pod_parse: [u32; 16],
    /// The answer's record: copied out of the records map and its seal checked (the main
    /// program), or computed from a pod name (the pod program).
    pub rec: NameRecords,
    /// A stored target copied out of its map, its seal checked.
    pub target: TargetRecord,
}
const _: () = assert!(
    size_of::<Scratch>()
        == NAME_KEY_LEN
            + 24
            + NAME_KEY_LEN / 8
            + 32
            + size_of::<QueryState>()
            + size_of::<PodKey>()
            + 64
            + size_of::<NameRecords>()
            + size_of::<TargetRecord>()
);

/// What the main program learned of a query, for the program it tail-calls: the packet
/// is unchanged, so the callee needs only these and the walked name beside them.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct QueryState {
    /// 1 for IPv6.
    pub v6: u8,
    /// 1 if the query carried an OPT record.
    pub has_opt: u8,
    /// The query's RD bit.
    pub rd: u8,
    pub _pad: u8,
    /// The DO bit of the query's OPT flags.
    pub do_bit: u16,
    pub qtype: u16,
    /// Wire length of the QNAME.
    pub qlen: u32,
    /// What the called program needs besides the query: for the pod program, the offset
    /// of the `pod` label's length octet; for the target program, [`TARGET_REVERSE`] or 0.
    pub arg: u32,
}
const _: () = assert!(size_of::<QueryState>() == 16);

/// Longest label, plus one: a namespace's name in a pod name.
pub const NS_KEY_LEN: usize = 64;

/// A namespace and a pod address in it (IPv4-mapped for IPv4, as [`ServiceAddr`]): the
/// key of the pod namespaces map (address all zero) and of the verified pods map.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PodKey {
    /// Lower case, zero padded.
    pub ns: [u8; NS_KEY_LEN],
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<PodKey>() == NS_KEY_LEN + 16);

impl PodKey {
    /// `None` for a namespace name too long to be a label.
    pub fn new(ns: &str, addr: [u8; 16]) -> Option<Self> {
        let mut k = Self {
            ns: [0; NS_KEY_LEN],
            addr,
        };
        k.ns.get_mut(..ns.len())?.copy_from_slice(ns.as_bytes());
        (ns.len() < NS_KEY_LEN).then_some(k)
    }
}

/// The one record whose data is a name: a reverse name's PTR, or the CNAME of a name that
/// points outside the zone (an ExternalName service), answered for every type.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TargetRecord {
    pub ttl: u32,
    /// Wire length of `target`, root label included (2..=255).
    pub len: u16,
    /// 12 (PTR) or 5 (CNAME).
    pub rtype: u16,
    /// The target's ones'-complement sum as 16-bit words from its first byte, folded: the
    /// kernel adds it to the UDP checksum instead of summing the bytes it copies.
    pub sum: u32,
    pub _pad: u32,
    /// [`TargetRecord::seal_of`] under the entry's key.
    pub seal: u64,
    /// Lower-case wire name, zero padded.
    pub target: [u8; NAME_KEY_LEN],
}
const _: () = assert!(size_of::<TargetRecord>() == 24 + NAME_KEY_LEN);

impl TargetRecord {
    /// Target words the seal covers (and the kernel copies): the name's, zero padded.
    #[inline(always)]
    pub const fn words(len: usize) -> usize {
        len.div_ceil(8)
    }

    /// The seal (see [`Seal`]) of the head and the target's words.
    #[inline(always)]
    pub fn seal_of(&self, key: &RecordKey) -> u64 {
        let head = self.ttl as u64 | (self.len as u64) << 32 | (self.rtype as u64) << 48;
        let mut h = Seal::start(key).word(head).word(self.sum as u64);
        let words = Self::words(self.len as usize);
        let mut i = 0;
        while i < NAME_KEY_LEN / 8 {
            if i >= words {
                break;
            }
            h = h.word(self.word(i));
            i += 1;
        }
        h.finish()
    }

    /// Target bytes `8 i..8 i + 8`, little endian.
    #[inline(always)]
    pub fn word(&self, i: usize) -> u64 {
        let b = (i & (NAME_KEY_LEN / 8 - 1)) * 8;
        let t = &self.target;
        u64::from_le_bytes([
            t[b],
            t[b + 1],
            t[b + 2],
            t[b + 3],
            t[b + 4],
            t[b + 5],
            t[b + 6],
            t[b + 7],
        ])
    }

    /// The entry as written under `key`, its seal set.
    pub fn sealed(mut self, key: &RecordKey) -> Self {
        self.seal = self.seal_of(key);
        self
    }
}

/// Why the kernel path answered or let a packet pass. Index into the per-CPU counter array.
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Counter {
    Answered = 0,
    NotIp,
    Fragment,
    IpOptions,
    NotUdp,
    NotServiceAddr,
    NotDnsPort,
    Malformed,
    NotPlainQuery,
    BadName,
    NotClassIn,
    OtherType,
    BadEdns,
    NoRecord,
    ResizeFailed,
    Ipv6ExtHeader,
    Oversize,
    /// The daemon has not refreshed the zone in time (see [`ZoneInfo::fresh_until_ns`]).
    Stale,
    /// Not in the map, and not under the zone: a name userspace forwards.
    OutOfZone,
    /// A pod name the kernel leaves to userspace (the IPv6 dashed form).
    PodName,
    /// The name is flagged [`NAME_PASS`] (CNAME owner, too many addresses).
    NamePass,
    /// A negative answer to a question spelling the zone with upper case: the SOA owner
    /// points into the question, and userspace writes it in lower case instead.
    ZoneCase,
    /// A stored target (PTR, CNAME) whose answer would not fit 512 bytes, or that does not
    /// answer the query's type.
    PtrPass,
    /// The program for pod names or stored targets could not be tail-called.
    TailCall,
    /// A negative answer to a question ending in one of the SOA's own names (`dns.<zone>`,
    /// `hostmaster.<zone>`): userspace compresses the SOA against the question there.
    SoaName,
    /// The maps are degraded (see [`ZONE_DEGRADED`]).
    Degraded,
    /// The entry read did not match its seal: the kernel reused it while it was read (see
    /// [`Seal`]).
    Resealed,
}

pub const COUNTER_COUNT: u32 = 27;

impl Counter {
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::Answered,
        Counter::NotIp,
        Counter::Fragment,
        Counter::IpOptions,
        Counter::NotUdp,
        Counter::NotServiceAddr,
        Counter::NotDnsPort,
        Counter::Malformed,
        Counter::NotPlainQuery,
        Counter::BadName,
        Counter::NotClassIn,
        Counter::OtherType,
        Counter::BadEdns,
        Counter::NoRecord,
        Counter::ResizeFailed,
        Counter::Ipv6ExtHeader,
        Counter::Oversize,
        Counter::Stale,
        Counter::OutOfZone,
        Counter::PodName,
        Counter::NamePass,
        Counter::ZoneCase,
        Counter::PtrPass,
        Counter::TailCall,
        Counter::SoaName,
        Counter::Degraded,
        Counter::Resealed,
    ];

    /// Whether the kernel counts this reason per interface too. The four reasons that
    /// mean "not DNS to us" are every other packet on a pod's veth: counting those per
    /// interface would put a hash lookup on all pod traffic for no operator value.
    pub const fn per_iface(self) -> bool {
        !matches!(
            self,
            Counter::NotIp | Counter::NotUdp | Counter::NotServiceAddr | Counter::NotDnsPort
        )
    }

    /// Stable label for metrics and the status output.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Answered => "answered",
            Counter::NotIp => "not_ip",
            Counter::Fragment => "fragment",
            Counter::IpOptions => "ip_options",
            Counter::NotUdp => "not_udp",
            Counter::NotServiceAddr => "not_service_addr",
            Counter::NotDnsPort => "not_dns_port",
            Counter::Malformed => "malformed",
            Counter::NotPlainQuery => "not_plain_query",
            Counter::BadName => "bad_name",
            Counter::NotClassIn => "not_class_in",
            Counter::OtherType => "other_type",
            Counter::BadEdns => "bad_edns",
            Counter::NoRecord => "no_record",
            Counter::ResizeFailed => "resize_failed",
            Counter::Ipv6ExtHeader => "ipv6_ext_header",
            Counter::Oversize => "oversize",
            Counter::Stale => "stale",
            Counter::OutOfZone => "out_of_zone",
            Counter::PodName => "pod_name",
            Counter::NamePass => "name_pass",
            Counter::ZoneCase => "zone_case",
            Counter::PtrPass => "ptr_pass",
            Counter::TailCall => "tail_call",
            Counter::SoaName => "soa_name",
            Counter::Degraded => "degraded",
            Counter::Resealed => "entry_changed_while_read",
        }
    }
}

/// One interface's counters (summed over CPUs by the reader), indexed by [`Counter`].
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IfaceCounters {
    pub n: [u64; COUNTER_COUNT as usize],
}
const _: () = assert!(size_of::<IfaceCounters>() == 8 * COUNTER_COUNT as usize);

impl IfaceCounters {
    pub const ZERO: Self = Self {
        n: [0; COUNTER_COUNT as usize],
    };
}

/// Map names, the same on both sides (and the pin file names under the bpffs folder).
pub mod maps {
    pub const RECORDS: &str = "RECORDS";
    pub const ZONE: &str = "ZONE";
    pub const SERVICE_ADDRS: &str = "SERVICE_ADDRS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const SCRATCH: &str = "SCRATCH";
    /// The zone's wire name ([`super::NameKey`], one entry), for the NXDOMAIN suffix check.
    pub const ZONE_NAME: &str = "ZONE_NAME";
    /// Per-CPU counters per interface ([`super::IfaceCounters`]), an array indexed by the
    /// interface's slot: a preallocated per-CPU hash of every possible interface index would
    /// take its size times the CPUs in locked memory.
    pub const IFACE_COUNTERS: &str = "IFACE_COUNTERS";
    /// Interface index → its slot in [`IFACE_COUNTERS`], given by the daemon as it attaches
    /// the interface and taken back as it goes; an interface without one is counted only
    /// in the global counters.
    pub const IFACE_SLOTS: &str = "IFACE_SLOTS";
    /// Interfaces counted at most (pods per node are a few hundred): 168 bytes a slot per
    /// CPU, 172 KiB per CPU.
    pub const IFACE_SLOTS_MAX: u32 = 1024;
    /// [`super::RecordKey`] → [`super::NameRecords`]. Names the kernel can hold: 100k Services with a named port are about 300k names.
    /// The map is not preallocated: memory follows the records actually stored, plus 16
    /// bytes of bucket per slot (8 MiB).
    pub const RECORDS_MAX: u32 = 524288;
    /// BPF_F_NO_PREALLOC.
    pub const NO_PREALLOC: u32 = 1;
    pub const SERVICE_ADDRS_MAX: u32 = 64;
    /// The namespaces pod names may be in ([`super::PodKey`], address zero, → 1).
    pub const POD_NS: &str = "POD_NS";
    pub const POD_NS_MAX: u32 = 16384;
    /// `pods verified`: every pod's (namespace, address) ([`super::PodKey`] → 1).
    pub const POD_ADDRS: &str = "POD_ADDRS";
    pub const POD_ADDRS_MAX: u32 = 262144;
    /// Names answered with one record whose data is a name: reverse names with exactly one
    /// PTR, CNAMEs to outside the zone ([`super::RecordKey`] → [`super::TargetRecord`]).
    pub const TARGETS: &str = "TARGETS";
    pub const TARGETS_MAX: u32 = 262144;
    /// The programs the XDP and tc programs tail-call, at [`super::TAIL_POD`] and
    /// [`super::TAIL_TARGET`].
    /// Sampled kernel answers for the query log ([`super::KernelLogEntry`]), a ring buffer.
    pub const KERNEL_LOG: &str = "KERNEL_LOG";
    /// Bytes of the ring buffer: about 900 entries waiting for the daemon.
    pub const KERNEL_LOG_BYTES: u32 = 256 * 1024;
    pub const XDP_TAILS: &str = "XDP_TAILS";
    pub const TC_TAILS: &str = "TC_TAILS";
}

/// Tail-call slots: pod names and stored targets (PTR, CNAME) each get a program, and a
/// verifier budget, of their own.
pub const TAIL_POD: u32 = 0;
pub const TAIL_TARGET: u32 = 1;
/// The answer writer: the main program's A, AAAA, NODATA and NXDOMAIN answers.
pub const TAIL_ANSWER: u32 = 2;
pub const TAIL_COUNT: u32 = 3;
/// The target program's [`QueryState::arg`] for a reverse name: a name without a stored
/// PTR is userspace's to forward (`out_of_zone`), not a target the kernel declined.
pub const TARGET_REVERSE: u32 = 1;

/// Program names in the object file.
pub mod programs {
    pub const XDP: &str = "xdns_xdp";
    pub const TC: &str = "xdns_tc";
    /// An XDP program that only passes: the benchmark's baseline.
    pub const PASS: &str = "xdns_pass";
    pub const XDP_POD: &str = "xdns_xdp_pod";
    pub const TC_POD: &str = "xdns_tc_pod";
    pub const XDP_TARGET: &str = "xdns_xdp_target";
    pub const TC_TARGET: &str = "xdns_tc_target";
    pub const XDP_ANSWER: &str = "xdns_xdp_answer";
    pub const TC_ANSWER: &str = "xdns_tc_answer";
}

#[cfg(test)]
mod tests {
    use super::{NameKey, RecordKey};

    fn key(wire: &[u8], seed: [u64; 2]) -> RecordKey {
        RecordKey::of(&NameKey::of(wire).unwrap(), seed).unwrap()
    }

    #[test]
    fn a_record_key_depends_on_every_byte_of_the_name_and_the_seed() {
        let name = b"\x03web\x04shop\x03svc\x07cluster\x05local\x00";
        let k = key(name, [1, 2]);
        assert_eq!(k, key(name, [1, 2]));
        assert_ne!(k, key(name, [1, 3]));
        assert_ne!(k, key(name, [3, 2]));
        for i in 0..name.len() - 1 {
            let mut other = *name;
            other[i] ^= 0x01;
            assert_ne!(k, key(&other, [1, 2]), "byte {i}");
        }
        // The key covers the name up to its root label only.
        assert_eq!(key(b"\x01a\x00", [1, 2]), key(b"\x01a\x00\x07", [1, 2]));
        assert!(RecordKey::of(&NameKey::zeroed(), [1, 2]).is_some());
        assert!(RecordKey::of(&NameKey { name: [1; 256] }, [1, 2]).is_none());
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), padding-free (sizes asserted above) and valid for
    // any bit pattern.
    unsafe impl aya::Pod for super::NameKey {}
    unsafe impl aya::Pod for super::RecordKey {}
    unsafe impl aya::Pod for super::NameRecords {}
    unsafe impl aya::Pod for super::ZoneInfo {}
    unsafe impl aya::Pod for super::ServiceAddr {}
    unsafe impl aya::Pod for super::IfaceCounters {}
    unsafe impl aya::Pod for super::PodKey {}
    unsafe impl aya::Pod for super::TargetRecord {}
    unsafe impl aya::Pod for super::KernelLogEntry {}
}
