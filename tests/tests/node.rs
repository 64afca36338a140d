//! The daemon as a node agent: restarts that drop nothing, clean uninstall, lameduck,
//! config reload, metrics.
use std::{
    net::UdpSocket,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use aya::programs::{tc::SchedClassifier, TcAttachType};
use dns_common::Counter;
use hickory_proto::op::{Message, ResponseCode};
use tests::{
    fixture::fixture,
    netns::{Daemon, Netns, SVC4},
};

/// What a load run saw.
#[derive(Debug, Default)]
struct Load {
    sent: u64,
    answered: u64,
    lost: u64,
    wrong: u64,
}

/// Sends queries for `web.shop.svc.cluster.local` from `pod`, one at a time, until `stop`:
/// every query must get the right answer within 300 ms.
fn load(pod: &Netns, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Load> {
    let name = pod.name.clone();
    std::thread::spawn(move || {
        let ns = Netns { name };
        let r = ns
            .within(move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.connect((SVC4, 53)).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let mut l = Load::default();
                let mut buf = [0u8; 512];
                let mut id: u16 = 0;
                while !stop.load(Ordering::Relaxed) {
                    id = id.wrapping_add(1);
                    let q = tests::client::query_bytes(id, "web.shop.svc.cluster.local.", 1);
                    s.send(&q).unwrap();
                    l.sent += 1;
                    // Skip replies to earlier (timed-out) queries.
                    let got = loop {
                        match s.recv(&mut buf) {
                            Ok(n) if n >= 2 && buf[..2] == id.to_be_bytes() => break Some(n),
                            Ok(_) => continue,
                            Err(_) => break None,
                        }
                    };
                    match got {
                        None => l.lost += 1,
                        Some(n) => {
                            let m = Message::from_vec(&buf[..n]).unwrap();
                            let ok = m.response_code() == ResponseCode::NoError
                                && m.answers().len() == 1
                                && m.answers()[0].data().to_string() == "10.96.12.7";
                            if ok {
                                l.answered += 1
                            } else {
                                l.wrong += 1
                            }
                        }
                    }
                }
                l
            })
            .unwrap();
        std::mem::forget(ns);
        r
    })
}

/// The programs attached to `iface`'s tc ingress in the node, by name.
fn tc_programs(node: &Netns, iface: &str) -> Vec<(String, u32)> {
    let iface = iface.to_owned();
    node.within(move || {
        let (_, progs) = SchedClassifier::query_tcx(&iface, TcAttachType::Ingress).unwrap();
        progs
            .iter()
            .map(|p| (p.name_as_str().unwrap_or("").to_owned(), p.id()))
            .collect()
    })
    .unwrap()
}

/// kill -9 under load: the pinned link keeps the kernel answering while no daemon runs;
/// the next daemon adopts the pins and swaps its program in; not one query is lost or
/// answered by anything but the kernel, and the counters run on.
#[test]
fn kill_9_under_load_loses_no_kernel_answer() {
    let Some(f) = fixture("kill", 1) else { return };
    let args = f.args(Some("tc"));
    let d = Daemon::start(&f.topo.node, &args).expect("daemon");
    let host_if = f.topo.pods[0].host_if.clone();
    assert!(d.stdout.contains(&format!("attached {host_if} tc")));
    let before = tc_programs(&f.topo.node, &host_if);
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].0, "xdns_tc");
    let c0 = f.counters().get(Counter::Answered);

    let stop = Arc::new(AtomicBool::new(false));
    let gen = load(f.pod(0), stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    d.kill9();
    // No daemon at all: the kernel answers on from the pinned maps.
    std::thread::sleep(Duration::from_millis(700));
    let t = Instant::now();
    let d = Daemon::start(&f.topo.node, &args).expect("restarted daemon");
    println!("restart to ready: {:?}", t.elapsed());
    assert!(
        d.stdout.contains(&format!("adopted {host_if} tc")),
        "{:?}",
        d.stdout
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let l = gen.join().unwrap();
    println!("{l:?}");
    assert!(l.sent > 1000, "the load ran: {l:?}");
    assert_eq!((l.lost, l.wrong), (0, 0), "{l:?}");
    assert_eq!(l.answered, l.sent);
    // Every one of them answered by the kernel, and the counter did not restart.
    assert_eq!(f.counters().get(Counter::Answered), c0 + l.sent);

    // The new program replaced the old one in the same link: one program, a new id.
    let after = tc_programs(&f.topo.node, &host_if);
    assert_eq!(after.len(), 1, "no duplicate programs: {after:?}");
    assert_eq!(after[0].0, "xdns_tc");
    assert_ne!(
        after[0].1, before[0].1,
        "the restarted daemon's program runs"
    );

    // A clean stop keeps it too (a rolling update); `--detach-on-exit` removes everything.
    d.stop().unwrap();
    assert_eq!(tc_programs(&f.topo.node, &host_if).len(), 1);
    let mut detach = args.clone();
    detach.push("--detach-on-exit".into());
    let d = Daemon::start(&f.topo.node, &detach).expect("daemon");
    assert!(d.stdout.contains(&format!("adopted {host_if} tc")));
    d.stop().unwrap();
    assert!(tc_programs(&f.topo.node, &host_if).is_empty());
    assert!(
        !f.pins.pin_dir().exists(),
        "pins left: {:?}",
        std::fs::read_dir(f.pins.pin_dir()).map(|d| d.count())
    );
    // And nothing of ours answers the pod now (no daemon, no program).
    let q = tests::client::query_bytes(1, "web.shop.svc.cluster.local.", 1);
    assert!(f
        .pod(0)
        .udp_exchange(SVC4.parse().unwrap(), 53, &q, Duration::from_millis(500))
        .is_err());
}
