//! The ndots:5 workload of a pod: search-path lookups as glibc makes them, with the
//! kernel's negative answers on, off, and no kernel path.
use std::fs;

use dns_common::Counter;
use dns_userspace::dataplane::snapshot::pinned_counters;
use tests::{
    daemon_args::DaemonArgs,
    fixture::example_manifests,
    netns::{Bpffs, Daemon, Topology, SVC4},
};

use crate::start_knot;

/// The ndots:5 workload a pod in namespace `shop` makes, glibc style (A and AAAA for each
/// search-path candidate until one answers), with the kernel's negative answers on, off,
/// and no kernel path at all, in the same run.
pub fn ndots_workload(seconds: u64) -> Result<(), String> {
    let topo = Topology::new("xdns-ndots", 1).map_err(|e| e.to_string())?;
    let up = topo.add_upstream().map_err(|e| e.to_string())?;
    let pins = Bpffs::new("xdns-ndots-bpf").map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join("xdns-ndots-bench");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let _knot = start_knot(&up, &dir, 20)?;
    let base = DaemonArgs::manifests(&example_manifests())
        .listen(&[SVC4])
        .upstream("10.2.0.2")
        .pin_dir(&pins.pin_dir())
        .detach_on_exit();
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
    let search = tests::ndots::search_path("shop", "cluster.local");
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
        let args = base.clone().extra(&extra).build();
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
