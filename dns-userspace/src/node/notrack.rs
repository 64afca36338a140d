//! NOTRACK rules for the served addresses, as NodeLocal DNSCache installs them: queries to
//! the addresses and their answers skip conntrack, so a busy node never fills its table
//! with DNS flows (and a full table never drops DNS). One nftables table of ours, replaced
//! whole in one transaction and deleted on exit; `nft` is the interface nftables keeps
//! stable.
use std::{
    io::Write,
    net::IpAddr,
    process::{Command, Stdio},
};

pub const TABLE: &str = "xdns_notrack";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("running nft (is nftables installed?): {0}")]
    Spawn(std::io::Error),
    #[error("nft refused the rules: {0}")]
    Refused(String),
}

/// The ruleset: raw-priority prerouting and output chains matching port 53 to and from
/// `addrs`.
pub fn ruleset(addrs: &[IpAddr], port: u16) -> String {
    let set = |v6: bool| {
        let list: Vec<String> = addrs
            .iter()
            .filter(|a| a.is_ipv6() == v6)
            .map(|a| a.to_string())
            .collect();
        (!list.is_empty()).then(|| format!("{{ {} }}", list.join(", ")))
    };
    let mut pre = String::new();
    let mut out = String::new();
    for (fam, v6) in [("ip", false), ("ip6", true)] {
        let Some(s) = set(v6) else { continue };
        let l4 = "meta l4proto { tcp, udp }";
        pre += &format!("    {fam} daddr {s} {l4} th dport {port} notrack\n");
        out += &format!("    {fam} saddr {s} {l4} th sport {port} notrack\n");
        out += &format!("    {fam} daddr {s} {l4} th dport {port} notrack\n");
    }
    format!(
        "table inet {TABLE} {{\n  chain pre {{\n    type filter hook prerouting priority raw;\n{pre}  }}\n  \
         chain out {{\n    type filter hook output priority raw;\n{out}  }}\n}}\n"
    )
}

fn nft(script: &str) -> Result<(), Error> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(Error::Spawn)?;
    }
    let out = child.wait_with_output().map_err(Error::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

/// Installs (or replaces) the rules.
pub fn install(addrs: &[IpAddr], port: u16) -> Result<(), Error> {
    // `add` then `delete` makes the replacement work whether or not the table exists.
    nft(&format!(
        "add table inet {TABLE}\ndelete table inet {TABLE}\n{}",
        ruleset(addrs, port)
    ))
}

/// Removes the rules (nothing if they are not there).
pub fn remove() -> Result<(), Error> {
    nft(&format!(
        "add table inet {TABLE}\ndelete table inet {TABLE}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_cover_both_families_and_directions() {
        let r = ruleset(
            &["169.254.20.10".parse().unwrap(), "fd00::a".parse().unwrap()],
            53,
        );
        assert!(
            r.contains("ip daddr { 169.254.20.10 } meta l4proto { tcp, udp } th dport 53 notrack")
        );
        assert!(
            r.contains("ip saddr { 169.254.20.10 } meta l4proto { tcp, udp } th sport 53 notrack")
        );
        assert!(r.contains("ip6 daddr { fd00::a }"));
        assert_eq!(r.matches(" notrack\n").count(), 6);
        let v4 = ruleset(&["10.96.0.10".parse().unwrap()], 53);
        assert!(!v4.contains("ip6"));
    }
}
