//! Names outside the cluster zone, through the daemon to a real upstream: Knot DNS serving
//! a test zone in an "upstream" namespace. The cache answers repeats (the upstream's packet
//! counter does not move), negative answers are cached, stale answers are served while the
//! upstream is gone and new names then get SERVFAIL.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use tests::{
    client::{dig, dig_status, eventually, nft, nft_counters, query_bytes, run},
    daemon_args::DaemonArgs,
    fixture::{example_manifests, Scratch, TempDir},
    netns::{Bpffs, Daemon, Netns, Topology, SVC4, SVC6},
};

const ZONE: &str = "$ORIGIN example.test.\n$TTL 300\n\
@    SOA ns admin 1 3600 900 86400 60\n\
@    NS  ns\n\
ns   A   10.2.0.2\n\
www  A   192.0.2.10\n\
api  A   192.0.2.11\n\
*.big TXT \"{0}\"\n*.big TXT \"{1}\"\n*.big TXT \"{2}\"\n*.big TXT \"{3}\"\n*.big TXT \"{4}\"\n";

/// The zone file: `*.big` answers five 200-byte TXT records (about 1.1 KB on the wire).
fn zone_text() -> String {
    let mut z = ZONE.to_owned();
    for i in 0..5 {
        z = z.replace(&format!("{{{i}}}"), &format!("{i}").repeat(200));
    }
    z
}

/// Two ExternalName Services in `shop`: one to a name Knot serves, one to a missing name.
const EXTERNAL_NAMES: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: shop}\n\
     spec: {type: ExternalName, externalName: www.example.test}\n---\n\
     apiVersion: v1\nkind: Service\nmetadata: {name: gone, namespace: shop}\n\
     spec: {type: ExternalName, externalName: nope.example.test}\n";

/// knotd in `ns`, killed on drop.
struct Knot(Child);

impl Knot {
    fn start(ns: &Netns, dir: &Path) -> Knot {
        Self::start_on(ns, dir, 53)
    }

