//! The kernel program driven through BPF_PROG_TEST_RUN: crafted frames in, the exact frame
//! out (or the same frame passed), for both hooks.
use std::net::IpAddr;

use aya::Ebpf;
use dns_common::{Counter, NameKey, NameRecords, RecordKey};
use dns_userspace::{
    answer::{respond, Transport},
    dataplane::{self, maps::KernelMaps},
    model::{
        view::{ClusterView, NamespaceView, ServiceKind, ServiceView},
        Records, ZoneConfig,
    },
};
use tests::{
    differ::Differ,
    packet::{parse_reply, udp_frame, CLIENT_MAC, NODE_MAC},
    testrun::{self, Hook, HOOKS, XDP_PASS, XDP_TX},
};

/// The served addresses [`Differ::new`] writes.
fn svc4() -> IpAddr {
    tests::differ::SVC4.parse().unwrap()
}
fn svc6() -> IpAddr {
    tests::differ::SVC6.parse().unwrap()
}
fn client4() -> IpAddr {
    "10.1.0.2".parse().unwrap()
}
fn client6() -> IpAddr {
    "fd00:1::2".parse().unwrap()
}

struct Kernel {
    ebpf: Ebpf,
    maps: KernelMaps,
    zone: Records,
}

fn services() -> ClusterView {
    let s = |ns: &str, name: &str, ips: &[&str]| ServiceView {
        namespace: ns.into(),
        name: name.into(),
        kind: ServiceKind::ClusterIp(ips.iter().map(|i| i.parse().unwrap()).collect()),
        ports: Box::default(),
        publish_not_ready: false,
        labels: Default::default(),
    };
    let eight: Vec<String> = (1..=8).map(|i| format!("10.97.0.{i}")).collect();
    let eight: Vec<&str> = eight.iter().map(String::as_str).collect();
    let ns = |name: &str| NamespaceView {
        name: name.into(),
        labels: Default::default(),
    };
    ClusterView {
        services: vec![
            s("default", "kubernetes", &["10.96.0.1"]),
            s("shop", "web", &["10.96.1.2", "fd00::12"]),
            s("shop", "eight", &eight),
            s("shop", "v6only", &["fd00::13"]),
        ],
        namespaces: vec![ns("default"), ns("shop")],
        ..Default::default()
    }
}

fn setup() -> Option<Kernel> {
    if !tests::require_root("kernel_path") {
        return None;
    }
    let zone = Records::build(&ZoneConfig::new("cluster.local", 30).unwrap(), &services());
    // Loaded and published as the differential harness (and the daemon) does.
    let Differ { ebpf, maps, zone } =
        Differ::new(zone).unwrap_or_else(|e| panic!("the verifier accepts every program: {e}"));
    for (prog, n) in dataplane::verified_insns(&ebpf) {
        println!("verified_insns {prog} {n:?}");
    }
    Some(Kernel { ebpf, maps, zone })
}

/// As the daemon does: zone, records, then "complete" (the kernel may say NXDOMAIN).
fn publish(maps: &mut KernelMaps, zone: &Records) {
    maps.publish(&zone.kernel_view(), true).unwrap();
}

impl Kernel {
    fn run(&self, hook: Hook, frame: &[u8]) -> (u32, Vec<u8>) {
        let r = testrun::run(&self.ebpf, hook.program(), frame)
            .unwrap_or_else(|e| panic!("{hook:?} {e}"));
        (r.action, r.frame)
    }

    fn counter(&self, c: Counter) -> u64 {
        self.maps.counters().unwrap().get(c)
    }

    /// Runs `frame` and asserts it passes unchanged, counted under `why`.
    fn assert_passes(&self, hook: Hook, frame: &[u8], why: Counter, what: &str) {
        let before = self.counter(why);
        let (action, out) = self.run(hook, frame);
        assert_eq!(action, hook.passed(), "{hook:?} {what}: should pass");
        assert_eq!(
            out, frame,
            "{hook:?} {what}: passed frame must be untouched"
        );
        assert_eq!(
            self.counter(why),
            before + 1,
            "{hook:?} {what}: counted as {why:?}"
        );
    }

    /// Runs `frame`, asserts the kernel answered it, and that the answer is exactly the
    /// userspace answer to the same query, in a frame with correct lengths and checksums.
    fn assert_answers(&self, hook: Hook, frame: &[u8], query: &[u8], what: &str) -> Vec<u8> {
        let before = self.counter(Counter::Answered);
        let (action, out) = self.run(hook, frame);
        assert_eq!(action, hook.answered(), "{hook:?} {what}: should answer");
        assert_eq!(self.counter(Counter::Answered), before + 1);
        let r = parse_reply(&out).unwrap_or_else(|e| panic!("{hook:?} {what}: {e}"));
        let q = parse_reply(frame).unwrap();
        assert_eq!((r.src, r.dst), (q.dst, q.src), "{what}: addresses swapped");
        assert_eq!(
            (r.sport, r.dport),
            (q.dport, q.sport),
            "{what}: ports swapped"
        );
        assert_eq!(
            (r.eth_dst, r.eth_src),
            (CLIENT_MAC, NODE_MAC),
            "{what}: MACs swapped"
        );
        assert_eq!(r.ttl, 64);
        let userspace = respond(query, &self.zone, Transport::Udp).expect("userspace answers");
        assert_eq!(
            r.dns, userspace,
            "{hook:?} {what}: kernel and userspace bytes differ"
        );
        r.dns
    }
}

/// A DNS query message built by hand, so every field can be set wrong on purpose.
fn dns_query(
    id: u16,
    flags: u16,
    qname: &[u8],
    qtype: u16,
    qclass: u16,
    opt: Option<&[u8]>,
) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, opt.is_some() as u8]);
    m.extend_from_slice(qname);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&qclass.to_be_bytes());
    if let Some(o) = opt {
        m.extend_from_slice(o);
    }
    m
}

/// An OPT record: payload size, DO bit, options.
fn opt(size: u16, dnssec_ok: bool, options: &[u8]) -> Vec<u8> {
    let mut o = vec![0, 0, 41];
    o.extend_from_slice(&size.to_be_bytes());
    o.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
    o.extend_from_slice(&(options.len() as u16).to_be_bytes());
    o.extend_from_slice(options);
    o
}

