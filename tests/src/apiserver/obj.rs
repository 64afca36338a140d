//! Object builders, as `kubectl get -o json` shows them before the server adds its
//! metadata (uid, resourceVersion, managedFields).
use serde_json::{json, Value};

pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
           "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
}

fn family(ip: &str) -> &'static str {
    if ip.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    }
}

fn port_list(ports: &[(&str, u16)]) -> Vec<Value> {
    ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"}))
        .collect()
}

/// A ClusterIP Service (headless with no IPs), selecting `app: <name>`.
pub fn service(ns: &str, name: &str, cluster_ips: &[&str], ports: &[(&str, u16)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP", "targetPort": p}))
        .collect();
    let ip = cluster_ips.first().copied().unwrap_or("None");
    let ips = if cluster_ips.is_empty() {
        json!(["None"])
    } else {
        json!(cluster_ips)
    };
    let families: Vec<&str> = if cluster_ips.is_empty() {
        vec!["IPv4"]
    } else {
        cluster_ips.iter().map(|i| family(i)).collect()
    };
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
           "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": ips, "ports": ports,
                    "selector": {"app": name}, "sessionAffinity": "None",
                    "ipFamilies": families, "ipFamilyPolicy": if families.len() > 1 { "PreferDualStack" } else { "SingleStack" },
                    "internalTrafficPolicy": "Cluster"},
           "status": {"loadBalancer": {}}})
}

/// An EndpointSlice with a name of the test's choosing and (address, hostname, ready)
/// endpoints; `slices` builds what the controller builds.
pub fn slice(
    ns: &str,
    name: &str,
    service: &str,
    endpoints: &[(&str, Option<&str>, bool)],
    ports: &[(&str, u16)],
) -> Value {
    let eps: Vec<Endpoint> = endpoints
        .iter()
        .map(|(a, h, r)| {
            let e = if *r {
                Endpoint::ready(a)
            } else {
                Endpoint::not_ready(a)
            };
            match h {
                Some(h) => e.hostname(h),
                None => e,
            }
        })
        .collect();
    let family = endpoints.first().map_or("IPv4", |(a, _, _)| family(a));
    let mut s = slice_of(ns, service, &eps, ports, family);
    s["metadata"]["name"] = json!(name);
    s
}

/// One endpoint as the EndpointSlice controller writes it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub address: String,
    pub hostname: Option<String>,
    /// (node, pod): `nodeName` and the `targetRef`.
    pub pod: Option<(String, String)>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl Endpoint {
    pub fn ready(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            hostname: None,
            pod: None,
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    pub fn not_ready(address: &str) -> Self {
        Self {
            ready: false,
            serving: false,
            ..Self::ready(address)
        }
    }

    /// A Pod being deleted: not ready, still serving, terminating.
    pub fn terminating(address: &str) -> Self {
        Self {
            ready: false,
            terminating: true,
            ..Self::ready(address)
        }
    }

    pub fn hostname(mut self, h: &str) -> Self {
        self.hostname = Some(h.to_owned());
        self
    }

    pub fn pod(mut self, node: &str, pod: &str) -> Self {
        self.pod = Some((node.to_owned(), pod.to_owned()));
        self
    }

    fn json(&self, ns: &str) -> Value {
        let mut e = json!({"addresses": [self.address],
            "conditions": {"ready": self.ready, "serving": self.serving, "terminating": self.terminating}});
        if let Some(h) = &self.hostname {
            e["hostname"] = json!(h);
        }
        if let Some((node, pod)) = &self.pod {
            e["nodeName"] = json!(node);
            e["targetRef"] = json!({"kind": "Pod", "namespace": ns, "name": pod});
            e["zone"] = json!("zone-a");
        }
        e
    }
}

fn slice_of(
    ns: &str,
    service: &str,
    eps: &[Endpoint],
    ports: &[(&str, u16)],
    family: &str,
) -> Value {
    let eps: Vec<Value> = eps.iter().map(|e| e.json(ns)).collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"generateName": format!("{service}-"), "namespace": ns,
                        "labels": {"kubernetes.io/service-name": service,
                                   "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
           "addressType": family, "endpoints": eps, "ports": port_list(ports)})
}

/// The EndpointSlice controller's slices of `family` for a Service: at most 100 endpoints
/// each, named by the server from `generateName`. None when it has no such endpoint,
/// except one empty IPv4 slice for a Service with no endpoints at all.
pub fn slices(
    ns: &str,
    service: &str,
    endpoints: &[Endpoint],
    ports: &[(&str, u16)],
    fam: &str,
) -> Vec<Value> {
    const MAX_ENDPOINTS: usize = 100;
    let mine: Vec<Endpoint> = endpoints
        .iter()
        .filter(|e| family(&e.address) == fam)
        .cloned()
        .collect();
    if mine.is_empty() {
        return if endpoints.is_empty() && fam == "IPv4" {
            vec![slice_of(ns, service, &[], ports, fam)]
        } else {
            vec![]
        };
    }
    mine.chunks(MAX_ENDPOINTS)
        .map(|c| slice_of(ns, service, c, ports, fam))
        .collect()
}

/// A Pod (Running with its IPs on `node`, Pending without a node), with a realistic spec.
pub fn pod(ns: &str, name: &str, ips: &[&str], node: Option<&str>) -> Value {
    let running = node.is_some() && !ips.is_empty();
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name.split('-').next().unwrap_or(name)}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0",
                  "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                  "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                  "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent"}],
                 "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                 "serviceAccountName": "default", "terminationGracePeriodSeconds": 30},
        "status": {"phase": if running { "Running" } else { "Pending" }}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    if running {
        p["status"]["podIP"] = json!(ips[0]);
        p["status"]["podIPs"] = json!(ips.iter().map(|i| json!({"ip": i})).collect::<Vec<_>>());
        p["status"]["hostIP"] = json!("192.0.2.10");
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_split_by_family_and_hundreds() {
        let mut eps: Vec<Endpoint> = (0..250)
            .map(|i| Endpoint::ready(&format!("10.1.{}.{}", i / 256, i % 256)))
            .collect();
        eps.push(Endpoint::terminating("fd00::5").pod("node-a", "web-1"));
        let v4 = slices("shop", "web", &eps, &[("http", 80)], "IPv4");
        let sizes: Vec<usize> = v4
            .iter()
            .map(|s| s["endpoints"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
        let v6 = slices("shop", "web", &eps, &[("http", 80)], "IPv6");
        assert_eq!(v6.len(), 1);
        assert_eq!(v6[0]["addressType"], "IPv6");
        let e = &v6[0]["endpoints"][0];
        assert_eq!(
            e["conditions"],
            json!({"ready": false, "serving": true, "terminating": true})
        );
        assert_eq!(e["targetRef"]["name"], "web-1");
        assert_eq!(v4[0]["metadata"]["generateName"], "web-");
        assert_eq!(slices("shop", "web", &[], &[], "IPv4").len(), 1);
        assert!(slices("shop", "web", &[], &[], "IPv6").is_empty());
    }
}
