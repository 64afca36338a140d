//! `cargo xtask bench`: the kernel path and userspace measured in one run, on the same
//! namespaces and the same names, printed as a Markdown table.
//!
//! - Program cost: BPF_PROG_TEST_RUN with a large repeat count, for the XDP and tc
//!   programs on an A query, beside an XDP program that only passes.
//! - Throughput: kxdpgun (AF_XDP, Debian's knot) in a pod namespace floods the service
//!   address; answered queries per second and the share the kernel answered, per attach
//!   mode and for userspace with no program attached.
//! - Latency: dnsperf at a moderate rate, per-query latencies (`-v`), sorted.
mod chaos;
mod scale;

use std::{fs, net::IpAddr, process::Command, time::Duration};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use dns_common::{programs, Counter};
use dns_userspace::{
    dataplane::{
        self,
        {maps::KernelMaps, snapshot::pinned_counters},
    },
    model::{Records, ZoneConfig},
    source::manifests,
};
use tests::{
    netns::{Bpffs, Daemon, Topology, SVC4, SVC6},
    packet::udp_frame,
};

const NAMES: &[&str] = &[
    "web.shop.svc.cluster.local",
    "cart.shop.svc.cluster.local",
    "kubernetes.default.svc.cluster.local",
    "kube-dns.kube-system.svc.cluster.local",
];

fn main() {
    if let Err(e) = run() {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut seconds = 5u64;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seconds N")?
            }
            "--only" => {
                only = Some(args.next().ok_or(
                    "--only program|namespaces|scale|scale-10k|scale-100k|cache|ndots|chaos",
                )?)
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root".into());
    }
    let kernel = sh("uname", &["-r"]);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("## xdns benchmark\n\nkernel {kernel}, {cpus} CPUs, {seconds} s per load run.\n");
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if run("program") {
        program_cost()?;
    }
    if run("namespaces") {
        on_namespaces(seconds)?;
    }
    if run("scale") || run("scale-10k") {
        scale::run(10_000)?;
    }
    if run("scale") || run("scale-100k") {
        scale::run(100_000)?;
    }
    if run("cache") {
        cache_vs_unbound(seconds)?;
    }
    if run("ndots") {
        ndots_workload(seconds)?;
    }
    if run("chaos") {
        chaos::run()?;
    }
    Ok(())
}

