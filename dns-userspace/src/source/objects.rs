//! The API objects as the sources read them: the Kubernetes kinds with only the fields DNS
//! and the watch machinery use. Everything else is skipped while parsing, never built:
//! `metadata.managedFields` alone parses into a tree of JSON maps larger than the rest of
//! the object, and a 100k-Service list spent most of its first sync allocating and freeing
//! those trees.
//!
//! Each type keeps its kind's API identity (group, version, plural), so kube-rs lists and
//! watches it exactly as the full type.
use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{PodIP, ServiceSpec},
        discovery::v1::{Endpoint, EndpointPort},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Deserialize, Deserializer};

/// The metadata fields read here or by kube-rs's watcher (which resumes from each object's
/// `resourceVersion`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    uid: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

fn meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = Meta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        generate_name: m.generate_name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        uid: m.uid,
        labels: m.labels,
        ..ObjectMeta::default()
    })
}

/// The API identity and metadata accessors kube-rs needs, from the full kind's.
macro_rules! api_kind {
    ($t:ty, $full:ty) => {
        impl k8s_openapi::Resource for $t {
            const API_VERSION: &'static str = <$full as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <$full as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <$full as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <$full as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str =
                <$full as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = <$full as k8s_openapi::Resource>::Scope;
        }

        impl k8s_openapi::Metadata for $t {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Service {
    #[serde(deserialize_with = "meta", default)]
    pub metadata: ObjectMeta,
    pub spec: Option<ServiceSpec>,
}
api_kind!(Service, k8s_openapi::api::core::v1::Service);

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(deserialize_with = "meta", default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub address_type: String,
    pub endpoints: Option<Vec<Endpoint>>,
    pub ports: Option<Vec<EndpointPort>>,
}
api_kind!(
    EndpointSlice,
    k8s_openapi::api::discovery::v1::EndpointSlice
);

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Namespace {
    #[serde(deserialize_with = "meta", default)]
    pub metadata: ObjectMeta,
}
api_kind!(Namespace, k8s_openapi::api::core::v1::Namespace);

/// A Pod's addresses; its spec and container statuses (most of a Pod) are skipped.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Pod {
    #[serde(deserialize_with = "meta", default)]
    pub metadata: ObjectMeta,
    pub status: Option<PodStatus>,
}
api_kind!(Pod, k8s_openapi::api::core::v1::Pod);

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<PodIP>>,
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;

    use super::*;

    #[test]
    fn a_full_object_parses_to_the_fields_read_and_its_identity() {
        let json = serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "web-abc", "namespace": "prod", "resourceVersion": "42",
                "labels": {"kubernetes.io/service-name": "web"},
                "annotations": {"big": "x"},
                "managedFields": [{"manager": "m", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:endpoints": {}}}]
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
        });
        let s: EndpointSlice = serde_json::from_value(json).expect("parses");
        assert_eq!(s.name_any(), "web-abc");
        assert_eq!(s.namespace().as_deref(), Some("prod"));
        assert_eq!(s.resource_version().as_deref(), Some("42"));
        assert_eq!(s.labels()["kubernetes.io/service-name"], "web");
        assert!(s.metadata.managed_fields.is_none() && s.metadata.annotations.is_none());
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.endpoints.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            <EndpointSlice as kube::Resource>::plural(&()),
            "endpointslices"
        );
        assert_eq!(
            <EndpointSlice as kube::Resource>::api_version(&()),
            "discovery.k8s.io/v1"
        );
    }

    #[test]
    fn a_pod_keeps_its_addresses_only() {
        let json = serde_json::json!({
            "metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}, {"ip": "fd00::5"}],
                       "containerStatuses": [{"name": "c", "ready": true}]}
        });
        let p: Pod = serde_json::from_value(json).expect("parses");
        let status = p.status.expect("status");
        assert_eq!(status.pod_ip.as_deref(), Some("10.1.0.5"));
        assert_eq!(status.pod_ips.map(|v| v.len()), Some(2));
    }
}
