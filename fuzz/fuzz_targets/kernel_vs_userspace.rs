//! Any bytes as a DNS message to the service address, through the kernel program
//! (BPF_PROG_TEST_RUN, as root) and the userspace answer path: a kernel answer must be
//! byte for byte userspace's, a pass must leave the frame untouched.
#![no_main]
use std::sync::OnceLock;

use dns_userspace::model::{Records, ZoneConfig};
use libfuzzer_sys::fuzz_target;
use tests::differ::Differ;

struct Shared(Differ);
// SAFETY: libFuzzer calls the target from one thread; the programs are only test-run.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

fn differ() -> &'static Differ {
    static D: OnceLock<Shared> = OnceLock::new();
    &D.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/services");
        let view = dns_userspace::source::manifests::load_dir(&dir).expect("examples load");
        let mut cfg = ZoneConfig::new("cluster.local", 30).expect("zone");
        cfg.ns_addrs = vec![
            tests::differ::SVC4.parse().unwrap(),
            tests::differ::SVC6.parse().unwrap(),
        ];
        Shared(Differ::new(Records::build(&cfg, &view)).expect("load the programs (root)"))
    })
    .0
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() || data.len() > 900 {
        return;
    }
    // The first byte picks the family and hook; the rest is the DNS message.
    let (sel, msg) = (data[0], &data[1..]);
    if let Err(e) = differ().check(msg, sel & 1 == 1, sel & 2 == 2) {
        panic!("{e}");
    }
});