fn wire(s: &str) -> Vec<u8> {
    // Keeps the case: the question must be echoed as the client wrote it.
    let mut out = Vec::new();
    for l in s.trim_end_matches('.').split('.') {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

fn frame4(q: &[u8]) -> Vec<u8> {
    udp_frame(client4(), svc4(), 40000, 53, q)
}
fn frame6(q: &[u8]) -> Vec<u8> {
    udp_frame(client6(), svc6(), 40000, 53, q)
}

const COOKIE: [u8; 12] = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];

#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn answers_a_queries_exactly_as_userspace() {
    let Some(k) = setup() else { return };
    let opts: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("no OPT", None),
        ("OPT 4096", Some(opt(4096, false, &[]))),
        ("OPT DO", Some(opt(1232, true, &[]))),
        ("OPT 512 with cookie", Some(opt(512, false, &COOKIE))),
        ("OPT tiny size", Some(opt(100, false, &[]))),
    ];
    let names = [
        "kubernetes.default.svc.cluster.local",
        "WEB.Shop.SVC.Cluster.Local",
        "eight.shop.svc.cluster.local",
    ];
    for hook in HOOKS {
        for name in names {
            for (what, o) in &opts {
                for rd in [0x0100u16, 0] {
                    let q = dns_query(0x1234, rd | 0x0020, &wire(name), 1, 1, o.as_deref());
                    let label = format!("{name} {what} rd={rd:#x}");
                    let dns = k.assert_answers(hook, &frame4(&q), &q, &format!("v4 {label}"));
                    k.assert_answers(hook, &frame6(&q), &q, &format!("v6 {label}"));
                    // Flags: QR AA, RD as asked; answer count as in the map.
                    assert_eq!(dns[2], 0x84 | (rd >> 8) as u8);
                    assert_eq!(dns[3], 0);
                }
            }
        }
    }
    // AAAA, and NODATA (with the zone's SOA) for the family a name lacks.
    for hook in HOOKS {
        for (name, qtype, ancount, nscount) in [
            ("web.shop.svc.cluster.local", 28u16, 1u16, 0u16),
            ("kubernetes.default.svc.cluster.local", 28, 0, 1),
            ("v6only.shop.svc.cluster.local", 1, 0, 1),
            ("v6only.shop.svc.cluster.local", 28, 1, 0),
        ] {
            for (what, o) in &opts {
                let q = dns_query(0x4321, 0x0100, &wire(name), qtype, 1, o.as_deref());
                let label = format!("{name} type {qtype} {what}");
                let dns = k.assert_answers(hook, &frame4(&q), &q, &format!("v4 {label}"));
                k.assert_answers(hook, &frame6(&q), &q, &format!("v6 {label}"));
                assert_eq!(u16::from_be_bytes([dns[6], dns[7]]), ancount, "{label}");
                assert_eq!(u16::from_be_bytes([dns[8], dns[9]]), nscount, "{label}");
            }
        }
    }

    // Eight addresses, in model order.
    let q = dns_query(7, 0x0100, &wire("eight.shop.svc.cluster.local"), 1, 1, None);
    let (_, out) = k.run(Hook::Xdp, &frame4(&q));
    let dns = parse_reply(&out).unwrap().dns;
    assert_eq!(u16::from_be_bytes([dns[6], dns[7]]), 8);
    assert_eq!(&dns[dns.len() - 4..], &[10, 97, 0, 8]);
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn longest_name_is_answered_and_longer_ones_pass() {
    let Some(mut k) = setup() else { return };
    // 255 bytes in wire form, in the zone (the kernel passes every other name before any
    // lookup): three 62-byte labels (3 * 63 = 189), one of 50 (51) and `cluster.local.` (15).
    let labels = [
        &"a".repeat(62),
        &"b".repeat(62),
        &"c".repeat(62),
        &"d".repeat(50),
        "cluster.local",
    ];
    let longest = wire(&labels.join("."));
    assert_eq!(longest.len(), 255);
    let mut desired = k.zone.kernel_records();
    let mut key = NameKey::zeroed();
    key.name[..255].copy_from_slice(&longest);
    let mut v = NameRecords::empty(5);
    v.a_count = 1;
    v.a[0] = [192, 0, 2, 1];
    desired.insert(key, v);
    k.maps.sync_records(&desired).unwrap();
    for hook in HOOKS {
        let q = dns_query(1, 0, &longest, 1, 1, None);
        let (action, out) = k.run(hook, &frame4(&q));
        assert_eq!(action, hook.answered(), "{hook:?}: 255-byte name answered");
        let dns = parse_reply(&out).unwrap().dns;
        assert_eq!(&dns[dns.len() - 4..], &[192, 0, 2, 1]);

        // 256 bytes: one more label byte.
        let d51 = "d".repeat(51);
        let too_long = wire(&[labels[0], labels[1], labels[2], &d51, labels[4]].join("."));
        assert_eq!(too_long.len(), 256);
        let q = dns_query(1, 0, &too_long, 1, 1, None);
        k.assert_passes(hook, &frame4(&q), Counter::BadName, "256-byte name");
    }
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn every_truncation_passes_untouched() {
    let Some(k) = setup() else { return };
    let q = dns_query(
        1,
        0x0100,
        &wire("web.shop.svc.cluster.local"),
        1,
        1,
        Some(&opt(1232, false, &COOKIE)),
    );
    for hook in HOOKS {
        for full in [frame4(&q), frame6(&q)] {
            // The frame cut short: headers claim more than is there.
            // BPF_PROG_TEST_RUN builds no skb without a whole IP header (EINVAL).
            let ip_len = if full[12] == 0x08 { 20 } else { 40 };
            let min = if hook == Hook::Tc { 14 + ip_len } else { 14 };
            for n in min..full.len() {
                let before = k.maps.counters().unwrap().passed();
                let (action, out) = k.run(hook, &full[..n]);
                assert_eq!(action, hook.passed(), "{hook:?} frame cut at {n}");
                assert_eq!(out, &full[..n]);
                assert_eq!(k.maps.counters().unwrap().passed(), before + 1);
            }
        }
        // Consistent headers around a DNS message cut at every byte.
        for n in 0..q.len() {
            for f in [frame4(&q[..n]), frame6(&q[..n])] {
                let (action, out) = k.run(hook, &f);
                assert_eq!(action, hook.passed(), "{hook:?} message cut at {n}");
                assert_eq!(out, f);
            }
        }
    }
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn malformed_and_foreign_packets_pass_with_their_reason() {
    let Some(k) = setup() else { return };
    let name = wire("web.shop.svc.cluster.local");
    let good = dns_query(1, 0x0100, &name, 1, 1, None);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut q = good.clone();
        f(&mut q);
        q
    };
    // Label length running past the end of the message.
    let mut past_end = dns_query(1, 0, b"\x03web\x3fshop", 1, 1, None);
    past_end.truncate(12 + 9);
    // Compression pointer to the header, and one pointing at itself.
    let pointer = dns_query(1, 0, b"\x03web\xc0\x0c", 1, 1, None);
    let ptr_loop = dns_query(1, 0, b"\xc0\x0c", 1, 1, None);
    let ext_label = dns_query(1, 0, b"\x03web\x40\x00", 1, 1, None);
    let cases: Vec<(&str, Vec<u8>, Counter)> = vec![
        ("label past end", frame4(&past_end), Counter::Malformed),
        ("compression pointer", frame4(&pointer), Counter::BadName),
        ("pointer loop", frame4(&ptr_loop), Counter::BadName),
        ("extended label type", frame4(&ext_label), Counter::BadName),
        (
            "ANY",
            frame4(&dns_query(1, 0, &name, 255, 1, None)),
            Counter::OtherType,
        ),
        (
            "AXFR",
            frame6(&dns_query(1, 0, &name, 252, 1, None)),
            Counter::OtherType,
        ),
        (
            "OPT as a question",
            frame6(&dns_query(1, 0, &name, 41, 1, None)),
            Counter::OtherType,
        ),
        (
            "NODATA whose SOA would compress against the question",
            frame4(&dns_query(1, 0, &wire("ns.dns.cluster.local"), 16, 1, None)),
            Counter::SoaName,
        ),
        (
            "NXDOMAIN whose SOA would compress against the question",
            frame4(&dns_query(
                1,
                0,
                &wire("x.hostmaster.cluster.local"),
                1,
                1,
                None,
            )),
            Counter::SoaName,
        ),
        (
            "class CH",
            frame4(&dns_query(1, 0, &name, 1, 3, None)),
            Counter::NotClassIn,
        ),
        (
            "outside the zone",
            frame4(&dns_query(1, 0, &wire("example.com"), 1, 1, None)),
            Counter::OutOfZone,
        ),
        (
            // Ends in the zone's bytes, but inside a label: not in the zone.
            "zone look-alike",
            frame4(&dns_query(
                1,
                0,
                b"\x09a\x07cluster\x05local\x00",
                1,
                1,
                None,
            )),
            Counter::OutOfZone,
        ),
        (
            "pod name",
            frame4(&dns_query(
                1,
                0,
                b"\x0f--ffff-10.0.0.1\x04shop\x03pod\x07cluster\x05local\x00",
                28,
                1,
                None,
            )),
            Counter::PodName,
        ),
        (
            "response",
            frame4(&with(&|q| q[2] |= 0x80)),
            Counter::NotPlainQuery,
        ),
        (
            "opcode NOTIFY",
            frame4(&with(&|q| q[2] |= 4 << 3)),
            Counter::NotPlainQuery,
        ),
        (
            "TC set",
            frame4(&with(&|q| q[2] |= 2)),
            Counter::NotPlainQuery,
        ),
        (
            "Z set",
            frame4(&with(&|q| q[3] |= 0x40)),
            Counter::NotPlainQuery,
        ),
        (
            "qdcount 2",
            frame4(&with(&|q| q[5] = 2)),
            Counter::NotPlainQuery,
        ),
        (
            "qdcount 0",
            frame4(&with(&|q| q[5] = 0)),
            Counter::NotPlainQuery,
        ),
        (
            "ancount 1",
            frame4(&with(&|q| q[7] = 1)),
            Counter::NotPlainQuery,
        ),
        (
            "arcount 2",
            frame4(&with(&|q| q[11] = 2)),
            Counter::NotPlainQuery,
        ),
        (
            "trailing byte",
            frame4(&with(&|q| q.push(0))),
            Counter::Malformed,
        ),
        (
            "arcount 1 without OPT",
            frame4(&with(&|q| q[11] = 1)),
            Counter::Malformed,
        ),
        (
            "EDNS version 1",
            frame4(&dns_query(
                1,
                0,
                &name,
                1,
                1,
                Some(&{
                    let mut o = opt(1232, false, &[]);
                    o[6] = 1;
                    o
                }),
            )),
            Counter::BadEdns,
        ),
        (
            "OPT not root",
            frame4(&dns_query(
                1,
                0,
                &name,
                1,
                1,
                Some(&{
                    let mut o = opt(1232, false, &[]);
                    o[0] = 1;
                    o
                }),
            )),
            Counter::BadEdns,
        ),
        (
            "OPT option overruns",
            frame4(&dns_query(
                1,
                0,
                &name,
                1,
                1,
                Some(&opt(1232, false, &[0, 10, 0, 9, 1, 2, 3, 4])),
            )),
            Counter::BadEdns,
        ),
        (
            "wrong port",
            udp_frame(client4(), svc4(), 40000, 5353, &good),
            Counter::NotDnsPort,
        ),
        (
            "other address v4",
            udp_frame(client4(), "10.96.0.11".parse().unwrap(), 40000, 53, &good),
            Counter::NotServiceAddr,
        ),
        (
            "other address v6",
            udp_frame(client6(), "fd00::99".parse().unwrap(), 40000, 53, &good),
            Counter::NotServiceAddr,
        ),
    ];
    for hook in HOOKS {
        for (what, f, why) in &cases {
            k.assert_passes(hook, f, *why, what);
        }
        // IP-level: TCP, fragments, options, not IP at all.
        let base = frame4(&good);
        let tcp = {
            let mut f = base.clone();
            f[23] = 6;
            f
        };
        let mf = {
            let mut f = base.clone();
            f[20] = 0x20;
            f
        };
        let offset = {
            let mut f = base.clone();
            f[21] = 1;
            f
        };
        let options = {
            let mut f = base.clone();
            f[14] = 0x46;
            f
        };
        let arp = {
            let mut f = base.clone();
            f[12] = 0x08;
            f[13] = 0x06;
            f
        };
        let v6_hbh = {
            let mut f = frame6(&good);
            f[20] = 0;
            f
        };
        k.assert_passes(hook, &tcp, Counter::NotUdp, "TCP");
        k.assert_passes(hook, &mf, Counter::Fragment, "more fragments");
        k.assert_passes(hook, &offset, Counter::Fragment, "fragment offset");
        k.assert_passes(hook, &options, Counter::IpOptions, "IP options");
        k.assert_passes(hook, &arp, Counter::NotIp, "ARP");
        k.assert_passes(hook, &v6_hbh, Counter::Ipv6ExtHeader, "IPv6 hop-by-hop");
    }
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn removed_records_are_no_longer_answered() {
    let Some(mut k) = setup() else { return };
    let q = dns_query(1, 0, &wire("web.shop.svc.cluster.local"), 1, 1, None);
    k.assert_answers(Hook::Xdp, &frame4(&q), &q, "before");
    let cfg = ZoneConfig::new("cluster.local", 30).unwrap();
    let mut fewer = services();
    fewer.services.retain(|s| &*s.name != "web");
    let zone = Records::build(&cfg, &fewer);
    let stats = k.maps.sync_records(&zone.kernel_records()).unwrap();
    assert_eq!((stats.deleted, stats.upserted), (1, 0));
    assert_eq!(
        k.maps.sync_records(&zone.kernel_records()).unwrap().deleted,
        0,
        "idempotent"
    );
    // Gone from the complete map: NXDOMAIN, as userspace now says too.
    k.zone = zone;
    k.maps
        .set_zone(&with_complete(k.zone.kernel_zone()))
        .unwrap();
    let r = k.assert_answers(Hook::Xdp, &frame4(&q), &q, "after delete");
    assert_eq!(r[3] & 0x0f, 3, "NXDOMAIN");
}

fn with_complete(mut z: dns_common::ZoneInfo) -> dns_common::ZoneInfo {
    z.flags |= dns_common::ZONE_COMPLETE;
    z
}

/// The ndots:5 storm: unknown names under the zone (search-path expansions of outside
/// names, unknown services and namespaces) are NXDOMAIN from the kernel, byte for byte as
/// userspace says it, A and AAAA, IPv4 and IPv6, both hooks; but only while the map is
/// complete: before that they pass to userspace.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn unknown_names_in_the_zone_are_nxdomain_in_the_kernel() {
    let Some(mut k) = setup() else { return };
    let names = [
        "api.example.com.shop.svc.cluster.local",
        "api.example.com.svc.cluster.local",
        "api.example.com.cluster.local",
        "nope.shop.svc.cluster.local",
        "web.nowhere.svc.cluster.local",
        "a.b.c.d.e.f.g.cluster.local",
        "WEB.Nope.svc.cluster.local",
    ];
    for hook in HOOKS {
        for name in names {
            for qtype in [1, 28] {
                let q = dns_query(
                    9,
                    0x0100,
                    &wire(name),
                    qtype,
                    1,
                    Some(&opt(1232, true, &[])),
                );
                for frame in [frame4(&q), frame6(&q)] {
                    let r = k.assert_answers(hook, &frame, &q, name);
                    assert_eq!(r[3] & 0x0f, 3, "{name}: NXDOMAIN");
                }
            }
        }
    }
    // The zone spelled in upper case: the SOA owner would not read as userspace writes it.
    let q = dns_query(9, 0x0100, &wire("nope.shop.svc.Cluster.local"), 1, 1, None);
    k.assert_passes(
        Hook::Xdp,
        &frame4(&q),
        Counter::ZoneCase,
        "zone in upper case",
    );
    // Not vouched for (as before the first sync, or after a failed write): they pass.
    let zone = std::mem::replace(
        &mut k.zone,
        Records::unsynced(&ZoneConfig::new("cluster.local", 30).unwrap()),
    );
    k.maps.publish(&zone.kernel_view(), false).unwrap();
    let q = dns_query(9, 0x0100, &wire(names[0]), 1, 1, None);
    k.assert_passes(
        Hook::Xdp,
        &frame4(&q),
        Counter::NoRecord,
        "map not complete",
    );
}

/// Every name of the sample cluster (and its empty non-terminals, search-path expansions,
/// unknown and pod names) × the common types, in random case, with and without EDNS:
/// whatever the kernel answers decodes to the same message as userspace's answer, and
/// whatever it passes, it passes untouched and userspace answers.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn sample_cluster_kernel_and_userspace_agree() {
    let Some(mut k) = setup() else { return };
    let dir = tests::fixture::example_manifests();
    let view = dns_userspace::source::manifests::load_dir(&dir).unwrap();
    let mut cfg = ZoneConfig::new("cluster.local", 30).unwrap();
    cfg.ns_addrs = vec![svc4(), svc6()];
    k.zone = Records::build(&cfg, &view);
    publish(&mut k.maps, &k.zone);

    let mut names: Vec<String> = k
        .zone
        .owners()
        .map(|w| {
            let mut s = String::new();
            let mut at = 0;
            while w[at] != 0 {
                let n = w[at] as usize;
                s.push_str(std::str::from_utf8(&w[at + 1..at + 1 + n]).unwrap());
                s.push('.');
                at += 1 + n;
            }
            s
        })
        .collect();
    names.extend(
        [
            "cluster.local.",
            "svc.cluster.local.",
            "shop.svc.cluster.local.",
            "staging.svc.cluster.local.",
            "nope.svc.cluster.local.",
            "nope.shop.svc.cluster.local.",
            "api.example.com.shop.svc.cluster.local.",
            "api.example.com.svc.cluster.local.",
            "api.example.com.cluster.local.",
            "10-244-1-5.shop.pod.cluster.local.",
            "example.com.",
        ]
        .map(String::from),
    );
    // A fixed-seed xorshift: the same "random" case every run.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut flip = |s: &str| -> String {
        s.chars()
            .map(|c| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if seed & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    };
    let (mut answered, mut passed) = (0, 0);
    for name in &names {
        for qtype in [1u16, 28, 33, 16, 12, 5, 65, 6, 2, 257] {
            for o in [
                None,
                Some(opt(1232, false, &[])),
                Some(opt(4096, true, &COOKIE)),
            ] {
                // Mostly the names' own labels in random case; now and then the zone's too
                // (negative answers to those pass: the SOA owner points at the question).
                let spelled = match name.strip_suffix("cluster.local.") {
                    Some(head) if qtype != 5 => format!("{}cluster.local.", flip(head)),
                    _ => flip(name),
                };
                let q = dns_query(0x5151, 0x0100, &wire(&spelled), qtype, 1, o.as_deref());
                for frame in [frame4(&q), frame6(&q)] {
                    let (action, out) = k.run(Hook::Xdp, &frame);
                    let user = respond(&q, &k.zone, Transport::Udp).expect("userspace answers");
                    if action == XDP_TX {
                        answered += 1;
                        let kernel =
                            parse_reply(&out).unwrap_or_else(|e| panic!("{name} {qtype}: {e}"));
                        assert_eq!(
                            kernel.dns, user,
                            "{spelled} type {qtype}: kernel and userspace bytes differ"
                        );
                    } else {
                        passed += 1;
                        assert_eq!(action, XDP_PASS);
                        assert_eq!(out, frame, "{name} {qtype}: passed untouched");
                    }
                }
            }
        }
    }
    println!("sample cluster: {answered} answered in the kernel, {passed} passed");
    assert!(
        answered >= 100 && passed >= 100,
        "{answered} answered, {passed} passed"
    );
}

