//! The daemon as a node agent: restarts that drop nothing, clean uninstall, lameduck,
//! config reload, metrics.
use std::{
    net::UdpSocket,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use aya::programs::{tc::SchedClassifier, TcAttachType};
use dns_common::Counter;
use hickory_proto::op::{Message, ResponseCode};
use tests::{
    daemon_args::DaemonArgs,
    fixture::fixture,
    netns::{Daemon, Netns, SVC4},
};

/// What a load run saw.
#[derive(Debug, Default)]
struct Load {
    sent: u64,
    answered: u64,
    lost: u64,
    wrong: u64,
    /// The first wrong answer, as hickory prints it: what a failure shows.
    first_wrong: Option<String>,
}

/// Sends queries for `web.shop.svc.cluster.local` from `pod`, one at a time, until `stop`:
/// every query must get the right answer within 300 ms.
fn load(pod: &Netns, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Load> {
    let name = pod.name.clone();
    std::thread::spawn(move || {
        let ns = Netns { name };
        let r = ns
            .within(move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.connect((SVC4, 53)).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let mut l = Load::default();
                let mut buf = [0u8; 512];
                let mut id: u16 = 0;
                while !stop.load(Ordering::Relaxed) {
                    id = id.wrapping_add(1);
                    let q = tests::client::query_bytes(id, "web.shop.svc.cluster.local.", 1);
                    s.send(&q).unwrap();
                    l.sent += 1;
                    // Skip replies to earlier (timed-out) queries.
                    let got = loop {
                        match s.recv(&mut buf) {
                            Ok(n) if n >= 2 && buf[..2] == id.to_be_bytes() => break Some(n),
                            Ok(_) => continue,
                            Err(_) => break None,
                        }
                    };
                    match got {
                        None => l.lost += 1,
                        Some(n) => {
                            let m = Message::from_vec(&buf[..n]).unwrap();
                            let ok = m.response_code() == ResponseCode::NoError
                                && m.answers().len() == 1
                                && m.answers()[0].data().to_string() == "10.96.12.7";
                            if ok {
                                l.answered += 1
                            } else {
                                l.wrong += 1;
                                l.first_wrong.get_or_insert_with(|| format!("{m:?}"));
                            }
                        }
                    }
                }
                l
            })
            .unwrap();
        std::mem::forget(ns);
        r
    })
}

/// The programs attached to `iface`'s tc ingress in the node, by name.
fn tc_programs(node: &Netns, iface: &str) -> Vec<(String, u32)> {
    let iface = iface.to_owned();
    node.within(move || {
        let (_, progs) = SchedClassifier::query_tcx(&iface, TcAttachType::Ingress).unwrap();
        progs
            .iter()
            .map(|p| (p.name_as_str().unwrap_or("").to_owned(), p.id()))
            .collect()
    })
    .unwrap()
}

/// kill -9 under load: the pinned link keeps the kernel answering while no daemon runs;
/// the next daemon adopts the pins and swaps its program in; not one query is lost or
/// answered by anything but the kernel, and the counters run on.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn kill_9_under_load_loses_no_kernel_answer() {
    let Some(f) = fixture("kill", 1) else { return };
    let args = f.args(Some("tc"));
    let d = Daemon::start(&f.topo.node, &args).expect("daemon");
    let host_if = f.topo.pods[0].host_if.clone();
    assert!(d.stdout.contains(&format!("attached {host_if} tc")));
    let before = tc_programs(&f.topo.node, &host_if);
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].0, "xdns_tc");
    let c0 = f.counters().get(Counter::Answered);

    let stop = Arc::new(AtomicBool::new(false));
    let gen = load(f.pod(0), stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    d.kill9();
    // No daemon at all: the kernel answers on from the pinned maps.
    std::thread::sleep(Duration::from_millis(700));
    // Maps an older layout left behind: the next daemon drops them once it has taken over.
    let old_layout = f.pins.pin_dir().join("maps-v1");
    std::fs::create_dir_all(&old_layout).unwrap();
    let t = Instant::now();
    let d = Daemon::start(&f.topo.node, &args).expect("restarted daemon");
    println!("restart to ready: {:?}", t.elapsed());
    assert!(
        d.stdout.contains(&format!("adopted {host_if} tc")),
        "{:?}",
        d.stdout
    );
    assert!(!old_layout.exists(), "maps of another layout swept");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let l = gen.join().unwrap();
    println!("{l:?}");
    assert!(l.sent > 1000, "the load ran: {l:?}");
    assert_eq!((l.lost, l.wrong), (0, 0), "{l:?}");
    assert_eq!(l.answered, l.sent);
    // Every one of them answered by the kernel, and the counter did not restart.
    assert_eq!(f.counters().get(Counter::Answered), c0 + l.sent);

    // The new program replaced the old one in the same link: one program, a new id.
    let after = tc_programs(&f.topo.node, &host_if);
    assert_eq!(after.len(), 1, "no duplicate programs: {after:?}");
    assert_eq!(after[0].0, "xdns_tc");
    assert_ne!(
        after[0].1, before[0].1,
        "the restarted daemon's program runs"
    );

    // A clean stop keeps it too (a rolling update); `--detach-on-exit` removes everything.
    d.stop().unwrap();
    assert_eq!(tc_programs(&f.topo.node, &host_if).len(), 1);
    let mut detach = args.clone();
    detach.push("--detach-on-exit".into());
    let d = Daemon::start(&f.topo.node, &detach).expect("daemon");
    assert!(d.stdout.contains(&format!("adopted {host_if} tc")));
    d.stop().unwrap();
    assert!(tc_programs(&f.topo.node, &host_if).is_empty());
    assert!(
        !f.pins.pin_dir().exists(),
        "pins left: {:?}",
        std::fs::read_dir(f.pins.pin_dir()).map(|d| d.count())
    );
    // And nothing of ours answers the pod now (no daemon, no program).
    let q = tests::client::query_bytes(1, "web.shop.svc.cluster.local.", 1);
    assert!(f
        .pod(0)
        .udp_exchange(SVC4.parse().unwrap(), 53, &q, Duration::from_millis(500))
        .is_err());
}

