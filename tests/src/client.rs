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
