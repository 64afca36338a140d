//! The fixtures: namespaces, a bpffs for the pins and a scratch folder named for one test
//! and removed with it ([`scratch`]); with the example manifests copied in, the e2e fixture
//! ([`fixture`]).
use std::{
    fs,
    ops::Deref,
    path::{Path, PathBuf},
};

use dns_userspace::dataplane::{maps::Counters, snapshot::pinned_counters};

use crate::{
    daemon_args::DaemonArgs,
    netns::{Bpffs, Netns, Topology, SVC4, SVC6},
};

/// A folder removed on drop; reads as its path.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

/// The manifests every fixture serves (`examples/services`).
pub fn example_manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/services")
}

/// A node namespace with `pods` pod namespaces, a bpffs for the pins, and an empty folder,
/// named `{kind}{pid}{tag}` so test binaries running side by side never share one.
pub struct Scratch {
    pub topo: Topology,
    pub pins: Bpffs,
    pub dir: TempDir,
}

/// `None` (the test skips) without root; see [`crate::require_root`].
pub fn scratch(kind: &str, tag: &str, pods: usize) -> Option<Scratch> {
    if !crate::require_root(tag) {
        return None;
    }
    let prefix = format!("{kind}{}{tag}", std::process::id() % 10000);
    let topo = Topology::new(&prefix, pods).expect("namespaces and veths");
    let pins = Bpffs::new(&format!("{prefix}-bpf")).expect("bpffs for pins");
    let dir = std::env::temp_dir().join(format!("{prefix}-dir"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch folder");
    Some(Scratch {
        topo,
        pins,
        dir: TempDir(dir),
    })
}

/// The e2e fixture: [`Scratch`] whose folder holds a copy of the example manifests, which
/// the daemon reads (and tests change).
pub struct Fixture {
    pub topo: Topology,
    pub pins: Bpffs,
    pub manifests: TempDir,
}

pub fn fixture(tag: &str, pods: usize) -> Option<Fixture> {
    let Scratch { topo, pins, dir } = scratch("xt", tag, pods)?;
    for e in fs::read_dir(example_manifests()).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    Some(Fixture {
        topo,
        pins,
        manifests: dir,
    })
}

impl Fixture {
    /// The daemon on the fixture's manifests and pins, serving both service addresses, with
    /// no upstream (outside the zone is REFUSED, at once) and answers in order (compared
    /// byte for byte). With `mode`, the kernel path on every pod's veth; without, none.
    pub fn daemon(&self, mode: Option<&str>) -> DaemonArgs {
        let a = DaemonArgs::manifests(&self.manifests)
            .listen(&[SVC4, SVC6])
            .pin_dir(&self.pins.pin_dir())
            .no_forward()
            .no_loadbalance();
        match mode {
            Some(m) => self
                .topo
                .pods
                .iter()
                .fold(a.attach(m), |a, p| a.iface(&p.host_if)),
            None => a.no_kernel(),
        }
    }

    /// [`Fixture::daemon`] as a list.
    pub fn args(&self, mode: Option<&str>) -> Vec<String> {
        self.daemon(mode).build()
    }

    pub fn counters(&self) -> Counters {
        pinned_counters(&self.pins.pin_dir()).expect("pinned counters")
    }

    pub fn pod(&self, i: usize) -> &Netns {
        &self.topo.pods[i].ns
    }
}