fn answer_line(pod: &Netns) -> String {
    tests::client::run(
        pod,
        "dig",
        &[
            "@10.96.0.10",
            "+noall",
            "+answer",
            "+time=2",
            "+tries=1",
            "web.shop.svc.cluster.local",
        ],
    )
}

/// A good config file is applied while queries flow (none lost); a bad one is refused with
/// its line and field, and the running config stays.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn config_reload_applies_a_good_file_and_refuses_a_bad_one() {
    let Some(f) = fixture("conf", 1) else { return };
    // Beside the manifests, not among them (the daemon reads every file there).
    let conf = f.manifests.0.with_extension("xdns.yaml");
    let _cleanup = tests::fixture::TempDir(conf.clone());
    std::fs::write(&conf, "kubernetes:\n  ttl: 30\nops:\n  log: false\n").unwrap();
    let mut args = f.args(Some("tc"));
    args.extend(["--config".into(), conf.display().to_string()]);
    let mut d = Daemon::start(&f.topo.node, &args).expect("daemon");
    assert_eq!(
        answer_line(f.pod(0)),
        "web.shop.svc.cluster.local. 30\tIN\tA\t10.96.12.7"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let gen = load(f.pod(0), stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    let c0 = f.counters().get(Counter::Answered);
    // Same size as before: the daemon must notice by time, not by size.
    std::fs::write(&conf, "kubernetes:\n  ttl: 7\nops:\n  log: true\n").unwrap();
    assert_eq!(
        d.wait_line("config", Duration::from_secs(5)).as_deref(),
        Some("config reloaded")
    );
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let l = gen.join().unwrap();
    assert_eq!(
        (l.lost, l.wrong),
        (0, 0),
        "no query lost across the reload: {l:?}"
    );
    // The kernel serves the new TTL (the answer counter moves with the dig).
    let c1 = f.counters().get(Counter::Answered);
    assert!(c1 > c0);
    assert_eq!(
        answer_line(f.pod(0)),
        "web.shop.svc.cluster.local. 7\tIN\tA\t10.96.12.7"
    );
    assert_eq!(f.counters().get(Counter::Answered), c1 + 1);

    // A namespace selector on a label the daemon did not keep (no selector read it): the
    // objects are listed again with it, and the zone follows only once they are.
    std::fs::write(
        &conf,
        "kubernetes:\n  ttl: 7\n  namespaceLabels: \"team=storefront\"\nops:\n  log: true\n",
    )
    .unwrap();
    assert_eq!(
        d.wait_line("config", Duration::from_secs(5)).as_deref(),
        Some("config reloaded")
    );
    assert_eq!(
        answer_line(f.pod(0)),
        "web.shop.svc.cluster.local. 7\tIN\tA\t10.96.12.7"
    );
    std::fs::write(
        &conf,
        "kubernetes:\n  ttl: 7\n  namespaceLabels: \"team=other\"\nops:\n  log: true\n",
    )
    .unwrap();
    assert_eq!(
        d.wait_line("config", Duration::from_secs(5)).as_deref(),
        Some("config reloaded")
    );
    assert_eq!(answer_line(f.pod(0)), "", "shop is no longer served");
    std::fs::write(&conf, "kubernetes:\n  ttl: 7\nops:\n  log: true\n").unwrap();
    assert_eq!(
        d.wait_line("config", Duration::from_secs(5)).as_deref(),
        Some("config reloaded")
    );

    // A typo in a value: refused, naming file, line and field; TTL 7 stays.
    std::fs::write(&conf, "ops: {log: true}\nkubernetes:\n  ttl: seven\n").unwrap();
    let line = d.wait_line("config", Duration::from_secs(5)).unwrap();
    assert!(line.starts_with("config rejected"), "{line}");
    assert!(
        line.contains("xdns.yaml:3") && line.contains("kubernetes.ttl"),
        "{line}"
    );
    // A value only checked after parsing: still the right field and line.
    std::fs::write(&conf, "kubernetes:\n  ttl: 5\n  labels: \"app in (web\"\n").unwrap();
    let line = d.wait_line("config", Duration::from_secs(5)).unwrap();
    assert!(
        line.contains("xdns.yaml:3") && line.contains("kubernetes.labels"),
        "{line}"
    );
    assert_eq!(
        answer_line(f.pod(0)),
        "web.shop.svc.cluster.local. 7\tIN\tA\t10.96.12.7"
    );
    let metrics = tests::client::http_get(&f.topo.node, 9153, "/metrics");
    assert!(
        metrics.contains("coredns_reload_failed_total 2"),
        "{metrics}"
    );
    d.stop().unwrap();

    // At start, a bad file is a start-up error with the same precision.
    std::fs::write(&conf, "forward:\n  polcy: random\n").unwrap();
    let out = Daemon::run_to_exit(&f.topo.node, &args).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("xdns.yaml:2") && err.contains("forward.polcy"),
        "{err}"
    );
}