    fn start_on(ns: &Netns, dir: &Path, port: u16) -> Knot {
        let dir = dir.join(format!("knot-{port}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("example.test.zone"), zone_text()).unwrap();
        let conf = format!(
            "server:\n    rundir: \"{d}\"\n    listen: 10.2.0.2@{port}\ndatabase:\n    storage: \"{d}\"\n\
             zone:\n  - domain: example.test\n    file: \"{d}/example.test.zone\"\n",
            d = dir.display()
        );
        fs::write(dir.join("knot.conf"), conf).unwrap();
        let child = ns
            .cmd("knotd")
            .args(["-c", &dir.join("knot.conf").display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("knotd (Debian's knot)");
        Knot(child)
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// UDP and TCP packets to port 53 that reached the upstream namespace.
fn upstream_queries(up: &Netns) -> u64 {
    nft_counters(up, "in").iter().sum()
}

struct Fixture {
    topo: Topology,
    up: Netns,
    pins: Bpffs,
    dir: TempDir,
}

/// The shared scratch fixture, and an upstream namespace whose nftables counters count the
/// queries that reach it (UDP and TCP on 53, UDP on 5353).
fn fixture(tag: &str) -> Option<Fixture> {
    let Scratch { topo, pins, dir } = tests::fixture::scratch("xf", tag, 1)?;
    let up = topo.add_upstream().expect("upstream namespace");
    nft(&up, "add table inet xdns_test");
    nft(
        &up,
        "add chain inet xdns_test in { type filter hook input priority 0 ; }",
    );
    nft(&up, "add rule inet xdns_test in udp dport 53 counter");
    nft(
        &up,
        "add rule inet xdns_test in tcp dport 53 tcp flags syn counter",
    );
    nft(
        &up,
        "add chain inet xdns_test alt { type filter hook input priority 0 ; }",
    );
    nft(&up, "add rule inet xdns_test alt udp dport 5353 counter");
    Some(Fixture {
        topo,
        up,
        pins,
        dir,
    })
}

impl Fixture {
    /// The daemon forwarding to Knot in the upstream namespace, the kernel path on the
    /// pod's veth, then `extra`.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        self.args_on(&example_manifests(), extra)
    }

    /// [`Fixture::args`] with `dir` as the manifest folder.
    fn args_on(&self, dir: &Path, extra: &[&str]) -> Vec<String> {
        DaemonArgs::manifests(dir)
            .listen(&[SVC4, SVC6])
            .iface(&self.topo.pods[0].host_if)
            .pin_dir(&self.pins.pin_dir())
            .upstream("10.2.0.2")
            .extra(&["--forward-timeout-ms", "500"])
            .extra(extra)
            .build()
    }

    fn pod(&self) -> &Netns {
        &self.topo.pods[0].ns
    }
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn forwards_caches_and_serves_stale() {
    let Some(f) = fixture("fwd") else { return };
    let knot = Knot::start(&f.up, &f.dir);
    // Until knotd listens, dig fails: no reply yet.
    eventually(Duration::from_secs(10), "NOERROR".to_string(), || {
        dig_status(&f.up, "10.2.0.2", &["www.example.test"])
    });

    let d = Daemon::start(&f.topo.node, &f.args(&[])).expect("daemon");
    let q0 = upstream_queries(&f.up);
    assert_eq!(dig(f.pod(), SVC4, &["www.example.test"]), "192.0.2.10");
    let q1 = upstream_queries(&f.up);
    assert_eq!(q1, q0 + 1, "one upstream query");
    for _ in 0..3 {
        assert_eq!(dig(f.pod(), SVC6, &["WWW.example.test"]), "192.0.2.10");
    }
    assert_eq!(upstream_queries(&f.up), q1, "repeats come from the cache");

    // Negative answers are cached for the SOA's negative TTL (60 s, capped at 30 s).
    assert_eq!(
        dig_status(f.pod(), SVC4, &["nope.example.test"]),
        "NXDOMAIN"
    );
    let q2 = upstream_queries(&f.up);
    assert_eq!(
        dig_status(f.pod(), SVC4, &["nope.example.test"]),
        "NXDOMAIN"
    );
    assert_eq!(upstream_queries(&f.up), q2, "negative answer cached");

    // TCP from the client is forwarded the same way.
    assert_eq!(
        dig(f.pod(), SVC4, &["+tcp", "api.example.test"]),
        "192.0.2.11"
    );

    // The cluster zone never goes upstream.
    let q3 = upstream_queries(&f.up);
    assert_eq!(
        dig_status(f.pod(), SVC4, &["nothing.shop.svc.cluster.local"]),
        "NXDOMAIN"
    );
    assert_eq!(upstream_queries(&f.up), q3);

    // glibc through resolv.conf with the cluster's search path and ndots:5: the search
    // expansions are answered by the zone, then the name goes upstream.
    f.pod()
        .set_resolv_conf(&format!(
            "nameserver {SVC4}\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 attempts:1 timeout:2\n"
        ))
        .unwrap();
    let got = run(f.pod(), "getent", &["ahostsv4", "api.example.test"]);
    assert!(got.starts_with("192.0.2.11"), "{got}");
    let got = run(f.pod(), "getent", &["ahostsv4", "web"]);
    assert!(got.starts_with("10.96.12.7"), "{got}");
    d.stop().unwrap();

    // Serve-stale: a one-second cache, then the upstream goes away.
    let d = Daemon::start(
        &f.topo.node,
        &f.args(&[
            "--cache-ttl",
            "1",
            "--cache-min-ttl",
            "1",
            "--serve-stale",
            "3600",
        ]),
    )
    .expect("daemon");
    assert_eq!(dig(f.pod(), SVC4, &["www.example.test"]), "192.0.2.10");
    drop(knot);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        dig(f.pod(), SVC4, &["www.example.test"]),
        "192.0.2.10",
        "stale while the upstream fails"
    );
    let ttl = run(
        f.pod(),
        "dig",
        &["@10.96.0.10", "+noall", "+answer", "www.example.test"],
    );
    assert!(
        ttl.contains("\t30\t") || ttl.contains(" 30 "),
        "stale answers carry TTL 30: {ttl}"
    );
    assert_eq!(
        dig_status(f.pod(), SVC4, &["new.example.test"]),
        "SERVFAIL",
        "nothing stale to give"
    );
    // Marked in the metrics, under CoreDNS's names.
    // A TXT query: the kernel path answers A/AAAA itself and passes this one to userspace.
    assert_eq!(
        dig(f.pod(), SVC4, &["dns-version.cluster.local", "TXT"]),
        "\"1.1.0\""
    );
    let metrics = run(
        &f.topo.node,
        "curl",
        &["-s", "--max-time", "2", "http://127.0.0.1:9153/metrics"],
    );
    let value = |series: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    assert!(value("coredns_cache_served_stale_total") >= 1, "{metrics}");
    assert!(value("coredns_cache_misses_total") >= 2, "{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("coredns_dns_requests_total")
                && l.contains("zone=\"cluster.local.\"")
                && l.contains("type=\"TXT\"")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("coredns_dns_responses_total")
                && l.contains("rcode=\"SERVFAIL\"")),
        "{metrics}"
    );
    d.stop().unwrap();
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn no_forward_is_refused_and_a_dead_upstream_is_servfail() {
    let Some(f) = fixture("nofwd") else { return };
    let d = Daemon::start(&f.topo.node, &f.args(&["--no-forward"])).expect("daemon");
    assert_eq!(dig_status(f.pod(), SVC4, &["www.example.test"]), "REFUSED");
    d.stop().unwrap();
    // No upstream answering (knotd not started): SERVFAIL after the per-try timeout.
    let d = Daemon::start(&f.topo.node, &f.args(&[])).expect("daemon");
    assert_eq!(dig_status(f.pod(), SVC4, &["www.example.test"]), "SERVFAIL");
    d.stop().unwrap();
}

/// A headless service with 200 endpoints: UDP gets TC=1, TCP gets all of it, dig's
/// default (+notcp, retrying over TCP on TC) and glibc resolve it whole.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let Some(f) = fixture("trunc") else { return };
    let dir = f.dir.join("manifests");
    fs::create_dir_all(&dir).unwrap();
    let eps: String = (0..200)
        .map(|i| {
            format!(
                "  - addresses: [10.3.{}.{}]\n    conditions: {{ready: true}}\n",
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    fs::write(
        dir.join("big.yaml"),
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: big, namespace: shop}}\nspec: {{clusterIP: None}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: big-1, namespace: shop, labels: {{kubernetes.io/service-name: big}}}}\n\
             addressType: IPv4\nendpoints:\n{eps}"
        ),
    )
    .unwrap();
    let mut args = f.args(&["--no-forward"]);
    let at = args.iter().position(|a| a == "--manifests").unwrap();
    args[at + 1] = dir.display().to_string();
    let _d = Daemon::start(&f.topo.node, &args).expect("daemon");
    let name = "big.shop.svc.cluster.local";
    let udp = run(
        f.pod(),
        "dig",
        &["@10.96.0.10", "+notcp", "+ignore", "+noedns", name],
    );
    assert!(
        udp.contains(" tc") && !udp.contains("ANSWER: 0,") && !udp.contains("ANSWER: 200,"),
        "UDP truncated to what fits: {udp}"
    );
    let tcp = dig(f.pod(), SVC4, &["+tcp", name]);
    assert_eq!(tcp.lines().count(), 200, "TCP carries all 200");
    let retried = dig(f.pod(), SVC4, &[name]);
    assert_eq!(retried.lines().count(), 200, "dig retries over TCP on TC");
    f.pod()
        .set_resolv_conf(&format!(
            "nameserver {SVC4}\noptions attempts:1 timeout:2\n"
        ))
        .unwrap();
    let glibc = run(f.pod(), "getent", &["ahostsv4", name]);
    assert!(
        glibc.lines().count() >= 200,
        "glibc resolves it whole: {} lines",
        glibc.lines().count()
    );
}

/// An upstream that sends our queries back to us (here: ourselves) is a loop: the daemon
/// refuses to start and says why.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn a_forwarding_loop_is_detected_at_start_up() {
    let Some(f) = fixture("loop") else { return };
    let mut args = f.args(&["--upstream", SVC4]);
    // Only the looping upstream.
    let at = args.iter().position(|a| a == "10.2.0.2").unwrap();
    args.drain(at - 1..=at);
    let out = f
        .topo
        .node
        .cmd(tests::netns::daemon_bin().to_str().unwrap())
        .arg("run")
        .args(&args)
        .output()
        .expect("daemon runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must not start: {stderr}");
    assert!(stderr.contains("forwarding loop"), "{stderr}");
    // With a real upstream the same probe passes.
    let _knot = Knot::start(&f.up, &f.dir);
    eventually(Duration::from_secs(10), "NOERROR".to_string(), || {
        dig_status(&f.up, "10.2.0.2", &["www.example.test"])
    });
    let d = Daemon::start(&f.topo.node, &f.args(&[])).expect("no loop, starts");
    d.stop().unwrap();
}

/// A stub domain goes to its own upstream; everything else to the default one.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn stub_domains_have_their_own_upstreams() {
    let Some(f) = fixture("stub") else { return };
    let _knot = Knot::start(&f.up, &f.dir);
    eventually(Duration::from_secs(10), "NOERROR".to_string(), || {
        dig_status(&f.up, "10.2.0.2", &["www.example.test"])
    });
    let mut args = f.args(&["--stub", "example.test=10.2.0.2"]);
    // The default upstream answers nothing.
    let at = args.iter().position(|a| a == "10.2.0.2").unwrap();
    args[at] = "10.2.0.9".into();
    let _d = Daemon::start(&f.topo.node, &args).expect("daemon");
    assert_eq!(dig(f.pod(), SVC4, &["www.example.test"]), "192.0.2.10");
    assert_eq!(dig_status(f.pod(), SVC4, &["www.example.org"]), "SERVFAIL");
}

/// UDP packets that reached port 5353 in the upstream namespace.
fn alt_queries(up: &Netns) -> u64 {
    nft_counters(up, "alt")[0]
}

/// A failing upstream leaves the rotation after two failures and comes back once a health
/// check gets an answer from it.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn failing_upstreams_leave_the_rotation_and_come_back() {
    let Some(f) = fixture("health") else { return };
    let _knot = Knot::start(&f.up, &f.dir);
    eventually(Duration::from_secs(10), "NOERROR".to_string(), || {
        dig_status(&f.up, "10.2.0.2", &["www.example.test"])
    });
    // The dead one (nothing on 5353) first, in sequential order.
    let mut args = f.args(&["--policy", "sequential", "--upstream", "10.2.0.2:53"]);
    let at = args.iter().position(|a| a == "10.2.0.2").unwrap();
    args[at] = "10.2.0.2:5353".into();
    let _d = Daemon::start(&f.topo.node, &args).expect("daemon");
    let a0 = alt_queries(&f.up);
    let started = std::time::Instant::now();
    for i in 0..20 {
        assert_eq!(
            dig_status(f.pod(), SVC4, &[&format!("n{i}.example.test")]),
            "NXDOMAIN"
        );
    }
    let tried = alt_queries(&f.up) - a0;
    // Two failures, then only the health checks (one per 500 ms) reach it.
    let probes = (started.elapsed().as_millis() / 500) as u64 + 1;
    assert!(
        tried <= (2 + probes).min(19),
        "out of rotation after two failures: {tried} of 20 went to it"
    );

