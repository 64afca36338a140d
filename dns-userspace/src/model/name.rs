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
