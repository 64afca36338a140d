//! CPU time a server spent: its processes (from /proc) and the BPF programs answering on
//! the node's end of the pod's veth (the kernel's run-time statistics).
use std::{fs, time::Duration};

use aya::programs::loaded_programs;
use tests::netns::Topology;

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64
}

/// The fields of /proc/<pid>/stat after the command name (which may hold spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The processes below `pid`, at any depth (NSD's first process becomes its zone
/// transfer process; its servers are grandchildren).
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    // Field 4 of stat, the second after the name: the parent.
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, stat_fields(p)?.get(1)?.parse::<u32>().ok()?)))
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// User and system time of `pid` and the processes below it so far.
fn processes(pid: u32) -> Duration {
    let ticks: u64 = std::iter::once(pid)
        .chain(descendants(pid))
        .filter_map(stat_fields)
        // utime and stime: fields 14 and 15, the 12th and 13th after the name.
        .map(|f| {
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            n(11) + n(12)
        })
        .sum();
    Duration::from_nanos(ticks * 1_000_000_000 / ticks_per_second())
}

/// The XDP program on the node's end of the pod's veth (ours, or Knot's), and our tc
/// program: the ids whose run time counts as the server's.
fn node_programs(topo: &Topology) -> Vec<u32> {
    let out = topo
        .node
        .output("ip", &["-d", "link", "show", "dev", &topo.pods[0].host_if])
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let words: Vec<&str> = out.split_whitespace().collect();
    let mut ids: Vec<u32> = words
        .windows(3)
        .filter(|w| w[0].starts_with("prog/xdp") && w[1] == "id")
        .filter_map(|w| w[2].parse().ok())
        .collect();
    ids.extend(
        loaded_programs()
            .filter_map(|p| p.ok())
            .filter(|p| p.name_as_str() == Some(dns_common::programs::TC))
            .map(|p| p.id()),
    );
    ids
}

/// Run time of the programs `ids` so far (kept while run-time statistics are on).
fn programs(ids: &[u32]) -> Duration {
    loaded_programs()
        .filter_map(|p| p.ok())
        .filter(|p| ids.contains(&p.id()))
        .map(|p| p.run_time())
        .sum()
}

/// A server's CPU time so far: process `pid` (and those below it) and the programs that
/// answer on the node's end of the veth.
pub struct Meter {
    pid: u32,
    ids: Vec<u32>,
    start: Duration,
}

impl Meter {
    pub fn start(topo: &Topology, pid: u32) -> Self {
        let ids = node_programs(topo);
        let start = processes(pid) + programs(&ids);
        Self { pid, ids, start }
    }

    pub fn spent(&self) -> Duration {
        (processes(self.pid) + programs(&self.ids)).saturating_sub(self.start)
    }
}