    // It answers again: a health check brings it back, and sequential order uses it first.
    let _alt = Knot::start_on(&f.up, &f.dir, 5353);
    std::thread::sleep(Duration::from_millis(1500));
    let a1 = alt_queries(&f.up);
    for i in 0..10 {
        assert_eq!(
            dig(f.pod(), SVC4, &[&format!("m{i}.example.test"), "+short"]),
            ""
        );
    }
    assert!(alt_queries(&f.up) >= a1 + 10, "back in rotation");
}

/// TCP pipelining: two queries in one write; the zone's answer comes back before the one
/// waiting on a dead upstream. And with --log-queries, one line per query.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn tcp_answers_pipelined_queries_as_they_are_ready_and_logs_queries() {
    let Some(f) = fixture("pipe") else { return };
    let log = f.dir.join("daemon.log");
    // 10.2.0.2 has no server: forwarded queries wait out the 500 ms timeout.
    let d = Daemon::start_logging(
        &f.topo.node,
        &f.args(&["--log-queries"]),
        fs::File::create(&log).unwrap(),
    )
    .expect("daemon");
    let first_reply_id = f
        .pod()
        .within(|| {
            use std::io::{Read, Write};
            let q = |id: u16, name: &str| {
                let m = query_bytes(id, name, 1);
                let mut framed = (m.len() as u16).to_be_bytes().to_vec();
                framed.extend(m);
                framed
            };
            let mut s = std::net::TcpStream::connect((SVC4, 53)).unwrap();
            let mut both = q(1, "slow.example.org");
            both.extend(q(2, "web.shop.svc.cluster.local"));
            s.write_all(&both).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut ids = Vec::new();
            for _ in 0..2 {
                let mut len = [0u8; 2];
                s.read_exact(&mut len).unwrap();
                let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
                s.read_exact(&mut msg).unwrap();
                ids.push(u16::from_be_bytes([msg[0], msg[1]]));
            }
            ids
        })
        .unwrap();
    assert_eq!(
        first_reply_id,
        vec![2, 1],
        "the zone's answer first, then the upstream's"
    );
    d.stop().unwrap();
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("web.shop.svc.cluster.local") && l.contains("path=\"zone\"")),
        "query log line for the zone answer: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("slow.example.org") && l.contains("path=\"error\"")),
        "{text}"
    );
}