/// CoreDNS `loadbalance` in the kernel: every answer is the model's order rotated to some
/// start, and the starts vary.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn loadbalance_rotates_in_the_kernel() {
    let Some(mut k) = setup() else { return };
    let mut cfg = ZoneConfig::new("cluster.local", 30).unwrap();
    cfg.loadbalance = true;
    k.zone = Records::build(&cfg, &services());
    k.maps.set_zone(&k.zone.kernel_zone()).unwrap();
    let order: Vec<[u8; 4]> = (1..=8).map(|i| [10, 97, 0, i]).collect();
    let mut starts = std::collections::BTreeSet::new();
    for hook in HOOKS {
        for _ in 0..64 {
            let q = dns_query(7, 0x0100, &wire("eight.shop.svc.cluster.local"), 1, 1, None);
            let (action, out) = k.run(hook, &frame4(&q));
            assert_eq!(action, hook.answered());
            let dns = parse_reply(&out)
                .expect("checksums right whatever the order")
                .dns;
            let got: Vec<[u8; 4]> = (0..8)
                .map(|i| {
                    let at = dns.len() - (8 - i) * 16 + 12;
                    dns[at..at + 4].try_into().unwrap()
                })
                .collect();
            let start = order.iter().position(|a| *a == got[0]).unwrap();
            let mut rotated = order.clone();
            rotated.rotate_left(start);
            assert_eq!(got, rotated, "a rotation of the model's order");
            starts.insert(start);
        }
    }
    assert!(starts.len() > 1, "starts vary: {starts:?}");
}

