//! The configuration file (`--config`, YAML): one section per Corefile plugin of the seed
//! Corefile, every field optional (absent: the flag's value). Parsing is strict: an unknown
//! or mistyped field is an error naming its line and path, so a typo never silently falls
//! back to a default.
use std::{collections::BTreeMap, net::IpAddr, net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

use crate::{dataplane::attach::AttachMode, forward::Policy, model::PodMode};

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileConfig {
    pub kubernetes: Option<Kubernetes>,
    pub forward: Option<Forward>,
    pub cache: Option<Cache>,
    /// Corefile `loadbalance`.
    pub loadbalance: Option<bool>,
    /// Corefile `log`: one line per query.
    pub log: Option<bool>,
    pub health: Option<Health>,
    /// Corefile `ready`: the address of `/ready`.
    pub ready: Option<SocketAddr>,
    /// Corefile `prometheus`: the address of `/metrics`.
    pub prometheus: Option<SocketAddr>,
    /// How the daemon sits on the node; read at start only.
    pub node: Option<Node>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kubernetes {
    pub zone: Option<String>,
    pub ttl: Option<u32>,
    pub pods: Option<PodMode>,
    pub namespaces: Option<Vec<String>>,
    pub labels: Option<String>,
    pub namespace_labels: Option<String>,
    pub endpoint_pod_names: Option<bool>,
    pub noendpoints: Option<bool>,
    pub ignore_empty_service: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    pub startup_timeout: Option<Duration>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Forward {
    /// `false`: REFUSED outside the zone (no `forward` in the Corefile).
    pub enabled: Option<bool>,
    /// Upstreams: `IP`, `IP:port`, or a resolv.conf path whose nameservers are used.
    pub to: Option<Vec<String>>,
    /// `namespace/name` of a Service whose ready endpoints are the upstreams while it has
    /// any (`to` otherwise).
    pub upstream_service: Option<ServiceRef>,
    pub policy: Option<Policy>,
    pub max_concurrent: Option<usize>,
    pub force_tcp: Option<bool>,
    pub prefer_udp: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// Stub domains: domain → upstreams (`IP` or `IP:port`).
    pub stubs: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cache {
    /// Longest TTL, seconds (Corefile `cache 30`).
    pub ttl: Option<u32>,
    pub min_ttl: Option<u32>,
    pub size: Option<usize>,
    pub max_bytes: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub serve_stale: Option<Duration>,
    pub prefetch: Option<u32>,
    pub prefetch_percent: Option<u32>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Health {
    pub addr: Option<SocketAddr>,
    #[serde(default, deserialize_with = "duration")]
    pub lameduck: Option<Duration>,
    /// `/ready` fails once an API watch has failed this long.
    #[serde(default, deserialize_with = "duration")]
    pub watch_failing_after: Option<Duration>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Node {
    pub listen: Option<Vec<IpAddr>>,
    pub accelerate: Option<Vec<IpAddr>>,
    pub accelerate_services: Option<Vec<ServiceRef>>,
    pub port: Option<u16>,
    pub ifaces: Option<Vec<String>>,
    pub iface_patterns: Option<Vec<String>>,
    pub attach: Option<AttachMode>,
    pub pin_dir: Option<PathBuf>,
    pub local_iface: Option<String>,
    pub notrack: Option<bool>,
    /// Read at exit: set it (the file is reloaded) before deleting the DaemonSet to
    /// uninstall without leaving programs attached.
    pub detach_on_exit: Option<bool>,
    pub stale_after: Option<u64>,
    /// `--log-kernel-sample`: one kernel answer in N to the query log.
    pub log_kernel_sample: Option<u32>,
}

/// `5s`, `500ms`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}`: not a duration (like 5s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Secs(n)) => Ok(Some(Duration::from_secs(n))),
        Some(Raw::Text(t)) => parse_duration(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}: `{field}`: {message}")]
    Field {
        file: String,
        line: usize,
        field: String,
        message: String,
    },
}

/// Parses the file's text. `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<FileConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .location()
            .map(|l| l.line())
            .unwrap_or_else(|| line_of(text, &field));
        // serde_yaml appends " at line L column C"; the line is already in front.
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        ConfigError::Field {
            file: file.to_owned(),
            line,
            field,
            message,
        }
    })
}

/// Reads and parses the file at `path`.
pub fn load(path: &std::path::Path) -> Result<FileConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&file, &text)
}

