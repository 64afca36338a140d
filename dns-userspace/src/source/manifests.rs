//! A directory of Kubernetes manifests (YAML as `kubectl get -o yaml` prints it: single
//! objects, multi-document files or `kind: List`), read as the real API types.
use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    time::SystemTime,
};

use k8s_openapi::api::core::v1::Service;
use serde::Deserialize;

use super::ServiceView;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: document {doc}: {source}")]
    Yaml {
        path: PathBuf,
        doc: usize,
        source: serde_yaml::Error,
    },
    #[error("{path}: document {doc}: field `{field}`: {message}")]
    Field {
        path: PathBuf,
        doc: usize,
        field: String,
        message: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads every `*.yaml` / `*.yml` / `*.json` file in `dir` (sorted, not recursive).
/// Any error fails the whole snapshot, so a half-read directory never replaces a good one.
pub fn load_dir(dir: &Path) -> Result<Vec<ServiceView>> {
    let mut services = Vec::new();
    for path in manifest_files(dir)? {
        let text = fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        services.extend(parse_file(&path, &text)?);
    }
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(services)
}

fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| Error::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if path.is_file() && matches!(ext, "yaml" | "yml" | "json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The newest modification time in `dir` and the number of manifest files: a cheap
/// fingerprint to poll for changes.
pub fn fingerprint(dir: &Path) -> Result<(Option<SystemTime>, usize)> {
    let files = manifest_files(dir)?;
    let newest = files
        .iter()
        .filter_map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .max();
    Ok((newest, files.len()))
}

/// Parses one file's documents into Services; other kinds are skipped.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<ServiceView>> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc_no = i + 1;
        let value = serde_yaml::Value::deserialize(doc).map_err(|source| Error::Yaml {
            path: path.to_owned(),
            doc: doc_no,
            source,
        })?;
        if value.is_null() {
            continue;
        }
        let ctx = Ctx { path, doc: doc_no };
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("List") | Some("ServiceList") => {
                let items = value
                    .get("items")
                    .and_then(|i| i.as_sequence())
                    .ok_or_else(|| ctx.field("items", "a List needs an `items` sequence"))?;
                for (n, item) in items.iter().enumerate() {
                    if item.get("kind").and_then(|k| k.as_str()) == Some("Service") {
                        out.push(ctx.service(item.clone(), &format!("items[{n}]."))?);
                    }
                }
            }
            Some("Service") => out.push(ctx.service(value, "")?),
            Some(_) => {}
            None => return Err(ctx.field("kind", "missing")),
        }
    }
    Ok(out)
}

struct Ctx<'a> {
    path: &'a Path,
    doc: usize,
}

impl Ctx<'_> {
    fn field(&self, field: &str, message: &str) -> Error {
        Error::Field {
            path: self.path.to_owned(),
            doc: self.doc,
            field: field.to_owned(),
            message: message.to_owned(),
        }
    }

    fn service(&self, value: serde_yaml::Value, prefix: &str) -> Result<ServiceView> {
        let svc: Service = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = format!("{prefix}{}", e.path());
            self.field(&field, &e.into_inner().to_string())
        })?;
        let name = svc
            .metadata
            .name
            .ok_or_else(|| self.field(&format!("{prefix}metadata.name"), "missing"))?;
        check_label(&name).map_err(|m| self.field(&format!("{prefix}metadata.name"), &m))?;
        // `kubectl apply` puts a manifest without a namespace in `default`.
        let namespace = svc.metadata.namespace.unwrap_or_else(|| "default".into());
        check_label(&namespace)
            .map_err(|m| self.field(&format!("{prefix}metadata.namespace"), &m))?;

        let spec = svc.spec.unwrap_or_default();
        let (ips, field) = match spec.cluster_ips {
            Some(ips) if !ips.is_empty() => (ips, "spec.clusterIPs"),
            _ => (spec.cluster_ip.into_iter().collect(), "spec.clusterIP"),
        };
        let mut cluster_ips = Vec::new();
        for (n, ip) in ips.iter().enumerate() {
            // "None" is a headless service; "" is not yet allocated.
            if ip.is_empty() || ip == "None" {
                continue;
            }
            let parsed: IpAddr = ip.parse().map_err(|_| {
                self.field(
                    &format!("{prefix}{field}[{n}]"),
                    &format!("`{ip}` is not an IP address"),
                )
            })?;
            cluster_ips.push(parsed);
        }
        Ok(ServiceView {
            namespace,
            name,
            cluster_ips,
        })
    }
}

/// Service and namespace names become DNS labels: RFC 1123 label rules, as the API enforces.
fn check_label(s: &str) -> std::result::Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("`{s}` is not a valid DNS label (RFC 1123)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<ServiceView>> {
        parse_file(Path::new("t.yaml"), text)
    }

    #[test]
    fn single_service_with_cluster_ips() {
        let s = parse(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n\
             spec:\n  clusterIP: 10.96.1.2\n  clusterIPs: [10.96.1.2, 'fd00::12']\n",
        )
        .expect("parses");
        assert_eq!(
            s,
            vec![ServiceView {
                namespace: "shop".into(),
                name: "web".into(),
                cluster_ips: vec!["10.96.1.2".parse().unwrap(), "fd00::12".parse().unwrap()],
            }]
        );
    }

    #[test]
    fn list_and_multi_document_and_other_kinds() {
        let s = parse(
            "kind: List\napiVersion: v1\nitems:\n- kind: Service\n  apiVersion: v1\n  metadata: {name: a, namespace: x}\n  spec: {clusterIP: 10.0.0.1}\n\
             - kind: ConfigMap\n  apiVersion: v1\n  metadata: {name: c}\n---\n\
             kind: Service\napiVersion: v1\nmetadata: {name: b}\nspec: {clusterIP: None}\n",
        )
        .expect("parses");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "a");
        assert_eq!(s[1].namespace, "default");
        assert!(s[1].cluster_ips.is_empty(), "headless has no cluster IP");
    }

    #[test]
    fn bad_ip_names_file_document_and_field() {
        let e = parse("kind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.0.0.1}\n---\nkind: Service\nmetadata: {name: b}\nspec: {clusterIP: 10.0.0.999}\n")
            .expect_err("bad IP");
        let msg = e.to_string();
        assert!(
            msg.contains("t.yaml") && msg.contains("document 2"),
            "{msg}"
        );
        assert!(
            msg.contains("spec.clusterIP[0]") && msg.contains("10.0.0.999"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_names_the_field_path() {
        let e = parse("kind: Service\nmetadata: {name: a}\nspec: {ports: [{port: eighty}]}\n")
            .expect_err("bad port");
        assert!(e.to_string().contains("spec.ports[0].port"), "{e}");
    }

    #[test]
    fn invalid_name_and_missing_kind_are_errors() {
        let e = parse("kind: Service\nmetadata: {name: Web_1}\n").expect_err("bad name");
        assert!(e.to_string().contains("metadata.name"), "{e}");
        let e = parse("metadata: {name: a}\n").expect_err("no kind");
        assert!(e.to_string().contains("`kind`"), "{e}");
        let e = parse("kind: Service\nmetadata: [\n").expect_err("bad yaml");
        assert!(matches!(e, Error::Yaml { .. }), "{e}");
    }
}
