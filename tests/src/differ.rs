//! The differential harness: one query through the kernel program (BPF_PROG_TEST_RUN) and
//! through the userspace answer path. A kernel answer must be byte for byte userspace's; a
//! pass must leave the frame untouched and be a query userspace answers itself. The corpus
//! generator gives the test suite its few thousand queries; the fuzz target feeds it bytes.
use std::net::IpAddr;

use aya::Ebpf;
use dns_userspace::{
    answer::{respond, Transport},
    dataplane::{self, maps::KernelMaps},
    model::Records,
};

use crate::{
    packet::{parse_reply, udp_frame},
    testrun::{self, Hook},
};

pub const SVC4: &str = "10.96.0.10";
pub const SVC6: &str = "fd00:10:96::a";

/// What the kernel did with a query both paths agreed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Answered, with this RCODE.
    Answered(u8),
    Passed,
}

pub struct Differ {
    pub ebpf: Ebpf,
    pub maps: KernelMaps,
    pub zone: Records,
}

impl Differ {
    /// Loads both programs (no pins) and publishes `zone` as the daemon does.
    pub fn new(zone: Records) -> Result<Self, String> {
        let mut ebpf = dataplane::load(None).map_err(|e| e.to_string())?;
        let mut maps = KernelMaps::take(&mut ebpf).map_err(|e| e.to_string())?;
        let addrs: [IpAddr; 2] = [SVC4.parse().unwrap(), SVC6.parse().unwrap()];
        maps.sync_service_addrs(&addrs).map_err(|e| e.to_string())?;
        maps.publish(&zone.kernel_view(), true)
            .map_err(|e| e.to_string())?;
        Ok(Self { ebpf, maps, zone })
    }

    /// Runs the DNS message `dns` from a pod to the service address (IPv6 if `v6`) through
    /// the XDP program (or tc), and checks it against userspace. `Err` says how they differ.
    pub fn check(&self, dns: &[u8], v6: bool, tc: bool) -> Result<Verdict, String> {
        let frame = if v6 {
            udp_frame(
                "fd00:1::2".parse().unwrap(),
                SVC6.parse().unwrap(),
                40000,
                53,
                dns,
            )
        } else {
            udp_frame(
                "10.1.0.2".parse().unwrap(),
                SVC4.parse().unwrap(),
                40000,
                53,
                dns,
            )
        };
        let hook = if tc { Hook::Tc } else { Hook::Xdp };
        let ran = testrun::run(&self.ebpf, hook.program(), &frame)?;
        let (action, out) = (ran.action, ran.frame);
        let user = respond(dns, &self.zone, Transport::Udp);
        if action == hook.answered() {
            let k = parse_reply(&out).map_err(|e| format!("kernel reply: {e}"))?;
            let Some(user) = user else {
                return Err("the kernel answered what userspace drops".into());
            };
            if k.dns != user {
                return Err(format!(
                    "kernel and userspace differ:\n kernel {:?}\n user   {:?}",
                    k.dns, user
                ));
            }
            Ok(Verdict::Answered(k.dns[3] & 0x0f))
        } else if action == hook.passed() {
            if out != frame {
                return Err("a passed frame was changed".into());
            }
            Ok(Verdict::Passed)
        } else {
            Err(format!("unexpected action {action}"))
        }
    }
}

/// A query message: RD set, class IN, optionally one OPT record.
pub fn query(id: u16, qname: &[u8], qtype: u16, opt: Option<(u16, bool)>) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, opt.is_some() as u8]);
    m.extend_from_slice(qname);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    if let Some((size, dnssec_ok)) = opt {
        m.extend_from_slice(&[0, 0, 41]);
        m.extend_from_slice(&size.to_be_bytes());
        m.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    }
    m
}

