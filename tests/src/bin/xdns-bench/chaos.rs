//! Faults under load: a node-local daemon fed by the test API server, forwarding to Knot,
//! answers a pod's continuous mixed load (A from the kernel, SRV, names forwarded to the
//! upstream, A over TCP) while each fault is applied in turn. Every reply is checked
//! against the one right answer: a failure is no usable reply after one retry (as a stub
//! resolver retries), a wrong answer is a reply that says something else.
use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use dns_common::Counter;
use dns_userspace::dataplane::snapshot::pinned_counters;
use tests::{
    apiserver::{
        obj::{self, Endpoint},
        ApiServer,
    },
    client::query_bytes,
    netns::{Bpffs, Daemon, Netns, Topology},
};

const LOCAL: &str = "169.254.20.10";
const WEB_IP: [u8; 4] = [10, 96, 0, 100];
const UPSTREAM_NAMES: usize = 10;

/// The query kinds of the load, in the table's column order.
const KINDS: [&str; 4] = ["A (kernel)", "SRV", "forwarded", "TCP"];

#[derive(Default)]
struct Tally {
    sent: [AtomicU64; 4],
    failed: [AtomicU64; 4],
    wrong: [AtomicU64; 4],
}

type Counts = [[u64; 3]; 4];

impl Tally {
    fn read(&self) -> Counts {
        std::array::from_fn(|k| {
            [
                self.sent[k].load(Ordering::Relaxed),
                self.failed[k].load(Ordering::Relaxed),
                self.wrong[k].load(Ordering::Relaxed),
            ]
        })
    }
}

enum Verdict {
    Right,
    /// SERVFAIL, a timeout, a refused connection: no usable reply.
    Failed,
    Wrong,
}

/// A reply judged against what it must say: NOERROR carrying `want`.
fn judge(reply: Option<Vec<u8>>, id: u16, want: &[u8]) -> Verdict {
    let Some(r) = reply.filter(|r| r.len() >= 12) else {
        return Verdict::Failed;
    };
    if u16::from_be_bytes([r[0], r[1]]) != id {
        return Verdict::Wrong;
    }
    match r[3] & 0x0f {
        0 if r.windows(want.len()).any(|w| w == want) => Verdict::Right,
        2 => Verdict::Failed,
        _ => Verdict::Wrong,
    }
}

fn udp(q: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.set_read_timeout(Some(Duration::from_millis(800))).ok()?;
    s.send_to(q, (LOCAL, 53)).ok()?;
    let mut buf = [0u8; 1500];
    let n = s.recv(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

fn tcp(q: &[u8]) -> Option<Vec<u8>> {
    let addr: SocketAddr = format!("{LOCAL}:53").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(800)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(800))).ok()?;
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(q);
    s.write_all(&framed).ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut r).ok()?;
    Some(r)
}

