//! The control plane at scale: `services` Services × 5 endpoints from the test API server
//! (objects as a real cluster has them: uids, managedFields, controller-made slices;
//! lists from the watch cache), one in ten headless. Prints first sync, memory, and how long a change
//! takes to reach the kernel map and an answer in a pod: single changes, a burst as a
//! rolling update makes, and the daemon's own time per stage from its debug log.
use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use aya::maps::{HashMap, Map, MapData};
use dns_common::{maps as m, NameKey, NameRecords, RecordKey};
use dns_userspace::{
    dataplane::{
        maps_dir,
        snapshot::{pinned_records_len, pinned_zone},
    },
    model::wire_from_dotted,
};
use tests::{
    apiserver::{
        obj::{self, Endpoint},
        ApiServer,
    },
    client::{peak_rss_kib, query_bytes, rss_kib},
    netns::{Bpffs, Daemon, Topology, SVC4, SVC6},
};

const ENDPOINTS: usize = 5;
const SINGLE_CHANGES: usize = 200;
const BURST: usize = 1000;
const ANSWER_CHANGES: usize = 20;

fn v4(base: u8, n: usize) -> String {
    format!(
        "10.{}.{}.{}",
        base as usize + n / 65536,
        (n / 256) % 256,
        n % 256
    )
}

struct Names {
    services: usize,
}

