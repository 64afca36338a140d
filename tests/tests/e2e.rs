//! End to end on real namespaces: a node running the daemon, pods querying it over veth with
//! real clients (dig, kdig, glibc), nothing of ours attached in the pods.
use std::{
    fs,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use dns_common::Counter;
use dns_userspace::dataplane::snapshot::pinned_counters;
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use tests::client::{dig, dig_status, run};
use tests::fixture::fixture;
use tests::netns::{write_manifest, Daemon, Netns, SVC4, SVC6};

/// Counts UDP/53 packets at netfilter's earliest hook in `ns` (raw priority -300, before
/// conntrack): what the kernel path answers must never get there.
fn install_netfilter_counter(ns: &Netns) {
    tests::client::nft(ns, "add table inet xdns_test");
    tests::client::nft(
        ns,
        "add chain inet xdns_test pre { type filter hook prerouting priority -300 ; }",
    );
    tests::client::nft(ns, "add rule inet xdns_test pre udp dport 53 counter");
}

fn netfilter_count(ns: &Netns) -> u64 {
    tests::client::nft_counters(ns, "pre")[0]
}

fn query(name: &str, qtype: RecordType, id: u16, edns: bool) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn exchange(ns: &Netns, server: &str, q: &[u8]) -> Vec<u8> {
    let to: IpAddr = server.parse().unwrap();
    ns.udp_exchange(to, 53, q, Duration::from_secs(3))
        .expect("a reply")
}

/// Queries whose answers are compared between the kernel and userspace-only runs.
fn battery() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            SVC4,
            query("web.shop.svc.cluster.local.", RecordType::A, 1, true),
        ),
        (
            SVC4,
            query(
                "Kubernetes.Default.svc.cluster.local.",
                RecordType::A,
                2,
                false,
            ),
        ),
        (
            SVC6,
            query("cart.shop.svc.cluster.local.", RecordType::A, 3, true),
        ),
        (
            SVC4,
            query("web.shop.svc.cluster.local.", RecordType::AAAA, 4, true),
        ),
        (
            SVC6,
            query("nope.shop.svc.cluster.local.", RecordType::A, 5, true),
        ),
        (
            SVC4,
            query("db.shop.svc.cluster.local.", RecordType::A, 6, false),
        ),
        (
            SVC4,
            query("shop.svc.cluster.local.", RecordType::A, 7, true),
        ),
        (SVC4, query("example.com.", RecordType::A, 8, true)),
    ]
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn pods_are_answered_by_the_kernel_in_tc_and_generic_mode() {
    let Some(f) = fixture("modes", 2) else { return };

    // Userspace only first: the reference answers.
    let d = Daemon::start(&f.topo.node, &f.args(None)).expect("daemon (userspace only)");
    let reference: Vec<Vec<u8>> = battery()
        .iter()
        .map(|(s, q)| exchange(f.pod(0), s, q))
        .collect();
    assert_eq!(
        dig(f.pod(0), SVC4, &["web.shop.svc.cluster.local"]),
        "10.96.12.7"
    );
    assert!(
        pinned_counters(&f.pins.pin_dir()).is_err(),
        "userspace only: no maps were created"
    );
    d.stop().unwrap();

    install_netfilter_counter(&f.topo.node);
    for mode in ["tc", "generic"] {
        let mut args = f.args(Some(mode));
        args.push("--detach-on-exit".into());
        let d = Daemon::start(&f.topo.node, &args).expect("daemon");
        for p in &f.topo.pods {
            assert!(
                d.stdout.contains(&format!("attached {} {mode}", p.host_if)),
                "{:?}",
                d.stdout
            );
        }
        let c0 = f.counters();
        let nf0 = netfilter_count(&f.topo.node);
        assert_eq!(
            dig(f.pod(0), SVC4, &["web.shop.svc.cluster.local"]),
            "10.96.12.7"
        );
        assert_eq!(
            dig(f.pod(1), SVC6, &["CART.shop.svc.cluster.local", "+noedns"]),
            "10.96.12.8"
        );
        assert_eq!(
            run(
                f.pod(1),
                "kdig",
                &[
                    "@10.96.0.10",
                    "+short",
                    "kube-dns.kube-system.svc.cluster.local"
                ]
            ),
            "10.96.0.10"
        );
        assert_eq!(
            run(
                f.pod(0),
                "kdig",
                &[
                    "@fd00:10:96::a",
                    "+short",
                    "metrics-server.kube-system.svc.cluster.local",
                    "A"
                ]
            ),
            "10.96.33.4"
        );
        // AAAA, and NODATA for a name with no IPv6 address, from the kernel too.
        assert_eq!(
            dig(f.pod(0), SVC4, &["web.shop.svc.cluster.local", "AAAA"]),
            "fd00:10:96::c07"
        );
        assert_eq!(
            dig_status(f.pod(1), SVC6, &["cart.shop.svc.cluster.local", "AAAA"]),
            "NOERROR"
        );
        // A pod name and a PTR, by their own programs behind the tail calls.
        assert_eq!(
            dig(f.pod(1), SVC4, &["10-244-1-5.shop.pod.cluster.local"]),
            "10.244.1.5"
        );
        assert_eq!(
            dig(f.pod(0), SVC6, &["-x", "10.96.12.7"]),
            "web.shop.svc.cluster.local."
        );
        // An ExternalName: its CNAME, for every type but A and AAAA (whose answer carries
        // the target's addresses, which userspace resolves).
        assert_eq!(
            dig(f.pod(1), SVC4, &["payments.shop.svc.cluster.local", "TXT"]),
            "payments.example.com."
        );
        let c1 = f.counters();
        assert_eq!(
            c1.get(Counter::Answered),
            c0.get(Counter::Answered) + 9,
            "{mode}: the kernel answered all nine"
        );
        assert_eq!(
            netfilter_count(&f.topo.node),
            nf0,
            "{mode}: answered queries never reach netfilter"
        );

        // Other types reach userspace and are answered there.
        assert_eq!(
            dig(
                f.pod(0),
                SVC4,
                &["_http._tcp.web.shop.svc.cluster.local", "SRV"]
            ),
            "0 100 80 web.shop.svc.cluster.local."
        );
        let nx = Message::from_vec(&exchange(
            f.pod(1),
            SVC4,
            &query("nope.cluster.local.", RecordType::A, 9, true),
        ))
        .unwrap();
        assert_eq!(nx.response_code(), ResponseCode::NXDomain);
        assert!(matches!(nx.name_servers()[0].data(), RData::SOA(_)));
        // The SRV passed to userspace; the NXDOMAIN came from the kernel, its map complete.
        let c2 = f.counters();
        assert_eq!(c2.get(Counter::Answered), c1.get(Counter::Answered) + 1);
        assert!(
            netfilter_count(&f.topo.node) > nf0,
            "{mode}: passed queries go through the stack"
        );
        assert_eq!(c2.get(Counter::OtherType), c1.get(Counter::OtherType) + 1);
        // TCP is always userspace.
        assert_eq!(
            dig(f.pod(1), SVC4, &["+tcp", "web.shop.svc.cluster.local"]),
            "10.96.12.7"
        );

        // Every answer is the same message, byte for byte, whichever path gave it.
        for ((server, q), want) in battery().iter().zip(&reference) {
            let got = exchange(f.pod(0), server, q);
            assert_eq!(
                &got,
                want,
                "{mode}: reply to {:?} differs from userspace",
                Message::from_vec(q).unwrap().queries()
            );
        }
        assert!(f.counters().get(Counter::Answered) >= c2.get(Counter::Answered) + 3);

        let out = d.stop().unwrap();
        assert!(
            out.iter().any(|l| l.starts_with("kernel path counters")),
            "{out:?}"
        );
        // Detached on exit (`--detach-on-exit`): queries still work, from userspace, and the
        // kernel counts none.
        assert!(
            pinned_counters(&f.pins.pin_dir()).is_err(),
            "{mode}: no pins left"
        );
        let d = Daemon::start(&f.topo.node, &f.args(None)).unwrap();
        assert_eq!(
            dig(f.pod(0), SVC4, &["web.shop.svc.cluster.local"]),
            "10.96.12.7"
        );
        d.stop().unwrap();
    }
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn glibc_resolver_with_search_path_and_ndots() {
    let Some(f) = fixture("glibc", 1) else { return };
    f.pod(0)
        .set_resolv_conf(&format!(
            "nameserver {SVC4}\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 attempts:1 timeout:2\n"
        ))
        .unwrap();
    let d = Daemon::start(&f.topo.node, &f.args(Some("auto"))).expect("daemon");
    assert!(
        d.stdout
            .contains(&format!("attached {} tc", f.topo.pods[0].host_if)),
        "auto picks tc on a veth: {:?}",
        d.stdout
    );
    let c0 = f.counters();
    let web = run(f.pod(0), "getent", &["ahostsv4", "web"]);
    assert!(web.starts_with("10.96.12.7"), "{web}");
    let dns = run(f.pod(0), "getent", &["hosts", "kube-dns.kube-system"]);
    assert!(dns.starts_with("10.96.0.10"), "{dns}");
    let out = f
        .pod(0)
        .output("getent", &["hosts", "no-such-service"])
        .unwrap();
    assert!(!out.status.success(), "unknown names do not resolve");
    assert!(f.counters().get(Counter::Answered) > c0.get(Counter::Answered));
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn manifest_changes_reach_the_kernel_and_bad_ones_keep_the_last_good() {
    let Some(f) = fixture("reload", 1) else {
        return;
    };
    let log = f.manifests.0.with_extension("log");
    let _log = tests::fixture::TempDir(log.clone());
    let _d = Daemon::start_logging(
        &f.topo.node,
        &f.args(Some("tc")),
        fs::File::create(&log).unwrap(),
    )
    .expect("daemon");
    let dir = &f.manifests.0;
    let svc = |ip: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: late\n  namespace: shop\nspec:\n  clusterIP: {ip}\n")
    };
    let wait_for = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = dig(f.pod(0), SVC4, &["late.shop.svc.cluster.local"]);
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "still {got:?}, want {want:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    write_manifest(dir, "late.yaml", &svc("10.96.50.1")).unwrap();
    wait_for("10.96.50.1");
    let c0 = f.counters();
    wait_for("10.96.50.1");
    assert_eq!(
        f.counters().get(Counter::Answered),
        c0.get(Counter::Answered) + 1,
        "served from the kernel map"
    );

    write_manifest(dir, "late.yaml", &svc("10.96.50.2")).unwrap();
    wait_for("10.96.50.2");

    // A bad file: reported, and the last good records keep serving.
    write_manifest(
        dir,
        "broken.yaml",
        "kind: Service\nmetadata: {name: broken}\nspec: {clusterIP: 10.96.999.1}\n",
    )
    .unwrap();
    tests::client::eventually(Duration::from_secs(5), true, || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("manifests rejected")
    });
    assert_eq!(
        dig(f.pod(0), SVC4, &["late.shop.svc.cluster.local"]),
        "10.96.50.2"
    );
    assert_eq!(
        dig(f.pod(0), SVC4, &["web.shop.svc.cluster.local"]),
        "10.96.12.7"
    );

    fs::remove_file(dir.join("broken.yaml")).unwrap();
    fs::remove_file(dir.join("late.yaml")).unwrap();
    wait_for("");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn demo_cleans_up_after_itself_on_ctrl_c() {
    if !tests::require_root("demo") {
        return;
    }
    use std::io::{BufRead, BufReader};
    let mut demo = std::process::Command::new(env!("CARGO_BIN_EXE_xdns-demo"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("demo starts");
    let mut lines = BufReader::new(demo.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let pid: u32 = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("daemon pid ").map(|p| p.parse().unwrap()))
        .expect("demo reports its daemon");
    assert!(lines
        .by_ref()
        .any(|l| l.contains("dig @10.96.0.10 web.shop.svc.cluster.local")));
    // The demo's own pod answers, through the kernel.
    let pod = Netns {
        name: "xdns-demo-pod1".into(),
    };
    assert_eq!(
        dig(&pod, SVC4, &["web.shop.svc.cluster.local"]),
        "10.96.12.7"
    );
    std::mem::forget(pod);

    unsafe { libc::kill(demo.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.collect();
    assert!(demo.wait().unwrap().success());
    let answered = rest
        .iter()
        .find_map(|l| l.strip_prefix("answered"))
        .map(|n| n.trim().parse::<u64>().unwrap());
    assert!(
        answered.unwrap_or(0) >= 1,
        "counters printed at exit: {rest:?}"
    );
    let left = String::from_utf8(
        std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!left.contains("xdns-demo"), "namespaces left: {left}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "daemon {pid} still running"
    );
}

/// SIGTERM: not ready at once, still alive and answering through the lameduck period, then
/// gone; and `--log-json` writes one JSON object per line.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn sigterm_lameduck_then_exit_with_json_logs() {
    let Some(f) = fixture("lame", 1) else { return };
    let log = f.manifests.0.join("daemon.log");
    let mut args = f.args(Some("tc"));
    args.extend(["--lameduck-secs", "2", "--log-json"].map(String::from));
    let mut d = Daemon::start_logging(&f.topo.node, &args, fs::File::create(&log).unwrap())
        .expect("daemon");
    let probe = |port: u16, path: &str| tests::client::http_status(&f.topo.node, port, path);
    assert_eq!(probe(8181, "/ready"), "200");
    let pid = d.pid();
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    tests::client::eventually(Duration::from_secs(1), "503".to_string(), || {
        probe(8181, "/ready")
    });
    assert_eq!(probe(8080, "/health"), "200", "alive during lameduck");
    // Over TCP: userspace answers it (the kernel path takes UDP only), so this shows the
    // daemon itself still serving, not the pinned program.
    let answered = f.counters().get(Counter::Answered);
    assert_eq!(
        dig(f.pod(0), SVC4, &["+tcp", "web.shop.svc.cluster.local"]),
        "10.96.12.7"
    );
    assert_eq!(f.counters().get(Counter::Answered), answered);
    tests::client::eventually(Duration::from_secs(5), true, || d.exited());
    drop(d);
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.lines().count() > 3, "{text}");
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
    assert!(text.contains("lameduck"), "{text}");
}

/// Pods come and go while the daemon runs: a new pod's veth is attached as it appears and
/// its queries are answered by the kernel within a second; a deleted pod leaves nothing
/// behind and the others keep being served.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn pod_veths_are_attached_as_they_appear() {
    let Some(mut f) = fixture("churn", 1) else {
        return;
    };
    let mut args = f.args(None);
    args.retain(|a| a != "--no-kernel");
    args.extend(["--iface-pattern", "veth*", "--attach", "tc"].map(String::from));
    let d = Daemon::start(&f.topo.node, &args).expect("daemon");
    assert!(
        d.stdout.contains(&"attached veth1h tc".to_string()),
        "{:?}",
        d.stdout
    );
    for round in 0..3 {
        let i = f.topo.add_pod().expect("a new pod");
        let started = Instant::now();
        let c0 = f.counters().get(Counter::Answered);
        tests::client::eventually(Duration::from_secs(1), true, || {
            dig(f.pod(i), SVC4, &["web.shop.svc.cluster.local"]) == "10.96.12.7"
                && f.counters().get(Counter::Answered) > c0
        });
        println!(
            "round {round}: pod {i} answered by the kernel after {:?}",
            started.elapsed()
        );
    }
    // Delete the first pod (its namespace and veth go); the rest keep being answered.
    let links = f.pins.pin_dir().join("links");
    let pinned = || {
        let mut v: Vec<String> = fs::read_dir(&links)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert!(
        pinned().iter().any(|p| p.ends_with("-veth1h")),
        "{:?}",
        pinned()
    );
    drop(f.topo.pods.remove(0));
    // Nothing of the deleted pod's left: no pin holding a dead link.
    tests::client::eventually(Duration::from_secs(1), false, || {
        pinned().iter().any(|p| p.ends_with("-veth1h"))
    });
    assert_eq!(pinned().len(), f.topo.pods.len(), "{:?}", pinned());
    let c0 = f.counters().get(Counter::Answered);
    for i in 0..f.topo.pods.len() {
        assert_eq!(
            dig(f.pod(i), SVC4, &["web.shop.svc.cluster.local"]),
            "10.96.12.7"
        );
    }
    assert_eq!(
        f.counters().get(Counter::Answered),
        c0 + f.topo.pods.len() as u64
    );
    let out = d.stop().unwrap();
    assert!(out.contains(&"gone veth1h".to_string()), "{out:?}");
}

/// Another zone than `cluster.local`: answered under it, and the request metrics carry it
/// as their zone label, as CoreDNS labels them with its server block's zone.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn another_zone_is_served_and_labels_the_metrics() {
    let Some(f) = fixture("zone", 1) else {
        return;
    };
    let mut args = f.args(None);
    args.extend(["--zone".into(), "corp.internal".into()]);
    let _d = Daemon::start(&f.topo.node, &args).expect("daemon");
    assert_eq!(
        dig(f.pod(0), SVC4, &["web.shop.svc.corp.internal"]),
        "10.96.12.7"
    );
    let metrics = tests::client::http_get(&f.topo.node, 9153, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("coredns_dns_requests_total")
                && l.contains("zone=\"corp.internal.\"")),
        "{metrics}"
    );
    assert!(!metrics.contains("zone=\"cluster.local.\""), "{metrics}");
}

/// Whoever started the daemon may stop reading its stdout (a wrapper gone, a closed pipe):
/// the lines it prints are lost, the daemon is not. It exits cleanly on SIGTERM, without
/// a panic from writing to the broken pipe.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn a_closed_stdout_does_not_kill_the_daemon() {
    use std::io::BufRead as _;
    let Some(f) = fixture("epipe", 1) else { return };
    let mut child = f
        .topo
        .node
        .cmd(tests::netns::daemon_bin().to_str().unwrap())
        .arg("run")
        .args(f.args(Some("tc")))
        .args(["--lameduck-secs", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("xdns");
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let ready = lines.by_ref().map_while(Result::ok).any(|l| l == "ready");
    assert!(ready, "the daemon said ready");
    // The reader goes: the pipe's read end closes.
    drop(lines);
    assert_eq!(
        dig(f.pod(0), SVC4, &["+tcp", "web.shop.svc.cluster.local"]),
        "10.96.12.7"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("exit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `--log-queries --log-kernel-sample 1`: each answer the kernel gives reaches the query
/// log, with the path `kernel`, the name, type, rcode, the pod's address and the
/// interface; without the sampling flag the kernel's answers are not logged.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn kernel_answers_reach_the_query_log_when_sampled() {
    let Some(f) = fixture("klog", 1) else { return };
    let log = std::env::temp_dir().join(format!("xdns-klog-{}.log", std::process::id()));
    let pod_ip = f.topo.pods[0].addr4;
    let iface = f.topo.pods[0].host_if.clone();
    for sample in [None, Some("1")] {
        let mut args = f.args(Some("tc"));
        args.push("--log-queries".into());
        if let Some(n) = sample {
            args.extend(["--log-kernel-sample".into(), n.into()]);
        }
        let d = Daemon::start_logging(&f.topo.node, &args, fs::File::create(&log).unwrap())
            .expect("daemon");
        let c0 = f.counters().get(Counter::Answered);
        assert_eq!(
            dig(f.pod(0), SVC4, &["web.shop.svc.cluster.local"]),
            "10.96.12.7"
        );
        assert!(dig_status(f.pod(0), SVC4, &["nope.shop.svc.cluster.local"]).contains("NXDOMAIN"));
        assert_eq!(
            f.counters().get(Counter::Answered),
            c0 + 2,
            "both answered by the kernel"
        );
        let kernel_lines = || -> Vec<String> {
            fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("path=\"kernel\""))
                .map(str::to_owned)
                .collect()
        };
        if sample.is_some() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while kernel_lines().len() < 2 {
                assert!(Instant::now() < deadline, "{:?}", kernel_lines());
                std::thread::sleep(Duration::from_millis(50));
            }
            let lines = kernel_lines();
            let found = |name: &str, rcode: &str| {
                lines.iter().any(|l| {
                    l.contains(&format!("name=\"{name}\""))
                        && l.contains("qtype=A ")
                        && l.contains(&format!("rcode={rcode} "))
                        && l.contains(&format!("client={pod_ip}:"))
                        && l.contains(&format!("iface=\"{iface}\""))
                })
            };
            assert!(
                found("web.shop.svc.cluster.local.", "No Error"),
                "{lines:?}"
            );
            assert!(
                found("nope.shop.svc.cluster.local.", "Non-Existent Domain"),
                "{lines:?}"
            );
        }
        d.stop().unwrap();
        if sample.is_none() {
            assert_eq!(
                kernel_lines(),
                Vec::<String>::new(),
                "not sampled: not logged"
            );
        }
    }
    let _ = fs::remove_file(&log);
}