/// The differential battery on a generated corpus: a few thousand queries over the sample
/// cluster (every existing name, search-path expansions from every namespace, random names
/// under the zone and the pod subtree, random case, A/AAAA and other types, with and without
/// EDNS), then the same again with random bytes of each message mutated. Every kernel answer
/// is byte for byte userspace's; every pass is untouched and answered by userspace.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn generated_corpus_kernel_and_userspace_agree() {
    use tests::differ::{corpus_names, query, random_case, wire, Differ, Rng, Verdict};
    if !tests::require_root("generated corpus") {
        return;
    }
    let dir = tests::fixture::example_manifests();
    let view = dns_userspace::source::manifests::load_dir(&dir).unwrap();
    let mut cfg = ZoneConfig::new("cluster.local", 30).unwrap();
    cfg.ns_addrs = vec![svc4(), svc6()];
    let d = Differ::new(Records::build(&cfg, &view)).expect("programs load");
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut names = corpus_names(
        &d.zone,
        &["shop", "default", "kube-system", "staging"],
        &mut rng,
    );
    // Names that exist, more often: most real queries are for them.
    let existing: Vec<String> = names[..d.zone.owners().count()].to_vec();
    for _ in 0..3 {
        names.extend(existing.iter().cloned());
    }
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    let mut tally = |v: Verdict| {
        let k = match v {
            Verdict::Answered(0) => "answered NOERROR",
            Verdict::Answered(3) => "answered NXDOMAIN",
            Verdict::Answered(_) => "answered other",
            Verdict::Passed => "passed",
        };
        *seen.entry(k.into()).or_default() += 1;
    };
    let mut queries = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for _ in 0..5 {
            let zone_too = rng.below(8) == 0;
            let spelled = random_case(name, &mut rng, zone_too);
            let qtype = *rng.pick(&[1u16, 1, 28, 28, 33, 16, 12, 5, 15, 255, 65, 64, 2, 6, 99]);
            let opt = match rng.below(3) {
                0 => None,
                1 => Some((1232, false)),
                _ => Some((4096, true)),
            };
            queries.push(query(i as u16, &wire(&spelled), qtype, opt));
        }
    }
    for (i, q) in queries.iter().enumerate() {
        let v = d
            .check(q, i % 2 == 1, i % 5 == 0)
            .unwrap_or_else(|e| panic!("{:?}: {e}", hickory_proto::op::Message::from_vec(q)));
        tally(v);
    }
    // Mutations: one to three random bytes of a query changed.
    let mut mutated = 0;
    for q in queries.iter().step_by(2) {
        let mut m = q.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(m.len());
            m[at] = rng.next_u64() as u8;
        }
        let v = d
            .check(&m, rng.below(2) == 1, false)
            .unwrap_or_else(|e| panic!("mutated {m:?}: {e}"));
        tally(v);
        mutated += 1;
    }
    println!("{} queries + {mutated} mutated: {seen:?}", queries.len());
    let n = |k: &str| seen.get(k).copied().unwrap_or(0);
    assert!(queries.len() >= 2000, "{}", queries.len());
    assert!(
        n("answered NOERROR") > 100 && n("answered NXDOMAIN") > 200 && n("passed") > 500,
        "every outcome well covered: {seen:?}"
    );
}

