//! Real authoritative servers serving the bench's names from the node, beside our kernel
//! path: Knot DNS in XDP mode on the node's end of the pod's veth, and NSD on the service
//! address with kernel sockets.
use std::{fs, path::Path, process::Stdio, time::Duration};

use tests::netns::{Topology, SVC4};

use crate::{Proc, NAMES};

/// The bench's names in a zone file for `cluster.local`, each with an A record.
fn zone_file(dir: &Path) -> Result<(), String> {
    let mut zone = String::from(
        "$ORIGIN cluster.local.\n$TTL 30\n@ SOA ns.dns hostmaster 1 7200 1800 86400 30\n@ NS ns.dns\nns.dns A 10.96.0.10\n",
    );
    for (i, n) in NAMES.iter().enumerate() {
        let owner = n.trim_end_matches(".cluster.local");
        zone.push_str(&format!("{owner} A 10.96.1.{}\n", i + 1));
    }
    fs::write(dir.join("cluster.local.zone"), zone).map_err(|e| e.to_string())
}

/// Waits until a query from the pod gets an answer from whatever serves the address.
fn wait_answering(topo: &Topology, what: &str) -> Result<(), String> {
    for _ in 0..100 {
        let ok = topo.pods[0]
            .ns
            .output(
                "dig",
                &[
                    &format!("@{SVC4}"),
                    "+short",
                    "+time=1",
                    "+tries=1",
                    NAMES[0],
                ],
            )
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{what} did not answer"))
}

/// Knot DNS answering on `iface` (the node's end of the pod's veth) through its own XDP
/// program and AF_XDP socket, one thread.
pub fn knot_xdp(topo: &Topology, dir: &Path) -> Result<Proc, String> {
    zone_file(dir)?;
    let d = dir.display();
    let iface = &topo.pods[0].host_if;
    fs::write(
        dir.join("knot.conf"),
        format!(
            "server:\n    rundir: \"{d}\"\n    udp-workers: 1\n    background-workers: 1\nxdp:\n    listen: {iface}@53\n    udp: on\ndatabase:\n    storage: \"{d}\"\nzone:\n  - domain: cluster.local\n    file: \"{d}/cluster.local.zone\"\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let conf = dir.join("knot.conf").display().to_string();
    start(topo, dir, "knotd", &["-c", &conf])
}

/// NSD on the service address, kernel sockets, two server processes (one per core).
pub fn nsd(topo: &Topology, dir: &Path) -> Result<Proc, String> {
    zone_file(dir)?;
    let d = dir.display();
    fs::write(
        dir.join("nsd.conf"),
        format!(
            "server:\n    ip-address: {SVC4}\n    port: 53\n    username: \"\"\n    chroot: \"\"\n    server-count: 2\n    zonesdir: \"{d}\"\n    pidfile: \"{d}/nsd.pid\"\n    database: \"\"\n    xfrdfile: \"{d}/xfrd.state\"\n    zonelistfile: \"{d}/zone.list\"\n    verbosity: 0\nremote-control:\n    control-enable: no\nzone:\n    name: cluster.local\n    zonefile: \"{d}/cluster.local.zone\"\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let conf = dir.join("nsd.conf").display().to_string();
    start(topo, dir, "nsd", &["-d", "-c", &conf])
}

/// Starts `cmd` in the node namespace, its log in `<dir>/<cmd>.log`, and waits until it
/// answers the pod; the log's last lines say why if it does not.
fn start(topo: &Topology, dir: &Path, cmd: &str, args: &[&str]) -> Result<Proc, String> {
    let log = dir.join(format!("{cmd}.log"));
    let server = Proc(
        topo.node
            .cmd(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("{cmd}: {e}"))?,
    );
    wait_answering(topo, cmd).map_err(|e| {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let last: Vec<&str> = text.lines().rev().take(5).collect();
        format!("{e}: {}", last.join(" | "))
    })?;
    Ok(server)
}

/// The first line `--version` (or `-v`) prints, for the table's heading.
fn version(cmd: &str, flag: &str) -> String {
    std::process::Command::new(cmd)
        .arg(flag)
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines()
                .next()
                .and_then(|l| l.split_whitespace().last())
                .unwrap_or("?")
                .to_owned()
        })
        .unwrap_or_else(|_| "?".into())
}

pub fn knot_version() -> String {
    version("knotd", "--version")
}

pub fn nsd_version() -> String {
    version("nsd", "-v")
}
