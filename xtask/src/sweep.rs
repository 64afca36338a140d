//! Leftovers of a test run that was killed (a timeout's SIGKILL runs no destructor): the
//! fixtures' network namespaces and bpffs mounts, removed before the next run.
use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, SystemTime},
};

/// Older than any run could be (CI stops one at 90 minutes): not a concurrent run's.
const STALE_AFTER: Duration = Duration::from_secs(2 * 3600);

/// The fixtures' names: `x`, the suite's letter, the creating process's id (mod 10000).
fn ours(name: &str) -> bool {
    let mut c = name.chars();
    c.next() == Some('x')
        && matches!(c.next(), Some('t' | 'k' | 'f' | 'b'))
        && c.next().is_some_and(|d| d.is_ascii_digit())
}

fn stale(path: &Path) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > STALE_AFTER)
}

pub fn stale_fixtures() {
    for e in fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !ours(&name) || !stale(&e.path()) {
            continue;
        }
        let pids = Command::new("ip").args(["netns", "pids", &name]).output();
        if pids.is_ok_and(|o| o.status.success() && o.stdout.is_empty()) {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
            let _ = fs::remove_dir_all(Path::new("/etc/netns").join(&name));
            println!("xtask: removed the stale namespace {name}");
        }
    }
    for e in fs::read_dir("/run").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if ours(&name) && name.ends_with("-bpf") && stale(&e.path()) {
            let _ = Command::new("umount").arg(e.path()).status();
            let _ = fs::remove_dir(e.path());
            println!("xtask: removed the stale bpffs {name}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_fixtures_names() {
        for n in [
            "xt1234e2e-node",
            "xk77api-up",
            "xf6300loop-pod1",
            "xb12-node",
        ] {
            assert!(super::ours(n), "{n}");
        }
        for n in ["xdns", "xt-node", "cni0", "x", "xz12"] {
            assert!(!super::ours(n), "{n}");
        }
    }
}