/// `--force-tcp` asks the upstream over TCP only.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn force_tcp_asks_upstreams_over_tcp() {
    let Some(f) = fixture("ftcp") else { return };
    let _knot = Knot::start(&f.up, &f.dir);
    eventually(Duration::from_secs(10), "NOERROR".to_string(), || {
        dig_status(&f.up, "10.2.0.2", &["www.example.test"])
    });
    let _d = Daemon::start(&f.topo.node, &f.args(&["--force-tcp"])).expect("daemon");
    // [UDP to 53, TCP SYNs to 53]
    let before = nft_counters(&f.up, "in");
    assert_eq!(dig(f.pod(), SVC4, &["api.example.test"]), "192.0.2.11");
    let after = nft_counters(&f.up, "in");
    assert_eq!(after[0], before[0], "no UDP upstream");
    assert!(after[1] > before[1], "a TCP connection upstream");
}

/// `--prefetch`: a popular answer near its expiry is refreshed in the background, once.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn prefetch_refreshes_popular_answers_before_they_expire() {
    let Some(f) = fixture("pref") else { return };
    let _knot = Knot::start(&f.up, &f.dir);
    eventually(Duration::from_secs(10), "NOERROR".to_string(), || {
        dig_status(&f.up, "10.2.0.2", &["www.example.test"])
    });
    let args = [
        "--cache-ttl",
        "2",
        "--cache-min-ttl",
        "2",
        "--prefetch",
        "1",
        "--prefetch-percent",
        "60",
    ];
    let _d = Daemon::start(&f.topo.node, &f.args(&args)).expect("daemon");
    let q0 = upstream_queries(&f.up);
    assert_eq!(dig(f.pod(), SVC4, &["www.example.test"]), "192.0.2.10");
    assert_eq!(upstream_queries(&f.up), q0 + 1);
    std::thread::sleep(Duration::from_millis(1200));
    // 40% of the TTL left: answered from the cache, and refreshed behind it.
    assert_eq!(dig(f.pod(), SVC4, &["www.example.test"]), "192.0.2.10");
    eventually(Duration::from_secs(2), q0 + 2, || upstream_queries(&f.up));
    // Fresh again: no further upstream query.
    assert_eq!(dig(f.pod(), SVC4, &["www.example.test"]), "192.0.2.10");
    assert_eq!(upstream_queries(&f.up), q0 + 2);
}

