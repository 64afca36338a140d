//! Which upstreams to ask, and in what order (CoreDNS `forward`'s `policy`).
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
};

/// CoreDNS `forward` allows at most 15 upstreams.
pub const MAX_UPSTREAMS: usize = 15;

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// A random upstream first, the others after it.
    #[default]
    Random,
    /// Each query starts one further along the list.
    RoundRobin,
    /// Always the list's order.
    Sequential,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: `{value}` is not an IP address")]
    BadAddress {
        path: String,
        line: usize,
        value: String,
    },
    #[error("no upstream: {0} names no nameserver")]
    Empty(String),
    #[error("{0} upstreams; at most {MAX_UPSTREAMS}")]
    TooMany(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstreams(pub Vec<SocketAddr>);

impl Upstreams {
    pub fn new(list: Vec<SocketAddr>) -> Result<Self, Error> {
        if list.len() > MAX_UPSTREAMS {
            return Err(Error::TooMany(list.len()));
        }
        Ok(Self(list))
    }

    /// The `nameserver` lines of a resolv.conf (port 53).
    pub fn from_resolv_conf(path: &Path) -> Result<Self, Error> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: name.clone(),
            source,
        })?;
        Self::parse_resolv_conf(&name, &text)
    }

    pub fn parse_resolv_conf(name: &str, text: &str) -> Result<Self, Error> {
        let mut list = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                continue;
            }
            let Some(value) = words.next() else { continue };
            // A scoped IPv6 address (`fe80::1%eth0`) keeps its address part.
            let addr: IpAddr = value
                .split('%')
                .next()
                .unwrap_or(value)
                .parse()
                .map_err(|_| Error::BadAddress {
                    path: name.into(),
                    line: n + 1,
                    value: value.into(),
                })?;
            list.push(SocketAddr::new(addr, 53));
        }
        if list.is_empty() {
            return Err(Error::Empty(name.into()));
        }
        Self::new(list)
    }

    /// The order to try the upstreams in for query number `n`; `pick` is a random number.
    pub fn order(&self, policy: Policy, n: usize, pick: usize) -> Vec<SocketAddr> {
        let len = self.0.len();
        let start = match policy {
            Policy::Sequential => 0,
            Policy::RoundRobin => n % len.max(1),
            Policy::Random => pick % len.max(1),
        };
        (0..len).map(|i| self.0[(start + i) % len]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let u = Upstreams::parse_resolv_conf(
            "r",
            "# comment\nsearch x\nnameserver 10.0.0.1\nnameserver fd00::53\nnameserver fe80::1%eth0\noptions ndots:5\n",
        )
        .unwrap();
        assert_eq!(u.0.len(), 3);
        assert_eq!(u.0[0], "10.0.0.1:53".parse().unwrap());
        assert_eq!(u.0[1], "[fd00::53]:53".parse().unwrap());
        let e = Upstreams::parse_resolv_conf("r", "nameserver 10.0.0.300\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(matches!(
            Upstreams::parse_resolv_conf("r", "search a\n"),
            Err(Error::Empty(_))
        ));
        let many: String = (1..=16)
            .map(|i| format!("nameserver 10.0.0.{i}\n"))
            .collect();
        assert!(matches!(
            Upstreams::parse_resolv_conf("r", &many),
            Err(Error::TooMany(16))
        ));
    }

    #[test]
    fn policies() {
        let u = Upstreams::new(vec![
            "10.0.0.1:53".parse().unwrap(),
            "10.0.0.2:53".parse().unwrap(),
            "10.0.0.3:53".parse().unwrap(),
        ])
        .unwrap();
        let first = |p, n, r| u.order(p, n, r)[0].to_string();
        assert_eq!(first(Policy::Sequential, 5, 7), "10.0.0.1:53");
        assert_eq!(first(Policy::RoundRobin, 1, 0), "10.0.0.2:53");
        assert_eq!(first(Policy::RoundRobin, 3, 0), "10.0.0.1:53");
        assert_eq!(first(Policy::Random, 0, 2), "10.0.0.3:53");
        assert_eq!(
            u.order(Policy::RoundRobin, 1, 0).len(),
            3,
            "all upstreams, each once"
        );
    }
}
