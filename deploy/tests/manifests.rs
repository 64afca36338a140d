//! Every document each overlay renders (`kubectl kustomize deploy/overlays/<mode>`, as
//! `kubectl apply -k` applies it) parses as its Kubernetes type (k8s-openapi) and
//! serializes back to the same object, so no field is misspelled or misplaced; the
//! DaemonSets keep the promised security and probe settings; the ConfigMaps hold configs
//! the daemon accepts.
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Service, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// The overlay's documents as `kubectl kustomize` renders them.
fn documents(overlay: &str) -> Vec<Value> {
    deploy::rendered(overlay).unwrap_or_else(|e| panic!("{e}"))
}

/// Parses `v` as `T` and checks nothing was lost or added on the way back.
fn typed<T: DeserializeOwned + Serialize>(file: &str, v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{file}: {} {}: {e}", v["kind"], v["metadata"]["name"]));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        &back, v,
        "{file}: {} {} does not round-trip (a misspelled or misplaced field?)",
        v["kind"], v["metadata"]["name"]
    );
    t
}

struct Mode {
    daemonset: DaemonSet,
    configmap: ConfigMap,
    service: Service,
    /// Node-local's `kube-dns-upstream`.
    upstream: Option<Service>,
}

fn mode(file: &str) -> Mode {
    let (mut ds, mut cm, mut svcs) = (None, None, Vec::new());
    for v in documents(file) {
        match v["kind"].as_str() {
            Some("DaemonSet") => ds = Some(typed::<DaemonSet>(file, &v)),
            Some("ConfigMap") => cm = Some(typed::<ConfigMap>(file, &v)),
            Some("Service") => svcs.push(typed::<Service>(file, &v)),
            // Checked by rbac_is_read_only_and_minimal.
            Some("ServiceAccount" | "ClusterRole" | "ClusterRoleBinding") => {}
            other => panic!("{file}: unexpected kind {other:?}"),
        }
    }
    let named = |n: &str| {
        svcs.iter()
            .find(|s| s.metadata.name.as_deref() == Some(n))
            .cloned()
    };
    Mode {
        daemonset: ds.expect("a DaemonSet"),
        configmap: cm.expect("a ConfigMap"),
        service: named("xdns-metrics").expect("a metrics Service"),
        upstream: named("kube-dns-upstream"),
    }
}

