//! Bad input never stops the daemon: garbage datagrams and streams, a TCP client that sends
//! half a length prefix and stalls, 10 000 idle TCP connections. Others keep being
//! answered, and the daemon's memory stays bounded.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::Path,
    time::Duration,
};

use tests::{
    client::{dig, dig_status},
    netns::{Bpffs, Daemon, Topology, SVC4, SVC6},
};

fn rss_kib(pid: u32) -> u64 {
    tests::client::rss_kib(pid).expect("daemon RSS")
}

fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on our own process; the soft limit may go up to the
    // hard one without privilege.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
}

#[test]
fn garbage_stalls_and_ten_thousand_idle_connections() {
    if !tests::require_root("bad_input") {
        return;
    }
    raise_fd_limit();
    let prefix = format!("xb{}", std::process::id() % 10000);
    let topo = Topology::new(&prefix, 1).expect("namespaces");
    let pins = Bpffs::new(&format!("{prefix}-bpf")).expect("bpffs");
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/services");
    let args: Vec<String> = [
        "--manifests",
        &manifests.display().to_string(),
        "--listen",
        SVC4,
        "--listen",
        SVC6,
        "--iface",
        &topo.pods[0].host_if,
        "--pin-dir",
        &pins.pin_dir().display().to_string(),
        "--no-forward",
    ]
    .map(String::from)
    .to_vec();
    let d = Daemon::start(&topo.node, &args).expect("daemon");
    let pod = &topo.pods[0].ns;
    let server: SocketAddr = format!("{SVC4}:53").parse().unwrap();
    let before = rss_kib(d.pid());

    // Garbage datagrams of every short length and some long ones; any reply is a FORMERR
    // (or nothing), never a crash.
    let formerrs = pod
        .within(move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut formerr = 0;
            for len in (0..64).chain([300, 512, 1400, 4000]) {
                let junk: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8 & 0x7f
                    })
                    .collect();
                s.send_to(&junk, server).unwrap();
                let mut buf = [0u8; 1500];
                if let Ok(n) = s.recv(&mut buf) {
                    assert!(n >= 12 && buf[2] & 0x80 != 0, "a reply is a response");
                    if buf[3] & 0x0f == 1 {
                        formerr += 1;
                    }
                }
            }
            formerr
        })
        .unwrap();
    assert!(formerrs > 0, "malformed queries with an ID get FORMERR");
    assert_eq!(
        dig(pod, SVC4, &["web.shop.svc.cluster.local"]),
        "10.96.12.7"
    );

    // TCP: a framed garbage message, then half a length prefix that stalls, then 10 000 idle
    // connections, all held while others are answered.
    let held = pod
        .within(move || {
            let mut g = TcpStream::connect(server).unwrap();
            g.write_all(&[0, 20]).unwrap();
            g.write_all(&[0xab; 20]).unwrap();
            g.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut reply = [0u8; 14];
            let n = g.read(&mut reply).unwrap_or(0);
            assert!(n == 0 || n == 14, "FORMERR over TCP, or a close");
            let mut half = TcpStream::connect(server).unwrap();
            half.write_all(&[0]).unwrap();
            let mut conns = vec![half];
            for _ in 0..10_000 {
                if let Ok(c) = TcpStream::connect_timeout(&server, Duration::from_secs(1)) {
                    conns.push(c);
                }
            }
            conns
        })
        .unwrap();
    assert!(held.len() > 1000, "{} connections opened", held.len());
    for _ in 0..3 {
        assert_eq!(
            dig(pod, SVC4, &["web.shop.svc.cluster.local"]),
            "10.96.12.7"
        );
        assert_eq!(
            dig_status(pod, SVC6, &["nope.shop.svc.cluster.local"]),
            "NXDOMAIN"
        );
    }
    let during = rss_kib(d.pid());
    assert!(
        during < before + 64 * 1024,
        "memory stays bounded: {before} KiB before, {during} KiB with 10 000 connections"
    );
    drop(held);
    // Freed slots serve TCP again.
    tests::client::eventually(Duration::from_secs(15), "10.96.12.7".to_string(), || {
        let out = pod
            .output(
                "dig",
                &[
                    "@10.96.0.10",
                    "+tcp",
                    "+short",
                    "+time=1",
                    "+tries=1",
                    "web.shop.svc.cluster.local",
                ],
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    });
    println!("RSS {before} KiB before, {during} KiB with 10 000 connections held");
    d.stop().unwrap();
}
