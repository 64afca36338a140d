//! The configuration file (`--config`, YAML) laid over the flags, section by section. Each
//! layer's settings are one struct that is both a clap group and a serde section, so a
//! setting is written once: its flag and its file key come from the same field. Parsing is
//! strict: an unknown or mistyped key is an error naming its line and path, so a typo never
//! silently falls back to a default.
use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

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

/// A flag's duration: a plain number is seconds (`--lameduck-secs 5`), a unit may be given.
pub fn secs(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// A flag's duration in milliseconds (`--forward-timeout-ms 500`), a unit may be given.
pub fn millis(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<u64>() {
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => parse_duration(s),
    }
}

/// A duration in the file: `5s`, `500ms`, `2m`, `1h` or a plain number of seconds; written
/// back in milliseconds, which reads the same.
pub mod span {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Duration::from_secs(n)),
            Raw::Text(t) => super::parse_duration(&t).map_err(serde::de::Error::custom),
        }
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

/// A setting whose value parses but cannot be used (a bad selector, an unusable upstream):
/// `field` is its file path (`zone.labels`), which also names the flag in messages.
#[derive(Debug, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(field: &'static str, e: impl std::fmt::Display) -> Self {
        Self {
            field,
            message: e.to_string(),
        }
    }
}

/// `base` (the flags' settings) with the file's sections laid over it: each key the file
/// gives replaces that setting, every other keeps the flag's value. `file` names the file
/// in errors.
pub fn overlay<T: Serialize + DeserializeOwned>(
    base: &T,
    file: &str,
    text: &str,
) -> Result<T, ConfigError> {
    let at = |field: String, line: Option<usize>, message: String| ConfigError::Field {
        file: file.to_owned(),
        line: line.unwrap_or_else(|| line_of(text, &field)),
        message,
        field,
    };
    let over: Value = serde_yaml::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        at(String::new(), line, strip_location(&e.to_string()))
    })?;
    let mut merged =
        serde_yaml::to_value(base).map_err(|e| at(String::new(), Some(0), e.to_string()))?;
    match (over, &mut merged) {
        (Value::Null, _) => {}
        (Value::Mapping(sections), Value::Mapping(into)) => merge(into, sections),
        _ => {
            return Err(at(
                String::new(),
                Some(1),
                "want a mapping of sections".into(),
            ))
        }
    }
    serde_path_to_error::deserialize(merged).map_err(|e| {
        let field = e.path().to_string();
        let message = strip_location(&e.into_inner().to_string());
        at(field, None, message)
    })
}

/// Lays each section the file gives over the flags' one, key by key. An empty section
/// (`cache:` alone) changes nothing; a section that is not a mapping replaces the whole,
/// for the deserializer to refuse with its path.
fn merge(into: &mut Mapping, sections: Mapping) {
    for (name, section) in sections {
        match (section, into.get_mut(&name)) {
            (Value::Null, Some(_)) => {}
            (Value::Mapping(keys), Some(Value::Mapping(base))) => {
                for (k, v) in keys {
                    base.insert(k, v);
                }
            }
            (other, _) => {
                into.insert(name, other);
            }
        }
    }
}

/// serde_yaml appends " at line L column C"; the line is already in front.
fn strip_location(message: &str) -> String {
    message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_owned()
}

/// Reads the file at `path` and lays it over `base`.
pub fn load<T: Serialize + DeserializeOwned>(
    base: &T,
    path: &std::path::Path,
) -> Result<(T, String), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    Ok((overlay(base, &file, &text)?, text))
}

/// The line (1-based) of `path`'s key (`forward.to[1]` → `to` under `forward:`), for
/// errors found after parsing; 0 if it cannot be found.
pub fn line_of(text: &str, path: &str) -> usize {
    let mut parts = path.split('.').map(|p| p.split('[').next().unwrap_or(""));
    let key_line = |from: usize, key: &str| {
        text.lines()
            .enumerate()
            .skip(from)
            .find(|(_, l)| {
                l.trim_start()
                    .trim_start_matches("- ")
                    .strip_prefix(key)
                    .is_some_and(|r| r.trim_start().starts_with(':'))
            })
            .map(|(i, _)| i)
    };
    let (Some(section), key) = (parts.next(), parts.next()) else {
        return 0;
    };
    if section.is_empty() {
        return 0;
    }
    let Some(at) = key_line(0, section) else {
        return 0;
    };
    match key {
        Some(k) if !k.is_empty() => key_line(at + 1, k).map_or(0, |i| i + 1),
        _ => at + 1,
    }
}

