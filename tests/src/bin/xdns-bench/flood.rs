//! One pod flooding the service address over its veth: kxdpgun for throughput, dnsperf
//! for latency, per attach mode and for userspace alone.
use std::{fs, time::Duration};

use dns_common::Counter;
use dns_userspace::dataplane::snapshot::pinned_counters;
use tests::{
    daemon_args::DaemonArgs,
    fixture::example_manifests,
    netns::{Bpffs, Daemon, Topology, SVC4, SVC6},
};

use crate::NAMES;

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
    println!("| path | attach | sent qps | answered qps | answered | by kernel | p50 µs | p99 µs |\n|---|---|---:|---:|---:|---:|---:|---:|");
    for mode in ["native", "generic", "tc", "userspace"] {
        let args = match mode {
            "userspace" => base.clone().no_kernel(),
            _ => base.clone().attach(mode).iface(&topo.pods[0].host_if),
        }
        .build();
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