/// Past `--max-concurrent` upstream queries in flight, new ones get REFUSED at once.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn past_the_in_flight_cap_queries_are_refused() {
    let Some(f) = fixture("cap") else { return };
    // The upstream drops every query: each forwarded one waits out its 500 ms timeout.
    nft(&f.up, "add rule inet xdns_test in udp dport 53 drop");
    let _d = Daemon::start(&f.topo.node, &f.args(&["--max-concurrent", "1"])).expect("daemon");
    let rcodes = f
        .pod()
        .within(|| {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            for (id, name) in [(1u16, "one.example.org"), (2, "two.example.org")] {
                let m = query_bytes(id, name, 1);
                s.send_to(&m, (SVC4, 53)).unwrap();
            }
            let mut got = Vec::new();
            for _ in 0..2 {
                let mut buf = [0u8; 512];
                let n = s.recv(&mut buf).unwrap();
                got.push((u16::from_be_bytes([buf[0], buf[1]]), buf[3] & 0x0f, n));
            }
            got
        })
        .unwrap();
    // Whichever got the one slot waits out its timeout (SERVFAIL); the other is refused at
    // once, so its answer comes first.
    assert_eq!(rcodes[0].1, 5, "REFUSED first: {rcodes:?}");
    assert_eq!(rcodes[1].1, 2, "then SERVFAIL: {rcodes:?}");
    assert_ne!(rcodes[0].0, rcodes[1].0, "one answer each: {rcodes:?}");
}