/// Pod names in each `pods` mode (IPv4 and IPv6 dashed forms, good and bad) and PTR
/// queries are answered in the kernel, byte for byte as userspace answers them, through
/// both hooks and both families; what the kernel leaves to userspace (a dashed IPv6 form
/// with an IPv4 tail) passes, and userspace answers it.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn pod_names_and_ptr_are_answered_in_the_kernel() {
    use dns_userspace::model::{view::PodView, PodMode};
    use tests::differ::{dotted, query, wire, Differ, Verdict};
    if !tests::require_root("pod names and PTR") {
        return;
    }
    let dir = tests::fixture::example_manifests();
    let mut view = dns_userspace::source::manifests::load_dir(&dir).unwrap();
    view.pods.push(PodView {
        namespace: "shop".into(),
        name: "web-1".into(),
        ips: Box::new([
            "10.244.1.5".parse().unwrap(),
            "fd00:244::5".parse().unwrap(),
        ]),
    });
    const NOERROR: Verdict = Verdict::Answered(0);
    const NXDOMAIN: Verdict = Verdict::Answered(3);
    const PASSED: Verdict = Verdict::Passed;
    let (a, aaaa) = (1u16, 28u16);
    type Case<'a> = (&'a str, u16, Verdict);
    let cases: [(PodMode, &[Case]); 3] = [
        (
            PodMode::Insecure,
            &[
                ("10-244-1-5.shop.pod", a, NOERROR),
                ("10-244-1-5.Shop.POD", a, NOERROR),
                ("10-244-1-5.shop.pod", aaaa, NOERROR),
                ("10-9-9-9.shop.pod", a, NOERROR),
                ("255-255-255-255.default.pod", a, NOERROR),
                ("shop.pod", a, NOERROR),
                ("pod", a, NOERROR),
                ("10-1-2-3.nope.pod", a, NXDOMAIN),
                ("nope.pod", aaaa, NXDOMAIN),
                ("10-01-2-3.shop.pod", a, NXDOMAIN),
                ("10-1-2-256.shop.pod", a, NXDOMAIN),
                ("a-b-c-d.shop.pod", a, NXDOMAIN),
                ("x.10-1-2-3.shop.pod", a, NXDOMAIN),
                ("fd00-244-0-0-0-0-0-5.shop.pod", aaaa, NOERROR),
                ("fd00-244--5.shop.pod", aaaa, NOERROR),
                ("fd00-244--5.shop.pod", a, NOERROR),
                ("--1.shop.pod", aaaa, NOERROR),
                ("--.shop.pod", aaaa, NOERROR),
                ("1-2-3-4-5-6-7--.shop.pod", aaaa, NOERROR),
                ("10--1-2.shop.pod", aaaa, NOERROR),
                ("FD00--ABCD.shop.pod", aaaa, NOERROR),
                ("1-2-3-4-5-6-7-8-9.shop.pod", aaaa, NXDOMAIN),
                ("1-2-3-4-5-6--7-8.shop.pod", aaaa, NXDOMAIN),
                ("1--2--3.shop.pod", aaaa, NXDOMAIN),
                ("-1--.shop.pod", aaaa, NXDOMAIN),
                ("1--2-.shop.pod", aaaa, NXDOMAIN),
                ("---1.shop.pod", aaaa, NXDOMAIN),
                ("12345--.shop.pod", aaaa, NXDOMAIN),
                ("fd00-g--1.shop.pod", aaaa, NXDOMAIN),
                ("1-2-3-4-5-6-7.shop.pod", aaaa, NXDOMAIN),
            ],
        ),
        (
            PodMode::Verified,
            &[
                ("10-244-1-5.shop.pod", a, NOERROR),
                ("10-244-1-5.shop.pod", aaaa, NOERROR),
                ("10-9-9-9.shop.pod", a, NXDOMAIN),
                ("10-244-1-5.default.pod", a, NXDOMAIN),
                ("fd00-244--5.shop.pod", aaaa, NOERROR),
                ("fd00-244--6.shop.pod", aaaa, NXDOMAIN),
                ("shop.pod", a, NOERROR),
            ],
        ),
        (
            PodMode::Disabled,
            &[
                ("10-244-1-5.shop.pod", a, NXDOMAIN),
                ("shop.pod", a, NXDOMAIN),
                ("pod", a, NOERROR),
            ],
        ),
    ];
    for (mode, cases) in cases {
        let mut cfg = ZoneConfig::new("cluster.local", 30).unwrap();
        cfg.ns_addrs = vec![svc4(), svc6()];
        cfg.pods = mode;
        let d = Differ::new(Records::build(&cfg, &view)).expect("programs load");
        for (name, qtype, want) in cases {
            let qname = wire(&format!("{name}.cluster.local."));
            for (v6, tc, opt) in [
                (false, false, None),
                (true, false, Some((1232, false))),
                (false, true, Some((4096, true))),
                (true, true, None),
            ] {
                let got = d
                    .check(&query(7, &qname, *qtype, opt), v6, tc)
                    .unwrap_or_else(|e| panic!("{mode:?} {name} {qtype}: {e}"));
                assert_eq!(
                    got, *want,
                    "{mode:?} {name} type {qtype} (v6 {v6}, tc {tc})"
                );
            }
        }
    }

    // Random first labels over the dashed forms' alphabet, against userspace's parsers.
    let mut cfg = ZoneConfig::new("cluster.local", 30).unwrap();
    cfg.ns_addrs = vec![svc4(), svc6()];
    let d = Differ::new(Records::build(&cfg, &view)).expect("programs load");
    let mut rng = tests::differ::Rng(0x51f1_5e11_0dd5_eed5);
    let mut seen = std::collections::BTreeMap::<&str, u32>::new();
    for i in 0..4000u16 {
        const CHARS: &[u8] = b"0123456789abcdefABCDEF-----g";
        const HEX: &[u8] = b"0123456789abcdefABCDEF";
        let label: String = if i % 2 == 0 {
            let len = 1 + rng.below(if i % 4 == 0 { 12 } else { 40 });
            (0..len).map(|_| *rng.pick(CHARS) as char).collect()
        } else {
            // Mostly well-formed: groups of hex digits (a few too long), mostly single
            // dashes, sometimes a double one, IPv4-looking decimal parts too.
            let groups = 1 + rng.below(9);
            let mut l = String::new();
            for g in 0..groups {
                if g > 0 {
                    l.push_str(if rng.below(6) == 0 { "--" } else { "-" });
                }
                let n = rng.below(6);
                for _ in 0..n {
                    l.push(*rng.pick(HEX) as char);
                }
            }
            if l.is_empty() || l.len() > 63 {
                "--".into()
            } else {
                l
            }
        };
        let qname = wire(&format!("{label}.shop.pod.cluster.local."));
        let qtype = if i % 3 == 0 { a } else { aaaa };
        let got = d
            .check(&query(i, &qname, qtype, None), i % 4 == 1, i % 5 == 2)
            .unwrap_or_else(|e| panic!("{label} {qtype}: {e}"));
        *seen
            .entry(match got {
                NOERROR => "noerror",
                NXDOMAIN => "nxdomain",
                _ => "other",
            })
            .or_default() += 1;
    }
    println!("random pod labels: {seen:?}");
    assert_eq!(
        seen.get("other"),
        None,
        "the kernel answers every one: {seen:?}"
    );
    assert!(seen["noerror"] > 100 && seen["nxdomain"] > 100, "{seen:?}");

    // PTR: every reverse name with one PTR record (cluster IPs, endpoint addresses).
    let mut cfg = ZoneConfig::new("cluster.local", 30).unwrap();
    cfg.ns_addrs = vec![svc4(), svc6()];
    // An ExternalName whose target ends like the zone: userspace compresses it against the
    // question, so the kernel leaves it alone.
    view.services.push(dns_userspace::model::view::ServiceView {
        namespace: "shop".into(),
        name: "legacy".into(),
        kind: ServiceKind::ExternalName("db.corp.local".into()),
        ports: Box::default(),
        publish_not_ready: false,
        labels: Default::default(),
    });
    let d = Differ::new(Records::build(&cfg, &view)).expect("programs load");
    let targets = d.zone.kernel_targets();
    let v4 = targets
        .keys()
        .filter(|k| k.name.ends_with(&[0u8; 200]))
        .count();
    let cnames = targets
        .values()
        .filter(|t| t.rtype == dns_common::RTYPE_CNAME)
        .count();
    assert!(
        targets.len() >= 5 && v4 >= 2 && cnames >= 1,
        "{} targets",
        targets.len()
    );
    let mut flip = false;
    for (key, t) in &targets {
        let len = key.name.iter().position(|b| *b == 0).unwrap() + 1;
        let mut name = dotted(&key.name[..len]);
        if flip {
            name = name.to_uppercase();
        }
        flip = !flip;
        for (v6, tc, opt) in [(false, false, None), (true, true, Some((1232, true)))] {
            let check = |qtype: u16| {
                d.check(&query(9, &wire(&name), qtype, opt), v6, tc)
                    .unwrap_or_else(|e| panic!("{name} type {qtype}: {e}"))
            };
            assert_eq!(check(12), NOERROR, "PTR {name} answered in the kernel");
            if t.rtype == dns_common::RTYPE_CNAME {
                // A CNAME out of the zone is the whole answer for every type but A and
                // AAAA, whose answer carries the target's addresses: userspace's.
                for qtype in [16, 65] {
                    assert_eq!(check(qtype), NOERROR, "{name} type {qtype}");
                }
                for qtype in [1, 28] {
                    assert_eq!(check(qtype), PASSED, "{name} type {qtype}");
                }
            } else {
                // Other types for a reverse name are userspace's.
                assert_eq!(check(1), PASSED, "A {name}");
            }
        }
    }
    let legacy = wire("legacy.shop.svc.cluster.local.");
    for qtype in [1, 5, 12] {
        let got = d
            .check(&query(9, &legacy, qtype, None), false, false)
            .unwrap();
        assert_eq!(got, PASSED, "legacy type {qtype}");
    }
    // A reverse name nobody has: userspace's (forwarded). PTR for a forward name: NODATA, or
    // NXDOMAIN where it does not exist, from the kernel like any other type.
    for (name, want) in [
        ("9.9.9.10.in-addr.arpa.", PASSED),
        ("web.shop.svc.cluster.local.", NOERROR),
        ("nope.shop.svc.cluster.local.", NXDOMAIN),
    ] {
        let got = d
            .check(&query(9, &wire(name), 12, None), false, false)
            .unwrap();
        assert_eq!(got, want, "PTR {name}");
    }
}