impl Names {
    fn ns(&self, i: usize) -> String {
        format!("ns-{}", i % (self.services / 100).max(1))
    }
    fn svc(&self, i: usize) -> String {
        format!("svc-{i}")
    }
    fn headless(i: usize) -> bool {
        i.is_multiple_of(10)
    }
    /// Service `i`'s key in the kernel's records map, under the node's `seed`.
    fn key(&self, i: usize, seed: [u64; 2]) -> RecordKey {
        let owner = wire_from_dotted(&format!("{}.{}.svc.cluster.local", self.svc(i), self.ns(i)))
            .expect("a valid name");
        let name = NameKey::of(&owner).expect("a name short enough for a key");
        RecordKey::of(&name, seed).expect("a wire name")
    }
    fn endpoints(&self, i: usize, first: Option<&str>) -> Vec<Endpoint> {
        (0..ENDPOINTS)
            .map(|j| {
                let a = match (j, first) {
                    (0, Some(f)) => f.to_owned(),
                    _ => v4(200, i * ENDPOINTS + j),
                };
                Endpoint::ready(&a).pod(&format!("node-{}", j % 3), &format!("{}-{j}", self.svc(i)))
            })
            .collect()
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// Waits until the records map holds `want` among `key`'s A records.
fn holds(map: &HashMap<MapData, RecordKey, NameRecords>, key: &RecordKey, want: Ipv4Addr) -> bool {
    map.get(key, 0).is_ok_and(|v| {
        v.a[..usize::from(v.a_count).min(v.a.len())]
            .iter()
            .any(|a| *a == want.octets())
    })
}

/// `field=N` values of the daemon's log lines with `message`.
fn log_values(log: &str, message: &str, field: &str) -> Vec<f64> {
    let pat = format!("{field}=");
    log.lines()
        .filter(|l| l.contains(message))
        .filter_map(|l| {
            let rest = &l[l.find(&pat)? + pat.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Seconds into the day of a log line's timestamp (`...T15:58:22.997296Z ...`).
fn log_time(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?;
    let hms = t.get(t.find('T')? + 1..)?.trim_end_matches('Z');
    let mut parts = hms.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The first sync's stages from the daemon's log: from its first line to the last kind
/// listed, the zone built from the lists, and the kernel maps filled.
fn first_sync_stages(log: &str) -> Option<(f64, f64, f64)> {
    let start = log_time(log.lines().next()?)?;
    let listed = log
        .lines()
        .filter(|l| l.contains(" listed "))
        .filter_map(log_time)
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))))?;
    let build = *log_values(log, "first full view", "build_ms").first()?;
    let fill = *log_values(log, "kernel records in sync", "sync_ms").first()?;
    Some((listed - start, build / 1e3, fill / 1e3))
}

/// How long the API server takes to serve the lists the daemon starts from (Services and
/// EndpointSlices at once, from the watch cache), read as raw bytes by a client that
/// parses nothing: the part of the first sync that is the server's and the wire's.
fn raw_lists(topo: &Topology, api: &ApiServer) -> Result<(Duration, usize), String> {
    let addr = api.addr;
    topo.node
        .within(move || {
            let t = Instant::now();
            let fetch = |path: &'static str| {
                std::thread::spawn(move || -> std::io::Result<usize> {
                    use std::io::{Read, Write};
                    let mut s = std::net::TcpStream::connect(addr)?;
                    write!(
                        s,
                        "GET {path}?resourceVersion=0 HTTP/1.0\r\nHost: api\r\n\r\n"
                    )?;
                    let mut body = Vec::new();
                    s.read_to_end(&mut body)?;
                    Ok(body.len())
                })
            };
            let lists = [
                fetch("/api/v1/services"),
                fetch("/apis/discovery.k8s.io/v1/endpointslices"),
            ];
            let mut bytes = 0;
            for l in lists {
                bytes += l
                    .join()
                    .map_err(|_| "list thread panicked".to_owned())?
                    .map_err(|e| e.to_string())?;
            }
            Ok((t.elapsed(), bytes))
        })
        .map_err(|e| e.to_string())?
}

pub fn run(services: usize) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    let names = Names { services };
    let tag = format!("xs{}k", services / 1000);
    let topo = Topology::new(&tag, 1).map_err(e)?;
    let pins = Bpffs::new(&format!("{tag}-bpf")).map_err(e)?;
    let api = ApiServer::start(Some(&topo.node.name)).map_err(e)?;
    let t = Instant::now();
    for n in 0..(services / 100).max(1) {
        api.apply(obj::namespace(&format!("ns-{n}")));
    }
    for i in 0..services {
        let (ns, svc) = (names.ns(i), names.svc(i));
        let ips = if Names::headless(i) {
            vec![]
        } else {
            vec![v4(100, i)]
        };
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        api.apply(obj::service(&ns, &svc, &ips, &[("http", 80)]));
        api.set_endpoints(&ns, &svc, &names.endpoints(i, None), &[("http", 8080)]);
    }
    eprintln!(
        "bench: {services} services in the API server in {:?}",
        t.elapsed()
    );

    let (served, list_bytes) = raw_lists(&topo, &api)?;

    let dir = std::env::temp_dir().join(&tag);
    fs::create_dir_all(&dir).map_err(e)?;
    fs::write(dir.join("kubeconfig"), api.kubeconfig()).map_err(e)?;
    let log_path = dir.join("daemon.log");
    let args = tests::daemon_args::DaemonArgs::kubeconfig(&dir.join("kubeconfig"))
        .listen(&[SVC4, SVC6])
        .iface(&topo.pods[0].host_if)
        .attach("tc")
        .pin_dir(&pins.pin_dir())
        .no_forward()
        .no_loadbalance()
        .build();
    // The stage timings are the daemon's debug lines.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "info,xdns=debug");
    }
    let started = Instant::now();
    let log_file = fs::File::create(&log_path).map_err(e)?;
    let daemon =
        Daemon::start_logging_within(&topo.node, &args, log_file, Duration::from_secs(300))
            .map_err(e)?;
    let first_sync = started.elapsed();
    let records = pinned_records_len(&pins.pin_dir()).map_err(|e| e.to_string())?;
    let rss_synced = rss_kib(daemon.pid()).unwrap_or(0);
    let map_bytes = super::map_memlock(&maps_dir(&pins.pin_dir()).join(m::RECORDS));
    let data =
        MapData::from_pin(maps_dir(&pins.pin_dir()).join(m::RECORDS)).map_err(|e| e.to_string())?;
    let map: HashMap<_, RecordKey, NameRecords> =
        HashMap::try_from(Map::HashMap(data)).map_err(|e| e.to_string())?;
    let seed = pinned_zone(&pins.pin_dir())
        .map_err(|e| e.to_string())?
        .ok_or("no zone pinned after the first sync")?
        .seed;
    let startup_log = fs::read_to_string(&log_path).map_err(e)?;
    let log_mark = startup_log.len();
    let stages = first_sync_stages(&startup_log);