/// RSS growth of a daemon with `max_bytes` after 10000 distinct 1.1 KB answers (KiB).
fn growth_after_distinct_answers(f: &Fixture, max_bytes: &str) -> u64 {
    let d =
        Daemon::start(&f.topo.node, &f.args(&["--cache-max-bytes", max_bytes])).expect("daemon");
    eventually(Duration::from_secs(5), "NOERROR".to_string(), || {
        dig_status(f.pod(), SVC4, &["0.big.example.test", "TXT"])
    });
    let before = tests::client::rss_kib(d.pid()).expect("rss");
    let answered = f
        .pod()
        .within(|| {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            s.connect(format!("{SVC4}:53")).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 4096];
            (0..10000u32)
                .filter(|i| {
                    let q = query_bytes(*i as u16, &format!("n{i}.big.example.test"), 16);
                    s.send(&q).is_ok() && s.recv(&mut buf).is_ok_and(|n| n >= 12)
                })
                .count()
        })
        .unwrap();
    assert!(answered > 9900, "{answered} of 10000 answered");
    let after = tests::client::rss_kib(d.pid()).expect("rss");
    d.stop().unwrap();
    after.saturating_sub(before)
}

/// 10000 distinct large answers: with `--cache-max-bytes` the daemon grows by a fraction of
/// what it grows when only the entry bound (10000) holds.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn the_cache_is_bounded_by_bytes() {
    let Some(f) = fixture("bytes") else { return };
    let _k = Knot::start(&f.up, &f.dir);
    let bounded = growth_after_distinct_answers(&f, "4194304");
    let entries_only = growth_after_distinct_answers(&f, "1073741824");
    println!("RSS growth: 4 MiB bound {bounded} KiB, entry bound only {entries_only} KiB");
    assert!(
        bounded * 3 < entries_only && bounded < 16 * 1024,
        "RSS growth {bounded} KiB with a 4 MiB bound, {entries_only} KiB without"
    );
}

/// An ExternalName Service pointing outside the zone: an A query gets the CNAME and the
/// target's address resolved through the forwarder (over UDP and over TCP), every TTL the
/// smaller one; the target's NXDOMAIN is passed on; the kernel passes these queries to
/// userspace and still answers the CNAME query itself; glibc resolves the name through the
/// search path as it would with CoreDNS.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn external_names_resolve_to_their_targets_addresses() {
    let Some(f) = fixture("extn") else { return };
    let dir = f.dir.join("manifests");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("ext.yaml"), EXTERNAL_NAMES).unwrap();
    let _k = Knot::start(&f.up, &f.dir);
    let args = f.args_on(&dir, &[]);
    let _d = Daemon::start(&f.topo.node, &args).expect("daemon");
    eventually(Duration::from_secs(5), "192.0.2.10".to_string(), || {
        dig(f.pod(), SVC4, &["www.example.test"])
    });
    let answer = |extra: &[&str]| {
        let mut a = vec!["@10.96.0.10", "+noall", "+answer", "+time=2", "+tries=1"];
        a.extend_from_slice(extra);
        run(f.pod(), "dig", &a)
    };
    let passed = || {
        dns_userspace::dataplane::snapshot::pinned_counters(&f.pins.pin_dir())
            .unwrap()
            .get(dns_common::Counter::PtrPass)
    };
    let p0 = passed();
    let want = "ext.shop.svc.cluster.local. 30\tIN\tCNAME\twww.example.test.\n\
                www.example.test.\t30\tIN\tA\t192.0.2.10";
    assert_eq!(answer(&["ext.shop.svc.cluster.local"]), want, "over UDP");
    assert_eq!(passed(), p0 + 1, "the kernel passed the A query");
    assert_eq!(
        answer(&["+tcp", "ext.shop.svc.cluster.local"]),
        want,
        "over TCP"
    );
    assert_eq!(
        answer(&["ext.shop.svc.cluster.local", "CNAME"]),
        "ext.shop.svc.cluster.local. 30\tIN\tCNAME\twww.example.test."
    );
    assert_eq!(passed(), p0 + 1, "the kernel answered the CNAME query");
    assert_eq!(
        dig_status(f.pod(), SVC4, &["gone.shop.svc.cluster.local"]),
        "NXDOMAIN"
    );
    assert_eq!(
        answer(&["gone.shop.svc.cluster.local"]),
        "gone.shop.svc.cluster.local. 30\tIN\tCNAME\tnope.example.test."
    );
    f.pod()
        .set_resolv_conf(&format!(
            "nameserver {SVC4}\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5 attempts:1 timeout:2\n"
        ))
        .unwrap();
    let glibc = run(f.pod(), "getent", &["hosts", "ext"]);
    assert!(glibc.starts_with("192.0.2.10"), "getent hosts ext: {glibc}");
    let glibc = run(
        f.pod(),
        "getent",
        &["ahostsv4", "ext.shop.svc.cluster.local"],
    );
    assert!(glibc.starts_with("192.0.2.10"), "getent ahostsv4: {glibc}");
}