/// The first fill writes the records map in batches (one `bpf()` call per 1024 entries):
/// the call lands every entry as written, on this kernel, without falling back.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn a_batch_write_lands_every_entry() {
    use aya::maps::{HashMap, Map};
    use dns_userspace::{dataplane::batch, model::wire_from_dotted};
    let mut ebpf = dataplane::load(None).expect("the program loads");
    let Some(Map::HashMap(data)) = ebpf.take_map(dns_common::maps::RECORDS) else {
        panic!("the records map is a hash map");
    };
    let n = 2500;
    let seed = [0x1234, 0x5678];
    let keys: Vec<RecordKey> = (0..n)
        .map(|i| {
            let name = wire_from_dotted(&format!("s{i}.ns.svc.cluster.local")).unwrap();
            RecordKey::of(&NameKey::of(&name).unwrap(), seed).unwrap()
        })
        .collect();
    let values: Vec<NameRecords> = (0..n)
        .map(|i| {
            let mut v = NameRecords::empty(30);
            v.a_count = 1;
            v.a[0] = [10, 96, (i / 256) as u8, (i % 256) as u8];
            v
        })
        .collect();
    batch::update(&data, &keys, &values)
        .unwrap_or_else(|e| panic!("batch write: {} ({} written)", e.source, e.written));
    let map: HashMap<_, RecordKey, NameRecords> = HashMap::try_from(Map::HashMap(data)).unwrap();
    assert_eq!(map.keys().count(), n);
    for (k, v) in keys.iter().zip(&values) {
        assert!(
            map.get(k, 0).unwrap() == *v,
            "an entry differs from what was written"
        );
    }
}

