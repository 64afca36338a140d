//! A directory of Kubernetes manifests (YAML as `kubectl get -o yaml` prints it: single
//! objects, multi-document files or `kind: List`), read as the real API types: Services,
//! EndpointSlices, Namespaces and Pods. Other kinds are skipped.
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{de::DeserializeOwned, Deserialize};

use super::{
    convert::{self, FieldError, Keep},
    objects::{EndpointSlice, Namespace, Pod, Service},
};
use crate::model::view::{ClusterView, NamespaceView, Str};

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
///
/// A directory need not carry Namespace objects: a namespace that its objects name is
/// taken to exist (without labels) when no Namespace object says otherwise.
pub fn load_dir(dir: &Path) -> Result<ClusterView> {
    load_dir_keeping(dir, &Keep::ALL)
}

/// [`load_dir`] keeping only the labels under `keys`.
pub fn load_dir_keeping(dir: &Path, keys: &Keep) -> Result<ClusterView> {
    let mut view = ClusterView::default();
    for path in manifest_files(dir)? {
        let text = fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        parse_keeping(&path, &text, keys, &mut view)?;
    }
    let declared: BTreeSet<Str> = view.namespaces.iter().map(|n| n.name.clone()).collect();
    let used: BTreeSet<Str> = view
        .services
        .iter()
        .map(|s| s.namespace.clone())
        .chain(view.slices.iter().map(|s| s.namespace.clone()))
        .chain(view.pods.iter().map(|p| p.namespace.clone()))
        .collect();
    for name in used.difference(&declared) {
        view.namespaces.push(NamespaceView {
            name: name.clone(),
            labels: Default::default(),
        });
    }
    view.services
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    view.namespaces.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(view)
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

/// Parses one file's documents into `view`.
pub fn parse_into(path: &Path, text: &str, view: &mut ClusterView) -> Result<()> {
    parse_keeping(path, text, &Keep::ALL, view)
}

fn parse_keeping(path: &Path, text: &str, keys: &Keep, view: &mut ClusterView) -> Result<()> {
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let ctx = Ctx {
            path,
            doc: i + 1,
            keys,
        };
        let value = serde_yaml::Value::deserialize(doc).map_err(|source| Error::Yaml {
            path: path.to_owned(),
            doc: ctx.doc,
            source,
        })?;
        if value.is_null() {
            continue;
        }
        match value.get("kind").and_then(|k| k.as_str()) {
            Some(k) if k == "List" || k.ends_with("List") => {
                let items = value
                    .get("items")
                    .and_then(|i| i.as_sequence())
                    .ok_or_else(|| ctx.field("items", "a List needs an `items` sequence"))?;
                for (n, item) in items.iter().enumerate() {
                    ctx.object(item.clone(), &format!("items[{n}]."), view)?;
                }
            }
            Some(_) => ctx.object(value, "", view)?,
            None => return Err(ctx.field("kind", "missing")),
        }
    }
    Ok(())
}

