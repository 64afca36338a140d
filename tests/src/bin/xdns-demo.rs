//! The demo: a node namespace running the daemon on the sample Services, two pod
//! namespaces joined to it by veth pairs, and the commands to try. Ctrl-C (or
//! `--duration`) stops it; the counters are printed and every namespace is removed.
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use tests::{
    daemon_args::DaemonArgs,
    fixture::example_manifests,
    netns::{Daemon, Topology, SVC4, SVC6},
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    if let Err(e) = run() {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces and BPF); run it with sudo".into());
    }
    let mut args = std::env::args().skip(1);
    let mut duration = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--duration" => {
                duration = args
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .map(Duration::from_secs)
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: xdns-demo [--duration SECONDS]"
                ))
            }
        }
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let manifests = example_manifests()
        .canonicalize()
        .map_err(|e| format!("examples/services: {e}"))?;
    let topo = Topology::new("xdns-demo", 2).map_err(|e| format!("namespaces: {e}"))?;
    let daemon_args = topo
        .pods
        .iter()
        .fold(
            DaemonArgs::manifests(&manifests).listen(&[SVC4, SVC6]),
            |a, p| a.iface(&p.host_if),
        )
        // The demo leaves nothing behind.
        .detach_on_exit()
        .build();
    let daemon = Daemon::start(&topo.node, &daemon_args).map_err(|e| format!("daemon: {e}"))?;
    for l in &daemon.stdout {
        println!("daemon: {l}");
    }
    println!("daemon pid {}", daemon.pid());
    let (p1, p2) = (&topo.pods[0].ns.name, &topo.pods[1].ns.name);
    println!(
        "\nxdns is serving the Services in {dir} at {SVC4} and {SVC6}.\nTry, in another shell:\n\
         \n  ip netns exec {p1} dig @{SVC4} web.shop.svc.cluster.local        # the kernel answers\
         \n  ip netns exec {p2} kdig @{SVC6} kube-dns.kube-system.svc.cluster.local  # the kernel\
         \n  ip netns exec {p1} dig @{SVC4} web.shop.svc.cluster.local AAAA   # the kernel\
         \n  ip netns exec {p2} dig @{SVC4} nope.shop.svc.cluster.local       # NXDOMAIN, the kernel\
         \n  ip netns exec {p1} dig @{SVC4} _http._tcp.web.shop.svc.cluster.local SRV  # userspace\
         \n  ip netns exec {p1} dig @{SVC4} +tcp cart.shop.svc.cluster.local # userspace (TCP)\
         \n\nEdit a file in {dir} and the change is served within a second.\
         \nCtrl-C stops the demo and prints the kernel path's counters.\n",
        dir = manifests.display()
    );
    let started = Instant::now();
    while !STOP.load(Ordering::SeqCst) && duration.is_none_or(|d| started.elapsed() < d) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = daemon
        .stop()
        .map_err(|e| format!("stopping the daemon: {e}"))?;
    let at = out
        .iter()
        .position(|l| l.starts_with("kernel path counters"));
    for l in at.map(|i| &out[i..]).unwrap_or(&[]) {
        println!("{l}");
    }
    drop(topo);
    println!("demo: namespaces removed");
    Ok(())
}
