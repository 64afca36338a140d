//! The live API: one kube-rs reflector per kind, objects pruned on arrival to what the model
//! reads (every node holds the whole cluster's Services and EndpointSlices).
//!
//! Watch errors back off and retry while the stores keep the last good state; a relist
//! replaces a store whole (kube-rs swaps it in on `InitDone`), so a Delete missed during an
//! outage cannot leave a stale record behind.
use std::{fmt::Debug, hash::Hash, path::Path, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        reflector::{self, Store},
        watcher, WatchStreamExt,
    },
    Api, Client, Config, Resource, ResourceExt,
};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::convert;
use crate::model::view::ClusterView;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("cluster config: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("API client: {0}")]
    Client(#[from] kube::Error),
}

/// Client-side limits on API requests (client-go's QPS and burst); `qps` 0 is unlimited.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ApiLimits {
    pub qps: f64,
    pub burst: u32,
}

/// A client from a kubeconfig file, or in-cluster config (or `$KUBECONFIG`) without one.
pub async fn client(kubeconfig: Option<&Path>, limits: ApiLimits) -> Result<Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |source| Error::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let kc = Kubeconfig::read_from(path).map_err(err)?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        None => Config::infer().await?,
    };
    if limits.qps <= 0.0 {
        return Ok(Client::try_from(config)?);
    }
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder
        .with_layer(&super::ratelimit::RateLimitLayer::new(
            limits.qps,
            limits.burst,
        ))
        .build())
}

/// The reflector stores, filled by background watch tasks.
pub struct Stores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    namespaces: Store<Namespace>,
    pods: Option<Store<Pod>>,
}

impl Stores {
    /// Starts the watches; `changed` is notified on every event. Pods are watched only when
    /// `watch_pods` (a pod mode that needs them).
    pub fn start(client: Client, watch_pods: bool, changed: Arc<Notify>) -> Self {
        Self {
            services: reflect(
                Api::all(client.clone()),
                changed.clone(),
                |_: &mut Service| {},
            ),
            slices: reflect(
                Api::all(client.clone()),
                changed.clone(),
                |_: &mut EndpointSlice| {},
            ),
            namespaces: reflect(
                Api::all(client.clone()),
                changed.clone(),
                |n: &mut Namespace| {
                    n.spec = None;
                    n.status = None;
                },
            ),
            pods: watch_pods.then(|| {
                reflect(Api::all(client), changed, |p: &mut Pod| {
                    // Only the addresses are read; specs are most of a pod's bytes.
                    p.spec = None;
                    if let Some(s) = p.status.as_mut() {
                        *s = k8s_openapi::api::core::v1::PodStatus {
                            pod_ip: s.pod_ip.take(),
                            pod_ips: s.pod_ips.take(),
                            ..Default::default()
                        };
                    }
                })
            }),
        }
    }

    /// Resolves once every store has had its first full list.
    pub async fn wait_synced(&self) {
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        if let Some(p) = &self.pods {
            let _ = p.wait_until_ready().await;
        }
    }

    /// The current cluster view. Objects the model cannot use are skipped and logged (the
    /// API server validated them, so this is rare and never fatal).
    pub fn view(&self) -> ClusterView {
        let mut v = ClusterView::default();
        for s in self.services.state() {
            match convert::service(&s) {
                Ok(sv) => v.services.push(sv),
                Err(e) => skip("Service", &*s, &e),
            }
        }
        for s in self.slices.state() {
            match convert::slice(&s) {
                Ok(sv) => v.slices.extend(sv),
                Err(e) => skip("EndpointSlice", &*s, &e),
            }
        }
        for n in self.namespaces.state() {
            match convert::namespace(&n) {
                Ok(nv) => v.namespaces.push(nv),
                Err(e) => skip("Namespace", &*n, &e),
            }
        }
        for p in self.pods.iter().flat_map(|p| p.state()) {
            match convert::pod(&p) {
                Ok(pv) => v.pods.push(pv),
                Err(e) => skip("Pod", &*p, &e),
            }
        }
        v
    }
}

fn skip<K: Resource>(kind: &str, obj: &K, e: &convert::FieldError) {
    tracing::warn!(
        kind,
        namespace = obj.namespace().unwrap_or_default(),
        name = obj.name_any(),
        error = %e,
        "object skipped"
    );
}

/// Watches `api` into a store, pruning every object on arrival with `prune` (managed fields
/// and annotations always).
fn reflect<K>(
    api: Api<K>,
    changed: Arc<Notify>,
    prune: impl Fn(&mut K) + Send + 'static,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(move |o: &mut K| {
            o.managed_fields_mut().clear();
            o.annotations_mut().clear();
            prune(o);
        })
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if failing {
                        tracing::info!(kind, "watch recovered");
                        failing = false;
                    }
                    changed.notify_one();
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(kind, error = %e, "watch failing; backing off, the last good state keeps serving");
                    }
                    failing = true;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    reader
}
