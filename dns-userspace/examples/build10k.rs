//! Times the record model on 10k ClusterIP services with 5 endpoints each (the full rebuild
//! every change triggers today): `cargo run --release -p dns-userspace --example build10k`.
use dns_userspace::model::{view::*, Records, ZoneConfig};
fn main() {
    let mut v = ClusterView::default();
    for n in 0..100 {
        v.namespaces.push(NamespaceView {
            name: format!("ns-{n}"),
            labels: Default::default(),
        });
    }
    for i in 0..10_000usize {
        let ns = format!("ns-{}", i % 100);
        let name = format!("svc-{i}");
        v.services.push(ServiceView {
            namespace: ns.clone(),
            name: name.clone(),
            kind: ServiceKind::ClusterIp(vec![format!("10.100.{}.{}", i / 256, i % 256)
                .parse()
                .unwrap()]),
            ports: vec![PortView {
                name: "http".into(),
                protocol: "TCP".into(),
                port: 80,
            }],
            publish_not_ready: false,
            labels: Default::default(),
        });
        v.slices.push(SliceView {
            namespace: ns,
            name: format!("{name}-x"),
            service: name,
            endpoints: (0..5)
                .map(|j| EndpointView {
                    addresses: vec![format!(
                        "10.200.{}.{}",
                        (i * 5 + j) / 256 % 256,
                        (i * 5 + j) % 256
                    )
                    .parse()
                    .unwrap()],
                    hostname: None,
                    ready: true,
                    pod_name: None,
                })
                .collect(),
            ports: vec![],
        });
    }
    let cfg = ZoneConfig::new("cluster.local", 30).unwrap();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let r = Records::build(&cfg, &v);
        let b = t.elapsed();
        let t = std::time::Instant::now();
        let k = r.kernel_records();
        let kr = t.elapsed();
        let t = std::time::Instant::now();
        let view = r.kernel_view();
        println!(
            "build {:?} kernel_records {:?} kernel_view {:?} ({} recs, {} kernel, {} ptr)",
            b,
            kr,
            t.elapsed(),
            r.len(),
            k.len(),
            view.targets.len()
        );
    }
}
