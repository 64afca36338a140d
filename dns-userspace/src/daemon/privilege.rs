//! Why the kernel refused: the capabilities and seccomp mode behind an EPERM from `bpf()`.
/// What a refused `bpf()` usually means in a pod, said next to the bare errno: which
/// capabilities the process lacks, and whether seccomp is in the way.
pub(super) fn privilege_hint() -> String {
    let (have, missing) = missing_capabilities();
    let seccomp = seccomp_mode();
    let mut hint = String::from("the kernel refused: ");
    if !missing.is_empty() {
        hint += &format!(
            "capabilities {} missing (have {have}); ",
            missing.join(", ")
        );
    }
    if seccomp == Some(2) {
        hint += "a seccomp filter is active (the runtime's default profile refuses bpf(): \
                 set seccompProfile Unconfined, or a Localhost profile allowing bpf and \
                 perf_event_open); ";
    }
    hint + "the DaemonSet needs BPF, NET_ADMIN and PERFMON (docs/node.md, deploy/)"
}

/// The capabilities the daemon needs that its effective set lacks, and the set in hex.
fn missing_capabilities() -> (String, Vec<&'static str>) {
    const NEEDED: [(&str, u32); 3] = [("NET_ADMIN", 12), ("PERFMON", 38), ("BPF", 39)];
    let eff = status_field("CapEff:").and_then(|v| u64::from_str_radix(&v, 16).ok());
    let missing = NEEDED
        .iter()
        .filter(|(_, bit)| eff.is_some_and(|e| e & (1 << bit) == 0))
        .map(|(name, _)| *name)
        .collect();
    (eff.map_or("unknown".into(), |e| format!("{e:#x}")), missing)
}

/// `Seccomp:` of /proc/self/status: 0 none, 1 strict, 2 filter.
fn seccomp_mode() -> Option<u32> {
    status_field("Seccomp:")?.parse().ok()
}

fn status_field(name: &str) -> Option<String> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
}
