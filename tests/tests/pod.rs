//! The DaemonSet's own pod, run as a kubelet would run it: its template from the rendered
//! node-local overlay (the real files under deploy/), turned into a Pod and started with
//! `podman kube play` from the image `cargo xtask test` builds, with the template's
//! securityContext, capabilities, read-only root and volumes as written. Its "host network"
//! is the test topology's node namespace, never the machine's; the bpffs it mounts is the
//! test's own; its API source is a manifest folder (the test has no in-cluster API).
use std::{fs, path::Path, process::Command, time::Duration};

use serde_json::{json, Value};
use tests::{
    client::{dig, http_status},
    netns::{Bpffs, Topology, SVC4},
};

/// What `cargo xtask test` builds (xtask/src/image.rs `TEST_TAG`).
const IMAGE: &str = "localhost/xdns:test";
const PODMAN: [&str; 4] = ["--storage-driver", "vfs", "--runtime", "runc"];

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(PODMAN)
        .args(args)
        .output()
        .expect("podman (`cargo xtask setup` installs it)")
}

fn rendered(overlay: &str) -> Vec<Value> {
    deploy::rendered(overlay).unwrap_or_else(|e| panic!("{e}"))
}

/// A kube play Pod from the overlay's DaemonSet template, and the ConfigMap it mounts.
/// Changed only where this machine is not a node: the bpffs and manifest folder the test
/// owns, a manifest source for `--in-cluster`, the test image, no port list (with host
/// networking it only documents); `edit` may change the container further.
fn pod_from_template(
    overlay: &str,
    name: &str,
    bpffs: &Path,
    manifests: &Path,
    edit: impl Fn(&mut Value),
) -> (Value, Value) {
    let docs = rendered(overlay);
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).cloned().unwrap();
    let ds = kind("DaemonSet");
    // podman keeps a ConfigMap as a volume of that name: one per pod, or pods running at
    // once would share one.
    let mut cm = kind("ConfigMap");
    let cm_name = format!("{name}-config");
    let template_cm = cm["metadata"]["name"].clone();
    cm["metadata"]["name"] = json!(cm_name);
    let mut spec = ds["spec"]["template"]["spec"].clone();
    assert_eq!(spec["hostNetwork"], true);
    let o = spec.as_object_mut().unwrap();
    for k in ["serviceAccountName", "priorityClassName", "tolerations"] {
        o.remove(k);
    }
    let c = &mut spec["containers"][0];
    // With host networking a container's ports only document what it listens on; podman
    // would turn them into port mappings.
    c.as_object_mut().unwrap().remove("ports");
    c["image"] = json!(IMAGE);
    c["imagePullPolicy"] = json!("Never");
    let args: Vec<Value> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| match a.as_str() {
            Some("--in-cluster") => vec![json!("--manifests"), json!("/manifests")],
            _ => vec![a.clone()],
        })
        .collect();
    c["args"] = json!(args);
    c["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "manifests", "mountPath": "/manifests", "readOnly": true}));
    for v in spec["volumes"].as_array_mut().unwrap() {
        if v["hostPath"]["path"] == "/sys/fs/bpf/xdns" {
            v["hostPath"]["path"] = json!(bpffs.display().to_string());
        }
        if v["configMap"]["name"] == template_cm {
            v["configMap"]["name"] = json!(cm_name);
        }
    }
    spec["volumes"].as_array_mut().unwrap().push(json!({
        "name": "manifests",
        "hostPath": {"path": manifests.display().to_string(), "type": "Directory"}
    }));
    edit(&mut spec["containers"][0]);
    // podman 4.3 reads a container's seccomp profile from the annotation kubelet once used,
    // not from securityContext: the template's field, translated.
    let c = &spec["containers"][0];
    let profile = match c["securityContext"]["seccompProfile"]["type"].as_str() {
        Some("Unconfined") => "unconfined".to_owned(),
        Some("Localhost") => format!(
            "localhost/{}",
            c["securityContext"]["seccompProfile"]["localhostProfile"]
                .as_str()
                .unwrap_or_default()
        ),
        _ => "runtime/default".to_owned(),
    };
    let annotation = format!(
        "container.seccomp.security.alpha.kubernetes.io/{}",
        c["name"].as_str().unwrap()
    );
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {annotation: profile}},
        "spec": spec,
    });
    (pod, cm)
}

/// The pod, started in `netns`; removed on drop.
struct PlayedPod {
    name: String,
}

impl PlayedPod {
    fn play(dir: &Path, name: &str, netns: &str, pod: &Value, cm: &Value) -> (Self, String) {
        let file = dir.join(format!("{name}.yaml"));
        let cm_file = dir.join(format!("{name}-cm.yaml"));
        fs::write(&file, serde_yaml::to_string(pod).unwrap()).unwrap();
        fs::write(&cm_file, serde_yaml::to_string(cm).unwrap()).unwrap();
        // podman in the node's network namespace only (nsenter, not `ip netns exec`, which
        // remounts /sys and hides the cgroups from runc): the pod's host network is that
        // namespace, never the machine's.
        // Limits no higher than this machine lets a process raise them (no
        // CAP_SYS_RESOURCE): podman's defaults fail with EPERM in runc here.
        let conf = dir.join("containers.conf");
        fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n",
        )
        .unwrap();
        let out = Command::new("nsenter")
            .env("CONTAINERS_CONF", &conf)
            .arg(format!("--net=/run/netns/{netns}"))
            .arg("podman")
            .args(PODMAN)
            .args(["kube", "play", "--configmap"])
            .arg(&cm_file)
            .arg(&file)
            .output()
            .expect("nsenter podman");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (
            PlayedPod {
                name: name.to_owned(),
            },
            said,
        )
    }
}

