//! Kubernetes API objects → the trimmed views the record model reads. Shared by every
//! source, so the API and manifest files mean the same thing.
use std::{collections::BTreeSet, net::IpAddr};

use k8s_openapi::api::{core::v1::ServicePort, discovery::v1::EndpointPort};

use super::objects::{EndpointSlice, Namespace, Pod, Service};

use crate::model::{
    view::{
        EndpointView, Labels, NamespaceView, PodView, PortView, ServiceKind, ServiceView,
        SliceView, Str,
    },
    ZoneConfig,
};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A field of an object that cannot be used, named by its path in the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// What a view keeps beyond what every zone reads: only the label keys the zone's
/// selectors read, and endpoints' pod names only under `endpoint_pod_names`. A cluster's
/// objects carry a dozen labels each that no selector looks at: at 10k Services, megabytes.
/// `None` keeps every label (tools that read a directory for its own sake).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keep {
    services: Option<BTreeSet<String>>,
    namespaces: Option<BTreeSet<String>>,
    pod_names: bool,
}

impl Keep {
    pub const ALL: Self = Self {
        services: None,
        namespaces: None,
        pod_names: true,
    };

    pub fn of(cfg: &ZoneConfig) -> Self {
        let set =
            |s: &crate::model::selector::Selector| Some(s.keys().map(str::to_owned).collect());
        Self {
            services: set(&cfg.labels),
            namespaces: set(&cfg.namespace_labels),
            pod_names: cfg.endpoint_pod_names,
        }
    }
}

fn kept(labels: Option<&Labels>, keys: &Option<BTreeSet<String>>) -> Labels {
    labels
        .into_iter()
        .flatten()
        .filter(|(k, _)| keys.as_ref().is_none_or(|keys| keys.contains(*k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

fn ip(field: String, s: &str) -> Result<IpAddr, FieldError> {
    s.parse()
        .map_err(|_| bad(field, format!("`{s}` is not an IP address")))
}

/// Service and namespace names become DNS labels: RFC 1123 label rules, as the API enforces.
pub fn check_label(field: &str, s: &str) -> Result<(), FieldError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("`{s}` is not a valid DNS label (RFC 1123)"),
        ))
    }
}

fn name_and_namespace(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<(Str, Str), FieldError> {
    let name = meta
        .name
        .as_deref()
        .ok_or_else(|| bad("metadata.name", "missing"))?;
    // `kubectl apply` puts an object without a namespace in `default`.
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    check_label("metadata.namespace", namespace)?;
    Ok((name.into(), namespace.into()))
}

fn port(
    field: &str,
    name: Option<&String>,
    protocol: Option<&String>,
    port: i32,
) -> Result<PortView, FieldError> {
    let protocol = match protocol.map(String::as_str) {
        None | Some("TCP") => "TCP",
        Some("UDP") => "UDP",
        Some("SCTP") => "SCTP",
        Some(other) => {
            let field = field.replace(".port", ".protocol");
            return Err(bad(field, format!("`{other}` is not TCP, UDP or SCTP")));
        }
    };
    Ok(PortView {
        name: name.map_or_else(Box::default, |n| n.as_str().into()),
        protocol,
        port: u16::try_from(port).map_err(|_| bad(field, format!("port {port} out of range")))?,
    })
}

pub fn service(svc: &Service, keys: &Keep) -> Result<ServiceView, FieldError> {
    let (name, namespace) = name_and_namespace(&svc.metadata)?;
    check_label("metadata.name", &name)?;
    let spec = svc.spec.clone().unwrap_or_default();
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec
            .external_name
            .ok_or_else(|| bad("spec.externalName", "missing for type ExternalName"))?;
        ServiceKind::ExternalName(target)
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceKind::Headless
    } else {
        let (list, field) = match spec.cluster_ips {
            Some(ips) if !ips.is_empty() => (ips, "spec.clusterIPs"),
            _ => (spec.cluster_ip.into_iter().collect(), "spec.clusterIP"),
        };
        let mut ips = Vec::new();
        for (n, s) in list.iter().enumerate() {
            // "" is not yet allocated.
            if !s.is_empty() && s != "None" {
                ips.push(ip(format!("{field}[{n}]"), s)?);
            }
        }
        ServiceKind::ClusterIp(ips.into())
    };
    let ports = spec
        .ports
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(n, p): (usize, &ServicePort)| {
            port(
                &format!("spec.ports[{n}].port"),
                p.name.as_ref(),
                p.protocol.as_ref(),
                p.port,
            )
        })
        .collect::<Result<_, _>>()?;
    Ok(ServiceView {
        namespace,
        name,
        kind,
        ports,
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
        labels: kept(svc.metadata.labels.as_ref(), &keys.services),
    })
}

/// `None` for slices that belong to no service, or carry FQDN addresses.
pub fn slice(s: &EndpointSlice, keep: &Keep) -> Result<Option<SliceView>, FieldError> {
    let (name, namespace) = name_and_namespace(&s.metadata)?;
    let Some(service) = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .map(|s| Str::from(s.as_str()))
    else {
        return Ok(None);
    };
    if s.address_type == "FQDN" {
        return Ok(None);
    }
    let mut endpoints = Vec::new();
    for (n, e) in s.endpoints.iter().flatten().enumerate() {
        let pod_name = e
            .target_ref
            .as_ref()
            .filter(|r| keep.pod_names && r.kind.as_deref() == Some("Pod"))
            .and_then(|r| r.name.as_deref());
        // The API: a nil ready condition is to be read as ready.
        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        for (m, a) in e.addresses.iter().enumerate() {
            let address = ip(format!("endpoints[{n}].addresses[{m}]"), a)?;
            endpoints.push(EndpointView::new(
                address,
                ready,
                e.hostname.as_deref(),
                pod_name,
            ));
        }
    }
    let mut ports = Vec::new();
    for (n, p) in s.ports.iter().flatten().enumerate() {
        let p: &EndpointPort = p;
        if let Some(num) = p.port {
            ports.push(port(
                &format!("ports[{n}].port"),
                p.name.as_ref(),
                p.protocol.as_ref(),
                num,
            )?);
        }
    }
    Ok(Some(SliceView {
        namespace,
        name,
        service,
        endpoints: endpoints.into(),
        ports: ports.into(),
    }))
}

pub fn namespace(ns: &Namespace, keys: &Keep) -> Result<NamespaceView, FieldError> {
    let name = ns
        .metadata
        .name
        .as_deref()
        .ok_or_else(|| bad("metadata.name", "missing"))?;
    check_label("metadata.name", name)?;
    Ok(NamespaceView {
        name: name.into(),
        labels: kept(ns.metadata.labels.as_ref(), &keys.namespaces),
    })
}

pub fn pod(p: &Pod) -> Result<PodView, FieldError> {
    let (name, namespace) = name_and_namespace(&p.metadata)?;
    let status = p.status.clone().unwrap_or_default();
    let mut ips = Vec::new();
    match status.pod_ips {
        Some(list) if !list.is_empty() => {
            for (n, a) in list.iter().enumerate() {
                ips.push(ip(format!("status.podIPs[{n}].ip"), &a.ip)?);
            }
        }
        _ => {
            if let Some(a) = status.pod_ip.filter(|a| !a.is_empty()) {
                ips.push(ip("status.podIP".into(), &a)?);
            }
        }
    }
    Ok(PodView {
        namespace,
        name,
        ips: ips.into(),
    })
}
