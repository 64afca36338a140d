//! `cargo xtask bench`: the kernel path and userspace measured in one run, on the same
//! namespaces and the same names, printed as a Markdown table.
//!
//! - Program cost: BPF_PROG_TEST_RUN with a large repeat count, for the XDP and tc
//!   programs on an A query, beside an XDP program that only passes.
//! - Throughput: kxdpgun (AF_XDP, Debian's knot) in a pod namespace floods the service
//!   address; answered queries per second and the share the kernel answered, per attach
//!   mode and for userspace with no program attached.
//! - Latency: dnsperf at a moderate rate, per-query latencies (`-v`), sorted.
mod bulk;
mod cache;
mod chaos;
mod flood;
mod hot;
mod ndots;
mod peers;
mod proc_cpu;
mod program;
mod scale;

use std::{fs, process::Command, time::Duration};

use dns_userspace::{
    model::{Records, ZoneConfig},
    source::manifests,
};

const NAMES: &[&str] = &[
    "web.shop.svc.cluster.local",
    "cart.shop.svc.cluster.local",
    "kubernetes.default.svc.cluster.local",
    "kube-dns.kube-system.svc.cluster.local",
];

fn main() {
    if let Err(e) = run() {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut seconds = 5u64;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seconds N")?
            }
            "--only" => only = Some(args.next().ok_or(
                "--only program|hot|namespaces|bulk|scale|scale-10k|scale-100k|cache|ndots|chaos",
            )?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root".into());
    }
    // Servers that fork (NSD) leave their children to us when they stop, to reap.
    // SAFETY: a process attribute of our own.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let kernel = sh("uname", &["-r"]);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("## xdns benchmark\n\nkernel {kernel}, {cpus} CPUs, {seconds} s per load run.\n");
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if run("program") {
        program::program_cost()?;
    }
    if run("hot") {
        hot::under_flood(seconds)?;
    }
    if run("namespaces") {
        flood::on_namespaces(seconds)?;
    }
    if run("bulk") {
        bulk::bulk_tcp(seconds)?;
    }
    if run("scale") || run("scale-10k") {
        scale::run(10_000)?;
    }
    if run("scale") || run("scale-100k") {
        scale::run(100_000)?;
    }
    if run("cache") {
        cache::cache_vs_unbound(seconds)?;
    }
    if run("ndots") {
        ndots::ndots_workload(seconds)?;
    }
    if run("chaos") {
        chaos::run()?;
    }
    Ok(())
}

/// A child process stopped on drop: SIGTERM first, so a server that forks (NSD) takes
/// its children down with it, then SIGKILL if it lingers.
struct Proc(std::process::Child);
impl Drop for Proc {
    fn drop(&mut self) {
        // Its own children come back to us (the bench is a subreaper) and are reaped here.
        let children = proc_cpu::descendants(self.0.id());
        // SAFETY: a signal to our own child, which is not reaped yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let mut done = false;
        for _ in 0..30 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                done = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !done {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
        for pid in children {
            // SAFETY: signalling and reaping processes the stopped server left to us (a
            // process not ours to reap returns ECHILD at once).
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Knot in the upstream namespace (10.2.0.2), authoritative for `example.test` with
/// `h0..h<names>` A records.
fn start_knot(
    up: &tests::netns::Netns,
    dir: &std::path::Path,
    names: usize,
) -> Result<Proc, String> {
    use std::process::Stdio;
    let mut zone = String::from("$ORIGIN example.test.\n$TTL 300\n@ SOA ns admin 1 3600 900 86400 60\n@ NS ns\nns A 10.2.0.2\n");
    for i in 0..names {
        zone.push_str(&format!("h{i} A 192.0.2.{}\n", i % 250 + 1));
    }
    fs::write(dir.join("example.test.zone"), zone).map_err(|e| e.to_string())?;
    let d = dir.display();
    fs::write(
        dir.join("knot.conf"),
        format!("server:\n    rundir: \"{d}\"\n    listen: 10.2.0.2@53\ndatabase:\n    storage: \"{d}\"\nzone:\n  - domain: example.test\n    file: \"{d}/example.test.zone\"\n"),
    )
    .map_err(|e| e.to_string())?;
    let knot = Proc(
        up.cmd("knotd")
            .args(["-c", &dir.join("knot.conf").display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("knotd: {e}"))?,
    );
    // Up when it answers.
    for _ in 0..50 {
        let ok = up
            .output(
                "dig",
                &[
                    "@10.2.0.2",
                    "+short",
                    "+time=1",
                    "+tries=1",
                    "h0.example.test",
                ],
            )
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        if ok {
            return Ok(knot);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("knotd did not come up".into())
}

/// The program that only passes, loaded: the baseline every per-packet figure is read
/// against.
fn load_pass(ebpf: &mut aya::Ebpf) -> Result<&mut aya::programs::Xdp, String> {
    let pass: &mut aya::programs::Xdp = ebpf
        .program_mut(dns_common::programs::PASS)
        .ok_or("no pass program")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    pass.load().map_err(|e| e.to_string())?;
    Ok(pass)
}

/// The kernel's `memlock` for a pinned map (what it charges for the map's memory).
pub(crate) fn map_memlock(pin: &std::path::Path) -> u64 {
    aya::maps::MapData::from_pin(pin).map_or(0, |d| memlock_of(&d))
}

/// The kernel's `memlock` for a map: for a hash map without preallocation, its buckets
/// plus each element as it accounts it (header, key and value).
pub(crate) fn memlock_of(data: &aya::maps::MapData) -> u64 {
    use std::os::fd::{AsFd, AsRawFd};
    let fd = data.fd().as_fd().as_raw_fd();
    fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("memlock:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn example_records() -> Result<Records, String> {
    let dir = tests::fixture::example_manifests();
    let services = manifests::load_dir(&dir).map_err(|e| e.to_string())?;
    Ok(Records::build(
        &ZoneConfig::new("cluster.local", 30).map_err(|e| e.to_string())?,
        &services,
    ))
}

fn a_query(name: &str, id: u16) -> Vec<u8> {
    let mut m = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    // OPT, 1232, no options: what dig and kdig send, less the cookie.
    m.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
    m
}
