//! Which interfaces to attach to: named ones, and every interface whose name matches a
//! pattern (`veth*`, `cali*`, `lxc*`...), as pod veths come and go.
use std::collections::BTreeSet;

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

/// The interfaces of this network namespace now.
pub fn interfaces() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// What changed: interfaces to attach (matching, not attached yet) and attached ones that
/// are gone (the kernel detached them with the device).
pub fn diff(
    present: &BTreeSet<String>,
    attached: &BTreeSet<String>,
    patterns: &[Pattern],
) -> (Vec<String>, Vec<String>) {
    let new = present
        .iter()
        .filter(|n| !attached.contains(*n) && patterns.iter().any(|p| p.matches(n)))
        .cloned()
        .collect();
    let gone = attached
        .iter()
        .filter(|n| !present.contains(*n))
        .cloned()
        .collect();
    (new, gone)
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
        let set = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let (new, gone) = diff(
            &set(&["lo", "eth0", "veth1", "veth2"]),
            &set(&["veth1", "veth9"]),
            &pats,
        );
        assert_eq!(new, vec!["veth2".to_string()]);
        assert_eq!(gone, vec!["veth9".to_string()]);
    }
}