/// A child process killed on drop.
struct Proc(std::process::Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Knot in the upstream namespace (10.2.0.2), authoritative for `example.test` with
/// `h0..h<names>` A records.
fn start_knot(
    up: &tests::netns::Netns,
    dir: &std::path::Path,
    names: usize,
) -> Result<Proc, String> {
    use std::process::Stdio;
    let mut zone = String::from("$ORIGIN example.test.\n$TTL 300\n@ SOA ns admin 1 3600 900 86400 60\n@ NS ns\nns A 10.2.0.2\n");
    for i in 0..names {
        zone.push_str(&format!("h{i} A 192.0.2.{}\n", i % 250 + 1));
    }
    fs::write(dir.join("example.test.zone"), zone).map_err(|e| e.to_string())?;
    let d = dir.display();
    fs::write(
        dir.join("knot.conf"),
        format!("server:\n    rundir: \"{d}\"\n    listen: 10.2.0.2@53\ndatabase:\n    storage: \"{d}\"\nzone:\n  - domain: example.test\n    file: \"{d}/example.test.zone\"\n"),
    )
    .map_err(|e| e.to_string())?;
    let knot = Proc(
        up.cmd("knotd")
            .args(["-c", &dir.join("knot.conf").display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("knotd: {e}"))?,
    );
    // Up when it answers.
    for _ in 0..50 {
        let ok = up
            .output(
                "dig",
                &[
                    "@10.2.0.2",
                    "+short",
                    "+time=1",
                    "+tries=1",
                    "h0.example.test",
                ],
            )
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        if ok {
            return Ok(knot);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("knotd did not come up".into())
}

/// The ndots:5 workload a pod in namespace `shop` makes, glibc style (A and AAAA for each
/// search-path candidate until one answers), with the kernel's negative answers on, off,
/// and no kernel path at all, in the same run.
fn ndots_workload(seconds: u64) -> Result<(), String> {
    let topo = Topology::new("xdns-ndots", 1).map_err(|e| e.to_string())?;
    let up = topo.add_upstream().map_err(|e| e.to_string())?;
    let pins = Bpffs::new("xdns-ndots-bpf").map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join("xdns-ndots-bench");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let _knot = start_knot(&up, &dir, 20)?;
    let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/services");
    let base: Vec<String> = [
        "--manifests",
        &manifests.display().to_string(),
        "--listen",
        SVC4,
        "--upstream",
        "10.2.0.2",
        "--pin-dir",
        &pins.pin_dir().display().to_string(),
        "--detach-on-exit",
    ]
    .map(String::from)
    .to_vec();
    // 4 in-namespace, 4 cross-namespace, 3 outside the cluster.
    let names: Vec<String> = [
        "web",
        "cart",
        "db",
        "payments",
        "kubernetes.default",
        "kube-dns.kube-system",
        "metrics-server.kube-system",
        "web.shop",
        "h1.example.test",
        "h2.example.test",
        "h3.example.test",
    ]
    .map(String::from)
    .to_vec();
    let search: Vec<String> = [
        "shop.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    ]
    .map(String::from)
    .to_vec();
    let server: std::net::SocketAddr = format!("{SVC4}:53").parse().map_err(|e| format!("{e}"))?;
    println!("\n### ndots:5 lookups from a pod in namespace `shop`\n");
    println!(
        "glibc's order (`search shop.svc.cluster.local svc.cluster.local cluster.local`, ndots:5; A and AAAA \
         together per candidate; next candidate on NXDOMAIN/NODATA), 4 client threads, one lookup at a time \
         each, names round robin: {} (outside names from Knot through the cache).\n",
        names.join(", ")
    );
    println!("| mode | lookups/s | queries per lookup | cluster-zone queries answered in the kernel | timeouts |\n|---|---:|---:|---:|---:|");
    for (label, extra) in [
        (
            "kernel answers, NXDOMAIN included",
            vec!["--attach", "tc", "--iface", "veth1h"],
        ),
        (
            "kernel answers names that exist only (`--no-kernel-nxdomain`)",
            vec![
                "--attach",
                "tc",
                "--iface",
                "veth1h",
                "--no-kernel-nxdomain",
            ],
        ),
        ("userspace only (`--no-kernel`)", vec!["--no-kernel"]),
    ] {
        let mut args = base.clone();
        args.extend(extra.iter().map(|s| s.to_string()));
        let daemon = Daemon::start(&topo.node, &args).map_err(|e| e.to_string())?;
        let pod = topo.pods[0].ns.name.clone();
        // Warm the cache with every outside name.
        tests::ndots::run_parallel(&pod, 1, server, &names, &search, "cluster.local", 0.5)
            .map_err(|e| e.to_string())?;
        let before = pinned_counters(&pins.pin_dir())
            .map(|c| c.get(Counter::Answered))
            .unwrap_or(0);
        let st = tests::ndots::run_parallel(
            &pod,
            4,
            server,
            &names,
            &search,
            "cluster.local",
            seconds as f64,
        )
        .map_err(|e| e.to_string())?;
        let after = pinned_counters(&pins.pin_dir())
            .map(|c| c.get(Counter::Answered))
            .unwrap_or(0);
        daemon.stop().map_err(|e| e.to_string())?;
        println!(
            "| {label} | {:.0} | {:.2} | {:.1}% | {} |",
            st.lookups as f64 / seconds as f64,
            st.queries as f64 / st.lookups.max(1) as f64,
            100.0 * (after - before) as f64 / st.zone_queries.max(1) as f64,
            st.timeouts,
        );
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

/// Repeated external names through the cache: xdns forwarding to Knot, beside Unbound as a
/// forwarding cache to the same Knot, loaded the same way from the same pod.
fn cache_vs_unbound(seconds: u64) -> Result<(), String> {
    use std::process::Stdio;
    let topo = Topology::new("xdns-cache", 1).map_err(|e| e.to_string())?;
    let up = topo.add_upstream().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join("xdns-cache-bench");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let names = 100;
    let _knot = start_knot(&up, &dir, names)?;
    let mut queries = String::new();
    for i in 0..names {
        queries.push_str(&format!("h{i}.example.test A\n"));
    }
    fs::write(dir.join("queries.txt"), queries).map_err(|e| e.to_string())?;
    let d = dir.display();
    // Unbound beside us on the node, at another address, forwarding to the same Knot.
    let unbound_addr = "10.96.0.11";
    topo.node
        .ip(&["addr", "add", &format!("{unbound_addr}/32"), "dev", "lo"])
        .map_err(|e| e.to_string())?;
    fs::write(
        dir.join("unbound.conf"),
        format!(
            "server:\n  interface: {unbound_addr}\n  port: 53\n  access-control: 0.0.0.0/0 allow\n  do-daemonize: no\n\
             \x20 username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n\
             \x20 num-threads: 2\n  module-config: \"iterator\"\n  do-not-query-localhost: no\n  cache-max-ttl: 30\n\
             forward-zone:\n  name: \".\"\n  forward-addr: 10.2.0.2\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let _unbound = Proc(
        topo.node
            .cmd("unbound")
            .args(["-d", "-c", &dir.join("unbound.conf").display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("unbound: {e}"))?,
    );
    let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/services");
    let args: Vec<String> = [
        "--manifests",
        &manifests.display().to_string(),
        "--listen",
        SVC4,
        "--no-kernel",
        "--upstream",
        "10.2.0.2",
    ]
    .map(String::from)
    .to_vec();
    let daemon = Daemon::start(&topo.node, &args).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(500));
    let qfile = dir.join("queries.txt").display().to_string();
    println!(
        "\n### Repeated external names through the cache ({names} names, forwarded to Knot)\n"
    );
    println!("dnsperf from the pod: throughput with 100 queries outstanding; latency at 20k qps offered.\n");
    println!("| server | answered qps | p50 µs | p99 µs |\n|---|---:|---:|---:|");
    let unbound_version = sh("unbound", &["-V"])
        .lines()
        .next()
        .unwrap_or("")
        .replace("Version ", "");
    let unbound_label = format!("Unbound {unbound_version}, 2 threads");
    for (label, server) in [
        ("xdns (userspace cache)", SVC4),
        (unbound_label.as_str(), unbound_addr),
    ] {
        // Warm the cache: every name once.
        let _ = topo.pods[0]
            .ns
            .output("dnsperf", &["-s", server, "-d", &qfile, "-n", "1"]);
        let out = topo.pods[0]
            .ns
            .output(
                "dnsperf",
                &[
                    "-s",
                    server,
                    "-d",
                    &qfile,
                    "-l",
                    &seconds.to_string(),
                    "-q",
                    "100",
                ],
            )
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let qps = text
            .lines()
            .find(|l| l.trim_start().starts_with("Queries per second:"))
            .and_then(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
            .ok_or_else(|| format!("dnsperf said: {text}"))?;
        let (p50, p99, _) = dnsperf_at(&topo, server, &qfile, seconds.min(3))?;
        println!("| {label} | {qps:.0} | {p50:.0} | {p99:.0} |");
    }
    daemon.stop().map_err(|e| e.to_string())?;
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

/// The kernel's `memlock` for a pinned map (what it charges for the map's memory).
pub(crate) fn map_memlock(pin: &std::path::Path) -> u64 {
    use std::os::fd::{AsFd, AsRawFd};
    let Ok(data) = aya::maps::MapData::from_pin(pin) else {
        return 0;
    };
    let fd = data.fd().as_fd().as_raw_fd();
    fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("memlock:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn example_records() -> Result<Records, String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/services");
    let services = manifests::load_dir(&dir).map_err(|e| e.to_string())?;
    Ok(Records::build(
        &ZoneConfig::new("cluster.local", 30).map_err(|e| e.to_string())?,
        &services,
    ))
}

fn a_query(name: &str, id: u16) -> Vec<u8> {
    let mut m = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    // OPT, 1232, no options: what dig and kdig send, less the cookie.
    m.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
    m
}

fn program_cost() -> Result<(), String> {
    const RUNS: u32 = 200_000;
    let mut ebpf = dataplane::load(None).map_err(|e| e.to_string())?;
    {
        let pass: &mut Xdp = ebpf
            .program_mut(programs::PASS)
            .ok_or("no pass program")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        pass.load().map_err(|e| e.to_string())?;
    }
    let mut maps = KernelMaps::take(&mut ebpf).map_err(|e| e.to_string())?;
    let svc: IpAddr = SVC4.parse().unwrap();
    maps.sync_service_addrs(&[svc]).map_err(|e| e.to_string())?;
    let records = example_records()?;
    maps.publish(&records.kernel_view(), true)
        .map_err(|e| e.to_string())?;
    let to_svc = |q: Vec<u8>| udp_frame("10.1.1.2".parse().unwrap(), svc, 40000, 53, &q);
    let frame = to_svc(a_query(NAMES[0], 1));
    // Out of the zone: what the kernel passes to the forwarder.
    let miss = to_svc(a_query("api.example.com", 1));
    let nx = to_svc(a_query("api.example.com.shop.svc.cluster.local", 1));
    let pod = to_svc(a_query("10-244-1-5.shop.pod.cluster.local", 1));
    let mut ptr = a_query("7.12.96.10.in-addr.arpa", 1);
    let qtype_at = ptr.len() - 11 - 4;
    ptr[qtype_at + 1] = 12;
    let ptr = to_svc(ptr);
    // One run per syscall, on a fresh copy of the frame each time: with a repeat count the
    // kernel reruns the program on the frame the previous run rewrote (an answer, which
    // then passes). The kernel times the program run alone, not the syscall.
    // Sampled answers for the query log, drained after each run as the daemon drains them.
    let mut ring = aya::maps::RingBuf::try_from(
        ebpf.take_map(dns_common::maps::KERNEL_LOG)
            .ok_or("no kernel log ring")?,
    )
    .map_err(|e| e.to_string())?;
    let logged = std::cell::Cell::new(0u64);
    let mut time = |name: &str, frame: &[u8], answered: bool| -> Result<f64, String> {
        let prog = ebpf.program(name).ok_or(name.to_owned())?;
        let mut total = Duration::ZERO;
        let mut verdicts = std::collections::BTreeSet::new();
        let mut out = vec![0u8; 2048];
        for _ in 0..RUNS {
            let opts = TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            };
            let r = if name.starts_with("xdns_tc") {
                let p: &SchedClassifier = prog.try_into().map_err(|e| format!("{e}"))?;
                p.test_run(opts)
            } else {
                let p: &Xdp = prog.try_into().map_err(|e| format!("{e}"))?;
                p.test_run(opts)
            }
            .map_err(|e| e.to_string())?;
            total += r.duration;
            verdicts.insert(r.return_value);
            while ring.next().is_some() {
                logged.set(logged.get() + 1);
            }
        }
        // XDP_TX (3), or tc's redirect (7); XDP_PASS (2) or TC_ACT_OK (0) otherwise.
        let want = match (name.starts_with("xdns_tc"), answered) {
            (true, true) => 7,
            (true, false) => 0,
            (false, true) => 3,
            (false, false) => 2,
        };
        if verdicts != [want].into() {
            return Err(format!("{name}: verdicts {verdicts:?}, expected {want}"));
        }
        Ok(total.as_nanos() as f64 / RUNS as f64)
    };
    let repeat = |ebpf: &aya::Ebpf, name: &str, frame: &[u8]| -> Result<f64, String> {
        let prog = ebpf.program(name).ok_or(name.to_owned())?;
        let p: &Xdp = prog.try_into().map_err(|e| format!("{e}"))?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat: 1_000_000,
            ..Default::default()
        };
        Ok(p.test_run(opts)
            .map_err(|e| e.to_string())?
            .duration
            .as_nanos() as f64)
    };
    let base_rep = repeat(&ebpf, programs::PASS, &frame)?;
    let miss_rep = repeat(&ebpf, programs::XDP, &miss)?;
    let base = time(programs::PASS, &frame, false)?;
    println!("### Program cost (BPF_PROG_TEST_RUN, mean of {RUNS} single runs)\n");
    println!(
        "Each run is timed by the kernel around the program alone; the baseline row shows what"
    );
    println!("timing one run costs by itself.\n");
    println!("| program | packet | ns/packet | × XDP_PASS |\n|---|---|---:|---:|");
    println!("| xdns_pass (baseline) | A query | {base:.0} | 1.0 |");
    for (prog, pkt, f, answered) in [
        (programs::XDP, "A query, answered", &frame, true),
        (programs::XDP, "A query, out of zone (passed)", &miss, false),
        (programs::XDP, "A query, search-path NXDOMAIN", &nx, true),
        (programs::XDP, "pod name A (tail call)", &pod, true),
        (programs::XDP, "PTR of a cluster IP (tail call)", &ptr, true),
        (programs::TC, "A query, answered", &frame, true),
    ] {
        let ns = time(prog, f, answered)?;
        println!("| {prog} | {pkt} | {ns:.0} | {:.1} |", ns / base.max(1.0));
    }
    // `--log-kernel-sample`: the same answer with sampling off (the default), one in 64,
    // and every answer written to the ring.
    println!("\n| query log sampling (`--log-kernel-sample`) | xdns_xdp, A query answered, ns/packet | answers logged |\n|---|---:|---:|");
    for n in [0u32, 64, 1] {
        maps.set_log_sample(n);
        maps.refresh().map_err(|e| e.to_string())?;
        let before = logged.get();
        let ns = time(programs::XDP, &frame, true)?;
        let got = logged.get() - before;
        if n == 1 && got != u64::from(RUNS) {
            return Err(format!("sampling 1 in 1 logged {got} of {RUNS} answers"));
        }
        if n == 0 && got != 0 {
            return Err(format!("sampling off logged {got} answers"));
        }
        let what = match n {
            0 => "off (default)".to_owned(),
            n => format!("one in {n}"),
        };
        println!("| {what} | {ns:.0} | {got} of {RUNS} |");
    }
    maps.set_log_sample(0);
    maps.refresh().map_err(|e| e.to_string())?;
    println!("\nIn a loop of 1M runs (valid only where the frame is left unchanged): XDP_PASS {base_rep:.0} ns, xdns_xdp out of zone {miss_rep:.0} ns ({:.1}×).", miss_rep / base_rep.max(1.0));
    for (prog, n) in dataplane::verified_insns(&ebpf) {
        println!(
            "\nverified_insns {prog}: {}",
            n.map(|n| n.to_string()).unwrap_or("?".into())
        );
    }
    println!();
    Ok(())
}

struct Load {
    sent: u64,
    replies: u64,
}

fn kxdpgun(topo: &Topology, qfile: &str, seconds: u64) -> Result<Load, String> {
    let out = topo.pods[0]
        .ns
        .output(
            "kxdpgun",
            &[
                "-t",
                &seconds.to_string(),
                "-Q",
                "3000000",
                "-i",
                qfile,
                "-I",
                "eth0",
                SVC4,
            ],
        )
        .map_err(|e| e.to_string())?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let grab = |label: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    match (grab("total queries"), grab("total replies")) {
        (Some(sent), Some(replies)) => Ok(Load { sent, replies }),
        _ => Err(format!("kxdpgun said: {text}")),
    }
}

fn dnsperf_at(
    topo: &Topology,
    server: &str,
    qfile: &str,
    seconds: u64,
) -> Result<(f64, f64, usize), String> {
    let out = topo.pods[0]
        .ns
        .output(
            "dnsperf",
            &[
                "-s",
                server,
                "-d",
                qfile,
                "-l",
                &seconds.to_string(),
                "-Q",
                "20000",
                "-v",
            ],
        )
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Verbose lines: "> NOERROR web.shop.svc.cluster.local A 0.000085".
    let mut lat: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with('>'))
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect();
    if lat.is_empty() {
        return Err(format!(
            "dnsperf gave no latencies: {}",
            text.lines().take(20).collect::<Vec<_>>().join("\n")
        ));
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] * 1e6;
    Ok((pct(0.5), pct(0.99), lat.len()))
}

fn on_namespaces(seconds: u64) -> Result<(), String> {
    let topo = Topology::new("xdns-bench", 1).map_err(|e| e.to_string())?;
    let pins = Bpffs::new("xdns-bench-bpf").map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join("xdns-bench");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let qfile = dir.join("queries.txt");
    let text: String = NAMES.iter().map(|n| format!("{n} A\n")).collect();
    fs::write(&qfile, text).map_err(|e| e.to_string())?;
    let qfile = qfile.display().to_string();
    let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/services");
    let base: Vec<String> = vec![
        "--manifests".into(),
        manifests.display().to_string(),
        "--listen".into(),
        SVC4.into(),
        "--listen".into(),
        SVC6.into(),
        "--pin-dir".into(),
        pins.pin_dir().display().to_string(),
        "--no-forward".into(),
        // Each mode starts from nothing attached.
        "--detach-on-exit".into(),
    ];
    println!("### One pod flooding the service address over its veth\n");
    println!("Load: kxdpgun in the pod (its AF_XDP socket puts an XDP program on the pod's eth0, which is");
    println!(
        "what lets native XDP_TX on the host end deliver at all), names: {}.",
        NAMES.join(", ")
    );
    println!("Latency: dnsperf at 20k qps offered, per-query latencies sorted.\n");
    println!("| path | attach | sent qps | answered qps | answered | by kernel | p50 µs | p99 µs |\n|---|---|---:|---:|---:|---:|---:|---:|");
    for mode in ["native", "generic", "tc", "userspace"] {
        let mut args = base.clone();
        if mode == "userspace" {
            args.push("--no-kernel".into());
        } else {
            args.extend([
                "--attach".into(),
                mode.into(),
                "--iface".into(),
                topo.pods[0].host_if.clone(),
            ]);
        }
        let daemon = Daemon::start(&topo.node, &args).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(300));
        let before = pinned_counters(&pins.pin_dir()).ok();
        let load = kxdpgun(&topo, &qfile, seconds)?;
        let after = pinned_counters(&pins.pin_dir()).ok();
        let kernel = match (before, after, mode) {
            (_, _, "userspace") => 0,
            (Some(b), Some(a), _) => a.get(Counter::Answered) - b.get(Counter::Answered),
            _ => 0,
        };
        let (p50, p99, _) = dnsperf_at(&topo, SVC4, &qfile, seconds.min(3))?;
        daemon.stop().map_err(|e| e.to_string())?;
        let path = if mode == "userspace" {
            "userspace (no program)"
        } else {
            "kernel"
        };
        let attach = if mode == "userspace" { "-" } else { mode };
        println!(
            "| {path} | {attach} | {:.0} | {:.0} | {:.1}% | {:.1}% | {p50:.0} | {p99:.0} |",
            load.sent as f64 / seconds as f64,
            load.replies as f64 / seconds as f64,
            100.0 * load.replies as f64 / load.sent.max(1) as f64,
            100.0 * kernel as f64 / load.sent.max(1) as f64,
        );
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}
