//! `xdns status`: the kernel path, live, from the pins alone.
use std::{fmt::Write as _, path::PathBuf, time::Duration};

use anyhow::Context as _;
use dns_common::Counter;
use dns_userspace::dataplane::{maps::Counters, snapshot::Snapshot};

#[derive(clap::Args)]
pub struct StatusArgs {
    #[arg(long, default_value = "/sys/fs/bpf/xdns")]
    pin_dir: PathBuf,
    /// Seconds between samples.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Samples to print (0: until interrupted).
    #[arg(long, default_value_t = 0)]
    count: u64,
}

fn rate(now: u64, then: u64, secs: f64) -> u64 {
    (now.saturating_sub(then) as f64 / secs).round() as u64
}

/// `reason rate, ...` for the reasons that moved (answered aside).
fn passed_by_reason(now: &Counters, then: &Counters, secs: f64) -> String {
    let parts: Vec<String> = Counter::ALL
        .iter()
        .filter(|c| **c != Counter::Answered)
        .filter_map(|c| {
            let r = rate(now.get(*c), then.get(*c), secs);
            (r > 0).then(|| format!("{} {r}", c.name()))
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// One sample's text: totals, occupancy, then a row per attached interface.
pub fn render(now: &Snapshot, then: &Snapshot, secs: f64) -> String {
    let mut out = String::new();
    let (c, p) = (&now.counters, &then.counters);
    let _ = writeln!(
        out,
        "records {}/{} ({:.1}%)   answered {}/s   passed {}/s ({})",
        now.records,
        now.records_max,
        now.records as f64 * 100.0 / f64::from(now.records_max.max(1)),
        rate(c.get(Counter::Answered), p.get(Counter::Answered), secs),
        rate(c.passed(), p.passed(), secs),
        passed_by_reason(c, p, secs),
    );
    let _ = writeln!(
        out,
        "{:<16} {:<8} {:>12} {:>10} {:>14}  passed by reason /s",
        "IFACE", "MODE", "ANSWERED/s", "PASSED/s", "ANSWERED"
    );
    for i in &now.ifaces {
        let before = then
            .ifaces
            .iter()
            .find(|b| b.ifindex == i.ifindex)
            .map(|b| b.counters.clone())
            .unwrap_or_default();
        let mode = if i.present {
            i.mode.to_string()
        } else {
            format!("{}(gone)", i.mode)
        };
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:>12} {:>10} {:>14}  {}",
            i.iface,
            mode,
            rate(
                i.counters.get(Counter::Answered),
                before.get(Counter::Answered),
                secs
            ),
            rate(i.counters.passed(), before.passed(), secs),
            i.counters.get(Counter::Answered),
            passed_by_reason(&i.counters, &before, secs),
        );
    }
    out
}

pub fn run(a: &StatusArgs) -> anyhow::Result<()> {
    let interval = Duration::from_secs_f64(a.interval.max(0.05));
    let read = || {
        Snapshot::read(&a.pin_dir).with_context(|| {
            format!(
                "reading the pins under {} (is the kernel path loaded?)",
                a.pin_dir.display()
            )
        })
    };
    let mut then = read()?;
    let mut n = 0;
    loop {
        std::thread::sleep(interval);
        let now = read()?;
        print!("{}", render(&now, &then, interval.as_secs_f64()));
        println!();
        then = now;
        n += 1;
        if a.count > 0 && n >= a.count {
            return Ok(());
        }
    }
}