/// A rollout: the next daemon loads its programs on the same pins while the last one's
/// main program still runs on the links. A packet the old main program hands to a
/// tail-called program must be read by a program of the same load, whose per-packet state
/// is that packet's: here the new load's pod program has just handled another pod name
/// on the same CPU, and the old main program's packet must still get its own answer.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn a_tail_call_across_a_hand_over_reads_its_own_packet() {
    if !tests::require_root("handover") {
        return;
    }
    // One CPU: the per-CPU state of both loads is the same CPU's, as for two packets on
    // one queue.
    // SAFETY: sched_setaffinity on this thread with a set built here.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
    let fs = tests::netns::Bpffs::new(&format!("xt{}handover", std::process::id() % 10000))
        .expect("bpffs");
    let pins = fs.pin_dir();
    let zone = Records::build(&ZoneConfig::new("cluster.local", 30).unwrap(), &services());
    let mut old = dataplane::load(Some(&pins)).expect("the last daemon's load");
    let mut maps = KernelMaps::take(&mut old).unwrap();
    maps.sync_service_addrs(&[svc4(), svc6()]).unwrap();
    maps.publish(&zone.kernel_view(), true).unwrap();
    // The next daemon, on the same pinned maps; its links are not swapped in yet.
    let new = dataplane::load(Some(&pins)).expect("the next daemon's load");

    let pod_query = |id: u16, name: &str| dns_query(id, 0x0100, &wire(name), 1, 1, None);
    let answer_of = |ebpf: &Ebpf, q: &[u8]| {
        let r = testrun::run(ebpf, Hook::Xdp.program(), &frame4(q)).unwrap();
        assert_eq!(r.action, XDP_TX, "a pod name is answered");
        let dns = parse_reply(&r.frame).unwrap().dns;
        dns[dns.len() - 4..].to_vec()
    };
    for _ in 0..3 {
        // The new load's programs handle one pod name...
        let theirs = pod_query(1, "10-1-2-3.shop.pod.cluster.local");
        assert_eq!(answer_of(&new, &theirs), [10, 1, 2, 3]);
        // ...then the old main program, still on the links, gets another.
        let ours = pod_query(2, "10-9-8-7.shop.pod.cluster.local");
        assert_eq!(
            answer_of(&old, &ours),
            [10, 9, 8, 7],
            "the old program's packet is answered from its own state"
        );
    }
    drop((old, new, maps));
}

