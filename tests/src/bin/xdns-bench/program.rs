//! Program cost: BPF_PROG_TEST_RUN per packet kind, for the XDP and tc programs, beside
//! an XDP program that only passes; query-log sampling on and off; verified instructions.
use std::{net::IpAddr, time::Duration};

use dns_common::programs;
use dns_userspace::dataplane::{self, maps::KernelMaps};
use tests::{
    netns::SVC4,
    packet::udp_frame,
    testrun::{self, Hook},
};

use crate::{a_query, example_records, NAMES};

pub fn program_cost() -> Result<(), String> {
    const RUNS: u32 = 200_000;
    let mut ebpf = dataplane::load(None).map_err(|e| e.to_string())?;
    crate::load_pass(&mut ebpf)?;
    let mut maps = KernelMaps::take(&mut ebpf).map_err(|e| e.to_string())?;
    let svc: IpAddr = SVC4.parse().unwrap();
    maps.sync_service_addrs(&[svc]).map_err(|e| e.to_string())?;
    let records = example_records()?;
    maps.publish(&records.kernel_view(), true)
        .map_err(|e| e.to_string())?;
    let to_svc = |q: Vec<u8>| udp_frame("10.1.1.2".parse().unwrap(), svc, 40000, 53, &q);
    let frame = to_svc(a_query(NAMES[0], 1));
    // Out of the zone: what the kernel passes to the forwarder.
    let miss = to_svc(a_query("api.example.com", 1));
    let nx = to_svc(a_query("api.example.com.shop.svc.cluster.local", 1));
    let pod = to_svc(a_query("10-244-1-5.shop.pod.cluster.local", 1));
    let mut ptr = a_query("7.12.96.10.in-addr.arpa", 1);
    let qtype_at = ptr.len() - 11 - 4;
    ptr[qtype_at + 1] = 12;
    let ptr = to_svc(ptr);
    // One run per syscall, on a fresh copy of the frame each time: with a repeat count the
    // kernel reruns the program on the frame the previous run rewrote (an answer, which
    // then passes). The kernel times the program run alone, not the syscall.
    // Sampled answers for the query log, drained after each run as the daemon drains them.
    let mut ring = aya::maps::RingBuf::try_from(
        ebpf.take_map(dns_common::maps::KERNEL_LOG)
            .ok_or("no kernel log ring")?,
    )
    .map_err(|e| e.to_string())?;
    let logged = std::cell::Cell::new(0u64);
    // Before the statistics are on: they would add their own clock reads to every run.
    let repeat = |ebpf: &aya::Ebpf, name: &str, frame: &[u8]| -> Result<f64, String> {
        Ok(testrun::repeated(ebpf, name, frame, 1_000_000)?.as_nanos() as f64)
    };
    let base_rep = repeat(&ebpf, programs::PASS, &frame)?;
    let miss_rep = repeat(&ebpf, programs::XDP, &miss)?;
    // The kernel's own run-time statistics, on while this descriptor is open: `sched_clock`
    // around the program (tail calls included), without BPF_PROG_TEST_RUN's timer.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| e.to_string())?;
    let mut time = |name: &str, frame: &[u8], answered: bool| -> Result<Cost, String> {
        let hook = if name.starts_with("xdns_tc") {
            Hook::Tc
        } else {
            Hook::Xdp
        };
        let want = if answered {
            hook.answered()
        } else {
            hook.passed()
        };
        let mut total = Duration::ZERO;
        let mut verdicts = std::collections::BTreeSet::new();
        let before = run_stats(&ebpf, name)?;
        for _ in 0..RUNS {
            let r = testrun::run(&ebpf, name, frame)?;
            total += r.duration;
            verdicts.insert(r.action);
            while ring.next().is_some() {
                logged.set(logged.get() + 1);
            }
        }
        let after = run_stats(&ebpf, name)?;
        if verdicts != [want].into() {
            return Err(format!("{name}: verdicts {verdicts:?}, expected {want}"));
        }
        let runs = after.1 - before.1;
        if runs != u64::from(RUNS) {
            return Err(format!("{name}: the kernel counted {runs} runs of {RUNS}"));
        }
        Ok(Cost {
            timed: total.as_nanos() as f64 / RUNS as f64,
            stats: (after.0 - before.0).as_nanos() as f64 / runs as f64,
        })
    };
    let base = time(programs::PASS, &frame, false)?;
    println!("### Program cost (BPF_PROG_TEST_RUN, mean of {RUNS} single runs)\n");
    println!("Each run gets a fresh copy of the frame, so answered rows are measured as they run.");
    println!(
        "`test_run` is BPF_PROG_TEST_RUN's own timer (its overhead shows in the baseline row);"
    );
    println!(
        "`bpf_stats` is the kernel's run-time statistics (`BPF_ENABLE_STATS`) around the program"
    );
    println!("alone, tail calls included: the per-packet figure the targets are read against.\n");
    println!("| program | packet | test_run ns | × XDP_PASS | bpf_stats ns | × XDP_PASS |\n|---|---|---:|---:|---:|---:|");
    println!(
        "| xdns_pass (baseline) | A query | {:.0} | 1.0 | {:.0} | 1.0 |",
        base.timed, base.stats
    );
    for (prog, pkt, f, answered) in [
        (programs::XDP, "A query, answered", &frame, true),
        (programs::XDP, "A query, out of zone (passed)", &miss, false),
        (programs::XDP, "A query, search-path NXDOMAIN", &nx, true),
        (programs::XDP, "pod name A (tail call)", &pod, true),
        (programs::XDP, "PTR of a cluster IP (tail call)", &ptr, true),
        (programs::TC, "A query, answered", &frame, true),
    ] {
        let c = time(prog, f, answered)?;
        println!(
            "| {prog} | {pkt} | {:.0} | {:.1} | {:.0} | {:.1} |",
            c.timed,
            c.timed / base.timed.max(1.0),
            c.stats,
            c.stats / base.stats.max(1.0)
        );
    }
    // `--log-kernel-sample`: the same answer with sampling off (the default), one in 64,
    // and every answer written to the ring.
    println!("\n| query log sampling (`--log-kernel-sample`) | xdns_xdp, A query answered, bpf_stats ns | answers logged |\n|---|---:|---:|");
    for n in [0u32, 64, 1] {
        maps.set_log_sample(n);
        maps.refresh().map_err(|e| e.to_string())?;
        let before = logged.get();
        let ns = time(programs::XDP, &frame, true)?.stats;
        let got = logged.get() - before;
        if n == 1 && got != u64::from(RUNS) {
            return Err(format!("sampling 1 in 1 logged {got} of {RUNS} answers"));
        }
        if n == 0 && got != 0 {
            return Err(format!("sampling off logged {got} answers"));
        }
        let what = match n {
            0 => "off (default)".to_owned(),
            n => format!("one in {n}"),
        };
        println!("| {what} | {ns:.0} | {got} of {RUNS} |");
    }
    maps.set_log_sample(0);
    maps.refresh().map_err(|e| e.to_string())?;
    println!("\nIn a loop of 1M runs (valid only where the frame is left unchanged): XDP_PASS {base_rep:.0} ns, xdns_xdp out of zone {miss_rep:.0} ns ({:.1}×).", miss_rep / base_rep.max(1.0));
    let per_record = record_bytes()?;
    println!("\nRecords map: {per_record:.0} bytes per record (the kernel's memlock over {RECORD_SAMPLE} entries, buckets excluded).");
    for (prog, n) in dataplane::verified_insns(&ebpf) {
        println!(
            "\nverified_insns {prog}: {}",
            n.map(|n| n.to_string()).unwrap_or("?".into())
        );
    }
    println!();
    Ok(())
}

