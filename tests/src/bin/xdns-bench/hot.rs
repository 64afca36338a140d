//! Per-packet program cost under a flood: kxdpgun in a pod sends one kind of query at a
//! time over its veth to the program attached on the node's end, and the kernel's
//! run-time statistics give the program's mean time per packet with warm caches, beside an
//! XDP program that only passes, attached and flooded the same way.
//!
//! Generic XDP, not native: kxdpgun's AF_XDP frames reach the node's end of the veth with
//! no tailroom, so a native program cannot grow most of them into an answer (it counts
//! `resize_failed` and passes, which would time the wrong path).
use std::{fs, path::Path, time::Duration};

use aya::programs::{loaded_programs, XdpMode};
use dns_common::{programs, Counter};
use dns_userspace::dataplane::{self, snapshot::pinned_counters};
use tests::{
    daemon_args::DaemonArgs,
    fixture::{example_manifests, TempDir},
    netns::{Bpffs, Daemon, Topology, SVC4, SVC6},
};

use crate::NAMES;

/// One row: what is sent, and the counter that must account for (nearly) every packet.
struct Row {
    label: &'static str,
    queries: String,
    counter: Counter,
}

fn rows() -> Vec<Row> {
    let one = |label, q: &str, counter| Row {
        label,
        queries: format!("{q}\n"),
        counter,
    };
    vec![
        Row {
            label: "A query, answered",
            queries: NAMES.iter().map(|n| format!("{n} A\n")).collect(),
            counter: Counter::Answered,
        },
        one(
            "A query, out of zone (passed)",
            "api.example.com A",
            Counter::OutOfZone,
        ),
        one(
            "A query, search-path NXDOMAIN",
            "api.example.com.shop.svc.cluster.local A",
            Counter::Answered,
        ),
        one(
            "pod name A (tail call)",
            "10-244-1-5.shop.pod.cluster.local A",
            Counter::Answered,
        ),
        one(
            "PTR of a cluster IP (tail call)",
            "7.12.96.10.in-addr.arpa PTR",
            Counter::Answered,
        ),
    ]
}

/// Run time and run count summed over every loaded program called `name` (only the
/// attached one runs).
fn stats_of(name: &str) -> Result<(Duration, u64), String> {
    let mut total = (Duration::ZERO, 0);
    for info in loaded_programs() {
        let info = info.map_err(|e| e.to_string())?;
        if info.name_as_str() == Some(name) {
            total.0 += info.run_time();
            total.1 += info.run_count();
        }
    }
    Ok(total)
}

