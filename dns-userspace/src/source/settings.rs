//! The `source` section: where the records come from. Read at start only.
use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{kube::ApiLimits, Error, Keep, Source};
use crate::{config, model::PodMode, model::ZoneConfig};

#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceSettings {
    /// Directory of manifests (Services, EndpointSlices, Namespaces, Pods; YAML or JSON as
    /// `kubectl get -o yaml` prints them), re-read when it changes.
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// Watch the Kubernetes API with this kubeconfig.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Watch the Kubernetes API with the pod's service account.
    #[arg(long)]
    pub in_cluster: bool,
    /// Client-side limit on API requests per second (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub kube_api_qps: f64,
    /// Requests allowed at once above the QPS limit.
    #[arg(long, default_value_t = 10)]
    pub kube_api_burst: u32,
    /// `/ready` turns 503 once an API watch has failed this long (or ended); the last good
    /// records keep serving either way. Seconds, or `1m`.
    #[arg(long, default_value = "60", value_parser = config::secs)]
    #[serde(with = "config::span")]
    pub watch_failing_after: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("give exactly one source: --manifests DIR, --kubeconfig FILE or --in-cluster")]
    NotOne,
    #[error(transparent)]
    Source(#[from] Error),
}

impl SourceSettings {
    /// The source these settings name, keeping the object fields `zone` reads.
    pub async fn open(&self, zone: &ZoneConfig) -> Result<Source, OpenError> {
        let keep = Keep::of(zone);
        match (&self.manifests, &self.kubeconfig, self.in_cluster) {
            (Some(dir), None, false) => Ok(Source::manifests(dir, keep)),
            (None, kubeconfig, in_cluster) if kubeconfig.is_some() || in_cluster => {
                let limits = ApiLimits {
                    qps: self.kube_api_qps,
                    burst: self.kube_api_burst,
                };
                let pods = zone.pods == PodMode::Verified;
                Ok(Source::kube(kubeconfig.as_deref(), limits, pods, &keep).await?)
            }
            _ => Err(OpenError::NotOne),
        }
    }
}