impl ConfigError {
    /// An error found after parsing, placed at its field's line.
    pub fn invalid(file: &str, text: &str, e: Invalid) -> Self {
        ConfigError::Field {
            file: file.to_owned(),
            line: line_of(text, e.field),
            field: e.field.to_owned(),
            message: e.message,
        }
    }
}

/// A Service named `NAMESPACE/NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
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

impl From<ServiceRef> for String {
    fn from(s: ServiceRef) -> String {
        format!("{}/{}", s.namespace, s.name)
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

    /// Two sections as the daemon's are made: flags' values in, file keys over them.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sections {
        cache: Cache,
        forward: Forward,
    }
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Cache {
        ttl: u32,
        min_ttl: u32,
        #[serde(with = "span")]
        serve_stale: Duration,
    }
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Forward {
        to: Vec<String>,
        upstream_service: Option<ServiceRef>,
        #[serde(with = "span")]
        timeout: Duration,
    }

    fn flags() -> Sections {
        Sections {
            cache: Cache {
                ttl: 30,
                min_ttl: 5,
                serve_stale: Duration::ZERO,
            },
            forward: Forward {
                to: vec!["/etc/resolv.conf".into()],
                upstream_service: None,
                timeout: Duration::from_secs(2),
            },
        }
    }

    #[test]
    fn the_file_overlays_the_flags_key_by_key() {
        let text = "\
cache:
  ttl: 60
  serveStale: 1h
forward:
  upstreamService: kube-system/kube-dns-upstream
  timeout: 500ms
";
        let s = overlay(&flags(), "c.yaml", text).unwrap();
        assert_eq!(
            (s.cache.ttl, s.cache.min_ttl),
            (60, 5),
            "minTtl keeps the flag"
        );
        assert_eq!(s.cache.serve_stale, Duration::from_secs(3600));
        assert_eq!(s.forward.timeout, Duration::from_millis(500));
        assert_eq!(s.forward.to, flags().forward.to);
        assert_eq!(
            s.forward.upstream_service,
            Some(ServiceRef::parse("kube-system/kube-dns-upstream").unwrap())
        );
        // Nothing, or an empty section, changes nothing.
        assert_eq!(overlay(&flags(), "e", "").unwrap(), flags());
        assert_eq!(overlay(&flags(), "e", "cache:\n").unwrap(), flags());
    }

    #[test]
    fn errors_name_line_and_field() {
        let cases = [
            ("cache:\n  ttl: ten\n", 2, "cache.ttl"),
            (
                "cache:\n  ttl: 5\nforward:\n  polcy: random\n",
                4,
                "forward.polcy",
            ),
            ("forward:\n  timeout: 5 parsecs\n", 2, "forward.timeout"),
            (
                "forward:\n  upstreamService: kube-dns\n",
                2,
                "forward.upstreamService",
            ),
            ("forward:\n  to: 10.0.0.1\n", 2, "forward.to"),
            ("cahce:\n  ttl: 5\n", 1, "cahce"),
            // The same key in two sections: the line is the one under the section named.
            ("cache:\n  ttl: 5\nforward:\n  ttl: 7\n", 4, "forward.ttl"),
        ];
        for (text, line, field) in cases {
            match overlay(&flags(), "c.yaml", text) {
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
        let e = overlay(&flags(), "c.yaml", "forward:\n  polcy: random\n").unwrap_err();
        assert!(e.to_string().contains("polcy"), "{e}");
        let e = overlay(&flags(), "c.yaml", "cache: [\n").unwrap_err();
        assert!(e.to_string().starts_with("c.yaml:"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 parsecs").is_err() && parse_duration("").is_err());
        assert_eq!(millis("2000"), Ok(Duration::from_secs(2)));
        assert_eq!(millis("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(secs("60"), Ok(Duration::from_secs(60)));
    }

    #[test]
    fn lines_of_fields() {
        let text = "cache:\n  ttl: 30\nforward:\n  to: [a]\n  stubs:\n    x: [b]\n";
        assert_eq!(line_of(text, "forward.stubs"), 5);
        assert_eq!(line_of(text, "cache.ttl"), 2);
        assert_eq!(line_of(text, "forward"), 3);
        assert_eq!(line_of(text, "nothing"), 0);
    }
}
