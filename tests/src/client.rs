//! Real clients run inside a namespace: dig and friends.
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// Runs `program args` in `ns`, asserting success; returns its trimmed stdout.
pub fn run(ns: &Netns, program: &str, args: &[&str]) -> String {
    let out = ns.output(program, args).expect("spawn");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `dig +short` against `server`: the answer's data, one record a line.
pub fn dig(ns: &Netns, server: &str, extra: &[&str]) -> String {
    let at = format!("@{server}");
    let mut args = vec![at.as_str(), "+short", "+time=2", "+tries=1"];
    args.extend_from_slice(extra);
    run(ns, "dig", &args)
}

/// The RCODE dig reports (`NOERROR`, `NXDOMAIN`, `SERVFAIL`...), or `NO REPLY`.
pub fn dig_status(ns: &Netns, server: &str, extra: &[&str]) -> String {
    let at = format!("@{server}");
    let mut args = vec![at.as_str(), "+time=1", "+tries=1", "+noall", "+comments"];
    args.extend_from_slice(extra);
    let out = ns.output("dig", &args).expect("spawn dig");
    if !out.status.success() {
        return "NO REPLY".into();
    }
    String::from_utf8_lossy(&out.stdout)
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("?")
        .to_owned()
}

/// Polls `f` until it returns `want` (up to `within`), asserting it does.
pub fn eventually<T: PartialEq + std::fmt::Debug>(
    within: Duration,
    want: T,
    mut f: impl FnMut() -> T,
) {
    let deadline = Instant::now() + within;
    loop {
        let got = f();
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "still {got:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The packet counters of an nftables chain (`inet xdns_test <chain>`), in rule order.
pub fn nft_counters(ns: &Netns, chain: &str) -> Vec<u64> {
    let json = run(
        ns,
        "nft",
        &["-j", "list", "chain", "inet", "xdns_test", chain],
    );
    json.match_indices("\"packets\":")
        .map(|(at, m)| {
            json[at + m.len()..]
                .trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .expect("a packet count")
        })
        .collect()
}

/// The HTTP status of `GET http://127.0.0.1:<port><path>` from inside `ns`, as kubelet on
/// the host would probe.
pub fn http_status(ns: &Netns, port: u16, path: &str) -> String {
    let url = format!("http://127.0.0.1:{port}{path}");
    let out = ns
        .output(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "2",
                &url,
            ],
        )
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The body of `GET http://127.0.0.1:<port><path>` from inside `ns`.
pub fn http_get(ns: &Netns, port: u16, path: &str) -> String {
    let url = format!("http://127.0.0.1:{port}{path}");
    run(ns, "curl", &["-s", "--fail", "--max-time", "5", &url])
}

/// A plain DNS query message (RD set, class IN) for `name` (dotted) and `qtype`.
pub fn query_bytes(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.trim_end_matches('.').split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m
}

/// Runs one nft command in `ns`, written as nft's own command line
/// (`add rule inet xdns_test in udp dport 53 counter`).
pub fn nft(ns: &Netns, command: &str) {
    let args: Vec<&str> = command.split_whitespace().collect();
    run(ns, "nft", &args);
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// The most `pid` has ever had resident (KiB): what a memory limit must allow.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