    // Single changes, one at a time: a ClusterIP Service's address.
    let mut single = Vec::new();
    for k in 0..SINGLE_CHANGES {
        let i = ((k * 37) % services) | 1;
        let ip = v4(150, k);
        let want: Ipv4Addr = ip.parse().unwrap();
        let t0 = Instant::now();
        api.apply(obj::service(
            &names.ns(i),
            &names.svc(i),
            &[&ip],
            &[("http", 80)],
        ));
        while !holds(&map, &names.key(i, seed), want) {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(format!("change {k} not in the kernel after 10 s"));
            }
            // Polled, not spun: on 2 cores a spinning probe takes one from the daemon.
            std::thread::sleep(Duration::from_micros(100));
        }
        single.push(t0.elapsed().as_secs_f64() * 1e3);
    }

    // A change seen by a client: a query from the pod until the answer has the new address.
    let mut answered = Vec::new();
    let pod = &topo.pods[0].ns;
    for k in 0..ANSWER_CHANGES {
        let i = ((k * 53 + 7) % services) | 1;
        let ip = v4(160, k);
        let want: Ipv4Addr = ip.parse().unwrap();
        let q = query_bytes(
            k as u16,
            &format!("{}.{}.svc.cluster.local", names.svc(i), names.ns(i)),
            1,
        );
        let t0 = Instant::now();
        api.apply(obj::service(
            &names.ns(i),
            &names.svc(i),
            &[&ip],
            &[("http", 80)],
        ));
        loop {
            let r = pod
                .udp_exchange(
                    SVC4.parse::<IpAddr>().unwrap(),
                    53,
                    &q,
                    Duration::from_secs(1),
                )
                .unwrap_or_default();
            if r.windows(4).any(|w| w == want.octets()) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(format!("answer change {k} not seen after 10 s"));
            }
        }
        answered.push(t0.elapsed().as_secs_f64() * 1e3);
    }

    // A burst as a rolling update makes it: 1000 headless Services' slices within a second,
    // each timed from its write to the kernel map holding the new address.
    let burst: Vec<(usize, Ipv4Addr)> = (0..BURST)
        .map(|k| ((k * 10) % services, v4(170, k).parse().unwrap()))
        .collect();
    let written: Vec<std::sync::Mutex<Option<Instant>>> =
        (0..BURST).map(|_| std::sync::Mutex::new(None)).collect();
    let done = AtomicBool::new(false);
    let mut burst_ms = Vec::new();
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen: Vec<Option<f64>> = vec![None; BURST];
            let deadline = Instant::now() + Duration::from_secs(30);
            while seen.iter().any(Option::is_none) && Instant::now() < deadline {
                for (k, (i, want)) in burst.iter().enumerate() {
                    if seen[k].is_some() {
                        continue;
                    }
                    let Some(at) = *written[k].lock().unwrap() else {
                        continue;
                    };
                    if holds(&map, &names.key(*i, seed), *want) {
                        seen[k] = Some(at.elapsed().as_secs_f64() * 1e3);
                    }
                }
                if done.load(Ordering::Relaxed) && seen.iter().all(Option::is_some) {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            seen
        });
        let start = Instant::now();
        for (k, (i, want)) in burst.iter().enumerate() {
            let at = start + Duration::from_secs(1) * k as u32 / BURST as u32;
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let eps = names.endpoints(*i, Some(&want.to_string()));
            *written[k].lock().unwrap() = Some(Instant::now());
            api.set_endpoints(&names.ns(*i), &names.svc(*i), &eps, &[("http", 8080)]);
        }
        done.store(true, Ordering::Relaxed);
        burst_ms = watcher
            .join()
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect();
    });
    if burst_ms.len() < BURST {
        return Err(format!(
            "burst: {} of {BURST} changes reached the kernel",
            burst_ms.len()
        ));
    }
    let rss_changed = rss_kib(daemon.pid()).unwrap_or(0);
    let rss_peak = peak_rss_kib(daemon.pid()).unwrap_or(0);
    daemon.stop().map_err(e)?;
    let log = fs::read_to_string(&log_path).map_err(e)?;
    let log = &log[log_mark.min(log.len())..];
    let mut event_us = log_values(log, "change programmed", "event_us");
    let mut apply_us = log_values(log, "zone changed", "apply_us");
    let mut kernel_us = log_values(log, "kernel entries written", "kernel_us");
    let mut batch = log_values(log, "zone changed", "changes");

    println!(
        "\n### At scale: {services} Services × {ENDPOINTS} endpoints from the test API server\n"
    );
    println!("| measure | p50 | p99 |\n|---|---:|---:|");
    let row = |what: &str, v: &mut Vec<f64>, unit: &str, scale: f64| {
        println!(
            "| {what} | {:.2} {unit} | {:.2} {unit} |",
            pct(v, 0.5) * scale,
            pct(v, 0.99) * scale
        )
    };
    row(
        &format!("API write → kernel map, {SINGLE_CHANGES} single changes"),
        &mut single,
        "ms",
        1.0,
    );
    row(
        &format!("API write → kernel map, burst of {BURST} slice changes in 1 s"),
        &mut burst_ms,
        "ms",
        1.0,
    );
    row(
        &format!("API write → answer in a pod, {ANSWER_CHANGES} changes"),
        &mut answered,
        "ms",
        1.0,
    );
    row(
        "watch event arrived → kernel map written (daemon)",
        &mut event_us,
        "ms",
        1e-3,
    );
    row("  stage: zone update (daemon)", &mut apply_us, "ms", 1e-3);
    row(
        "  stage: kernel writes (daemon)",
        &mut kernel_us,
        "ms",
        1e-3,
    );
    row("  changes per batch", &mut batch, "", 1.0);
    println!("\n| measure | value |\n|---|---:|");
    println!(
        "| first full sync to ready (lists + zone + map fill + attach) | {:.2} s |",
        first_sync.as_secs_f64()
    );
    if let Some((lists, build, fill)) = stages {
        println!("|   stage: lists received and parsed (daemon log) | {lists:.2} s |");
        println!(
            "|     of which the API server serving them ({:.0} MiB, raw GETs, nothing parsed) | {:.2} s |",
            list_bytes as f64 / 1048576.0,
            served.as_secs_f64()
        );
        println!("|   stage: zone built from them (daemon log) | {build:.2} s |");
        println!("|   stage: kernel maps filled (daemon log) | {fill:.2} s |");
    }
    println!("| kernel records | {records} |");
    println!(
        "| daemon RSS after sync | {:.1} MiB ({:.0} bytes per Service) |",
        rss_synced as f64 / 1024.0,
        rss_synced as f64 * 1024.0 / services as f64
    );
    println!(
        "| daemon RSS after {} changes | {:.1} MiB |",
        SINGLE_CHANGES + ANSWER_CHANGES + BURST,
        rss_changed as f64 / 1024.0
    );
    println!(
        "| daemon peak RSS (lists parsed, zone built) | {:.1} MiB |",
        rss_peak as f64 / 1024.0
    );
    println!(
        "| records map memory (kernel memlock) | {:.1} MiB ({:.0} bytes per record) |",
        map_bytes as f64 / 1048576.0,
        map_bytes as f64 / records.max(1) as f64
    );
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}
