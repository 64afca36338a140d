//! The incremental zone against the one-pass build: any sequence of changes leaves the
//! records, every kernel map (kept by applying only the deltas) and the answers equal to
//! [`Records::build`] on the final objects.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use proptest::prelude::*;

use super::{
    live::{Change, Key, LiveZone, Object, ObjectKind},
    selector::Selector,
    view::{
        ClusterView, EndpointView, Labels, NamespaceView, PodView, PortView, ServiceKind,
        ServiceView, SliceView,
    },
    KernelView, PodMode, Records, ZoneConfig,
};
use crate::answer::{respond, Transport};

const NAMESPACES: [&str; 3] = ["a", "b", "c"];

fn ip() -> impl Strategy<Value = IpAddr> {
    // A small pool, so that Services share addresses (and so reverse names).
    prop_oneof![
        (1u8..6).prop_map(|n| IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))),
        (1u16..3).prop_map(|n| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n))),
    ]
}

fn labels() -> impl Strategy<Value = Labels> {
    prop_oneof![Just("prod"), Just("dev"), Just("")].prop_map(|env| {
        let mut l = Labels::new();
        if !env.is_empty() {
            l.insert("env".into(), env.into());
        }
        l
    })
}

fn ns() -> impl Strategy<Value = String> {
    prop::sample::select(&NAMESPACES[..]).prop_map(String::from)
}

fn ports() -> impl Strategy<Value = Vec<PortView>> {
    prop::collection::vec(
        (
            prop_oneof![Just(""), Just("http"), Just("dns")],
            prop_oneof![Just("TCP"), Just("UDP")],
            53u16..56,
        )
            .prop_map(|(n, p, port)| PortView {
                name: n.into(),
                protocol: p,
                port,
            }),
        0..3,
    )
}

fn service() -> impl Strategy<Value = ServiceView> {
    let kind = prop_oneof![
        prop::collection::vec(ip(), 0..3).prop_map(|v| ServiceKind::ClusterIp(v.into())),
        Just(ServiceKind::Headless),
        prop_oneof![
            Just("db.example.com"),
            Just("s1.a.svc.cluster.local"),
            Just("10.9.9.9"),
            Just("s0.b.svc.cluster.local")
        ]
        .prop_map(|t| ServiceKind::ExternalName(t.into())),
    ];
    (ns(), 0..4u8, kind, ports(), any::<bool>(), labels()).prop_map(
        |(namespace, n, kind, ports, publish_not_ready, labels)| ServiceView {
            namespace: namespace.into(),
            name: format!("s{n}").into(),
            kind,
            ports: ports.into(),
            publish_not_ready,
            labels,
        },
    )
}

fn slice() -> impl Strategy<Value = SliceView> {
    let endpoint = (
        prop::collection::vec(ip(), 1..3),
        prop_oneof![Just(None), Just(Some("h0")), Just(Some("h1"))],
        any::<bool>(),
        prop_oneof![Just(None), Just(Some("pod-x")), Just(Some("pod-y"))],
    )
        // An endpoint of several addresses, flattened as the source does.
        .prop_map(|(addresses, hostname, ready, pod)| {
            addresses
                .into_iter()
                .map(|a| EndpointView::new(a, ready, hostname, pod))
                .collect::<Vec<_>>()
        });
    (
        ns(),
        0..5u8,
        0..4u8,
        prop::collection::vec(endpoint, 0..4),
        ports(),
    )
        .prop_map(|(namespace, n, svc, endpoints, ports)| SliceView {
            namespace: namespace.into(),
            name: format!("e{n}").into(),
            service: format!("s{svc}").into(),
            endpoints: endpoints.into_iter().flatten().collect(),
            ports: ports.into(),
        })
}

fn namespace() -> impl Strategy<Value = NamespaceView> {
    (ns(), labels()).prop_map(|(name, labels)| NamespaceView {
        name: name.into(),
        labels,
    })
}

fn pod() -> impl Strategy<Value = PodView> {
    (ns(), 0..3u8, prop::collection::vec(ip(), 0..2)).prop_map(|(namespace, n, ips)| PodView {
        namespace: namespace.into(),
        name: format!("p{n}").into(),
        ips: ips.into(),
    })
}

fn object() -> impl Strategy<Value = Object> {
    prop_oneof![
        3 => service().prop_map(Object::Service),
        3 => slice().prop_map(Object::Slice),
        1 => namespace().prop_map(Object::Namespace),
        1 => pod().prop_map(Object::Pod),
    ]
}

