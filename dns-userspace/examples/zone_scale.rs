//! The incremental zone's cost at scale, without the API or the kernel: memory after the
//! first full view and the time one change takes (`apply` + kernel delta), for N Services
//! × 5 endpoints (one in ten headless). `CHANGES` sets how many changes are timed
//! (`SINGLES` fewer single ones), then batches of 30 EndpointSlice changes;
//! `--oracle` measures the one-pass build instead.
//! `cargo run --release -p dns-userspace --example zone_scale -- 100000`
use std::time::Instant;

use dns_userspace::model::{
    live::{relists, Change, LiveZone, Object},
    view::*,
    KernelEntries, Records, ZoneConfig,
};

/// Resident memory after handing freed pages back (as the daemon does after a list).
fn rss_kib() -> u64 {
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn ip(base: u8, n: usize) -> std::net::IpAddr {
    format!(
        "10.{}.{}.{}",
        base as usize + n / 65536,
        n / 256 % 256,
        n % 256
    )
    .parse()
    .expect("an address")
}

fn port(name: &str, port: u16) -> PortView {
    PortView {
        name: name.into(),
        protocol: "TCP",
        port,
    }
}

fn service(i: usize, namespaces: usize, addr: u8) -> (ServiceView, SliceView) {
    let ns = format!("ns-{}", i % namespaces);
    let name = format!("svc-{i}");
    let kind = if i.is_multiple_of(10) {
        ServiceKind::Headless
    } else {
        ServiceKind::ClusterIp(Box::new([ip(addr, i)]))
    };
    let svc = ServiceView {
        namespace: ns.as_str().into(),
        name: name.as_str().into(),
        kind,
        ports: Box::new([port("http", 80)]),
        publish_not_ready: false,
        labels: Default::default(),
    };
    let slice = SliceView {
        namespace: ns.into(),
        name: format!("{name}-abcde").into(),
        service: name.into(),
        endpoints: (0..5)
            // No pod names: the source keeps them only under `endpoint_pod_names`.
            .map(|j| EndpointView::new(ip(200, i * 5 + j), true, None, None))
            .collect(),
        ports: Box::new([port("http", 8080)]),
    };
    (svc, slice)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let changes: usize = std::env::var("CHANGES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1000);
    let namespaces = (n / 100).max(1);
    let before = rss_kib();
    let mut v = ClusterView::default();
    for k in 0..namespaces {
        v.namespaces.push(NamespaceView {
            name: format!("ns-{k}").into(),
            labels: Default::default(),
        });
    }
    for i in 0..n {
        let (s, e) = service(i, namespaces, 100);
        v.services.push(s);
        v.slices.push(e);
    }
    let view_kib = rss_kib() - before;
    let cfg = ZoneConfig::new("cluster.local", 30).expect("a zone");
    if std::env::args().any(|a| a == "--oracle") {
        let r = Records::build(&cfg, &v);
        println!(
            "one-pass build: {} owners, RSS {} KiB",
            r.len(),
            rss_kib() - before
        );
        return;
    }
    let t = Instant::now();
    let mut zone = LiveZone::new(&cfg);
    zone.load(relists(v));
    let built = t.elapsed();
    let zone_kib = rss_kib() - before;
    let t = Instant::now();
    let full = zone.records().kernel_view();
    println!(
        "{n} services: first view {built:?}, kernel view {:?} ({} names, {} targets); \
         RSS: objects as views {view_kib} KiB, with the zone {zone_kib} KiB",
        t.elapsed(),
        full.records.len(),
        full.targets.len()
    );
    drop(full);
    // What the daemon's first map fill reads: every entry, in the maps' own order.
    let t = Instant::now();
    let r = zone.records();
    let entries = KernelEntries::records(r).count() + KernelEntries::targets(r).count();
    println!("kernel entries read: {entries} in {:?}", t.elapsed());
    let t = Instant::now();
    let names = KernelEntries::record_names(r).count();
    println!("record names read: {names} in {:?}", t.elapsed());
    let t = Instant::now();
    let targets = KernelEntries::targets(r).count();
    println!("targets read: {targets} in {:?}", t.elapsed());
    let mut lat = Vec::new();
    for k in 0..changes.min(
        std::env::var("SINGLES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(changes),
    ) {
        // A new address every time: 37 is prime to n, so the first n changes hit n Services.
        let (s, _) = service(((k * 37) % n) | 1, namespaces, 150 + (k / n) as u8);
        // The answer path holds the last published zone, as in the daemon: a change
        // copies what it shares with that snapshot.
        let _published = zone.records().clone();
        let t = Instant::now();
        let touched = zone.apply([Change::Upsert(Object::Service(s))]);
        let _ = zone.records().kernel_delta(&touched);
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "{changes} Service changes (apply + kernel delta): p50 {:?}, p99 {:?}; RSS after {} KiB",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        rss_kib() - before
    );
    // A rolling update's burst: batches of 30 EndpointSlice changes (new endpoint
    // addresses), as the daemon coalesces them.
    let mut lat = Vec::new();
    for b in 0..(changes / 30).max(1) {
        let batch: Vec<Change> = (0..30)
            .map(|k| {
                let (_, mut e) = service(((b * 30 + k) * 37) % n, namespaces, 100);
                e.endpoints = (0..e.endpoints.len())
                    .map(|j| EndpointView::new(ip(210, (b * 30 + k) * 5 + j), true, None, None))
                    .collect();
                Change::Upsert(Object::Slice(e))
            })
            .collect();
        let _published = zone.records().clone();
        let t = Instant::now();
        let touched = zone.apply(batch);
        let _ = zone.records().kernel_delta(&touched);
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "{} batches of 30 slice changes: p50 {:?}, p99 {:?}",
        lat.len(),
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
}