struct Ctx<'a> {
    path: &'a Path,
    doc: usize,
    keys: &'a Keep,
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

    fn typed<T: DeserializeOwned>(&self, value: serde_yaml::Value, prefix: &str) -> Result<T> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let field = format!("{prefix}{}", e.path());
            self.field(&field, &e.into_inner().to_string())
        })
    }

    fn object(&self, value: serde_yaml::Value, prefix: &str, view: &mut ClusterView) -> Result<()> {
        let at = |e: FieldError| self.field(&format!("{prefix}{}", e.field), &e.message);
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("Service") => {
                let s: Service = self.typed(value, prefix)?;
                view.services
                    .push(convert::service(&s, self.keys).map_err(at)?);
            }
            Some("EndpointSlice") => {
                let s: EndpointSlice = self.typed(value, prefix)?;
                view.slices
                    .extend(convert::slice(&s, self.keys).map_err(at)?);
            }
            Some("Namespace") => {
                let n: Namespace = self.typed(value, prefix)?;
                view.namespaces
                    .push(convert::namespace(&n, self.keys).map_err(at)?);
            }
            Some("Pod") => {
                let p: Pod = self.typed(value, prefix)?;
                view.pods.push(convert::pod(&p).map_err(at)?);
            }
            Some(_) => {}
            None => return Err(self.field(&format!("{prefix}kind"), "missing")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::model::view::ServiceKind;

    fn parse(text: &str) -> Result<ClusterView> {
        let mut v = ClusterView::default();
        parse_into(Path::new("t.yaml"), text, &mut v)?;
        Ok(v)
    }

    fn ips(l: &[&str]) -> Vec<IpAddr> {
        l.iter().map(|i| i.parse().unwrap()).collect()
    }

    #[test]
    fn services_of_every_kind() {
        let v = parse(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  labels: {app: web}\n\
             spec:\n  clusterIP: 10.96.1.2\n  clusterIPs: [10.96.1.2, 'fd00::12']\n  ports: [{name: http, port: 80}]\n\
             ---\nkind: Service\napiVersion: v1\nmetadata: {name: db}\nspec: {clusterIP: None, publishNotReadyAddresses: true}\n\
             ---\nkind: Service\napiVersion: v1\nmetadata: {name: ext, namespace: shop}\nspec: {type: ExternalName, externalName: api.example.com}\n",
        )
        .expect("parses");
        assert_eq!(
            v.services[0].kind,
            ServiceKind::ClusterIp(ips(&["10.96.1.2", "fd00::12"]).into())
        );
        assert_eq!(
            (
                &*v.services[0].ports[0].name,
                v.services[0].ports[0].protocol,
                v.services[0].ports[0].port
            ),
            ("http", "TCP", 80)
        );
        assert_eq!(
            v.services[0].labels.get("app").map(String::as_str),
            Some("web")
        );
        assert_eq!(
            (
                &*v.services[1].namespace,
                &v.services[1].kind,
                v.services[1].publish_not_ready
            ),
            ("default", &ServiceKind::Headless, true)
        );
        assert_eq!(
            v.services[2].kind,
            ServiceKind::ExternalName("api.example.com".into())
        );
    }

    #[test]
    fn endpoint_slices_namespaces_and_pods() {
        let v = parse(
            "kind: List\napiVersion: v1\nitems:\n\
             - apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  metadata: {name: db-x, namespace: shop, labels: {kubernetes.io/service-name: db}}\n  addressType: IPv4\n\
             \x20 endpoints:\n  - addresses: [10.1.0.5]\n    hostname: db-0\n    conditions: {ready: true}\n    targetRef: {kind: Pod, name: db-0}\n\
             \x20 - addresses: [10.1.0.6]\n    conditions: {ready: false}\n  - addresses: [10.1.0.7, 10.1.0.8]\n    hostname: db-2\n  ports: [{name: pg, port: 5432, protocol: TCP}]\n\
             - apiVersion: v1\n  kind: Namespace\n  metadata: {name: shop, labels: {team: a}}\n\
             - apiVersion: v1\n  kind: Pod\n  metadata: {name: p, namespace: shop}\n  status: {podIP: 10.1.0.20, podIPs: [{ip: 10.1.0.20}, {ip: 'fd00::20'}]}\n\
             - apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  metadata: {name: orphan, namespace: shop}\n  addressType: IPv4\n  endpoints: []\n",
        )
        .expect("parses");
        assert_eq!(
            v.slices.len(),
            1,
            "a slice without a service label is skipped"
        );
        let s = &v.slices[0];
        assert_eq!((&*s.service, s.ports[0].port), ("db", 5432));
        assert_eq!(
            s.endpoints.iter().map(|e| e.ready).collect::<Vec<_>>(),
            [true, false, true, true],
            "no condition reads as ready"
        );
        assert_eq!(s.endpoints[0].pod_name(), Some("db-0"));
        // Two addresses of one endpoint: two endpoints with its hostname, as CoreDNS reads them.
        let db2: Vec<_> = s.endpoints[2..]
            .iter()
            .map(|e| (e.address.to_string(), e.hostname()))
            .collect();
        assert_eq!(
            db2,
            [
                ("10.1.0.7".into(), Some("db-2")),
                ("10.1.0.8".into(), Some("db-2"))
            ]
        );
        assert_eq!(
            v.namespaces[0].labels.get("team").map(String::as_str),
            Some("a")
        );
        assert_eq!(*v.pods[0].ips, *ips(&["10.1.0.20", "fd00::20"]));
    }

    #[test]
    fn errors_name_file_document_and_field() {
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

        let e = parse("kind: Service\nmetadata: {name: a}\nspec: {ports: [{port: eighty}]}\n")
            .expect_err("bad port");
        assert!(e.to_string().contains("spec.ports[0].port"), "{e}");
        let e = parse("kind: List\nitems:\n- kind: Service\n  metadata: {name: a}\n  spec: {ports: [{port: 70000}]}\n").expect_err("range");
        assert!(e.to_string().contains("items[0].spec.ports[0].port"), "{e}");
        let e = parse("kind: Service\nmetadata: {name: Web_1}\n").expect_err("bad name");
        assert!(e.to_string().contains("metadata.name"), "{e}");
        let e = parse("metadata: {name: a}\n").expect_err("no kind");
        assert!(e.to_string().contains("`kind`"), "{e}");
        let e = parse("kind: Service\nmetadata: [\n").expect_err("bad yaml");
        assert!(matches!(e, Error::Yaml { .. }), "{e}");
        let e = parse("kind: EndpointSlice\napiVersion: discovery.k8s.io/v1\nmetadata: {name: s, labels: {kubernetes.io/service-name: x}}\naddressType: IPv4\nendpoints: [{addresses: [nope]}]\n").expect_err("bad address");
        assert!(e.to_string().contains("endpoints[0].addresses[0]"), "{e}");
    }

    #[test]
    fn implied_namespaces() {
        let dir = std::env::temp_dir().join(format!("xdns-manifests-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("a.yaml"), "kind: Service\napiVersion: v1\nmetadata: {name: a, namespace: x}\nspec: {clusterIP: 10.0.0.1}\n").unwrap();
        fs::write(
            dir.join("b.yaml"),
            "kind: Namespace\napiVersion: v1\nmetadata: {name: y, labels: {k: v}}\n",
        )
        .unwrap();
        fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let v = load_dir(&dir).unwrap();
        let names: Vec<&str> = v.namespaces.iter().map(|n| &*n.name).collect();
        assert_eq!(names, ["x", "y"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