/// The load: one query of each kind in turn until `stop`, each retried once.
fn load(pod: String, tally: Arc<Tally>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let _ = Netns { name: pod }.within(move || {
            // Priority 0, weight 100, port 80 (the target is compressed against the
            // question, so its bytes are not checked).
            let srv = vec![0, 0, 0, 100, 0, 80];
            let mut id = 0u16;
            while !stop.load(Ordering::Relaxed) {
                for kind in 0..KINDS.len() {
                    id = id.wrapping_add(1);
                    let n = id as usize % UPSTREAM_NAMES;
                    let (q, want): (Vec<u8>, Vec<u8>) = match kind {
                        0 | 3 => (
                            query_bytes(id, "web.shop.svc.cluster.local", 1),
                            WEB_IP.into(),
                        ),
                        1 => (
                            query_bytes(id, "_http._tcp.web.shop.svc.cluster.local", 33),
                            srv.clone(),
                        ),
                        _ => (
                            query_bytes(id, &format!("h{n}.example.test"), 1),
                            vec![192, 0, 2, n as u8 + 1],
                        ),
                    };
                    let ask = || if kind == 3 { tcp(&q) } else { udp(&q) };
                    let mut verdict = judge(ask(), id, &want);
                    if matches!(verdict, Verdict::Failed) {
                        std::thread::sleep(Duration::from_millis(300));
                        verdict = judge(ask(), id, &want);
                    }
                    tally.sent[kind].fetch_add(1, Ordering::Relaxed);
                    match verdict {
                        Verdict::Right => {}
                        Verdict::Failed => drop(tally.failed[kind].fetch_add(1, Ordering::Relaxed)),
                        Verdict::Wrong => drop(tally.wrong[kind].fetch_add(1, Ordering::Relaxed)),
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    })
}

fn services(api: &ApiServer, extra: usize) {
    for i in 0..extra {
        api.apply(obj::service(
            "shop",
            &format!("extra-{i}"),
            &[&format!("10.96.1.{}", i + 1)],
            &[("http", 80)],
        ));
    }
}

/// The sum of every series of a metric the daemon serves.
fn metric(node: &Netns, name: &str) -> f64 {
    tests::client::http_get(node, 9153, "/metrics")
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn write_config(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).map_err(|e| e.to_string())?;
    fs::rename(&tmp, path).map_err(|e| e.to_string())
}

pub fn run() -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    let topo = Topology::new("xchaos", 1).map_err(e)?;
    let up = topo.add_upstream().map_err(e)?;
    let pins = Bpffs::new("xchaos-bpf").map_err(e)?;
    let dir = std::env::temp_dir().join("xchaos");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(e)?;
    let mut knot = Some(super::start_knot(&up, &dir, UPSTREAM_NAMES)?);
    let api = ApiServer::start(Some(&topo.node.name)).map_err(e)?;
    api.apply(obj::namespace("shop"));
    api.apply(obj::service(
        "shop",
        "web",
        &["10.96.0.100"],
        &[("http", 80)],
    ));
    api.set_endpoints(
        "shop",
        "web",
        &[Endpoint::ready("10.1.0.5"), Endpoint::ready("10.1.0.6")],
        &[("http", 8080)],
    );
    fs::write(dir.join("kubeconfig"), api.kubeconfig()).map_err(e)?;
    let config = dir.join("xdns.yaml");
    // Forwarded answers cached 2 s: an upstream outage outlasts them, so what keeps them
    // answered is serve-stale.
    let good_config = "cache:\n  ttl: 2\n  minTtl: 1\n  serveStale: 1h\n";
    write_config(&config, good_config)?;
    let args = tests::daemon_args::DaemonArgs::kubeconfig(&dir.join("kubeconfig"))
        .config(&config)
        .listen(&[LOCAL])
        .node_local("nodelocaldns")
        .iface(&topo.pods[0].host_if)
        .attach("tc")
        .pin_dir(&pins.pin_dir())
        .upstream("10.2.0.2")
        .extra(&["--lameduck-secs", "1", "--pin-wait", "30"])
        // Room for the zone (a few dozen names), not for the 100 Services the full-map
        // row adds.
        .extra(&["--kernel-records-max", "200", "--forward-timeout-ms", "500"])
        .build();
    let log_path = dir.join("daemon.log");
    let start = || -> Result<Daemon, String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(e)?;
        Daemon::start_logging(&topo.node, &args, log).map_err(e)
    };
    let mut daemon = Some(start()?);

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(topo.pods[0].ns.name.clone(), tally.clone(), stop.clone());
    // Warm: the forwarded names cached (serve-stale needs something to serve).
    std::thread::sleep(Duration::from_secs(2));

    println!("\n### Faults under load (node-local, test API server, Knot upstream)\n");
    println!(
        "Each cell: queries sent / failed after one retry / wrong. The load runs without \
         pause through every row.\n"
    );
    println!(
        "| fault | {} | took | the fault took effect |",
        KINDS.join(" | ")
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    let mut totals = [[0u64; 3]; 4];
    let mut row = |name: &str, fault: &mut dyn FnMut() -> Result<String, String>| {
        let before = tally.read();
        let t = Instant::now();
        let evidence = fault()?;
        let after = tally.read();
        let cells: Vec<String> = (0..KINDS.len())
            .map(|k| {
                let d: Vec<u64> = (0..3).map(|i| after[k][i] - before[k][i]).collect();
                for i in 0..3 {
                    totals[k][i] += d[i];
                }
                format!("{} / {} / {}", d[0], d[1], d[2])
            })
            .collect();
        println!(
            "| {name} | {} | {:.1} s | {evidence} |",
            cells.join(" | "),
            t.elapsed().as_secs_f64()
        );
        Ok::<(), String>(())
    };
    let settle = || std::thread::sleep(Duration::from_secs(2));

    row("none (baseline, 3 s)", &mut || {
        std::thread::sleep(Duration::from_secs(3));
        Ok("-".into())
    })?;
    row("kill -9, restart", &mut || {
        let old = daemon.take().map(|d| {
            let pid = d.pid();
            d.kill9();
            pid
        });
        let d = start()?;
        let new = d.pid();
        daemon = Some(d);
        settle();
        Ok(format!("pid {old:?} killed, {new} serving"))
    })?;
    row("SIGTERM, next daemon started beside", &mut || {
        let mut next = start()?;
        if let Some(d) = daemon.take() {
            d.stop().map_err(e)?;
        }
        next.wait_line("kernel path taken over", Duration::from_secs(10))
            .ok_or("the next daemon did not take the kernel path over")?;
        daemon = Some(next);
        settle();
        Ok("the next daemon took the kernel path over".into())
    })?;
    row("API server down 30 s", &mut || {
        let errors = || metric(&topo.node, "xdns_kube_watch_errors_total");
        let e0 = errors();
        // Down as a real outage is: open watches cut, every request refused.
        api.set_down(true);
        api.drop_watches();
        std::thread::sleep(Duration::from_secs(30));
        api.set_down(false);
        settle();
        Ok(format!("{} watch errors", errors() - e0))
    })?;
    row("upstream down 5 s, back", &mut || {
        let stale = || metric(&topo.node, "coredns_cache_served_stale_total");
        let s0 = stale();
        drop(knot.take());
        std::thread::sleep(Duration::from_secs(5));
        knot = Some(super::start_knot(&up, &dir, UPSTREAM_NAMES)?);
        settle();
        Ok(format!("{} answers served stale", stale() - s0))
    })?;
    row(
        "kernel map full (100 Services more), then fits",
        &mut || {
            let degraded = || {
                pinned_counters(&pins.pin_dir())
                    .map(|c| c.get(Counter::Degraded))
                    .unwrap_or(0)
            };
            let d0 = degraded();
            services(&api, 100);
            std::thread::sleep(Duration::from_secs(3));
            for i in 0..100 {
                api.delete(
                    tests::apiserver::Kind::Service,
                    "shop",
                    &format!("extra-{i}"),
                );
            }
            settle();
            Ok(format!(
                "{} queries passed by the degraded kernel",
                degraded() - d0
            ))
        },
    )?;
    row("garbage config file, then the good one", &mut || {
        let failed = || metric(&topo.node, "coredns_reload_failed_total");
        let f0 = failed();
        write_config(&config, "cache: [not, a, map\n")?;
        std::thread::sleep(Duration::from_secs(2));
        write_config(&config, "kubernetes:\n  ttl: seven\n")?;
        std::thread::sleep(Duration::from_secs(2));
        write_config(&config, good_config)?;
        settle();
        Ok(format!("{} reloads refused", failed() - f0))
    })?;
    row("garbage objects from the API", &mut || {
        let mut bad = obj::service("shop", "bad", &["10.96.999.1"], &[("http", 80)]);
        bad["spec"]["ports"][0]["port"] = serde_json::json!(99999);
        api.apply(bad);
        std::thread::sleep(Duration::from_secs(2));
        api.delete(tests::apiserver::Kind::Service, "shop", "bad");
        settle();
        let skipped = fs::read_to_string(&log_path)
            .unwrap_or_default()
            .matches("object skipped")
            .count();
        Ok(format!("{skipped} objects skipped (daemon log)"))
    })?;
    row("1000 idle TCP connections held 5 s", &mut || {
        let held = topo.pods[0]
            .ns
            .within(|| {
                let addr: SocketAddr = format!("{LOCAL}:53").parse().unwrap();
                (0..1000)
                    .filter_map(|_| {
                        TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()
                    })
                    .collect::<Vec<_>>()
            })
            .map_err(e)?;
        let n = held.len();
        std::thread::sleep(Duration::from_secs(5));
        drop(held);
        settle();
        Ok(format!("{n} connections held"))
    })?;
    row("a TCP client that never reads, 12 s", &mut || {
        let stuffed = topo.pods[0]
            .ns
            .within(|| {
                let addr: SocketAddr = format!("{LOCAL}:53").parse().unwrap();
                let mut s = TcpStream::connect(addr).ok()?;
                s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
                let q = query_bytes(1, "web.shop.svc.cluster.local", 16);
                let mut framed = (q.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&q);
                let batch = framed.repeat(1000);
                let mut sent = 0;
                while s.write_all(&batch).is_ok() {
                    sent += 1000;
                }
                Some((s, sent))
            })
            .map_err(e)?
            .ok_or("could not connect")?;
        std::thread::sleep(Duration::from_secs(12));
        // Closed by the server by now: what it had sent is readable, then the end.
        let (mut conn, sent) = stuffed;
        conn.set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(e)?;
        let mut sink = Vec::new();
        let closed = match conn.read_to_end(&mut sink) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        Ok(format!(
            "{sent} queries pipelined; closed by the server: {closed}"
        ))
    })?;
    stop.store(true, Ordering::Relaxed);
    let _ = loader.join();
    if let Some(d) = daemon.take() {
        d.stop().map_err(e)?;
    }
    drop(knot);
    if std::env::var_os("XDNS_CHAOS_KEEP").is_none() {
        let _ = fs::remove_dir_all(&dir);
    }
    let wrong: u64 = totals.iter().map(|t| t[2]).sum();
    println!(
        "\nTargets: 0 wrong answers in every row ({wrong} in all); 0 failed for kernel-answered \
         names in every row ({} in all).",
        totals[0][1]
    );
    Ok(())
}