/// Per-interface counters live in slots the daemon gives the interfaces it serves: an
/// interface with a slot is counted there (a tc run comes in on `lo`, index 1), one without
/// only globally, and a slot taken back and given again starts from zero.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn interfaces_are_counted_in_the_slots_the_daemon_gives() {
    let Some(mut k) = setup() else { return };
    let q = dns_query(1, 0x0100, &wire("web.shop.svc.cluster.local"), 1, 1, None);
    let answered = |k: &Kernel| -> Vec<(u32, u64)> {
        let per_iface = k.maps.iface_counters().unwrap();
        per_iface
            .iter()
            .map(|(i, c)| (*i, c.get(Counter::Answered)))
            .collect()
    };
    // No slot yet: counted globally only.
    let before = k.counter(Counter::Answered);
    assert_eq!(k.run(Hook::Tc, &frame4(&q)).0, Hook::Tc.answered());
    assert_eq!(k.counter(Counter::Answered), before + 1);
    assert_eq!(answered(&k), []);
    k.maps.sync_iface_slots(&[1, 7].into()).unwrap();
    assert_eq!(answered(&k), [(1, 0), (7, 0)]);
    k.run(Hook::Tc, &frame4(&q));
    k.run(Hook::Tc, &frame4(&q));
    assert_eq!(answered(&k), [(1, 2), (7, 0)]);
    // Index 1 goes and comes back: a fresh slot, from zero; 7 keeps its own.
    k.maps.sync_iface_slots(&[7].into()).unwrap();
    assert_eq!(answered(&k), [(7, 0)]);
    k.maps.sync_iface_slots(&[1, 7].into()).unwrap();
    assert_eq!(answered(&k), [(1, 0), (7, 0)]);
}

/// Records rewritten in place (a TTL change rewrites every one) while the program answers
/// from them, on another CPU: every answer still carries the one address the name has had
/// all along.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn answers_stay_right_while_their_records_are_rewritten() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(mut k) = setup() else { return };
    let q = dns_query(1, 0x0100, &wire("web.shop.svc.cluster.local"), 1, 1, None);
    let frame = frame4(&q);
    let one = k.zone.kernel_records();
    let mut other = one.clone();
    for v in other.values_mut() {
        v.ttl += 1;
    }
    let resealed = |k: &Kernel| k.maps.counters().unwrap().get(Counter::Resealed);
    let resealed_before = resealed(&k);
    let stop = AtomicBool::new(false);
    let (ebpf, maps) = (&k.ebpf, &mut k.maps);
    let (runs, passed, rewrites, wrong) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                maps.sync_records(if n.is_multiple_of(2) { &other } else { &one })
                    .unwrap();
                n += 1;
            }
            n
        });
        let (mut wrong, mut runs, mut passed) = (Vec::new(), 0u64, 0u64);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            let r = testrun::run(ebpf, Hook::Xdp.program(), &frame).unwrap();
            runs += 1;
            if r.action == XDP_PASS {
                // An entry the kernel reused while it was read: userspace answers.
                passed += 1;
                continue;
            }
            let right = r.action == XDP_TX
                && parse_reply(&r.frame).is_ok_and(|p| {
                    u16::from_be_bytes([p.dns[6], p.dns[7]]) == 1
                        && p.dns[p.dns.len() - 4..] == [10, 96, 1, 2]
                });
            if !right {
                wrong.push((r.action, r.frame));
            }
        }
        stop.store(true, Ordering::Relaxed);
        (runs, passed, writer.join().unwrap(), wrong)
    });
    println!("{runs} runs, {rewrites} rewrites, {passed} passed as resealed");
    assert!(
        rewrites > 10,
        "the records were rewritten ({rewrites} times)"
    );
    assert!(
        wrong.is_empty(),
        "{} wrong answers of {runs} ({rewrites} rewrites); first: {:?}",
        wrong.len(),
        wrong.first()
    );
    assert_eq!(
        resealed(&k) - resealed_before,
        passed,
        "every pass is an entry caught changing while read"
    );
}

/// An entry that does not match its seal, as one the kernel reused for another name while
/// a program read it (whole, or half rewritten) looks, is never answered from: the query
/// passes untouched to userspace, counted. Sealed right again, it is answered.
#[test]
#[cfg_attr(not_root, ignore = "needs root: loads BPF")]
fn an_entry_that_does_not_match_its_seal_passes() {
    let Some(mut k) = setup() else { return };
    let key = |k: &Kernel, n: &str| {
        let name = NameKey::of(&wire(n)).unwrap();
        (name, k.maps.key(&name).unwrap())
    };
    let (web, kw) = key(&k, "web.shop.svc.cluster.local");
    let (other, ko) = key(&k, "kubernetes.default.svc.cluster.local");
    let records = k.zone.kernel_records();
    let a = dns_query(1, 0x0100, &wire("web.shop.svc.cluster.local"), 1, 1, None);
    let aaaa = dns_query(1, 0x0100, &wire("web.shop.svc.cluster.local"), 28, 1, None);
    k.assert_answers(Hook::Xdp, &frame4(&a), &a, "sealed A");

    let own = records[&web].sealed(&kw);
    let mut torn_a = own;
    torn_a.a[0][3] ^= 1;
    let mut torn_aaaa = own;
    torn_aaaa.aaaa[0][15] ^= 1;
    let mut torn_ttl = own;
    torn_ttl.ttl += 1;
    let cases = [
        (
            records[&other].sealed(&ko),
            &a,
            "another name's entry, whole",
        ),
        (torn_a, &a, "an A address changed after the seal"),
        (torn_aaaa, &aaaa, "an AAAA address changed after the seal"),
        (torn_ttl, &a, "the TTL changed after the seal"),
    ];
    for (entry, q, what) in cases {
        k.maps.write_unsealed(&[(kw, Some(entry))], &[]).unwrap();
        for hook in HOOKS {
            k.assert_passes(hook, &frame4(q), Counter::Resealed, what);
        }
    }
    k.maps.write_unsealed(&[(kw, Some(own))], &[]).unwrap();
    k.assert_answers(Hook::Xdp, &frame4(&aaaa), &aaaa, "sealed AAAA");

    let (reverse, kr) = key(&k, "2.1.96.10.in-addr.arpa");
    let ptr = dns_query(1, 0x0100, &wire("2.1.96.10.in-addr.arpa"), 12, 1, None);
    k.assert_answers(Hook::Xdp, &frame4(&ptr), &ptr, "sealed PTR");
    let target = k.zone.kernel_targets()[&reverse].sealed(&kr);
    let mut torn = target;
    torn.target[5] ^= 0x20;
    k.maps.write_unsealed(&[], &[(kr, Some(torn))]).unwrap();
    for hook in HOOKS {
        k.assert_passes(
            hook,
            &frame4(&ptr),
            Counter::Resealed,
            "a PTR target changed",
        );
    }
    k.maps.write_unsealed(&[], &[(kr, Some(target))]).unwrap();
    k.assert_answers(Hook::Xdp, &frame4(&ptr), &ptr, "sealed PTR again");
}