/// The wire form of a dotted name, case kept.
pub fn wire(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in s.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

/// A fixed-seed xorshift: the same corpus every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// Query names for a zone: every existing name, search-path expansions of in-cluster and
/// outside names as a pod in each namespace makes them, and random names under the zone.
pub fn corpus_names(zone: &Records, namespaces: &[&str], rng: &mut Rng) -> Vec<String> {
    let mut names: Vec<String> = zone.owners().map(dotted).collect();
    let bases = [
        "api.example.com",
        "www.google.com",
        "registry-1.docker.io",
        "web",
        "db",
        "kubernetes.default",
        "kube-dns.kube-system",
        "web.shop",
        "db-0.db",
        "nope",
    ];
    for ns in namespaces {
        for b in bases {
            for s in [
                format!("{ns}.svc.cluster.local"),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ] {
                names.push(format!("{b}.{s}."));
            }
        }
    }
    // Every other name that exists (empty non-terminals: `svc.<zone>`, `dns.<zone>`...),
    // and names around the SOA's own, which userspace compresses the SOA against.
    let owners: std::collections::BTreeSet<String> = names.iter().cloned().collect();
    for key in zone.kernel_records().keys() {
        let len = key.name.iter().position(|b| *b == 0).unwrap_or(0) + 1;
        let n = dotted(&key.name[..len]);
        if !owners.contains(&n) {
            names.push(n);
        }
    }
    for n in [
        "dns.cluster.local.",
        "x.dns.cluster.local.",
        "ns.dns.cluster.local.",
        "hostmaster.cluster.local.",
        "a.hostmaster.cluster.local.",
        "ns.cluster.local.",
        "dns.svc.cluster.local.",
    ] {
        names.push(n.into());
    }
    // Pod names: good and bad dashed addresses, in served and unknown namespaces.
    for ns in namespaces.iter().chain(&["nope"]) {
        for first in [
            "10-1-2-3",
            "0-0-0-0",
            "255-255-255-255",
            "10-01-2-3",
            "256-1-1-1",
            "1-2-3",
            "1-2-3-4-5",
            "a-b-c-d",
            "10--1-2",
            "-1-2-3",
            "1-2-3-",
            "fd00-0-0-0-0-0-0-1",
            "1234-1-1-1",
        ] {
            names.push(format!("{first}.{ns}.pod.cluster.local."));
        }
        names.push(format!("{ns}.pod.cluster.local."));
        names.push(format!("x.10-1-2-3.{ns}.pod.cluster.local."));
    }
    names.push("pod.cluster.local.".into());
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_";
    for _ in 0..200 {
        let labels = 1 + rng.below(4);
        let mut n = String::new();
        for _ in 0..labels {
            let len = 1 + rng.below(20);
            for _ in 0..len {
                n.push(*rng.pick(CHARS) as char);
            }
            n.push('.');
        }
        let under = *rng.pick(&[
            "svc.cluster.local.",
            "cluster.local.",
            "pod.cluster.local.",
            "",
        ]);
        let ns = *rng.pick(namespaces);
        names.push(match rng.below(3) {
            0 => format!("{n}{ns}.{under}"),
            _ => format!("{n}{under}"),
        });
    }
    names
}

/// `name` with each letter upper-cased at random; the zone suffix too, if `zone_too`.
pub fn random_case(name: &str, rng: &mut Rng, zone_too: bool) -> String {
    let (head, tail) = match name.strip_suffix("cluster.local.") {
        Some(h) if !zone_too => (h, "cluster.local."),
        _ => (name, ""),
    };
    let flipped: String = head
        .chars()
        .map(|c| {
            if rng.next_u64() & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    flipped + tail
}

pub fn dotted(w: &[u8]) -> String {
    let mut s = String::new();
    let mut at = 0;
    while at < w.len() && w[at] != 0 {
        let n = w[at] as usize;
        s.push_str(&String::from_utf8_lossy(
            &w[at + 1..(at + 1 + n).min(w.len())],
        ));
        s.push('.');
        at += 1 + n;
    }
    s
}