fn kind() -> impl Strategy<Value = ObjectKind> {
    prop_oneof![
        Just(ObjectKind::Service),
        Just(ObjectKind::Slice),
        Just(ObjectKind::Namespace),
        Just(ObjectKind::Pod)
    ]
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        6 => object().prop_map(Change::Upsert),
        2 => (kind(), ns(), 0..5u8).prop_map(|(k, ns, n)| {
            let name = match k {
                ObjectKind::Service => format!("s{n}"),
                ObjectKind::Slice => format!("e{n}"),
                ObjectKind::Pod => format!("p{n}"),
                ObjectKind::Namespace => NAMESPACES[n as usize % 3].to_owned(),
            };
            let ns = if k == ObjectKind::Namespace { String::new() } else { ns };
            Change::Delete(k, (ns.into(), name.into()))
        }),
        1 => (kind(), prop::collection::vec(object(), 0..6)).prop_map(|(k, objs)| {
            Change::Relist(k, objs.into_iter().filter(|o| o.kind() == k).collect())
        }),
    ]
}

fn config() -> impl Strategy<Value = ZoneConfig> {
    (
        prop_oneof![
            Just(PodMode::Insecure),
            Just(PodMode::Verified),
            Just(PodMode::Disabled)
        ],
        prop_oneof![Just(""), Just("env=prod"), Just("env!=dev")],
        prop_oneof![Just(""), Just("env")],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(pods, labels, ns_labels, pod_names, noendpoints, ignore_empty, only_ab)| {
                let mut c = ZoneConfig::new("cluster.local", 30).unwrap();
                c.pods = pods;
                c.labels = Selector::parse(labels).unwrap();
                c.namespace_labels = Selector::parse(ns_labels).unwrap();
                c.endpoint_pod_names = pod_names;
                c.noendpoints = noendpoints;
                c.ignore_empty_service = ignore_empty;
                if only_ab {
                    c.namespaces = vec!["a".into(), "b".into()];
                }
                c.ns_addrs = vec!["10.96.0.10".parse().unwrap()];
                c
            },
        )
}

/// The objects as the test tracks them, independently of the zone.
#[derive(Default)]
struct World(BTreeMap<(ObjectKind, Key), Object>);

impl World {
    fn apply(&mut self, c: &Change) {
        match c {
            Change::Upsert(o) => {
                self.0.insert((o.kind(), o.key()), o.clone());
            }
            Change::Delete(k, key) => {
                self.0.remove(&(*k, key.clone()));
            }
            Change::Relist(k, objs) => {
                self.0.retain(|(kind, _), _| kind != k);
                for o in objs {
                    self.0.insert((o.kind(), o.key()), o.clone());
                }
            }
        }
    }

    fn view(&self) -> ClusterView {
        let mut v = ClusterView::default();
        for o in self.0.values() {
            match o.clone() {
                Object::Service(s) => v.services.push(s),
                Object::Slice(s) => v.slices.push(s),
                Object::Namespace(n) => v.namespaces.push(n),
                Object::Pod(p) => v.pods.push(p),
            }
        }
        v
    }
}

/// The kernel maps as the daemon keeps them: changed only through deltas.
struct Kernel(KernelView);

impl Kernel {
    fn start(r: &Records) -> Self {
        Self(r.kernel_view())
    }

    fn apply(&mut self, d: &super::KernelDelta) {
        self.0.zone = d.zone;
        for (k, v) in &d.records {
            match v {
                Some(v) => self.0.records.insert(*k, *v),
                None => self.0.records.remove(k),
            };
        }
        for (k, v) in &d.targets {
            match v {
                Some(v) => self.0.targets.insert(*k, *v),
                None => self.0.targets.remove(k),
            };
        }
        for (k, on) in &d.pod_namespaces {
            if *on {
                self.0.pod_namespaces.insert(*k);
            } else {
                self.0.pod_namespaces.remove(k);
            }
        }
        for (k, on) in &d.pod_addrs {
            if *on {
                self.0.pod_addrs.insert(*k);
            } else {
                self.0.pod_addrs.remove(k);
            }
        }
    }
}

/// A query for `name`/`qtype` in wire form.
fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend(super::wire_from_dotted(name).unwrap());
    q.extend(qtype.to_be_bytes());
    q.extend(1u16.to_be_bytes());
    q
}

