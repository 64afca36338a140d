//! Lower-case wire-format names (RFC 1035 §3.1), the model's key type.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("empty label in `{0}`")]
    EmptyLabel(String),
    #[error("label longer than 63 bytes in `{0}`")]
    LongLabel(String),
    #[error("name `{0}` is longer than 255 bytes in wire format")]
    LongName(String),
}

/// `cluster.local` or `cluster.local.` → `\x07cluster\x05local\x00`, lower-cased.
pub fn wire_from_dotted(s: &str) -> Result<Vec<u8>, NameError> {
    let trimmed = s.strip_suffix('.').unwrap_or(s);
    let mut out = Vec::with_capacity(trimmed.len() + 2);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() {
                return Err(NameError::EmptyLabel(s.into()));
            }
            if label.len() > 63 {
                return Err(NameError::LongLabel(s.into()));
            }
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    if out.len() > dns_common::MAX_NAME_LEN {
        return Err(NameError::LongName(s.into()));
    }
    Ok(out)
}

/// A wire name in presentation form with its final dot (`cluster.local.`), as CoreDNS
/// labels its metrics; the root is `.`.
pub fn dotted(wire: &[u8]) -> String {
    let labels = labels(wire);
    if labels.is_empty() {
        return ".".into();
    }
    let mut out = String::new();
    for l in labels {
        out.push_str(&String::from_utf8_lossy(l));
        out.push('.');
    }
    out
}