/// Parses the Prometheus text format: series (name and labels as written) → value.
fn scrape(node: &Netns) -> (Vec<String>, std::collections::BTreeMap<String, f64>) {
    let text = tests::client::http_get(node, 9153, "/metrics");
    let mut types = Vec::new();
    let mut series = std::collections::BTreeMap::new();
    for l in text.lines() {
        if let Some(t) = l.strip_prefix("# TYPE ") {
            types.push(t.split(' ').next().unwrap_or("").to_owned());
        } else if !l.starts_with('#') && !l.is_empty() {
            let (k, v) = l.rsplit_once(' ').expect("series value");
            series.insert(k.to_owned(), v.parse::<f64>().expect("a number"));
        }
    }
    (types, series)
}

fn value(series: &std::collections::BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    series
        .iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

/// `/metrics` carries every documented name (CoreDNS's, for existing dashboards, and the
/// kernel path's), and the counters move with traffic on both paths.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn metrics_have_the_documented_names_and_move_with_traffic() {
    let Some(f) = fixture("metr", 1) else { return };
    let mut args = f.args(Some("tc"));
    args.retain(|a| a != "--no-forward");
    // The upstream: a second, userspace-only xdns on 127.0.0.2:5399 (REFUSED outside its
    // zone), so forwarded queries get real answers to count.
    let upstream = standin(&f, "127.0.0.2", "5399").expect("upstream");
    args.extend(["--upstream", "127.0.0.2:5399"].map(String::from));
    let d = Daemon::start(&f.topo.node, &args).expect("daemon");
    let (types, before) = scrape(&f.topo.node);
    // Series that exist before any query (zero until something happens).
    for name in [
        "coredns_build_info",
        "coredns_cache_hits",
        "coredns_cache_misses",
        "coredns_cache_requests",
        "coredns_cache_served_stale",
        "coredns_cache_entries",
        "coredns_forward_requests",
        "coredns_forward_healthcheck_failures",
        "coredns_forward_max_concurrent_rejects",
        "coredns_kubernetes_dns_programming_duration_seconds",
        "coredns_reload_failed",
        "xdns_kernel_packets",
        "xdns_kernel_interface_packets",
        "xdns_kernel_attached_interfaces",
        "xdns_kernel_records",
        "xdns_kernel_records_capacity",
        "xdns_kernel_target_records",
        "xdns_kernel_degraded",
    ] {
        assert!(types.iter().any(|t| t == name), "{name} missing: {types:?}");
    }
    assert_eq!(
        value(&before, "coredns_build_info", &["goversion=\"rust\""]),
        1.0
    );
    assert_eq!(
        value(&before, "xdns_kernel_attached_interfaces", &["mode=\"tc\""]),
        1.0
    );
    assert!(value(&before, "xdns_kernel_records", &[]) >= 5.0);
    assert!(value(&before, "xdns_kernel_target_records", &[]) >= 1.0);
    // The sizes the daemon keeps as it writes are what the maps hold (a scrape walks no
    // keys to get them).
    let pins = f.pins.pin_dir();
    assert_eq!(
        value(&before, "xdns_kernel_records", &[]) as usize,
        dns_userspace::dataplane::snapshot::pinned_records_len(&pins).unwrap()
    );
    assert_eq!(
        value(&before, "xdns_kernel_target_records", &[]) as usize,
        dns_userspace::dataplane::snapshot::pinned_targets_len(&pins).unwrap()
    );
    traffic(&f);
    let (types, after) = scrape(&f.topo.node);
    // Every documented name, now that both paths have answered.
    for name in [
        "coredns_build_info",
        "coredns_dns_requests",
        "coredns_dns_responses",
        "coredns_dns_request_duration_seconds",
        "coredns_dns_request_size_bytes",
        "coredns_dns_response_size_bytes",
        "coredns_cache_hits",
        "coredns_cache_misses",
        "coredns_cache_requests",
        "coredns_cache_served_stale",
        "coredns_cache_entries",
        "coredns_forward_requests",
        "coredns_forward_responses",
        "coredns_forward_request_duration_seconds",
        "coredns_forward_healthcheck_failures",
        "coredns_forward_max_concurrent_rejects",
        "coredns_kubernetes_dns_programming_duration_seconds",
        "coredns_reload_failed",
        "xdns_kernel_packets",
        "xdns_kernel_interface_packets",
        "xdns_kernel_attached_interfaces",
        "xdns_kernel_records",
        "xdns_kernel_records_capacity",
        "xdns_kernel_target_records",
    ] {
        assert!(types.iter().any(|t| t == name), "{name} missing: {types:?}");
    }
    // The Grafana dashboard reads only what is exported (the API watches' series come
    // with an API source: checked in kube_api.rs).
    let scraped = tests::client::http_get(&f.topo.node, 9153, "/metrics");
    let queried = tests::dashboard::queried_metrics();
    let missing = tests::dashboard::missing(
        queried.iter().filter(|n| !n.starts_with("xdns_kube_")),
        &scraped,
    );
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}: not exported"
    );
    let moved =
        |name: &str, labels: &[&str]| value(&after, name, labels) - value(&before, name, labels);
    assert_eq!(
        moved("xdns_kernel_packets_total", &["reason=\"answered\""]),
        3.0
    );
    assert_eq!(
        moved(
            "xdns_kernel_interface_packets_total",
            &["iface=\"veth1h\"", "mode=\"tc\"", "reason=\"answered\""]
        ),
        3.0
    );
    assert!(
        moved(
            "xdns_kernel_interface_packets_total",
            &["reason=\"other_type\""]
        ) >= 1.0
    );
    assert_eq!(
        moved(
            "coredns_dns_requests_total",
            &["zone=\"cluster.local.\"", "type=\"SRV\"", "proto=\"udp\""]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "coredns_dns_responses_total",
            &["rcode=\"REFUSED\"", "plugin=\"forward\""]
        ),
        1.0
    );
    assert!(
        moved(
            "coredns_dns_request_duration_seconds_count",
            &["type=\"SRV\""]
        ) >= 1.0
    );
    assert_eq!(
        moved("coredns_forward_requests_total", &["to=\"127.0.0.2:5399\""]),
        1.0,
        "{:?}",
        after
            .iter()
            .filter(|(k, _)| k.contains("forward"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        moved(
            "coredns_forward_responses_total",
            &["to=\"127.0.0.2:5399\"", "rcode=\"REFUSED\""]
        ),
        1.0
    );
    assert_eq!(moved("coredns_cache_misses_total", &[]), 1.0);

    // `xdns status` reads the same pins: rates per interface while queries flow.
    let stop = Arc::new(AtomicBool::new(false));
    let gen = load(f.pod(0), stop.clone());
    let pin_dir = f.pins.pin_dir().display().to_string();
    let status = tests::client::run(
        &f.topo.node,
        tests::netns::daemon_bin().to_str().unwrap(),
        &[
            "status",
            "--pin-dir",
            &pin_dir,
            "--interval",
            "0.5",
            "--count",
            "1",
        ],
    );
    stop.store(true, Ordering::Relaxed);
    gen.join().unwrap();
    let row: Vec<&str> = status
        .lines()
        .find(|l| l.starts_with("veth1h "))
        .unwrap_or_else(|| panic!("{status}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[1], "tc", "{status}");
    let per_sec: u64 = row[2].parse().unwrap();
    assert!(per_sec > 100, "answered/s while loaded: {status}");
    assert!(status.starts_with("records "), "{status}");
    d.stop().unwrap();
    upstream.stop().unwrap();
}

/// Three A queries the kernel answers; an SRV from the zone and an outside name, which
/// userspace answers (the second through the upstream).
fn traffic(f: &tests::fixture::Fixture) {
    for _ in 0..3 {
        assert_eq!(dig(f.pod(0), &["web.shop.svc.cluster.local"]), "10.96.12.7");
    }
    // Userspace: an SRV from the zone, and an outside name the upstream refuses.
    assert_eq!(
        dig(f.pod(0), &["_http._tcp.web.shop.svc.cluster.local", "SRV"]),
        "0 100 80 web.shop.svc.cluster.local."
    );
    assert_eq!(
        tests::client::dig_status(f.pod(0), SVC4, &["example.org"]),
        "REFUSED"
    );
}

fn dig(pod: &Netns, extra: &[&str]) -> String {
    tests::client::dig(pod, SVC4, extra)
}

/// Someone else's XDP program on an interface stays there: the kernel path goes beside it
/// on tc, says so, and answers.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn a_foreign_xdp_program_is_left_in_place() {
    let Some(f) = fixture("forx", 1) else { return };
    let host_if = f.topo.pods[0].host_if.clone();
    let iface = host_if.clone();
    // The "foreign" program: a pass-all XDP program attached in generic mode, held by
    // this test (it detaches when the object is dropped).
    let foreign = f
        .topo
        .node
        .within(move || {
            let mut ebpf = aya::Ebpf::load(dns_userspace::dataplane::OBJECT).unwrap();
            let p: &mut aya::programs::Xdp = ebpf
                .program_mut(dns_common::programs::PASS)
                .unwrap()
                .try_into()
                .unwrap();
            p.load().unwrap();
            p.attach(&iface, aya::programs::XdpMode::Skb).unwrap();
            ebpf
        })
        .unwrap();
    let xdp_prog =
        || tests::client::run(&f.topo.node, "ip", &["-d", "link", "show", "dev", &host_if]);
    assert!(xdp_prog().contains("xdns_pass"), "{}", xdp_prog());

    let d = Daemon::start(&f.topo.node, &f.args(Some("generic"))).expect("daemon");
    let line = d
        .stdout
        .iter()
        .find(|l| l.starts_with(&format!("attached {host_if}")))
        .cloned()
        .unwrap_or_default();
    assert!(
        line.starts_with(&format!("attached {host_if} tc (another XDP program")),
        "{:?}",
        d.stdout
    );
    let c0 = f.counters().get(Counter::Answered);
    assert_eq!(dig(f.pod(0), &["web.shop.svc.cluster.local"]), "10.96.12.7");
    assert_eq!(f.counters().get(Counter::Answered), c0 + 1);
    assert!(
        xdp_prog().contains("xdns_pass"),
        "left in place: {}",
        xdp_prog()
    );
    d.stop().unwrap();
    drop(foreign);
}

/// Accelerator mode: CoreDNS (here a userspace-only xdns standing in for it) keeps the
/// service address; the kernel answers what it can in front of it and passes the rest on,
/// untouched, to it.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn accelerator_answers_in_front_of_the_real_server_and_passes_the_rest() {
    let Some(f) = fixture("accel", 1) else { return };
    let coredns = standin(&f, SVC4, "53").expect("the CoreDNS stand-in");
    let accel = DaemonArgs::manifests(&f.manifests)
        .accelerate(SVC4)
        .iface(&f.topo.pods[0].host_if)
        .pin_dir(&f.pins.pin_dir())
        .no_loadbalance()
        .build();
    // Starting at all proves it does not bind the address CoreDNS holds.
    let d = Daemon::start(&f.topo.node, &accel).expect("accelerator");
    let served = |m: &str| {
        let (_, s) = scrape_at(&f.topo.node, 19153, m);
        s
    };
    let before = served("coredns_dns_requests_total");
    let c0 = f.counters().get(Counter::Answered);
    assert_eq!(dig(f.pod(0), &["web.shop.svc.cluster.local"]), "10.96.12.7");
    assert_eq!(
        f.counters().get(Counter::Answered),
        c0 + 1,
        "the kernel answered"
    );
    assert_eq!(
        served("coredns_dns_requests_total"),
        before,
        "CoreDNS saw nothing"
    );
    assert_eq!(
        dig(f.pod(0), &["_http._tcp.web.shop.svc.cluster.local", "SRV"]),
        "0 100 80 web.shop.svc.cluster.local."
    );
    assert_eq!(f.counters().get(Counter::Answered), c0 + 1);
    assert_eq!(
        served("coredns_dns_requests_total"),
        before + 1.0,
        "the miss went on to CoreDNS"
    );
    d.stop().unwrap();
    coredns.stop().unwrap();
}

/// The sum of the series named `name` on the metrics endpoint at `port`.
fn scrape_at(node: &Netns, port: u16, name: &str) -> (String, f64) {
    let text = tests::client::http_get(node, port, "/metrics");
    let v = text
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    (text, v)
}

/// Node-local mode: the daemon owns a link-local address (on its dummy interface, or on lo
/// where the kernel has no dummy driver), serves it from both paths, keeps its traffic out of
/// conntrack, and takes address and rules away on exit.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn node_local_owns_its_address_and_notrack_rules_until_exit() {
    let Some(f) = fixture("nlocal", 1) else {
        return;
    };
    let args = node_local_args(&f, &["--detach-on-exit"]);
    // Counts queries conntrack was told to skip (after the raw hook, before conntrack's).
    tests::client::nft(&f.topo.node, "add table inet xdns_test");
    tests::client::nft(
        &f.topo.node,
        "add chain inet xdns_test pre { type filter hook prerouting priority -150 ; }",
    );
    tests::client::nft(
        &f.topo.node,
        "add rule inet xdns_test pre udp dport 53 ct state untracked counter",
    );
    let has_addr = || node_local_state(&f.topo.node).0;
    let has_rules = || node_local_state(&f.topo.node).1;
    assert!(!has_addr() && !has_rules());
    let d = Daemon::start(&f.topo.node, &args).expect("daemon");
    assert!(has_addr() && has_rules());

    let c0 = f.counters().get(Counter::Answered);
    let untracked0 = tests::client::nft_counters(&f.topo.node, "pre")[0];
    assert_eq!(
        tests::client::dig(f.pod(0), LOCAL, &["web.shop.svc.cluster.local"]),
        "10.96.12.7"
    );
    assert_eq!(
        f.counters().get(Counter::Answered),
        c0 + 1,
        "the kernel answered"
    );
    assert_eq!(
        tests::client::dig(
            f.pod(0),
            LOCAL,
            &["_http._tcp.web.shop.svc.cluster.local", "SRV"]
        ),
        "0 100 80 web.shop.svc.cluster.local."
    );
    assert_eq!(
        tests::client::nft_counters(&f.topo.node, "pre")[0],
        untracked0 + 1,
        "the miss userspace answered skipped conntrack"
    );
    d.stop().unwrap();
    assert!(!has_addr(), "address removed on exit");
    assert!(!has_rules(), "NOTRACK rules removed on exit");
}