#[test]
fn rbac_is_read_only_and_minimal() {
    let mut kinds = Vec::new();
    let rbac = documents("node-local").into_iter().filter(|v| {
        matches!(
            v["kind"].as_str(),
            Some("ServiceAccount" | "ClusterRole" | "ClusterRoleBinding")
        )
    });
    for v in rbac {
        match v["kind"].as_str() {
            Some("ServiceAccount") => drop(typed::<ServiceAccount>("rbac.yaml", &v)),
            Some("ClusterRoleBinding") => {
                let b = typed::<ClusterRoleBinding>("rbac.yaml", &v);
                assert_eq!(b.role_ref.name, "system:xdns");
            }
            Some("ClusterRole") => {
                let r = typed::<ClusterRole>("rbac.yaml", &v);
                let mut granted = Vec::new();
                for rule in r.rules.unwrap() {
                    assert_eq!(rule.verbs, ["list", "watch"], "read-only");
                    for res in rule.resources.unwrap() {
                        granted.push(res);
                    }
                }
                granted.sort();
                assert_eq!(granted, ["endpointslices", "namespaces", "services"]);
            }
            other => panic!("unexpected kind {other:?}"),
        }
        kinds.push(v["kind"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds.len(), 3);
}

#[test]
fn both_modes_are_least_privilege_daemonsets_with_probes_and_a_valid_config() {
    for (file, extra_cap) in [
        ("accelerator", None),
        ("node-local", Some("NET_BIND_SERVICE")),
    ] {
        let m = mode(file);
        let spec = m.daemonset.spec;
        let strategy = spec.update_strategy.unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        if file == "node-local" {
            // Zero-drop: the next pod beside the old one, which then leaves.
            let r = strategy.rolling_update.unwrap();
            assert_eq!(r.max_surge, Some(IntOrString::Int(1)), "{file}");
            assert_eq!(r.max_unavailable, Some(IntOrString::Int(0)), "{file}");
        }
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.host_network, Some(true), "{file}");
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("system-node-critical")
        );
        let tol = pod.tolerations.unwrap();
        assert!(
            tol.iter()
                .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
            "{file}: tolerates every taint"
        );
        assert_eq!(pod.service_account_name.as_deref(), Some("xdns"));
        let c = &pod.containers[0];
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.privileged, Some(false), "{file}");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        // Set, not left to the runtime: its default profile refuses bpf().
        assert_eq!(
            sc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("Unconfined"),
            "{file}"
        );
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.drop.unwrap(), ["ALL"]);
        let mut want = vec!["BPF", "NET_ADMIN", "PERFMON"];
        want.extend(extra_cap);
        assert_eq!(caps.add.unwrap(), want, "{file}: no SYS_ADMIN");
        let requests = c.resources.clone().unwrap().requests.unwrap();
        assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
        let live = c.liveness_probe.clone().unwrap().http_get.unwrap();
        let ready = c.readiness_probe.clone().unwrap().http_get.unwrap();
        assert_eq!(
            (live.path.as_deref(), live.port),
            (Some("/health"), IntOrString::Int(8080))
        );
        assert_eq!(
            (ready.path.as_deref(), ready.port),
            (Some("/ready"), IntOrString::Int(8181))
        );
        // Host mounts: the daemon's folder of the bpffs, nothing else, mounted where the
        // config tells the daemon to pin (outside /sys, where runc cannot create it).
        let host: Vec<String> = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
            .collect();
        assert_eq!(host, ["/sys/fs/bpf/xdns"], "{file}");
        let mounted: Vec<&str> = c
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.name == "bpffs")
            .map(|m| m.mount_path.as_str())
            .collect();
        let text = &m.configmap.data.clone().unwrap()["config.yaml"];
        let conf = settings(file, text);
        let pin_dir = conf.node.pin_dir;
        assert!(!pin_dir.starts_with("/sys"), "{file}");
        assert_eq!(mounted, [pin_dir.to_str().unwrap()], "{file}");
        // The daemon reads the ConfigMap's file, and accepts it.
        let args = c.args.clone().unwrap();
        let at = args.iter().position(|a| a == "--config").unwrap();
        assert_eq!(args[at + 1], "/etc/xdns/config.yaml");
        if file == "node-local" {
            let at = args.iter().position(|a| a == "--pin-wait").unwrap();
            assert!(
                args[at + 1].parse::<u64>().unwrap() > 5,
                "waits out lameduck"
            );
        }
        // The volume mounts the ConfigMap the overlay renders.
        let config_volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "config")
            .and_then(|v| v.config_map.as_ref())
            .map(|c| c.name.clone());
        assert_eq!(config_volume, m.configmap.metadata.name, "{file}");
        let text = &m.configmap.data.unwrap()["config.yaml"];
        let conf = settings(file, text);
        let node = conf.node;
        if file == "accelerator" {
            assert!(node.listen.is_empty() && !node.accelerate.is_empty());
        } else {
            assert!(node.listen.contains(&"169.254.20.10".parse().unwrap()));
            assert!(node.notrack);
            // Names outside the zone go to CoreDNS through the Service the file ships (as
            // NodeLocal DNSCache does), so a customised Corefile keeps applying to them.
            let svc = conf.forward.upstream_service.unwrap();
            assert_eq!(
                (svc.namespace.as_str(), svc.name.as_str()),
                ("kube-system", "kube-dns-upstream")
            );
            let up = m
                .upstream
                .clone()
                .expect("the kube-dns-upstream Service")
                .spec
                .unwrap();
            assert_eq!(up.selector.unwrap()["k8s-app"], "kube-dns");
            let ports: Vec<(i32, Option<String>)> = up
                .ports
                .unwrap()
                .iter()
                .map(|p| (p.port, p.protocol.clone()))
                .collect();
            assert_eq!(ports, [(53, Some("UDP".into())), (53, Some("TCP".into()))]);
        }
        let port = &m.service.spec.unwrap().ports.unwrap()[0];
        assert_eq!(port.port, 9153);
    }
}

/// The daemon's settings from a ConfigMap's file alone (every flag at its default), as
/// `xdns run --config` reads it; a file it refuses fails here.
fn settings(file: &str, text: &str) -> dns_userspace::settings::Settings {
    let defaults = dns_userspace::settings::Settings::default();
    dns_userspace::config::overlay(&defaults, file, text).unwrap_or_else(|e| panic!("{file}: {e}"))
}
