//! Bulk TCP through a pod's veth with the kernel path attached and without: the programs
//! see every packet on the interface, and must cost a TCP stream nothing it can measure
//! (the tc program pulls only what may be a query, never a GSO segment).
use std::{process::Stdio, time::Duration};

use tests::{
    daemon_args::DaemonArgs,
    fixture::example_manifests,
    netns::{Bpffs, Daemon, Topology, SVC4},
};

use crate::Proc;

pub fn bulk_tcp(seconds: u64) -> Result<(), String> {
    let topo = Topology::new("xdns-bulk", 1).map_err(|e| e.to_string())?;
    let pins = Bpffs::new("xdns-bulk-bpf").map_err(|e| e.to_string())?;
    let host_if = topo.pods[0].host_if.clone();
    let node_end = match topo.pods[0].addr4 {
        std::net::IpAddr::V4(a) => {
            let [a, b, c, _] = a.octets();
            format!("{a}.{b}.{c}.1")
        }
        other => return Err(format!("pod address {other}: not IPv4")),
    };
    // The server on the node's end of the veth; the pod sends to it (pod → node: ingress
    // on the host end, where the programs sit).
    let _server = Proc(
        topo.node
            .cmd("iperf3")
            .args(["-s", "-B", &node_end, "-p", "5201"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("iperf3: {e}"))?,
    );
    std::thread::sleep(Duration::from_millis(300));
    let base = DaemonArgs::manifests(&example_manifests())
        .listen(&[SVC4])
        .pin_dir(&pins.pin_dir())
        .no_forward()
        .detach_on_exit();
    println!("\n### Bulk TCP from a pod through its veth ({seconds} s, iperf3, one stream)\n");
    println!("| kernel path on the veth | Gbit/s | retransmits |\n|---|---:|---:|");
    for mode in ["none", "tc", "generic"] {
        let daemon = match mode {
            "none" => None,
            m => Some(
                Daemon::start(&topo.node, &base.clone().attach(m).iface(&host_if).build())
                    .map_err(|e| e.to_string())?,
            ),
        };
        let out = topo.pods[0]
            .ns
            .output(
                "iperf3",
                &[
                    "-c",
                    &node_end,
                    "-p",
                    "5201",
                    "-t",
                    &seconds.to_string(),
                    "-J",
                ],
            )
            .map_err(|e| format!("iperf3 -c: {e}"))?;
        if let Some(d) = daemon {
            d.stop().map_err(|e| e.to_string())?;
        }
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("iperf3 -J: {e}"))?;
        let sent = &report["end"]["sum_sent"];
        let gbps = sent["bits_per_second"]
            .as_f64()
            .ok_or_else(|| format!("iperf3 reported no rate: {}", report["error"]))?
            / 1e9;
        let retr = sent["retransmits"].as_u64().unwrap_or(0);
        println!("| {mode} | {gbps:.2} | {retr} |");
    }
    Ok(())
}