/// `--upstream-service` (NodeLocal DNSCache's `kube-dns-upstream`): names outside the zone
/// go to the Service's ready endpoints at their slice's port, follow them as they change,
/// and fall back to the configured upstreams while there are none.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn an_upstream_service_is_forwarded_to_while_it_has_endpoints() {
    let Some(f) = fixture("upsvc") else { return };
    let dir = f.dir.join("manifests");
    fs::create_dir_all(&dir).unwrap();
    let slice = |endpoints: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: kube-dns-upstream, namespace: kube-system}}\n\
             spec: {{clusterIP: 10.96.0.11, ports: [{{name: dns, port: 53, protocol: UDP}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: kube-dns-upstream-x, namespace: kube-system,\n  \
             labels: {{kubernetes.io/service-name: kube-dns-upstream}}}}\n\
             addressType: IPv4\nendpoints: [{endpoints}]\n\
             ports: [{{name: dns-tcp, port: 5300, protocol: TCP}}, {{name: dns, port: 5353, protocol: UDP}}]\n"
        )
    };
    let ready = "{addresses: [10.2.0.2], conditions: {ready: true}}";
    fs::write(dir.join("upstream.yaml"), slice(ready)).unwrap();
    let _main = Knot::start(&f.up, &f.dir);
    let _alt = Knot::start_on(&f.up, &f.dir, 5353);
    for port in ["53", "5353"] {
        eventually(Duration::from_secs(10), "NOERROR".to_string(), || {
            dig_status(&f.up, "10.2.0.2", &["-p", port, "www.example.test"])
        });
    }
    let args = f.args_on(
        &dir,
        &["--upstream-service", "kube-system/kube-dns-upstream"],
    );
    let _d = Daemon::start(&f.topo.node, &args).expect("daemon");
    // Which upstream a fresh name (never cached) reached.
    let mut n = 0;
    let mut reached = || {
        n += 1;
        let (main0, alt0) = (upstream_queries(&f.up), alt_queries(&f.up));
        let answer = dig(f.pod(), SVC4, &[&format!("q{n}.example.test"), "+short"]);
        assert_eq!(answer, "", "NXDOMAIN from the upstream");
        match (upstream_queries(&f.up) > main0, alt_queries(&f.up) > alt0) {
            (false, true) => "endpoint",
            (true, false) => "configured",
            other => panic!("reached {other:?}"),
        }
    };
    eventually(Duration::from_secs(10), "endpoint", &mut reached);
    assert_eq!(
        dig(f.pod(), SVC4, &["www.example.test", "+short"]),
        "192.0.2.10"
    );
    // No ready endpoint: the configured upstream (port 53).
    let not_ready = "{addresses: [10.2.0.2], conditions: {ready: false}}";
    fs::write(dir.join("upstream.yaml"), slice(not_ready)).unwrap();
    eventually(Duration::from_secs(10), "configured", &mut reached);
    // Back: the endpoint again.
    fs::write(dir.join("upstream.yaml"), slice(ready)).unwrap();
    eventually(Duration::from_secs(10), "endpoint", &mut reached);
}

