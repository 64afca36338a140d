//! Any bytes as a query to the userspace answer path, over UDP and TCP: never a panic, and
//! whatever comes back is a DNS message hickory parses, no larger than the transport allows.
#![no_main]
use std::sync::OnceLock;

use dns_userspace::{
    answer::{respond, Transport},
    model::{Records, ZoneConfig},
};
use libfuzzer_sys::fuzz_target;

fn zone() -> &'static Records {
    static ZONE: OnceLock<Records> = OnceLock::new();
    ZONE.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/services");
        let view = dns_userspace::source::manifests::load_dir(&dir).expect("examples load");
        Records::build(&ZoneConfig::new("cluster.local", 30).expect("zone"), &view)
    })
}

fuzz_target!(|data: &[u8]| {
    for t in [Transport::Udp, Transport::Tcp] {
        if let Some(reply) = respond(data, zone(), t) {
            hickory_parse(&reply);
            if t == Transport::Udp {
                assert!(reply.len() <= 1232, "UDP reply of {} bytes", reply.len());
            }
        }
    }
});

fn hickory_parse(reply: &[u8]) {
    if let Err(e) = hickory_proto::op::Message::from_vec(reply) {
        panic!("reply does not decode ({e}): {reply:?}");
    }
}
