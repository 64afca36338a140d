//! The manifests a cluster admin applies: a kustomize base (`deploy/base/`) and one overlay
//! per mode (`kubectl apply -k deploy/overlays/accelerator` or `.../node-local`); this crate holds
//! their test (`tests/manifests.rs`): each document parses as its real Kubernetes type with
//! nothing dropped, and the choices the README promises (least privilege, probes, host
//! mounts, a config the daemon accepts) hold in both modes.

use std::{path::Path, process::Command};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("kubectl (renders the overlays; `cargo xtask setup` installs it): {0}")]
    Kubectl(#[from] std::io::Error),
    #[error("kubectl kustomize {dir}: {stderr}")]
    Kustomize { dir: String, stderr: String },
    #[error("kubectl kustomize {dir}: {error}")]
    Yaml {
        dir: String,
        error: serde_yaml::Error,
    },
}

/// The overlay's documents as `kubectl kustomize` renders them (what `kubectl apply -k`
/// applies), as JSON values. Shared by the manifest test and the pod test, so both read
/// the real files the same way.
pub fn rendered(overlay: &str) -> Result<Vec<Value>, RenderError> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("overlays")
        .join(overlay);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()?;
    let shown = || dir.display().to_string();
    if !out.status.success() {
        return Err(RenderError::Kustomize {
            dir: shown(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut docs = Vec::new();
    for d in serde_yaml::Deserializer::from_str(&text) {
        let v =
            <Value as serde::Deserialize>::deserialize(d).map_err(|error| RenderError::Yaml {
                dir: shown(),
                error,
            })?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}
