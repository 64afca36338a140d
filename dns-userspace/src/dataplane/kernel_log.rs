//! Kernel answers in the query log: the program writes one answer in N
//! (`--log-kernel-sample`) to a ring buffer; this reads it and logs each as userspace logs
//! its own answers, with the path `kernel` and the interface the query came in on.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use aya::maps::{MapData, RingBuf};
use dns_common::KernelLogEntry;
use hickory_proto::{op::ResponseCode, rr::RecordType};
use tokio::io::{unix::AsyncFd, Interest};

use crate::model::name;

/// One sampled answer, decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct KernelAnswer {
    pub client: SocketAddr,
    pub ifindex: u32,
    /// Lower-cased, as the kernel looked it up, with its final dot.
    pub name: String,
    pub qtype: RecordType,
    pub rcode: ResponseCode,
}

impl KernelAnswer {
    /// `None` for bytes that are not a whole entry.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<KernelLogEntry>() {
            return None;
        }
        // SAFETY: long enough, and every bit pattern is a valid KernelLogEntry (integers
        // and byte arrays); read unaligned since the ring gives no alignment promise here.
        let e: KernelLogEntry = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let ip = if e.v6 == 1 {
            IpAddr::V6(Ipv6Addr::from(e.client))
        } else {
            IpAddr::V4(Ipv4Addr::new(
                e.client[0],
                e.client[1],
                e.client[2],
                e.client[3],
            ))
        };
        let qlen = usize::from(e.qlen).min(e.name.name.len());
        Some(Self {
            client: SocketAddr::new(ip, u16::from_be(e.port)),
            ifindex: e.ifindex,
            name: name::dotted(&e.name.name[..qlen]),
            qtype: RecordType::from(e.qtype),
            rcode: ResponseCode::from(0, e.rcode),
        })
    }
}

/// Logs every sampled answer while `enabled` (the `--log-queries` switch, which a reload
/// may flip); runs until the ring's descriptor fails.
pub async fn run(ring: RingBuf<MapData>, enabled: Arc<AtomicBool>) {
    // SAFETY: the ring owns its descriptor and keeps it open while the AsyncFd owns the
    // ring; nothing else closes it.
    let registered = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "kernel answers cannot be logged");
            return;
        }
    };
    let mut ifnames: HashMap<u32, String> = HashMap::new();
    // The program wakes this reader only once the ring is half full (a wakeup per answer
    // would cost each answer microseconds): polled the rest of the time.
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            g = fd.readable_mut() => match g {
                // Cleared before reading: a wakeup while the ring is read marks it again.
                Ok(mut g) => g.clear_ready(),
                Err(e) => {
                    tracing::warn!(error = %e, "reading kernel answers for the log stopped");
                    return;
                }
            },
            _ = poll.tick() => {}
        }
        let ring = fd.get_mut();
        while let Some(item) = ring.next() {
            if !enabled.load(Ordering::Relaxed) {
                continue;
            }
            let Some(a) = KernelAnswer::decode(&item) else {
                continue;
            };
            let iface = ifnames
                .entry(a.ifindex)
                .or_insert_with(|| iface_name(a.ifindex));
            tracing::info!(
                target: "query",
                client = %a.client,
                proto = "Udp",
                name = a.name,
                qtype = %a.qtype,
                rcode = %a.rcode,
                path = "kernel",
                iface = iface.as_str(),
            );
        }
    }
}

/// How often the ring is read when the program has not woken the reader.
const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The interface's name, or its index where it has none (gone since).
fn iface_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer is IF_NAMESIZE long, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return ifindex.to_string();
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use dns_common::NameKey;

    use super::*;

    #[test]
    fn an_entry_decodes_to_what_the_query_log_prints() {
        let wire = name::wire_from_dotted("web.shop.svc.cluster.local").expect("a name");
        let mut client = [0u8; 16];
        client[..4].copy_from_slice(&[10, 1, 0, 2]);
        let e = KernelLogEntry {
            ifindex: 7,
            qtype: 1,
            rcode: 3,
            v6: 0,
            client,
            port: 53000u16.to_be(),
            qlen: wire.len() as u16,
            _pad: 0,
            name: NameKey::of(&wire).expect("short enough"),
        };
        // SAFETY: a plain-old-data value viewed as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&e as *const KernelLogEntry).cast::<u8>(),
                std::mem::size_of::<KernelLogEntry>(),
            )
        };
        let a = KernelAnswer::decode(bytes).expect("a whole entry");
        assert_eq!(a.client, "10.1.0.2:53000".parse().unwrap());
        assert_eq!(a.name, "web.shop.svc.cluster.local.");
        assert_eq!((a.qtype, a.rcode), (RecordType::A, ResponseCode::NXDomain));
        assert_eq!(a.ifindex, 7);
        assert!(KernelAnswer::decode(&bytes[..bytes.len() - 1]).is_none());
    }
}