/// `labels` (leftmost first) prepended to `base`.
pub fn child(base: &[u8], labels: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in labels {
        out.push(l.len() as u8);
        out.extend(l.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out.extend_from_slice(base);
    out
}

/// The name without its first label (the root is its own parent).
pub fn parent(name: &[u8]) -> &[u8] {
    match name.first() {
        Some(&n) if n > 0 && name.len() > n as usize + 1 => &name[n as usize + 1..],
        _ => name,
    }
}

/// Whether `name` is `zone` or below it, comparing whole labels.
pub fn is_within(name: &[u8], zone: &[u8]) -> bool {
    let mut at = name;
    loop {
        if at == zone {
            return true;
        }
        let next = parent(at);
        if next.len() == at.len() {
            return false;
        }
        at = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        assert_eq!(
            wire_from_dotted("Cluster.Local.").unwrap(),
            b"\x07cluster\x05local\x00"
        );
        assert_eq!(wire_from_dotted(".").unwrap(), b"\x00");
        assert!(matches!(
            wire_from_dotted("a..b"),
            Err(NameError::EmptyLabel(_))
        ));
        assert!(matches!(
            wire_from_dotted(&"x".repeat(64)),
            Err(NameError::LongLabel(_))
        ));
        let long = vec!["abcdefghi"; 30].join(".");
        assert!(matches!(
            wire_from_dotted(&long),
            Err(NameError::LongName(_))
        ));
    }

    #[test]
    fn within_compares_labels_not_bytes() {
        let zone = wire_from_dotted("cluster.local").unwrap();
        assert!(is_within(
            &wire_from_dotted("a.cluster.local").unwrap(),
            &zone
        ));
        assert!(is_within(&zone, &zone));
        assert!(!is_within(
            &wire_from_dotted("acluster.local").unwrap(),
            &zone
        ));
        assert!(!is_within(&wire_from_dotted("local").unwrap(), &zone));
        assert!(!is_within(b"\x00", &zone));
    }
}

/// The address a full reverse-lookup name stands for, when `name` is exactly
/// [`reverse`]'s form of it (lower case, no leading zeros): other spellings name nothing.
pub fn unreverse(name: &[u8]) -> Option<std::net::IpAddr> {
    let l = labels(name);
    let ip: std::net::IpAddr = match l.as_slice() {
        [d, c, b, a, in_addr, arpa] if *in_addr == b"in-addr" && *arpa == b"arpa" => {
            let o = |x: &[u8]| std::str::from_utf8(x).ok()?.parse::<u8>().ok();
            std::net::Ipv4Addr::new(o(a)?, o(b)?, o(c)?, o(d)?).into()
        }
        [nibbles @ .., ip6, arpa] if nibbles.len() == 32 && *ip6 == b"ip6" && *arpa == b"arpa" => {
            let mut v = 0u128;
            for n in nibbles.iter().rev() {
                let [d] = n else { return None };
                v = v << 4 | u128::from(char::from(*d).to_digit(16)?);
            }
            std::net::Ipv6Addr::from(v).into()
        }
        _ => return None,
    };
    (reverse(ip) == name).then_some(ip)
}

/// The reverse-lookup name of an address: `d.c.b.a.in-addr.arpa.` or the nibble form
/// under `ip6.arpa.` (RFC 1035 §3.5, RFC 3596 §2.5).
pub fn reverse(ip: std::net::IpAddr) -> Vec<u8> {
    // Written byte by byte: a zone holds one per endpoint of the cluster.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(72);
    match ip {
        std::net::IpAddr::V4(v4) => {
            for o in v4.octets().iter().rev() {
                let mut digits = [0u8; 3];
                let mut n = *o;
                let mut len = 0;
                loop {
                    digits[len] = b'0' + n % 10;
                    len += 1;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                out.push(len as u8);
                out.extend(digits[..len].iter().rev());
            }
            out.extend_from_slice(b"\x07in-addr\x04arpa\x00");
        }
        std::net::IpAddr::V6(v6) => {
            for b in v6.octets().iter().rev() {
                out.extend_from_slice(&[1, HEX[usize::from(b & 0xf)], 1, HEX[usize::from(b >> 4)]]);
            }
            out.extend_from_slice(b"\x03ip6\x04arpa\x00");
        }
    }
    out
}

/// An address as one label, as CoreDNS names endpoints and pods: `10-1-2-3`, and for IPv6
/// the colons as dashes (a trailing dash gets a `0`, so the label never ends in `-`).
pub fn dashed(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        std::net::IpAddr::V6(v6) => {
            let s = v6.to_string().replace(':', "-");
            if s.ends_with('-') {
                s + "0"
            } else {
                s
            }
        }
    }
}

/// The inverse of [`dashed`] for pod names: three dashes and no `--` is IPv4.
pub fn undash(label: &str) -> Option<std::net::IpAddr> {
    if label.matches('-').count() == 3 && !label.contains("--") {
        label
            .replace('-', ".")
            .parse::<std::net::Ipv4Addr>()
            .ok()
            .map(Into::into)
    } else {
        label
            .replace('-', ":")
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(Into::into)
    }
}

/// The labels of a wire name, leftmost first.
pub fn labels(name: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(&n) = name.get(at) {
        if n == 0 {
            break;
        }
        match name.get(at + 1..at + 1 + n as usize) {
            Some(l) => out.push(l),
            None => break,
        }
        at += 1 + n as usize;
    }
    out
}

#[cfg(test)]
mod address_names {
    use super::*;

    #[test]
    fn reverse_and_dashed_forms() {
        assert_eq!(
            reverse("10.96.0.1".parse().unwrap()),
            wire_from_dotted("1.0.96.10.in-addr.arpa").unwrap()
        );
        let r6 = reverse("fd00::1".parse().unwrap());
        assert!(r6.starts_with(b"\x011\x010\x010"));
        assert!(r6.ends_with(b"\x01d\x01f\x03ip6\x04arpa\x00"));
        assert_eq!(labels(&r6).len(), 34);
        for ip in ["10.96.0.1", "0.0.0.0", "fd00::1", "2001:db8::abcd:1"] {
            let ip = ip.parse().unwrap();
            assert_eq!(unreverse(&reverse(ip)), Some(ip));
        }
        for other in [
            "01.0.96.10.in-addr.arpa",
            "0.96.10.in-addr.arpa",
            "256.0.96.10.in-addr.arpa",
            "1.0.96.10.in-addr.arpa.example",
            "1.0.ip6.arpa",
        ] {
            assert_eq!(
                unreverse(&wire_from_dotted(other).unwrap()),
                None,
                "{other}"
            );
        }
        assert_eq!(dashed("10.1.2.3".parse().unwrap()), "10-1-2-3");
        assert_eq!(dashed("fd00::".parse().unwrap()), "fd00--0");
        assert_eq!(dashed("fd00::1".parse().unwrap()), "fd00--1");
        for ip in [
            "10.1.2.3",
            "fd00::",
            "fd00::1",
            "::1",
            "2001:db8:1:2:3:4:5:6",
        ] {
            let ip = ip.parse().unwrap();
            assert_eq!(undash(&dashed(ip)), Some(ip), "{ip}");
        }
        assert_eq!(undash("10-1-2"), None);
        assert_eq!(undash("10-1-2-300"), None);
        assert_eq!(undash("web"), None);
    }

    #[test]
    fn dotted_names_end_in_a_dot() {
        assert_eq!(
            dotted(&wire_from_dotted("cluster.local").unwrap()),
            "cluster.local."
        );
        assert_eq!(
            dotted(&wire_from_dotted("corp.internal.").unwrap()),
            "corp.internal."
        );
        assert_eq!(dotted(b"\0"), ".");
    }
}