/// With the daemon gone for longer than `--stale-after`, the kernel stops answering from
/// records nobody keeps true any more: queries pass to whatever serves behind it. A new
/// daemon makes them fresh again.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn records_go_stale_without_a_daemon() {
    let Some(f) = fixture("stale", 1) else { return };
    let mut args = f.args(Some("tc"));
    args.extend(["--stale-after", "2"].map(String::from));
    let q = tests::client::query_bytes(7, "web.shop.svc.cluster.local.", 1);
    let ask = || {
        f.pod(0)
            .udp_exchange(SVC4.parse().unwrap(), 53, &q, Duration::from_millis(500))
            .is_ok()
    };
    let d = Daemon::start(&f.topo.node, &args).expect("daemon");
    // Alive, the daemon keeps them fresh past the period.
    std::thread::sleep(Duration::from_secs(3));
    let c0 = f.counters();
    assert!(ask());
    assert_eq!(
        f.counters().get(Counter::Answered),
        c0.get(Counter::Answered) + 1
    );
    d.kill9();
    assert!(ask(), "answered from the pins right after the daemon died");
    std::thread::sleep(Duration::from_secs(3));
    let c1 = f.counters();
    assert!(!ask(), "stale: passed, and no daemon to answer");
    let c2 = f.counters();
    assert_eq!(c2.get(Counter::Stale), c1.get(Counter::Stale) + 1);
    assert_eq!(c2.get(Counter::Answered), c1.get(Counter::Answered));
    let d = Daemon::start(&f.topo.node, &args).expect("daemon");
    assert!(ask());
    assert_eq!(
        f.counters().get(Counter::Answered),
        c2.get(Counter::Answered) + 1
    );
    d.stop().unwrap();
}

