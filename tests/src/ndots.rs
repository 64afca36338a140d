//! A pod's name lookups as glibc makes them: `search <ns>.svc.<zone> svc.<zone> <zone>` with
//! `options ndots:5`, A and AAAA sent together for each candidate, the next candidate on
//! NXDOMAIN or NODATA, done at the first answer. The workload the kernel path's negative
//! answers exist for.
use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use crate::client::query_bytes;

/// The search path kubelet writes into a pod's resolv.conf in namespace `ns`.
pub fn search_path(ns: &str, zone: &str) -> Vec<String> {
    vec![
        format!("{ns}.svc.{zone}"),
        format!("svc.{zone}"),
        zone.to_owned(),
    ]
}

/// The names glibc tries for `name`, in order.
pub fn candidates(name: &str, search: &[String], ndots: usize) -> Vec<String> {
    if let Some(abs) = name.strip_suffix('.') {
        return vec![abs.to_owned()];
    }
    let dots = name.matches('.').count();
    let searched = search.iter().map(|s| format!("{name}.{s}"));
    if dots >= ndots {
        std::iter::once(name.to_owned()).chain(searched).collect()
    } else {
        searched.chain(std::iter::once(name.to_owned())).collect()
    }
}

/// What a run of lookups did.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub lookups: u64,
    pub found: u64,
    pub queries: u64,
    /// Queries for names under `zone`.
    pub zone_queries: u64,
    pub timeouts: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.lookups += o.lookups;
        self.found += o.found;
        self.queries += o.queries;
        self.zone_queries += o.zone_queries;
        self.timeouts += o.timeouts;
    }
}

/// Runs lookups of `names` (round robin) against `server` until `until`, one at a time.
/// Call it on a thread inside the pod's network namespace.
pub fn run_lookups(
    server: SocketAddr,
    names: &[String],
    search: &[String],
    zone: &str,
    until: Instant,
) -> std::io::Result<Stats> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect(server)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut st = Stats::default();
    let mut id: u16 = 0;
    let mut buf = [0u8; 4096];
    let mut i = 0;
    while Instant::now() < until {
        let name = &names[i % names.len()];
        i += 1;
        st.lookups += 1;
        for cand in candidates(name, search, 5) {
            let in_zone = cand == zone || cand.ends_with(&format!(".{zone}"));
            let ids = [id.wrapping_add(1), id.wrapping_add(2)];
            id = id.wrapping_add(2);
            for (qid, qtype) in ids.iter().zip([1u16, 28]) {
                s.send(&query_bytes(*qid, &cand, qtype))?;
            }
            st.queries += 2;
            if in_zone {
                st.zone_queries += 2;
            }
            // Both replies (in either order); any answer record ends the lookup.
            let (mut got, mut answered, mut timed_out) = (0, false, false);
            while got < 2 {
                match s.recv(&mut buf) {
                    Ok(n) if n >= 12 && ids.contains(&u16::from_be_bytes([buf[0], buf[1]])) => {
                        got += 1;
                        answered |= u16::from_be_bytes([buf[6], buf[7]]) > 0;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        timed_out = true;
                        break;
                    }
                }
            }
            if timed_out {
                st.timeouts += 1;
                break;
            }
            if answered {
                st.found += 1;
                break;
            }
        }
    }
    Ok(st)
}

/// [`run_lookups`] on `workers` threads inside the network namespace `netns`, each starting
/// at another name, for `secs`.
pub fn run_parallel(
    netns: &str,
    workers: usize,
    server: SocketAddr,
    names: &[String],
    search: &[String],
    zone: &str,
    secs: f64,
) -> std::io::Result<Stats> {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let netns = netns.to_owned();
            let mut names = names.to_vec();
            let n = names.len().max(1);
            names.rotate_left(w % n);
            let (search, zone) = (search.to_vec(), zone.to_owned());
            std::thread::spawn(move || -> std::io::Result<Stats> {
                crate::netns::enter(&netns)?;
                run_lookups(server, &names, &search, &zone, until)
            })
        })
        .collect();
    let mut total = Stats::default();
    for h in handles {
        let st = h
            .join()
            .map_err(|_| std::io::Error::other("worker panicked"))??;
        total.add(&st);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_search_order() {
        let search = search_path("shop", "cluster.local");
        assert_eq!(
            candidates("api.example.com", &search, 5),
            [
                "api.example.com.shop.svc.cluster.local",
                "api.example.com.svc.cluster.local",
                "api.example.com.cluster.local",
                "api.example.com"
            ]
        );
        assert_eq!(
            candidates("web", &search, 5)[0],
            "web.shop.svc.cluster.local"
        );
        assert_eq!(candidates("a.b.c.d.e.f", &search, 5)[0], "a.b.c.d.e.f");
        assert_eq!(candidates("example.com.", &search, 5), ["example.com"]);
    }
}