/// One row's mean cost per packet, by both clocks.
struct Cost {
    timed: f64,
    stats: f64,
}

/// The program's accumulated run time and run count (kept while stats are enabled).
fn run_stats(ebpf: &aya::Ebpf, name: &str) -> Result<(Duration, u64), String> {
    let info = ebpf
        .program(name)
        .ok_or(format!("no program {name}"))?
        .info()
        .map_err(|e| format!("{name}: {e}"))?;
    Ok((info.run_time(), info.run_count()))
}

/// Entries written to measure a record's cost in the map.
const RECORD_SAMPLE: usize = 100_000;

/// What one entry of the records map costs, as the kernel accounts it: memlock of a fresh
/// map with [`RECORD_SAMPLE`] entries less that of the empty map, per entry.
fn record_bytes() -> Result<f64, String> {
    use aya::maps::Map;
    use dns_common::{NameRecords, RecordKey};
    let mut ebpf = dataplane::load(None).map_err(|e| e.to_string())?;
    let Some(Map::HashMap(data)) = ebpf.take_map(dns_common::maps::RECORDS) else {
        return Err("the records map is not a hash map".into());
    };
    let empty = crate::memlock_of(&data);
    let keys: Vec<RecordKey> = (0..RECORD_SAMPLE as u64)
        .map(|i| RecordKey {
            h: [i, i.wrapping_mul(0x9e37_79b9_7f4a_7c15)],
        })
        .collect();
    let values = vec![NameRecords::empty(30); RECORD_SAMPLE];
    for (k, v) in keys.chunks(1024).zip(values.chunks(1024)) {
        dns_userspace::dataplane::batch::update(&data, k, v).map_err(|e| e.source.to_string())?;
    }
    let full = crate::memlock_of(&data);
    if full <= empty {
        return Err(format!("memlock did not grow ({empty} -> {full})"));
    }
    Ok((full - empty) as f64 / RECORD_SAMPLE as f64)
}