/// A second, userspace-only xdns serving the fixture's manifests on `listen:port` (REFUSED
/// outside its zone), its probes and metrics on other ports: an upstream, or CoreDNS.
fn standin(f: &tests::fixture::Fixture, listen: &str, port: &str) -> std::io::Result<Daemon> {
    let args = DaemonArgs::manifests(&f.manifests)
        .listen(&[listen])
        .port(port)
        .no_kernel()
        .no_forward()
        .probes("127.0.0.1:18080", "127.0.0.1:18181", "127.0.0.1:19153")
        .build();
    Daemon::start(&f.topo.node, &args)
}

fn moving_and_more(dir: &std::path::Path, ip: &str, more: usize) {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: moving, namespace: shop}}\n\
         spec: {{clusterIP: {ip}}}\n"
    );
    for i in 0..more {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: shop}}\n\
             spec: {{clusterIP: 10.96.78.{}}}\n",
            i + 1
        ));
    }
    // Written whole then renamed: the daemon never reads half a file.
    let tmp = dir.with_extension("moving.tmp");
    std::fs::write(&tmp, y).unwrap();
    std::fs::rename(&tmp, dir.join("moving.yaml")).unwrap();
}

/// A records map too small for the zone never answers from what it holds. The update that
/// overflows it also moves a Service: the kernel, degraded, passes every query and
/// userspace answers the new address, never the old one; `/ready`, the metric and the
/// counter say so. Once the zone fits again the kernel answers again.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn a_full_map_degrades_to_userspace_and_never_answers_stale() {
    let Some(f) = fixture("full", 1) else { return };
    let dir = &f.manifests.0;
    moving_and_more(dir, "10.96.77.1", 0);
    let view = dns_userspace::source::manifests::load_dir(dir).unwrap();
    let cfg = dns_userspace::model::ZoneConfig::new("cluster.local", 30).unwrap();
    let fits = dns_userspace::model::Records::build(&cfg, &view)
        .kernel_view()
        .records
        .len();
    let mut args = f.args(Some("tc"));
    args.extend(["--kernel-records-max".into(), (fits + 5).to_string()]);
    let d = Daemon::start(&f.topo.node, &args).expect("daemon");
    let name = "moving.shop.svc.cluster.local";
    let a = |ns: &Netns| tests::client::dig(ns, SVC4, &[name]);
    let answered = || f.counters().get(Counter::Answered);
    let c0 = answered();
    assert_eq!(a(f.pod(0)), "10.96.77.1");
    assert_eq!(answered(), c0 + 1, "the kernel answers while the zone fits");
    assert_eq!(
        tests::client::http_status(&f.topo.node, 8181, "/ready"),
        "200"
    );

    // Twenty more Services do not fit in five free entries.
    moving_and_more(dir, "10.96.77.2", 20);
    tests::client::eventually(Duration::from_secs(10), "503".to_string(), || {
        tests::client::http_status(&f.topo.node, 8181, "/ready")
    });
    let metrics = tests::client::http_get(&f.topo.node, 9153, "/metrics");
    assert!(metrics.contains("xdns_kernel_degraded 1"), "{metrics}");
    let (passed, c1) = (f.counters().get(Counter::Degraded), answered());
    for _ in 0..10 {
        assert_eq!(a(f.pod(0)), "10.96.77.2", "never the old address");
    }
    assert_eq!(
        tests::client::dig(f.pod(0), SVC4, &["s19.shop.svc.cluster.local"]),
        "10.96.78.20",
        "the names that did not fit are answered too"
    );
    assert_eq!(answered(), c1, "the kernel answers nothing while degraded");
    assert_eq!(f.counters().get(Counter::Degraded), passed + 11);

    // Back within the map: a full sync lands and the kernel answers again.
    moving_and_more(dir, "10.96.77.3", 0);
    tests::client::eventually(Duration::from_secs(10), "200".to_string(), || {
        tests::client::http_status(&f.topo.node, 8181, "/ready")
    });
    let c2 = answered();
    assert_eq!(a(f.pod(0)), "10.96.77.3");
    assert_eq!(answered(), c2 + 1);
    let metrics = tests::client::http_get(&f.topo.node, 9153, "/metrics");
    assert!(metrics.contains("xdns_kernel_degraded 0"), "{metrics}");
    d.stop().unwrap();
}

