//! Which interfaces to attach to: named ones, and every interface whose name matches a
//! pattern (`veth*`, `cali*`, `lxc*`...), as pod veths come and go. The kernel tells us
//! when links change (rtnetlink `RTMGRP_LINK`); each event triggers a rescan by name and
//! index, so a veth deleted and re-created under the same name counts as a new device.
use std::collections::BTreeMap;

use futures::StreamExt;

/// A name pattern: a literal, or a prefix ending in `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn new(p: &str) -> Self {
        Self(p.to_owned())
    }

    pub fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == self.0,
        }
    }
}

/// The host-side pod interface names of the common CNIs.
pub const CNI_PATTERNS: [&str; 6] = ["cali*", "veth*", "lxc*", "cni*", "eni*", "gke*"];

/// The interfaces of this network namespace now, by name, with their index.
pub fn interfaces() -> BTreeMap<String, u32> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return BTreeMap::new();
    };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        let index = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some((name, index))
    })
    .collect()
}

/// What changed: interfaces to attach (matching, and not attached as this device yet) and
/// attached ones that are gone or are another device now (the kernel detached them).
pub fn diff(
    present: &BTreeMap<String, u32>,
    attached: &BTreeMap<String, u32>,
    patterns: &[Pattern],
) -> (Vec<String>, Vec<String>) {
    let new = present
        .iter()
        .filter(|(n, i)| attached.get(*n) != Some(i) && patterns.iter().any(|p| p.matches(n)))
        .map(|(n, _)| n.clone())
        .collect();
    let gone = attached
        .iter()
        .filter(|(n, i)| present.get(*n) != Some(i))
        .map(|(n, _)| n.clone())
        .collect();
    (new, gone)
}

type Message = (
    rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
);

/// Link events from the kernel: every new, changed or deleted interface.
pub struct LinkEvents {
    rx: futures::channel::mpsc::UnboundedReceiver<Message>,
}

impl LinkEvents {
    /// Subscribes to `RTMGRP_LINK` on this network namespace. Needs a tokio runtime.
    pub fn subscribe() -> std::io::Result<Self> {
        let (mut conn, _handle, rx) = rtnetlink::new_connection()?;
        let addr = rtnetlink::sys::SocketAddr::new(0, rtnetlink::constants::RTMGRP_LINK);
        rtnetlink::sys::AsyncSocket::socket_mut(conn.socket_mut()).bind(&addr)?;
        tokio::spawn(conn);
        Ok(Self { rx })
    }

    /// Waits for the next event, then takes every one already queued: a burst (a pod's
    /// veth pair being created, renamed and brought up) is one rescan. `false` once the
    /// socket is gone.
    pub async fn next_burst(&mut self) -> bool {
        if self.rx.next().await.is_none() {
            return false;
        }
        while self.rx.try_recv().is_ok() {}
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_diff() {
        let pats = [
            Pattern::new("veth*"),
            Pattern::new("cali*"),
            Pattern::new("eth1"),
        ];
        assert!(
            pats[0].matches("veth1h") && pats[1].matches("cali12ab") && pats[2].matches("eth1")
        );
        assert!(!pats
            .iter()
            .any(|p| p.matches("eth0") || p.matches("lo") || p.matches("eth10")));
        let map = |l: &[(&str, u32)]| {
            l.iter()
                .map(|(s, i)| (s.to_string(), *i))
                .collect::<BTreeMap<_, _>>()
        };
        let (new, gone) = diff(
            &map(&[
                ("lo", 1),
                ("eth0", 2),
                ("veth1", 3),
                ("veth2", 4),
                ("veth3", 9),
            ]),
            &map(&[("veth1", 3), ("veth9", 5), ("veth3", 6)]),
            &pats,
        );
        // veth3 was re-created: the old device is gone and the new one is new.
        assert_eq!(new, vec!["veth2".to_string(), "veth3".to_string()]);
        assert_eq!(gone, vec!["veth3".to_string(), "veth9".to_string()]);
    }
}