impl Drop for PlayedPod {
    fn drop(&mut self) {
        let _ = podman(&["pod", "rm", "--force", "--time", "0", &self.name]);
        let _ = podman(&["volume", "rm", "--force", &format!("{}-config", self.name)]);
    }
}

fn logs(container: &str) -> String {
    let out = podman(&["logs", container]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What both pod tests share: the image, a topology, a bpffs folder and the manifests.
struct Setup {
    topo: Topology,
    _bpf: Bpffs,
    pins: std::path::PathBuf,
    dir: std::path::PathBuf,
    manifests: std::path::PathBuf,
    prefix: String,
}

impl Setup {
    fn new(tag: &str) -> Option<Self> {
        if !tests::require_root(tag) {
            return None;
        }
        let present = podman(&["image", "exists", IMAGE]);
        assert!(
            present.status.success(),
            "{IMAGE} missing: `cargo xtask test` builds it (or `cargo xtask image --tag {IMAGE}`)"
        );
        let prefix = format!("xp{tag}{}", std::process::id() % 10000);
        let topo = Topology::new(&prefix, 1).expect("namespaces");
        let bpf = Bpffs::new(&format!("{prefix}-bpf")).expect("bpffs");
        let pins = bpf.dir.join("xdns");
        fs::create_dir_all(&pins).unwrap();
        let dir = std::env::temp_dir().join(format!("{prefix}-pod"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let manifests = tests::fixture::example_manifests();
        let manifests = fs::canonicalize(manifests).unwrap();
        Some(Self {
            topo,
            _bpf: bpf,
            pins,
            dir,
            manifests,
            prefix,
        })
    }

    /// Plays the overlay's pod and waits until `/ready` says 200 (or fails with its logs).
    fn ready(&self, overlay: &str) -> PlayedPod {
        let name = format!("{}-{overlay}", self.prefix);
        let (pod, cm) = pod_from_template(overlay, &name, &self.pins, &self.manifests, |_| {});
        let (played, said) = PlayedPod::play(&self.dir, &name, &self.topo.node.name, &pod, &cm);
        let container = format!("{name}-xdns");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while http_status(&self.topo.node, 8181, "/ready") != "200" {
            if std::time::Instant::now() > deadline {
                let ps = podman(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
                panic!(
                    "the pod is not ready: {said}\n{}\n{}",
                    String::from_utf8_lossy(&ps.stdout),
                    logs(&container)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        played
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The accelerator's pod: the kernel path on the pod veths, answering queries to the
/// kube-dns ClusterIP from a pod; nothing listens in userspace.
#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF, namespaces and podman")]
fn the_accelerator_pod_runs_with_its_own_privileges() {
    let Some(s) = Setup::new("acc") else { return };
    let _pod = s.ready("accelerator");
    let pod_ns = &s.topo.pods[0].ns;
    assert_eq!(
        dig(pod_ns, SVC4, &["web.shop.svc.cluster.local"]),
        "10.96.12.7"
    );
    let counters = dns_userspace::dataplane::snapshot::pinned_counters(&s.pins)
        .expect("pins in the mounted bpffs");
    assert!(counters.get(dns_common::Counter::Answered) >= 1);
    // Accelerator only: no userspace listener on the node.
    let listening = tests::client::run(&s.topo.node, "ss", &["-lnu"]);
    assert!(!listening.contains(":53 "), "{listening}");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: BPF, namespaces and podman")]
fn the_node_local_pod_runs_with_its_own_privileges_and_no_fewer() {
    let Some(s) = Setup::new("nl") else { return };
    let (topo, pins) = (&s.topo, &s.pins);
    let played = s.ready("node-local");
    // Its host network is the node namespace: the node-local address it adds is there
    // (on its dummy interface, or on lo where the kernel has no dummy driver).
    let addrs = tests::client::run(&topo.node, "ip", &["-br", "addr"]);
    assert!(addrs.contains("169.254.20.10"), "{addrs}");
    // The kernel answers a pod's UDP query; userspace its TCP one.
    let pod_ns = &topo.pods[0].ns;
    assert_eq!(
        dig(pod_ns, SVC4, &["web.shop.svc.cluster.local"]),
        "10.96.12.7"
    );
    assert_eq!(
        dig(pod_ns, SVC4, &["+tcp", "web.shop.svc.cluster.local"]),
        "10.96.12.7"
    );
    let counters = dns_userspace::dataplane::snapshot::pinned_counters(pins)
        .expect("pins in the mounted bpffs");
    assert!(counters.get(dns_common::Counter::Answered) >= 1);
    drop(played);

    // One capability fewer than the template grants: the pod does not come up, and says why.
    let name = format!("{}-nobpf", s.prefix);
    let (pod, cm) = pod_from_template("node-local", &name, pins, &s.manifests, |c| {
        let add = c["securityContext"]["capabilities"]["add"]
            .as_array_mut()
            .unwrap();
        add.retain(|cap| cap != "BPF");
    });
    let (_played, _) = PlayedPod::play(&s.dir, &name, &topo.node.name, &pod, &cm);
    let container = format!("{name}-xdns");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !logs(&container).contains("capabilities BPF missing") {
        assert!(
            std::time::Instant::now() < deadline,
            "no word of the missing capability: {}",
            logs(&container)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_ne!(http_status(&topo.node, 8181, "/ready"), "200");
}
