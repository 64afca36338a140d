//! The forwarding cache beside Unbound, same upstream, same load.
use std::{fs, time::Duration};

use tests::{
    daemon_args::DaemonArgs,
    fixture::example_manifests,
    netns::{Daemon, Topology, SVC4},
};

use crate::{flood::dnsperf_at, sh, start_knot, Proc};

/// Repeated external names through the cache: xdns forwarding to Knot, beside Unbound as a
/// forwarding cache to the same Knot, loaded the same way from the same pod.
pub fn cache_vs_unbound(seconds: u64) -> Result<(), String> {
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
    let args = DaemonArgs::manifests(&example_manifests())
        .listen(&[SVC4])
        .no_kernel()
        .upstream("10.2.0.2")
        .build();
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