/// The line (1-based) where the last key of `path` (`forward.to[1]` → `to`) appears, for
/// errors found after parsing; 0 if it cannot be found.
pub fn line_of(text: &str, path: &str) -> usize {
    let key = path
        .rsplit('.')
        .next()
        .unwrap_or(path)
        .split('[')
        .next()
        .unwrap_or("");
    if key.is_empty() {
        return 0;
    }
    text.lines()
        .position(|l| {
            l.trim_start()
                .trim_start_matches("- ")
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with(':'))
        })
        .map(|i| i + 1)
        .unwrap_or(0)
}

impl ConfigError {
    /// An error found after parsing (a bad selector, an unusable upstream), placed at its
    /// field's line.
    pub fn field(file: &str, text: &str, field: &str, message: impl Into<String>) -> Self {
        ConfigError::Field {
            file: file.to_owned(),
            line: line_of(text, field),
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// A Service named `NAMESPACE/NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

impl TryFrom<String> for ServiceRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl ServiceRef {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!(
                "`{s}`: want NAMESPACE/NAME, as kube-system/kube-dns"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
kubernetes:
  ttl: 10
  pods: verified
  startupTimeout: 2s
forward:
  to: [/etc/resolv.conf, 10.0.0.1:5353]
  policy: round_robin
  timeout: 500ms
  stubs:
    corp.example: [10.1.1.1]
cache:
  ttl: 60
  maxBytes: 1048576
  serveStale: 1h
loadbalance: false
log: true
health:
  lameduck: 5s
  watchFailingAfter: 2m
prometheus: 0.0.0.0:9253
node:
  accelerate: [10.96.0.10]
  accelerateServices: [kube-system/kube-dns]
  attach: tc
  logKernelSample: 64
";

    #[test]
    fn a_full_file_parses() {
        let c = parse("c.yaml", GOOD).unwrap();
        let k = c.kubernetes.unwrap();
        assert_eq!(k.ttl, Some(10));
        assert_eq!(k.pods, Some(PodMode::Verified));
        assert_eq!(k.startup_timeout, Some(Duration::from_secs(2)));
        let f = c.forward.unwrap();
        assert_eq!(f.policy, Some(Policy::RoundRobin));
        assert_eq!(f.timeout, Some(Duration::from_millis(500)));
        assert_eq!(f.to.unwrap()[1], "10.0.0.1:5353");
        assert_eq!(f.stubs.unwrap()["corp.example"], vec!["10.1.1.1"]);
        let cache = c.cache.unwrap();
        assert_eq!(cache.serve_stale, Some(Duration::from_secs(3600)));
        assert_eq!(cache.max_bytes, Some(1 << 20));
        assert_eq!((c.loadbalance, c.log), (Some(false), Some(true)));
        let h = c.health.unwrap();
        assert_eq!(h.watch_failing_after, Some(Duration::from_secs(120)));
        let node = c.node.unwrap();
        assert_eq!(node.attach, Some(AttachMode::Tc));
        assert_eq!(node.log_kernel_sample, Some(64));
        assert_eq!(
            node.accelerate_services,
            Some(vec![ServiceRef::parse("kube-system/kube-dns").unwrap()])
        );
        assert_eq!(parse("e", "").unwrap(), FileConfig::default());
    }

    #[test]
    fn errors_name_line_and_field() {
        let cases = [
            ("kubernetes:\n  ttl: ten\n", 2, "kubernetes.ttl"),
            (
                "cache:\n  ttl: 5\nforward:\n  polcy: random\n",
                4,
                "forward.polcy",
            ),
            ("forward:\n  timeout: 5 parsecs\n", 2, "forward.timeout"),
            (
                "node:\n  accelerateServices: [kube-dns]\n",
                2,
                "node.accelerateServices[0]",
            ),
            ("kubernetes:\n  pods: sometimes\n", 2, "kubernetes.pods"),
            (
                "log: true\nnode:\n  listen: [10.0.0.300]\n",
                3,
                "node.listen[0]",
            ),
        ];
        for (text, line, field) in cases {
            match parse("c.yaml", text) {
                Err(ConfigError::Field {
                    line: l,
                    field: f,
                    message,
                    ..
                }) => {
                    assert_eq!((l, f.as_str()), (line, field), "{text}: {message}");
                    assert!(!message.is_empty());
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let e = parse("c.yaml", "forward:\n  polcy: random\n").unwrap_err();
        assert!(e.to_string().contains("polcy"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 parsecs").is_err() && parse_duration("").is_err());
    }

    #[test]
    fn lines_of_fields() {
        assert_eq!(line_of(GOOD, "forward.stubs"), 9);
        assert_eq!(line_of(GOOD, "kubernetes.pods"), 3);
        assert_eq!(line_of(GOOD, "nothing"), 0);
    }
}
