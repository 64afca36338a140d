//! The e2e fixture: a node namespace with pods, a bpffs for the pins, and a copy of the
//! example manifests the daemon reads.
use std::{
    fs,
    path::{Path, PathBuf},
};

use dns_userspace::dataplane::{maps::Counters, snapshot::pinned_counters};

use crate::netns::{Bpffs, Netns, Topology, SVC4, SVC6};

pub struct Fixture {
    pub topo: Topology,
    pub pins: Bpffs,
    pub manifests: TempDir,
}

pub struct TempDir(pub PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn fixture(tag: &str, pods: usize) -> Option<Fixture> {
    if !crate::require_root(tag) {
        return None;
    }
    let prefix = format!("xt{}{tag}", std::process::id() % 10000);
    let topo = Topology::new(&prefix, pods).expect("namespaces and veths");
    let pins = Bpffs::new(&format!("{prefix}-bpf")).expect("bpffs for pins");
    let dir = std::env::temp_dir().join(format!("{prefix}-manifests"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/services");
    for e in fs::read_dir(examples).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    Some(Fixture {
        topo,
        pins,
        manifests: TempDir(dir),
    })
}

impl Fixture {
    pub fn args(&self, mode: Option<&str>) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--manifests".into(),
            self.manifests.0.display().to_string(),
            "--listen".into(),
            SVC4.into(),
            "--listen".into(),
            SVC6.into(),
            "--pin-dir".into(),
            self.pins.pin_dir().display().to_string(),
            // No upstream in these namespaces: outside the zone is REFUSED, at once.
            "--no-forward".into(),
            // Answers compared byte for byte and in order.
            "--no-loadbalance".into(),
        ];
        match mode {
            Some(m) => {
                a.extend(["--attach".into(), m.into()]);
                for p in &self.topo.pods {
                    a.extend(["--iface".into(), p.host_if.clone()]);
                }
            }
            None => a.push("--no-kernel".into()),
        }
        a
    }

    pub fn counters(&self) -> Counters {
        pinned_counters(&self.pins.pin_dir()).expect("pinned counters")
    }

    pub fn pod(&self, i: usize) -> &Netns {
        &self.topo.pods[i].ns
    }
}
