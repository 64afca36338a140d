//! Stub domains: names under a domain go to that domain's own upstreams
//! (`consul.local -> 10.150.0.1`), and the importer for the kube-dns ConfigMap keys
//! `stubDomains` and `upstreamNameservers`.
use std::{collections::BTreeMap, net::SocketAddr};

use crate::model::name::{is_within, wire_from_dotted};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("stub `{0}`: want DOMAIN=IP[:PORT][,IP[:PORT]...]")]
    Syntax(String),
    #[error("stub `{spec}`: `{value}` is not an IP or IP:port")]
    Address { spec: String, value: String },
    #[error("stub domain `{0}`: {1}")]
    Domain(String, crate::model::NameError),
    #[error("kube-dns ConfigMap {path}: field `{field}`: {message}")]
    ConfigMap {
        path: String,
        field: String,
        message: String,
    },
}

/// One stub domain: lower-case wire name and its upstreams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stub {
    pub domain: Vec<u8>,
    pub upstreams: Vec<SocketAddr>,
}

pub fn parse_addr(value: &str) -> Option<SocketAddr> {
    value.parse::<SocketAddr>().ok().or_else(|| {
        value
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// `consul.local=10.150.0.1,10.150.0.2:5353`.
pub fn parse_stub(spec: &str) -> Result<Stub, Error> {
    let (domain, addrs) = spec
        .split_once('=')
        .ok_or_else(|| Error::Syntax(spec.into()))?;
    let domain = wire_from_dotted(domain.trim()).map_err(|e| Error::Domain(domain.into(), e))?;
    let mut upstreams = Vec::new();
    for a in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        upstreams.push(parse_addr(a).ok_or_else(|| Error::Address {
            spec: spec.into(),
            value: a.into(),
        })?);
    }
    if upstreams.is_empty() {
        return Err(Error::Syntax(spec.into()));
    }
    Ok(Stub { domain, upstreams })
}

/// The most specific stub for a lower-case wire name.
pub fn pick<'a, T>(stubs: &'a [(Vec<u8>, T)], name: &[u8]) -> Option<&'a T> {
    stubs
        .iter()
        .filter(|(d, _)| is_within(name, d))
        .max_by_key(|(d, _)| d.len())
        .map(|(_, t)| t)
}

/// What a kube-dns ConfigMap asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KubeDnsConfig {
    pub stubs: Vec<Stub>,
    /// Replaces the resolv.conf upstreams when present.
    pub upstreams: Vec<SocketAddr>,
}

/// Reads the `data.stubDomains` (JSON object of domain → IPs) and
/// `data.upstreamNameservers` (JSON list) of a kube-dns ConfigMap in YAML.
pub fn import_kube_dns(path: &str, yaml: &str) -> Result<KubeDnsConfig, Error> {
    let err = |field: &str, message: String| Error::ConfigMap {
        path: path.into(),
        field: field.into(),
        message,
    };
    let cm: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| err("", e.to_string()))?;
    let data = cm.get("data").cloned().unwrap_or_default();
    let mut out = KubeDnsConfig::default();
    if let Some(s) = data.get("stubDomains").and_then(|v| v.as_str()) {
        let map: BTreeMap<String, Vec<String>> =
            serde_json::from_str(s).map_err(|e| err("data.stubDomains", e.to_string()))?;
        for (domain, ips) in map {
            let spec = format!("{domain}={}", ips.join(","));
            out.stubs
                .push(parse_stub(&spec).map_err(|e| err("data.stubDomains", e.to_string()))?);
        }
    }
    if let Some(s) = data.get("upstreamNameservers").and_then(|v| v.as_str()) {
        let ips: Vec<String> =
            serde_json::from_str(s).map_err(|e| err("data.upstreamNameservers", e.to_string()))?;
        for ip in ips {
            out.upstreams.push(
                parse_addr(&ip).ok_or_else(|| {
                    err("data.upstreamNameservers", format!("`{ip}` is not an IP"))
                })?,
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_and_the_most_specific_match() {
        let a = parse_stub("consul.local=10.150.0.1").unwrap();
        let b = parse_stub("dc1.consul.local=10.150.0.2:5353,10.150.0.3").unwrap();
        assert_eq!(b.upstreams.len(), 2);
        assert_eq!(b.upstreams[0].port(), 5353);
        let table = vec![(a.domain.clone(), "a"), (b.domain.clone(), "b")];
        let w = |s: &str| wire_from_dotted(s).unwrap();
        assert_eq!(pick(&table, &w("x.dc1.consul.local")), Some(&"b"));
        assert_eq!(pick(&table, &w("x.consul.local")), Some(&"a"));
        assert_eq!(pick(&table, &w("xconsul.local")), None);
        assert!(parse_stub("consul.local").is_err());
        assert!(parse_stub("consul.local=nope")
            .unwrap_err()
            .to_string()
            .contains("`nope`"));
    }

    #[test]
    fn kube_dns_configmap() {
        let yaml = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: kube-dns, namespace: kube-system}
data:
  stubDomains: |
    {"acme.local": ["1.2.3.4"], "corp.example": ["10.0.0.53", "10.0.0.54"]}
  upstreamNameservers: |
    ["8.8.8.8", "8.8.4.4"]
"#;
        let c = import_kube_dns("cm.yaml", yaml).unwrap();
        assert_eq!(c.stubs.len(), 2);
        assert_eq!(c.stubs[0].domain, wire_from_dotted("acme.local").unwrap());
        assert_eq!(
            c.upstreams,
            vec!["8.8.8.8:53".parse().unwrap(), "8.8.4.4:53".parse().unwrap()]
        );
        let bad = "data:\n  upstreamNameservers: '[\"8.8.8.888\"]'\n";
        let e = import_kube_dns("cm.yaml", bad).unwrap_err().to_string();
        assert!(
            e.contains("data.upstreamNameservers") && e.contains("8.8.8.888"),
            "{e}"
        );
    }
}