/// musl's getaddrinfo, built from `tests/clients/gai.c` (Debian's musl-tools).
fn musl_client(dir: &Path) -> PathBuf {
    let out = dir.join("gai-musl");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/gai.c");
    let status = std::process::Command::new("musl-gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("musl-gcc (Debian's musl-tools; `cargo xtask setup` installs it)");
    assert!(status.success(), "musl-gcc failed");
    out
}

/// A client resolving a name, printing what it got.
type Resolve<'a> = Box<dyn Fn(&str) -> String + 'a>;

/// Addresses a client printed, one a line (getent: the first column), sorted, deduplicated.
fn addresses(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Real stub resolvers through a pod's resolv.conf (search path, ndots:5), as applications
/// call them: glibc (`getent ahosts`, Python's socket.getaddrinfo) and musl. Each resolves
/// Services, a headless Service and its pod, an ExternalName out of the zone and an outside
/// name to the addresses the Kubernetes DNS spec gives a CoreDNS-served pod, and fails a
/// name that does not exist.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn glibc_python_and_musl_clients_resolve_as_a_coredns_pod() {
    let Some(f) = fixture("gai") else { return };
    let dir = f.dir.join("manifests");
    fs::create_dir_all(&dir).unwrap();
    let examples = tests::fixture::example_manifests();
    for e in fs::read_dir(&examples).unwrap() {
        let e = e.unwrap().path();
        fs::copy(&e, dir.join(e.file_name().unwrap())).unwrap();
    }
    fs::write(dir.join("ext.yaml"), EXTERNAL_NAMES).unwrap();
    let musl = musl_client(&f.dir);
    let _k = Knot::start(&f.up, &f.dir);
    let args = f.args_on(&dir, &[]);
    let _d = Daemon::start(&f.topo.node, &args).expect("daemon");
    eventually(Duration::from_secs(5), "192.0.2.10".to_string(), || {
        dig(f.pod(), SVC4, &["www.example.test"])
    });
    f.pod()
        .set_resolv_conf(&format!(
            "nameserver {SVC4}\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5 attempts:2 timeout:2\n"
        ))
        .unwrap();
    let python = "import socket, sys\n\
                  try:\n    r = socket.getaddrinfo(sys.argv[1], None, type=socket.SOCK_STREAM)\n\
                  except socket.gaierror as e:\n    print('error:', e)\n    sys.exit(0)\n\
                  print('\\n'.join(a[4][0] for a in r))\n";
    let musl = musl.display().to_string();
    let clients: [(&str, Resolve); 3] = [
        (
            "glibc getent",
            Box::new(|n| {
                let out = f.pod().output("getent", &["ahosts", n]).expect("getent");
                String::from_utf8_lossy(&out.stdout).into_owned()
            }),
        ),
        (
            "python getaddrinfo",
            Box::new(|n| run(f.pod(), "python3", &["-c", python, n])),
        ),
        ("musl getaddrinfo", Box::new(|n| run(f.pod(), &musl, &[n]))),
    ];
    let cases: [(&str, &[&str]); 8] = [
        ("web", &["10.96.12.7", "fd00:10:96::c07"]),
        ("web.shop", &["10.96.12.7", "fd00:10:96::c07"]),
        ("cart.shop.svc.cluster.local", &["10.96.12.8"]),
        // Headless: its ready endpoints; a pod by its hostname.
        ("db", &["10.244.1.5", "10.244.2.7"]),
        ("db-1.db", &["10.244.2.7"]),
        ("ext", &["192.0.2.10"]),
        ("www.example.test", &["192.0.2.10"]),
        ("nope", &[]),
    ];
    for (client, resolve) in &clients {
        for (name, want) in cases {
            let out = resolve(name);
            let got = if out.trim().is_empty() || out.starts_with("error") {
                Vec::new()
            } else {
                addresses(&out)
            };
            assert_eq!(got, want, "{client} {name}: {out}");
        }
        // An ExternalName to a name that does not exist does not resolve.
        let out = resolve("gone");
        assert!(
            out.trim().is_empty() || out.starts_with("error"),
            "{client} gone: {out}"
        );
    }
}
