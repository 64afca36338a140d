//! One pod flooding the service address over its veth: kxdpgun for throughput and the
//! node's CPU per answer, dnsperf for latency; per attach mode, for userspace alone, and
//! for Knot DNS (XDP) and NSD serving the same names, side by side in one table.
use std::fs;

use dns_common::Counter;
use dns_userspace::dataplane::snapshot::pinned_counters;
use tests::{
    daemon_args::DaemonArgs,
    fixture::example_manifests,
    netns::{Bpffs, Daemon, Topology, SVC4, SVC6},
};

use crate::{peers, proc_cpu, NAMES};

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

pub fn dnsperf_at(
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

pub fn on_namespaces(seconds: u64) -> Result<(), String> {
    let topo = Topology::new("xdns-bench", 1).map_err(|e| e.to_string())?;
    // The programs' run time counts toward the server's CPU.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| e.to_string())?;
    let pins = Bpffs::new("xdns-bench-bpf").map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join("xdns-bench");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let qfile = dir.join("queries.txt");
    let text: String = NAMES.iter().map(|n| format!("{n} A\n")).collect();
    fs::write(&qfile, text).map_err(|e| e.to_string())?;
    let qfile = qfile.display().to_string();
    let base = DaemonArgs::manifests(&example_manifests())
        .listen(&[SVC4, SVC6])
        .pin_dir(&pins.pin_dir())
        .no_forward()
        // Each mode starts from nothing attached.
        .detach_on_exit();
    println!("### One pod flooding the service address over its veth\n");
    println!("Load: kxdpgun in the pod (its AF_XDP socket puts an XDP program on the pod's eth0, which is");
    println!(
        "what lets native XDP_TX on the host end deliver at all), names: {}.",
        NAMES.join(", ")
    );
    println!("Latency: dnsperf at 20k qps offered, per-query latencies sorted.\n");
    println!(
        "Node CPU: every CPU's busy time from /proc/stat while kxdpgun ran, less kxdpgun's own"
    );
    println!(
        "(its rusage): the server and the softirq work on both veth ends (the same for each row),"
    );
    println!(
        "per 1000 answers. Knot DNS {} in XDP mode (its own XDP program and AF_XDP socket on the",
        peers::knot_version()
    );
    println!("node's end of the veth, one UDP worker) and NSD {} (kernel sockets, two servers) serve the", peers::nsd_version());
    println!("same names from a zone file.\n");
    println!("| server | attach | sent qps | answered qps | answered | by kernel | server CPU µs / 1k answers | p50 µs | p99 µs |\n|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let peers_dir = dir.join("peers");
    fs::create_dir_all(&peers_dir).map_err(|e| e.to_string())?;
    for mode in ["native", "generic", "tc", "userspace", "knot", "nsd"] {
        let (server, attach) = match mode {
            "userspace" => ("xdns userspace (no program)", "-"),
            "knot" => ("Knot DNS", "XDP (AF_XDP)"),
            "nsd" => ("NSD", "-"),
            m => ("xdns kernel path", m),
        };
        let mut daemon = None;
        let mut _peer = None;
        match mode {
            "knot" => _peer = Some(peers::knot_xdp(&topo, &peers_dir)?),
            "nsd" => _peer = Some(peers::nsd(&topo, &peers_dir)?),
            "userspace" => {
                daemon = Some(
                    Daemon::start(&topo.node, &base.clone().no_kernel().build())
                        .map_err(|e| e.to_string())?,
                )
            }
            m => {
                let args = base.clone().attach(m).iface(&topo.pods[0].host_if).build();
                daemon = Some(Daemon::start(&topo.node, &args).map_err(|e| e.to_string())?);
            }
        }
        let pid = match (&daemon, &_peer) {
            (Some(d), _) => d.pid(),
            (None, Some(p)) => p.0.id(),
            (None, None) => return Err("no server".into()),
        };
        let meter = proc_cpu::Meter::start(&topo, pid);
        let kernel_path = daemon.is_some() && mode != "userspace";
        let before = kernel_path
            .then(|| pinned_counters(&pins.pin_dir()).ok())
            .flatten();
        let load = kxdpgun(&topo, &qfile, seconds)?;
        let server_cpu = meter.spent();
        let after = kernel_path
            .then(|| pinned_counters(&pins.pin_dir()).ok())
            .flatten();
        let kernel = match (before, after) {
            (Some(b), Some(a)) => a.get(Counter::Answered) - b.get(Counter::Answered),
            _ => 0,
        };
        let (p50, p99, _) = dnsperf_at(&topo, SVC4, &qfile, seconds.min(3))?;
        if let Some(d) = daemon {
            d.stop().map_err(|e| e.to_string())?;
        }
        drop(_peer);
        let per_k = server_cpu.as_secs_f64() * 1e6 / (load.replies.max(1) as f64 / 1000.0);
        println!(
            "| {server} | {attach} | {:.0} | {:.0} | {:.1}% | {:.1}% | {per_k:.0} | {p50:.0} | {p99:.0} |",
            load.sent as f64 / seconds as f64,
            load.replies as f64 / seconds as f64,
            100.0 * load.replies as f64 / load.sent.max(1) as f64,
            100.0 * kernel as f64 / load.sent.max(1) as f64,
        );
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}