/// Floods `qfile` at the service address from the first pod for `seconds`.
fn flood(topo: &Topology, qfile: &Path, seconds: u64) -> Result<(), String> {
    let qfile = qfile.display().to_string();
    let secs = seconds.to_string();
    let args = [
        "-t", &secs, "-Q", "3000000", "-i", &qfile, "-I", "eth0", SVC4,
    ];
    let out = topo.pods[0]
        .ns
        .output("kxdpgun", &args)
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "kxdpgun: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The mean ns per run of `prog` while `qfile` floods, and the runs counted.
fn measure(topo: &Topology, prog: &str, qfile: &Path, seconds: u64) -> Result<(f64, u64), String> {
    let before = stats_of(prog)?;
    flood(topo, qfile, seconds)?;
    let after = stats_of(prog)?;
    let runs = after.1 - before.1;
    if runs == 0 {
        return Err(format!("{prog} did not run under the flood"));
    }
    Ok(((after.0 - before.0).as_nanos() as f64 / runs as f64, runs))
}

pub fn under_flood(seconds: u64) -> Result<(), String> {
    let seconds = seconds.min(3);
    let topo = Topology::new("xdns-hot", 1).map_err(|e| e.to_string())?;
    let pins = Bpffs::new("xdns-hot-bpf").map_err(|e| e.to_string())?;
    let dir = TempDir(std::env::temp_dir().join("xdns-hot"));
    fs::create_dir_all(&*dir).map_err(|e| e.to_string())?;
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| e.to_string())?;
    let rows = rows();
    let mut files = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let f = dir.join(format!("row{i}.txt"));
        fs::write(&f, &r.queries).map_err(|e| e.to_string())?;
        files.push(f);
    }

    // The baseline: the pass program alone on the same interface, under the A flood.
    let host_if = topo.pods[0].host_if.clone();
    let base_file = files[0].clone();
    let base = {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let holder = std::thread::spawn({
            let node = topo.node.name.clone();
            move || -> Result<(), String> {
                tests::netns::enter(&node).map_err(|e| e.to_string())?;
                let mut ebpf = dataplane::load(None).map_err(|e| e.to_string())?;
                let attached = crate::load_pass(&mut ebpf).and_then(|pass| {
                    pass.attach(&host_if, XdpMode::Skb)
                        .map_err(|e| e.to_string())
                });
                let failed = attached.is_err();
                let _ = ready_tx.send(attached.map(|_| ()));
                if !failed {
                    // Attached while the program object lives: until the flood is done.
                    let _ = rx.recv();
                }
                Ok(())
            }
        });
        ready_rx
            .recv()
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("attaching the pass program: {e}"))?;
        let m = measure(&topo, programs::PASS, &base_file, seconds);
        let _ = tx.send(());
        holder
            .join()
            .map_err(|_| "pass holder panicked".to_owned())??;
        m?
    };

    let args = DaemonArgs::manifests(&example_manifests())
        .listen(&[SVC4, SVC6])
        .pin_dir(&pins.pin_dir())
        .no_forward()
        .detach_on_exit()
        .attach("generic")
        .iface(&topo.pods[0].host_if)
        .build();
    let daemon = Daemon::start(&topo.node, &args).map_err(|e| e.to_string())?;
    println!("### Per packet under a flood (bpf_stats, generic XDP, warm caches)\n");
    println!("kxdpgun in a pod floods one kind of query for {seconds} s; the kernel's run-time statistics");
    println!("(`BPF_ENABLE_STATS`: `sched_clock` around each run, tail calls included) give the mean per");
    println!("packet. The baseline is an XDP program that only passes, attached and flooded the same way.\n");
    println!("| program | packet | runs | ns/packet | × XDP_PASS |\n|---|---|---:|---:|---:|");
    println!(
        "| xdns_pass (baseline) | A query | {} | {:.0} | 1.0 |",
        base.1, base.0
    );
    let mut out = Ok(());
    for (r, f) in rows.iter().zip(&files) {
        let before = pinned_counters(&pins.pin_dir()).map_err(|e| e.to_string())?;
        let (ns, runs) = match measure(&topo, programs::XDP, f, seconds) {
            Ok(m) => m,
            Err(e) => {
                out = Err(e);
                break;
            }
        };
        let after = pinned_counters(&pins.pin_dir()).map_err(|e| e.to_string())?;
        let counted = after.get(r.counter) - before.get(r.counter);
        // Every query of the row must have taken the path the row names (ARP and neighbour
        // discovery run the program too, a handful of packets).
        if (counted as f64) < runs as f64 * 0.99 {
            let seen: Vec<String> = Counter::ALL
                .iter()
                .map(|&c| (c, after.get(c) - before.get(c)))
                .filter(|&(_, n)| n > 0)
                .map(|(c, n)| format!("{} {n}", c.name()))
                .collect();
            out = Err(format!(
                "{}: {counted} of {runs} runs counted {} (counted: {})",
                r.label,
                r.counter.name(),
                seen.join(", ")
            ));
            break;
        }
        println!(
            "| xdns_xdp | {} | {runs} | {ns:.0} | {:.1} |",
            r.label,
            ns / base.0.max(1.0)
        );
    }
    println!();
    daemon.stop().map_err(|e| e.to_string())?;
    out
}