/// A second daemon on the same pin folder refuses to start, naming the folder, and leaves
/// the first one's maps, links and answers alone.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn a_second_daemon_on_the_same_pins_refuses_to_start() {
    let Some(f) = fixture("lock", 1) else { return };
    let args = f.args(Some("tc"));
    let d = Daemon::start(&f.topo.node, &args).expect("daemon");
    let second = Daemon::run_to_exit(&f.topo.node, &args).expect("second daemon");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second daemon ran: {err}");
    assert!(
        err.contains("another xdns daemon is using the pin folder")
            && err.contains(&f.pins.pin_dir().display().to_string()),
        "{err}"
    );
    let c0 = f.counters().get(Counter::Answered);
    assert_eq!(
        tests::client::dig(f.pod(0), SVC4, &["web.shop.svc.cluster.local"]),
        "10.96.12.7"
    );
    assert_eq!(
        f.counters().get(Counter::Answered),
        c0 + 1,
        "still the kernel"
    );
    d.stop().unwrap();
}

/// Without CAP_BPF and CAP_PERFMON (dropped from the bounding set, as a pod spec that
/// forgets them would), the daemon's error names the missing capabilities beside the errno.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn a_missing_capability_is_named() {
    let Some(f) = fixture("caps", 1) else { return };
    let bin = tests::netns::daemon_bin().display().to_string();
    let mut cmd = vec![
        "--bounding-set",
        "-bpf,-perfmon,-sys_admin",
        "--",
        bin.as_str(),
        "run",
    ];
    let args = f.args(Some("tc"));
    cmd.extend(args.iter().map(String::as_str));
    let out = f.topo.node.output("setpriv", &cmd).expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ran without CAP_BPF: {err}");
    assert!(
        err.contains("capabilities PERFMON, BPF missing") && err.contains("os error 1"),
        "{err}"
    );
}

