//! Bad input never stops the daemon: garbage datagrams and streams, a TCP client that sends
//! half a length prefix and stalls, 10 000 idle TCP connections. Others keep being
//! answered, and the daemon's memory stays bounded.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use tests::{
    client::{dig, dig_status},
    daemon_args::DaemonArgs,
    fixture::{example_manifests, scratch, Scratch},
    netns::{Daemon, SVC4, SVC6},
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
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn garbage_stalls_and_ten_thousand_idle_connections() {
    let Some(Scratch { topo, pins, .. }) = scratch("xb", "bad", 1) else {
        return;
    };
    raise_fd_limit();
    let args = DaemonArgs::manifests(&example_manifests())
        .listen(&[SVC4, SVC6])
        .iface(&topo.pods[0].host_if)
        .pin_dir(&pins.pin_dir())
        .no_forward()
        .build();
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

/// Waits up to `within` for `ok`, checking every 50 ms.
fn wait_for(within: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + within;
    while std::time::Instant::now() < until {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ok()
}

/// Out of descriptors (a 256 limit set on the running daemon, 300 connections held), the
/// TCP listener pauses on EMFILE instead of ending: once the connections close, TCP queries
/// are answered again and `/health` is 200.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn listeners_outlive_running_out_of_descriptors() {
    let Some(f) = tests::fixture::fixture("fd", 1) else {
        return;
    };
    raise_fd_limit();
    let log_path = f.manifests.0.with_extension("log");
    let _log = tests::fixture::TempDir(log_path.clone());
    let d = Daemon::start_logging(
        &f.topo.node,
        &f.args(None),
        std::fs::File::create(&log_path).unwrap(),
    )
    .expect("daemon");
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &d.pid().to_string(), "--nofile=256:256"])
        .status()
        .expect("prlimit");
    assert!(status.success(), "prlimit failed");

    let held = f
        .pod(0)
        .within(|| {
            let server: SocketAddr = format!("{SVC4}:53").parse().unwrap();
            (0..300)
                .filter_map(|_| {
                    TcpStream::connect_timeout(&server, Duration::from_millis(300)).ok()
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(5), || log().contains("listener error; retrying")),
        "the daemon never ran out of descriptors ({} connections held): the test proves nothing\n{}",
        held.len(),
        log()
    );
    drop(held);
    assert!(
        wait_for(Duration::from_secs(5), || dig(
            f.pod(0),
            SVC4,
            &["+tcp", "web.shop.svc.cluster.local"]
        ) == "10.96.12.7"),
        "TCP not answered after the connections closed\n{}",
        log()
    );
    assert_eq!(tests::client::http_get(&f.topo.node, 8080, "/health"), "OK");
    assert!(
        wait_for(Duration::from_secs(5), || log()
            .contains("listener recovered")),
        "{}",
        log()
    );
    d.stop().unwrap();
}

/// A client that pipelines queries and never reads a reply is closed within the idle time
/// (its window full, the reply cannot be written), not held with its replies for ever.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn a_client_that_never_reads_is_closed() {
    let Some(f) = tests::fixture::fixture("nr", 1) else {
        return;
    };
    let d = Daemon::start(&f.topo.node, &f.args(None)).expect("daemon");
    let (conn, sent) = f
        .pod(0)
        .within(|| {
            let server: SocketAddr = format!("{SVC4}:53").parse().unwrap();
            let mut s = TcpStream::connect(server).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
            let q = tests::client::query_bytes(7, "web.shop.svc.cluster.local", 16);
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            let batch: Vec<u8> = framed.repeat(1000);
            let mut sent = 0;
            // Until the server stops reading: its replies have nowhere to go.
            while sent < 2000 && s.write_all(&batch).is_ok() {
                sent += 1;
            }
            (s, sent)
        })
        .unwrap();
    assert!(
        sent < 2000,
        "two million queries written without the server pushing back"
    );
    let established = || {
        tests::client::run(
            f.pod(0),
            "ss",
            &["-Htn", "state", "established", "dst", SVC4],
        )
    };
    assert!(
        !established().is_empty(),
        "the connection is up while stuffed"
    );
    assert!(
        wait_for(Duration::from_secs(25), || established().is_empty()),
        "a client that never reads is still connected after 25 s: {}",
        established()
    );
    drop(conn);
    // Everyone else is still answered over TCP.
    assert_eq!(
        dig(f.pod(0), SVC4, &["+tcp", "web.shop.svc.cluster.local"]),
        "10.96.12.7"
    );
    d.stop().unwrap();
}

/// 100 connections to the probe port that never send a request: each is closed by the
/// server once its first-request time is up (the cap of 64 makes the rest wait their turn),
/// and `/health` answers once they are gone.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF and network namespaces")]
fn idle_probe_connections_are_closed_and_probes_get_through() {
    let Some(f) = tests::fixture::fixture("idle", 1) else {
        return;
    };
    let d = Daemon::start(&f.topo.node, &f.args(None)).expect("daemon");
    let t0 = std::time::Instant::now();
    let closed = f
        .topo
        .node
        .within(|| {
            let conns: Vec<TcpStream> = (0..100)
                .map(|_| TcpStream::connect("127.0.0.1:8080").expect("connect"))
                .collect();
            conns
                .into_iter()
                .filter(|mut c| {
                    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    let mut b = [0u8; 1];
                    // EOF or reset: the server closed it. A timeout: still held.
                    !matches!(
                        c.read(&mut b),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut
                    )
                })
                .count()
        })
        .unwrap();
    assert_eq!(closed, 100, "idle connections the server closed");
    let took = t0.elapsed();
    assert!(
        took >= dns_userspace::ops::http::FIRST_REQUEST,
        "closed before their time: {took:?}"
    );
    assert_eq!(
        tests::client::http_status(&f.topo.node, 8080, "/health"),
        "200"
    );
    d.stop().unwrap();
}