fn assert_same_answers(live: &Records, oracle: &Records) {
    let names = [
        "s0.a.svc.cluster.local",
        "s1.b.svc.cluster.local",
        "h0.s2.c.svc.cluster.local",
        "_http._tcp.s0.a.svc.cluster.local",
        "1.0.0.10.in-addr.arpa",
        "a.svc.cluster.local",
        "10-0-0-1.a.pod.cluster.local",
        "nope.a.svc.cluster.local",
    ];
    for n in names {
        for t in [1u16, 28, 33, 12, 5] {
            let q = query(n, t);
            assert_eq!(
                respond(&q, live, Transport::Udp),
                respond(&q, oracle, Transport::Udp),
                "{n} type {t}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_of_changes_ends_equal_to_a_fresh_build(
        cfg in config(),
        batches in prop::collection::vec(prop::collection::vec(change(), 1..5), 1..25),
    ) {
        let mut world = World::default();
        let mut live = LiveZone::new(&cfg);
        live.set_synced();
        let mut kernel = Kernel::start(live.records());
        for batch in batches {
            for c in &batch {
                world.apply(c);
            }
            let touched = live.apply(batch);
            kernel.apply(&live.records().kernel_delta(&touched));
            let oracle = Records::build(&cfg, &world.view());
            prop_assert_eq!(live.records(), &oracle);
            prop_assert_eq!(&kernel.0, &oracle.kernel_view());
        }
        let oracle = Records::build(&cfg, &world.view());
        assert_same_answers(live.records(), &oracle);
        // The first view loaded in one go (nothing tracked) is the same zone.
        let mut loaded = LiveZone::new(&cfg);
        loaded.load(super::live::relists(world.view()));
        loaded.set_synced();
        prop_assert_eq!(loaded.records(), &oracle);
        // A new configuration over the same objects is a fresh build too.
        let other = live.reconfigured(&ZoneConfig::new("cluster.local", 5).unwrap());
        let mut fresh = Records::build(&ZoneConfig::new("cluster.local", 5).unwrap(), &world.view());
        fresh.synced = other.records().synced;
        prop_assert_eq!(other.records(), &fresh);
    }
}

/// A reverse name is in the kernel only while its target has addresses: a Service that
/// turns headless keeps its endpoint's PTR unchanged but gains the endpoint's name, and
/// the kernel must follow though no PTR changed.
#[test]
fn a_service_turning_headless_moves_its_endpoint_ptrs_into_the_kernel() {
    let cfg = ZoneConfig::new("cluster.local", 30).unwrap();
    let svc = |kind| ServiceView {
        namespace: "a".into(),
        name: "s0".into(),
        kind,
        ports: Box::default(),
        publish_not_ready: false,
        labels: Labels::new(),
    };
    let slice = SliceView {
        namespace: "a".into(),
        name: "e0".into(),
        service: "s0".into(),
        endpoints: Box::new([EndpointView::new(
            "10.0.0.5".parse().unwrap(),
            true,
            None,
            None,
        )]),
        ports: Box::default(),
    };
    let ns = NamespaceView {
        name: "a".into(),
        labels: Labels::new(),
    };
    let mut world = World::default();
    let mut live = LiveZone::new(&cfg);
    live.set_synced();
    let mut kernel = Kernel::start(live.records());
    let cluster_ip = ServiceKind::ClusterIp(Box::new(["10.96.0.5".parse().unwrap()]));
    for (step, kind) in [cluster_ip.clone(), ServiceKind::Headless, cluster_ip]
        .into_iter()
        .enumerate()
    {
        let batch = vec![
            Change::Upsert(Object::Namespace(ns.clone())),
            Change::Upsert(Object::Service(svc(kind))),
            Change::Upsert(Object::Slice(slice.clone())),
        ];
        for c in &batch {
            world.apply(c);
        }
        let touched = live.apply(batch);
        kernel.apply(&live.records().kernel_delta(&touched));
        let oracle = Records::build(&cfg, &world.view());
        assert_eq!(kernel.0, oracle.kernel_view(), "step {step}");
        let endpoint_ptr = kernel.0.targets.keys().any(|k| {
            k.wire()
                == super::wire_from_dotted("5.0.0.10.in-addr.arpa")
                    .ok()
                    .as_deref()
        });
        assert_eq!(endpoint_ptr, step == 1, "step {step}");
    }
}