/// The pin folder may itself be a bpffs mount (the DaemonSet mounts only the host's
/// `/sys/fs/bpf/xdns`): the daemon pins there, visible outside its mount namespace, and
/// mounts nothing over its parent.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn a_pin_folder_that_is_itself_a_bpffs_is_used_as_it_is() {
    let Some(f) = fixture("ownfs", 1) else { return };
    let own = f.manifests.0.with_extension("pins");
    let _cleanup = tests::fixture::TempDir(own.clone());
    std::fs::create_dir_all(&own).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", own.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(mounted.success());
    let mut args = f.args(Some("tc"));
    let at = args.iter().position(|a| a == "--pin-dir").unwrap();
    args[at + 1] = own.display().to_string();
    let d = Daemon::start(&f.topo.node, &args).expect("daemon");
    let records = dns_userspace::dataplane::snapshot::pinned_records_len(&own);
    d.stop().unwrap();
    let _ = std::process::Command::new("umount").arg(&own).status();
    assert!(
        records.as_ref().is_ok_and(|n| *n > 5),
        "the pins are not in the mounted folder: {records:?}"
    );
}

/// A node-local rollout drops nothing userspace answers. The new daemon starts beside the
/// old one (SO_REUSEPORT, `--pin-wait`), the old one leaves through lameduck and the new
/// one takes the kernel path over; the addresses and NOTRACK rules stay throughout. Then
/// kill -9 and a restart, which a stub resolver's one retry covers (here after 1 s, where
/// glibc waits 5 s).
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn node_local_rollouts_drop_no_userspace_answer() {
    let Some(f) = fixture("roll", 1) else { return };
    let args = node_local_args(&f, &["--lameduck-secs", "1", "--pin-wait", "30"]);
    let has_addr = || node_local_state(&f.topo.node).0;
    let has_rules = || node_local_state(&f.topo.node).1;
    let old = Daemon::start(&f.topo.node, &args).expect("first daemon");

    // TCP queries (userspace answers them) in a loop, one retry each as a stub resolver.
    let stop = Arc::new(AtomicBool::new(false));
    let pod = f.pod(0).name.clone();
    let loop_stop = stop.clone();
    let client = std::thread::spawn(move || {
        Netns { name: pod }
            .within(move || {
                let want = std::net::Ipv4Addr::new(10, 96, 12, 7).octets();
                let q = tests::client::query_bytes(9, "web.shop.svc.cluster.local", 1);
                let mut framed = (q.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&q);
                let ask = || -> bool {
                    use std::io::{Read, Write};
                    let addr = format!("{LOCAL}:53").parse().unwrap();
                    let Ok(mut s) =
                        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    else {
                        return false;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut len = [0u8; 2];
                    if s.write_all(&framed).is_err() || s.read_exact(&mut len).is_err() {
                        return false;
                    }
                    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
                    s.read_exact(&mut reply).is_ok() && reply.windows(4).any(|w| w == want)
                };
                let (mut sent, mut failed) = (0u32, 0u32);
                while !loop_stop.load(Ordering::Relaxed) {
                    sent += 1;
                    // glibc's stub waits its timeout (5 s by default) before it retries;
                    // one second here is stricter.
                    if !ask() {
                        std::thread::sleep(Duration::from_secs(1));
                        failed += u32::from(!ask());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                (sent, failed)
            })
            .unwrap()
    });

    let mut new = Daemon::start(&f.topo.node, &args).expect("the next daemon, beside");
    std::thread::sleep(Duration::from_millis(300));
    old.stop().unwrap();
    assert!(
        has_addr() && has_rules(),
        "kept across the old daemon's exit"
    );
    assert_eq!(
        new.wait_line("kernel path taken over", Duration::from_secs(10))
            .as_deref(),
        Some("kernel path taken over")
    );
    let c0 = f.counters().get(Counter::Answered);
    assert_eq!(
        tests::client::dig(f.pod(0), LOCAL, &["web.shop.svc.cluster.local"]),
        "10.96.12.7"
    );
    assert_eq!(
        f.counters().get(Counter::Answered),
        c0 + 1,
        "the new one's kernel path"
    );

    new.kill9();
    assert!(has_addr() && has_rules(), "kept across kill -9");
    let last = Daemon::start(&f.topo.node, &args).expect("restart");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = client.join().unwrap();
    assert!(sent > 20, "only {sent} queries sent");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} queries failed even after a retry"
    );
    last.stop().unwrap();
    assert!(
        has_addr(),
        "left for the next daemon without --detach-on-exit"
    );
}

/// `--accelerate-service kube-system/kube-dns`: the kernel answers queries addressed to the
/// Service's cluster IP and to each ready endpoint (where a socket-level load balancer
/// sends a pod's query), follows the endpoints as they change, and never touches port 53
/// to any other address (a not-ready endpoint, an unrelated pod).
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn an_accelerated_service_is_answered_at_its_endpoints() {
    let Some(f) = fixture("accsvc", 1) else {
        return;
    };
    let slice = |ready: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: kube-dns-x, namespace: kube-system, \
             labels: {{kubernetes.io/service-name: kube-dns}}}}\naddressType: IPv4\n\
             endpoints:\n- addresses: [{ready}]\n  conditions: {{ready: true}}\n\
             - addresses: [10.244.0.54]\n  conditions: {{ready: false}}\n\
             ports: [{{name: dns, port: 53, protocol: UDP}}]\n"
        )
    };
    let file = f.manifests.0.join("kube-dns-slice.yaml");
    let write = |text: String| {
        let tmp = f.manifests.0.with_extension("slice.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    write(slice("10.244.0.53"));
    let args = DaemonArgs::manifests(&f.manifests)
        .accelerate_service("kube-system/kube-dns")
        .iface(&f.topo.pods[0].host_if)
        .pin_dir(&f.pins.pin_dir())
        .no_loadbalance()
        .build();
    let d = Daemon::start(&f.topo.node, &args).expect("daemon");
    let q = tests::client::query_bytes(3, "web.shop.svc.cluster.local", 1);
    let ask = |to: &str| {
        f.pod(0)
            .udp_exchange(to.parse().unwrap(), 53, &q, Duration::from_millis(300))
            .is_ok_and(|r| r.windows(4).any(|w| w == [10, 96, 12, 7]))
    };
    let answered = || f.counters().get(Counter::Answered);
    for to in ["10.96.0.10", "10.244.0.53"] {
        let c0 = answered();
        assert!(ask(to), "{to} answered");
        assert_eq!(answered(), c0 + 1, "{to}: by the kernel");
    }
    for to in ["10.244.0.54", "10.244.9.9"] {
        let c0 = answered();
        assert!(!ask(to), "{to}: nobody there, nothing answered");
        assert_eq!(answered(), c0, "{to}: untouched by the kernel");
    }
    // CoreDNS's pod moves: the new address is served, the old one no longer.
    write(slice("10.244.0.63"));
    tests::client::eventually(Duration::from_secs(5), true, || ask("10.244.0.63"));
    let c0 = answered();
    assert!(!ask("10.244.0.53"), "the old endpoint is no longer served");
    assert_eq!(answered(), c0);
    d.stop().unwrap();
}

const LOCAL: &str = "169.254.20.10";

/// A node-local daemon's arguments for the fixture: 169.254.20.10 on `nodelocaldns`,
/// NOTRACK rules, the pod's veth on tc, then `extra`.
fn node_local_args(f: &tests::fixture::Fixture, extra: &[&str]) -> Vec<String> {
    DaemonArgs::manifests(&f.manifests)
        .listen(&[LOCAL])
        .node_local("nodelocaldns")
        .iface(&f.topo.pods[0].host_if)
        .attach("tc")
        .pin_dir(&f.pins.pin_dir())
        .no_forward()
        .extra(extra)
        .build()
}

/// Whether the node holds the node-local address, and the NOTRACK table.
fn node_local_state(node: &Netns) -> (bool, bool) {
    let addr = tests::client::run(node, "ip", &["-o", "addr", "show"]).contains(LOCAL);
    let rules = node
        .output("nft", &["list", "table", "inet", "xdns_notrack"])
        .is_ok_and(|o| o.status.success());
    (addr, rules)
}
