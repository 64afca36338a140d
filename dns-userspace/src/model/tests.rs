//! One row per rule of the Kubernetes DNS specification (schema 1.1.0), and per CoreDNS
//! choice where the specification is silent.
use std::net::IpAddr;

use super::{
    name::{labels, wire_from_dotted},
    selector::Selector,
    view::*,
    Lookup, PodMode, QType, RData, Rec, Records, ZoneConfig,
};

fn ns(name: &str, labels: &[(&str, &str)]) -> NamespaceView {
    NamespaceView {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn port(name: &str, protocol: &'static str, port: u16) -> PortView {
    PortView {
        name: name.into(),
        protocol,
        port,
    }
}

fn svc(ns: &str, name: &str, kind: ServiceKind, ports: Vec<PortView>) -> ServiceView {
    ServiceView {
        namespace: ns.into(),
        name: name.into(),
        kind,
        ports: ports.into(),
        publish_not_ready: false,
        labels: Default::default(),
    }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|i| i.parse().unwrap()).collect()
}

fn ep(addr: &str, hostname: Option<&str>, ready: bool, pod: Option<&str>) -> EndpointView {
    EndpointView::new(ips(&[addr])[0], ready, hostname, pod)
}

fn slice(
    ns: &str,
    name: &str,
    service: &str,
    endpoints: Vec<EndpointView>,
    ports: Vec<PortView>,
) -> SliceView {
    SliceView {
        namespace: ns.into(),
        name: name.into(),
        service: service.into(),
        endpoints: endpoints.into(),
        ports: ports.into(),
    }
}

fn cluster() -> ClusterView {
    let mut notready = svc("shop", "notready", ServiceKind::Headless, vec![]);
    notready.publish_not_ready = true;
    let mut labelled = svc(
        "shop",
        "labelled",
        ServiceKind::ClusterIp(ips(&["10.96.12.30"]).into()),
        vec![],
    );
    labelled.labels.insert("tier".into(), "internal".into());
    ClusterView {
        namespaces: vec![
            ns("default", &[]),
            ns("shop", &[("team", "a")]),
            ns("empty", &[]),
            ns("kube-system", &[]),
        ],
        services: vec![
            svc(
                "default",
                "kubernetes",
                ServiceKind::ClusterIp(ips(&["10.96.0.1"]).into()),
                vec![port("https", "TCP", 443)],
            ),
            svc(
                "shop",
                "web",
                ServiceKind::ClusterIp(ips(&["10.96.12.7", "fd00:10:96::c07"]).into()),
                vec![
                    port("http", "TCP", 80),
                    port("", "TCP", 8080),
                    port("dns", "UDP", 53),
                ],
            ),
            svc(
                "shop",
                "db",
                ServiceKind::Headless,
                vec![port("postgres", "TCP", 5432)],
            ),
            svc(
                "shop",
                "ext",
                ServiceKind::ExternalName("API.example.com".into()),
                vec![],
            ),
            svc(
                "shop",
                "ext-ip",
                ServiceKind::ExternalName("10.0.0.1".into()),
                vec![],
            ),
            svc(
                "shop",
                "alias",
                ServiceKind::ExternalName("web.shop.svc.cluster.local".into()),
                vec![],
            ),
            svc(
                "shop",
                "dangling",
                ServiceKind::ExternalName("gone.shop.svc.cluster.local".into()),
                vec![],
            ),
            svc("shop", "empty", ServiceKind::Headless, vec![]),
            notready,
            labelled,
            svc(
                "shop",
                "pending",
                ServiceKind::ClusterIp(Box::default()),
                vec![],
            ),
            svc(
                "ghost",
                "orphan",
                ServiceKind::ClusterIp(ips(&["10.96.99.1"]).into()),
                vec![],
            ),
        ],
        slices: vec![
            slice(
                "shop",
                "web-abc",
                "web",
                vec![
                    ep("10.1.1.5", None, true, Some("web-0")),
                    ep("10.1.1.6", None, false, Some("web-1")),
                ],
                vec![port("http", "TCP", 8080)],
            ),
            slice(
                "shop",
                "db-abc",
                "db",
                vec![
                    ep("10.1.0.5", Some("db-0"), true, Some("db-0")),
                    ep("10.1.0.6", None, true, Some("db-1")),
                    ep("10.1.0.7", Some("db-2"), false, Some("db-2")),
                ],
                vec![port("postgres", "TCP", 5432)],
            ),
            slice(
                "shop",
                "db-v6",
                "db",
                vec![ep("fd00::5", Some("db-0"), true, None)],
                vec![port("postgres", "TCP", 5432)],
            ),
            slice(
                "shop",
                "notready-x",
                "notready",
                vec![ep("10.1.0.9", None, false, None)],
                vec![],
            ),
            slice(
                "shop",
                "web-1",
                "web",
                vec![ep("10.1.0.40", None, true, None)],
                vec![port("http", "TCP", 8080)],
            ),
        ],
        pods: vec![PodView {
            namespace: "shop".into(),
            name: "p1".into(),
            ips: ips(&["10.1.0.20", "fd00::20"]).into(),
        }],
    }
}

fn dotted(wire: &[u8]) -> String {
    let mut s: String = labels(wire)
        .iter()
        .map(|l| format!("{}.", String::from_utf8_lossy(l)))
        .collect();
    if s.is_empty() {
        s.push('.');
    }
    s
}

fn show_rec(r: &Rec) -> String {
    let data = match &r.data {
        RData::A(a) => format!("A {a}"),
        RData::Aaaa(a) => format!("AAAA {a}"),
        RData::Srv(s) => format!(
            "SRV {} {} {} {}",
            s.priority,
            s.weight,
            s.port,
            dotted(&s.target)
        ),
        RData::Ptr(t) => format!("PTR {}", dotted(t)),
        RData::Cname(t) => format!("CNAME {}", dotted(t)),
        RData::Txt(t) => format!("TXT {t}"),
        RData::Ns(t) => format!("NS {}", dotted(t)),
        RData::Soa(s) => format!("SOA {} {}", dotted(&s.mname), dotted(&s.rname)),
    };
    format!("{} {data}", dotted(&r.owner))
}

fn show(l: Lookup) -> Vec<String> {
    match l {
        Lookup::OutOfZone => vec!["OUT".into()],
        Lookup::NxDomain => vec!["NXDOMAIN".into()],
        Lookup::NoData => vec!["NODATA".into()],
        Lookup::CnameToNxDomain(chain) => {
            let mut v: Vec<String> = chain.iter().map(show_rec).collect();
            v.push("NXDOMAIN".into());
            v
        }
        Lookup::Answer {
            answers,
            additional,
        } => answers
            .iter()
            .map(show_rec)
            .chain(additional.iter().map(|r| format!("+ {}", show_rec(r))))
            .collect(),
    }
}

fn cfg() -> ZoneConfig {
    let mut c = ZoneConfig::new("cluster.local", 30).unwrap();
    c.ns_addrs = ips(&["10.96.0.10"]);
    c
}

fn check(records: &Records, rows: &[(&str, QType, &[&str])]) {
    for (qname, qtype, want) in rows {
        let got = show(records.lookup(&wire_from_dotted(qname).unwrap(), *qtype));
        assert_eq!(
            got,
            want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "{qname} {qtype:?}"
        );
    }
}

#[test]
fn spec_rows() {
    use QType::*;
    let z = Records::build(&cfg(), &cluster());
    let zone = "cluster.local.";
    let rows: &[(&str, QType, &[&str])] = &[
        // 2.2 schema version.
        ("dns-version.cluster.local", Txt, &["dns-version.cluster.local. TXT 1.1.0"]),
        // Apex: SOA and NS; NS name carries the DNS service's address.
        ("cluster.local", Soa, &["cluster.local. SOA ns.dns.cluster.local. hostmaster.cluster.local."]),
        ("cluster.local", Ns, &["cluster.local. NS ns.dns.cluster.local."]),
        ("cluster.local", A, &["NODATA"]),
        ("ns.dns.cluster.local", A, &["ns.dns.cluster.local. A 10.96.0.10"]),
        // 2.3.1 ClusterIP: A, AAAA (dual stack in clusterIPs order), SRV per named port, PTR.
        ("kubernetes.default.svc.cluster.local", A, &["kubernetes.default.svc.cluster.local. A 10.96.0.1"]),
        ("kubernetes.default.svc.cluster.local", Aaaa, &["NODATA"]),
        ("web.shop.svc.cluster.local", A, &["web.shop.svc.cluster.local. A 10.96.12.7"]),
        ("WEB.Shop.svc.cluster.local", A, &["web.shop.svc.cluster.local. A 10.96.12.7"]),
        ("web.shop.svc.cluster.local", Aaaa, &["web.shop.svc.cluster.local. AAAA fd00:10:96::c07"]),
        ("web.shop.svc.cluster.local", Txt, &["NODATA"]),
        (
            "_http._tcp.web.shop.svc.cluster.local",
            Srv,
            &[
                "_http._tcp.web.shop.svc.cluster.local. SRV 0 100 80 web.shop.svc.cluster.local.",
                "+ web.shop.svc.cluster.local. A 10.96.12.7",
                "+ web.shop.svc.cluster.local. AAAA fd00:10:96::c07",
            ],
        ),
        ("_dns._udp.web.shop.svc.cluster.local", Srv, &["_dns._udp.web.shop.svc.cluster.local. SRV 0 100 53 web.shop.svc.cluster.local.", "+ web.shop.svc.cluster.local. A 10.96.12.7", "+ web.shop.svc.cluster.local. AAAA fd00:10:96::c07"]),
        ("_http._udp.web.shop.svc.cluster.local", Srv, &["NXDOMAIN"]),
        ("_tcp.web.shop.svc.cluster.local", Srv, &["NODATA"]),
        ("_https._tcp.web.shop.svc.cluster.local", Srv, &["NXDOMAIN"]),
        ("_http._tcp.web.shop.svc.cluster.local", A, &["NODATA"]),
        ("7.12.96.10.in-addr.arpa", Ptr, &["7.12.96.10.in-addr.arpa. PTR web.shop.svc.cluster.local."]),
        ("7.12.96.10.in-addr.arpa", A, &["NODATA"]),
        ("7.0.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa", Ptr, &["7.0.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa. PTR web.shop.svc.cluster.local."]),
        // A ClusterIP Service's ready endpoints have their reverse names as CoreDNS gives
        // them, though the names they point to have no records.
        ("5.1.1.10.in-addr.arpa", Ptr, &["5.1.1.10.in-addr.arpa. PTR 10-1-1-5.web.shop.svc.cluster.local."]),
        ("6.1.1.10.in-addr.arpa", Ptr, &["OUT"]),
        ("10-1-1-5.web.shop.svc.cluster.local", A, &["NXDOMAIN"]),
        // Reverse names we hold nothing for fall through (forwarded once forwarding exists).
        ("8.8.8.8.in-addr.arpa", Ptr, &["OUT"]),
        // 2.4 Headless: A/AAAA per ready endpoint, hostname records, SRV per port per endpoint.
        ("db.shop.svc.cluster.local", A, &["db.shop.svc.cluster.local. A 10.1.0.5", "db.shop.svc.cluster.local. A 10.1.0.6"]),
        ("db.shop.svc.cluster.local", Aaaa, &["db.shop.svc.cluster.local. AAAA fd00::5"]),
        ("db-0.db.shop.svc.cluster.local", A, &["db-0.db.shop.svc.cluster.local. A 10.1.0.5"]),
        ("db-0.db.shop.svc.cluster.local", Aaaa, &["db-0.db.shop.svc.cluster.local. AAAA fd00::5"]),
        // No hostname: CoreDNS names the endpoint by its dashed address.
        ("10-1-0-6.db.shop.svc.cluster.local", A, &["10-1-0-6.db.shop.svc.cluster.local. A 10.1.0.6"]),
        ("db-1.db.shop.svc.cluster.local", A, &["NXDOMAIN"]),
        // Not ready: no records.
        ("db-2.db.shop.svc.cluster.local", A, &["NXDOMAIN"]),
        (
            "_postgres._tcp.db.shop.svc.cluster.local",
            Srv,
            &[
                "_postgres._tcp.db.shop.svc.cluster.local. SRV 0 50 5432 db-0.db.shop.svc.cluster.local.",
                "_postgres._tcp.db.shop.svc.cluster.local. SRV 0 50 5432 10-1-0-6.db.shop.svc.cluster.local.",
                "+ db-0.db.shop.svc.cluster.local. A 10.1.0.5",
                "+ db-0.db.shop.svc.cluster.local. AAAA fd00::5",
                "+ 10-1-0-6.db.shop.svc.cluster.local. A 10.1.0.6",
            ],
        ),
        // PTR for every endpoint address, hostname or not.
        ("5.0.1.10.in-addr.arpa", Ptr, &["5.0.1.10.in-addr.arpa. PTR db-0.db.shop.svc.cluster.local."]),
        ("6.0.1.10.in-addr.arpa", Ptr, &["6.0.1.10.in-addr.arpa. PTR 10-1-0-6.db.shop.svc.cluster.local."]),
        ("7.0.1.10.in-addr.arpa", Ptr, &["OUT"]),
        // Headless without ready endpoints: NXDOMAIN; publishNotReadyAddresses: served.
        ("empty.shop.svc.cluster.local", A, &["NXDOMAIN"]),
        ("notready.shop.svc.cluster.local", A, &["notready.shop.svc.cluster.local. A 10.1.0.9"]),
        // 2.5 ExternalName: CNAME; followed inside the zone only.
        ("ext.shop.svc.cluster.local", A, &["ext.shop.svc.cluster.local. CNAME api.example.com."]),
        ("ext.shop.svc.cluster.local", Cname, &["ext.shop.svc.cluster.local. CNAME api.example.com."]),
        ("alias.shop.svc.cluster.local", A, &["alias.shop.svc.cluster.local. CNAME web.shop.svc.cluster.local.", "web.shop.svc.cluster.local. A 10.96.12.7"]),
        ("alias.shop.svc.cluster.local", Txt, &["alias.shop.svc.cluster.local. CNAME web.shop.svc.cluster.local."]),
        ("dangling.shop.svc.cluster.local", A, &["dangling.shop.svc.cluster.local. CNAME gone.shop.svc.cluster.local.", "NXDOMAIN"]),
        ("ext-ip.shop.svc.cluster.local", A, &["NXDOMAIN"]),
        // Unallocated cluster IP: nothing yet.
        ("pending.shop.svc.cluster.local", A, &["NXDOMAIN"]),
        // Empty non-terminals exist: NODATA; unknown namespaces and names: NXDOMAIN.
        ("svc.cluster.local", A, &["NODATA"]),
        ("shop.svc.cluster.local", A, &["NODATA"]),
        ("empty.svc.cluster.local", A, &["NODATA"]),
        ("ghost.svc.cluster.local", A, &["NXDOMAIN"]),
        ("orphan.ghost.svc.cluster.local", A, &["NXDOMAIN"]),
        ("nope.shop.svc.cluster.local", A, &["NXDOMAIN"]),
        ("x.web.shop.svc.cluster.local", A, &["NXDOMAIN"]),
        ("foo.cluster.local", A, &["NXDOMAIN"]),
        // Search-path expansions of external names: NXDOMAIN.
        ("api.example.com.shop.svc.cluster.local", A, &["NXDOMAIN"]),
        ("api.example.com.cluster.local", Aaaa, &["NXDOMAIN"]),
        // Pods, `insecure`: any well-formed address in an existing namespace.
        ("10-1-0-99.shop.pod.cluster.local", A, &["10-1-0-99.shop.pod.cluster.local. A 10.1.0.99"]),
        ("10-1-0-99.shop.pod.cluster.local", Aaaa, &["NODATA"]),
        ("fd00--99.shop.pod.cluster.local", Aaaa, &["fd00--99.shop.pod.cluster.local. AAAA fd00::99"]),
        ("10-1-0-99.ghost.pod.cluster.local", A, &["NXDOMAIN"]),
        ("not-an-ip.shop.pod.cluster.local", A, &["NXDOMAIN"]),
        ("shop.pod.cluster.local", A, &["NODATA"]),
        ("pod.cluster.local", A, &["NODATA"]),
        ("a.10-1-0-99.shop.pod.cluster.local", A, &["NXDOMAIN"]),
        // Outside.
        ("example.com", A, &["OUT"]),
        ("local", A, &["OUT"]),
    ];
    check(&z, rows);
    let _ = zone;
}

#[test]
fn pod_modes() {
    use QType::*;
    let mut c = cfg();
    c.pods = PodMode::Verified;
    let z = Records::build(&c, &cluster());
    check(
        &z,
        &[
            (
                "10-1-0-20.shop.pod.cluster.local",
                A,
                &["10-1-0-20.shop.pod.cluster.local. A 10.1.0.20"],
            ),
            (
                "fd00--20.shop.pod.cluster.local",
                Aaaa,
                &["fd00--20.shop.pod.cluster.local. AAAA fd00::20"],
            ),
            ("10-1-0-99.shop.pod.cluster.local", A, &["NXDOMAIN"]),
            ("10-1-0-20.default.pod.cluster.local", A, &["NXDOMAIN"]),
        ],
    );
    c.pods = PodMode::Disabled;
    let z = Records::build(&c, &cluster());
    check(
        &z,
        &[
            ("10-1-0-20.shop.pod.cluster.local", A, &["NXDOMAIN"]),
            ("shop.pod.cluster.local", A, &["NXDOMAIN"]),
        ],
    );
}

#[test]
fn coredns_options() {
    use QType::*;
    let web = "web.shop.svc.cluster.local";
    let web_a: &[&str] = &["web.shop.svc.cluster.local. A 10.96.12.7"];

    let mut c = cfg();
    c.namespaces = vec!["default".into()];
    let z = Records::build(&c, &cluster());
    check(
        &z,
        &[
            (web, A, &["NXDOMAIN"]),
            ("shop.svc.cluster.local", A, &["NXDOMAIN"]),
            (
                "kubernetes.default.svc.cluster.local",
                A,
                &["kubernetes.default.svc.cluster.local. A 10.96.0.1"],
            ),
        ],
    );

    let mut c = cfg();
    c.namespace_labels = Selector::parse("team=a").unwrap();
    let z = Records::build(&c, &cluster());
    check(
        &z,
        &[
            (web, A, web_a),
            ("kubernetes.default.svc.cluster.local", A, &["NXDOMAIN"]),
        ],
    );

    let mut c = cfg();
    c.labels = Selector::parse("tier=internal").unwrap();
    let z = Records::build(&c, &cluster());
    check(
        &z,
        &[
            (web, A, &["NXDOMAIN"]),
            (
                "labelled.shop.svc.cluster.local",
                A,
                &["labelled.shop.svc.cluster.local. A 10.96.12.30"],
            ),
        ],
    );

    let mut c = cfg();
    c.endpoint_pod_names = true;
    let z = Records::build(&c, &cluster());
    check(
        &z,
        &[
            (
                "db-1.db.shop.svc.cluster.local",
                A,
                &["db-1.db.shop.svc.cluster.local. A 10.1.0.6"],
            ),
            ("10-1-0-6.db.shop.svc.cluster.local", A, &["NXDOMAIN"]),
        ],
    );

    let mut c = cfg();
    c.noendpoints = true;
    let z = Records::build(&c, &cluster());
    check(
        &z,
        &[
            ("db.shop.svc.cluster.local", A, &["NXDOMAIN"]),
            (web, A, web_a),
        ],
    );

    let mut c = cfg();
    c.ignore_empty_service = true;
    let z = Records::build(&c, &cluster());
    // web has a ready endpoint; kubernetes has no slice at all here.
    check(
        &z,
        &[
            (web, A, web_a),
            ("kubernetes.default.svc.cluster.local", A, &["NXDOMAIN"]),
        ],
    );
}

#[test]
fn kernel_entries_are_the_in_zone_address_sets() {
    let z = Records::build(&cfg(), &cluster());
    let k = z.kernel_records();
    let names: Vec<String> = k.keys().map(|key| dotted(&key.name)).collect();
    for want in [
        "web.shop.svc.cluster.local.",
        "db.shop.svc.cluster.local.",
        "db-0.db.shop.svc.cluster.local.",
        "ns.dns.cluster.local.",
    ] {
        assert!(names.contains(&want.to_string()), "{want} in {names:?}");
    }
    // Every name that exists, for NXDOMAIN: empty non-terminals and the apex too.
    for want in ["svc.cluster.local.", "shop.svc.cluster.local."] {
        let v = k
            .iter()
            .find(|(key, _)| dotted(&key.name) == want)
            .unwrap_or_else(|| panic!("{want} in {names:?}"))
            .1;
        assert_eq!(
            (v.a_count, v.aaaa_count, v.flags),
            (0, 0, 0),
            "{want}: NODATA"
        );
    }
    // CNAME owners are there but passed; reverse names are not in the zone; below
    // `pod.<zone>` the kernel's pod program computes names (`pod.<zone>` itself is NODATA).
    let alias = k
        .iter()
        .find(|(key, _)| dotted(&key.name).starts_with("alias."))
        .expect("the CNAME owner")
        .1;
    assert_eq!(alias.flags, dns_common::NAME_PASS);
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with("arpa.") || n.ends_with(".pod.cluster.local.")),
        "{names:?}"
    );
    assert!(names.contains(&"pod.cluster.local.".to_string()));
    let db = k
        .iter()
        .find(|(key, _)| dotted(&key.name) == "db.shop.svc.cluster.local.")
        .unwrap()
        .1;
    assert_eq!(
        (db.a_count, db.a[0], db.a[1], db.ttl),
        (2, [10, 1, 0, 5], [10, 1, 0, 6], 30)
    );
    let v6: std::net::Ipv6Addr = "fd00::5".parse().unwrap();
    assert_eq!((db.aaaa_count, db.aaaa[0]), (1, v6.octets()));
    let kube = k
        .iter()
        .find(|(key, _)| dotted(&key.name) == "kubernetes.default.svc.cluster.local.")
        .unwrap()
        .1;
    assert_eq!(
        (kube.a_count, kube.aaaa_count),
        (1, 0),
        "present without AAAA: the kernel answers NODATA"
    );
    // Names with records beyond A/AAAA (the apex's SOA and NS, SRV, TXT) say so: the
    // kernel passes other types for them and answers NODATA for the rest.
    let flags = |name: &str| {
        k.iter()
            .find(|(key, _)| dotted(&key.name) == name)
            .unwrap_or_else(|| panic!("{name}"))
            .1
            .flags
    };
    for name in [
        "cluster.local.",
        "dns-version.cluster.local.",
        "_http._tcp.web.shop.svc.cluster.local.",
    ] {
        assert_eq!(flags(name), dns_common::NAME_OTHER_TYPES, "{name}");
    }
    for name in [
        "svc.cluster.local.",
        "kubernetes.default.svc.cluster.local.",
    ] {
        let srv = z
            .rrset(&wire_from_dotted(name).unwrap())
            .is_some_and(|s| !s.srv.is_empty());
        let want = if srv { dns_common::NAME_OTHER_TYPES } else { 0 };
        assert_eq!(flags(name), want, "{name}");
    }
    let zi = z.kernel_zone();
    assert_eq!(
        (zi.zone_len, zi.soa_ttl, zi.serial, zi.minimum),
        (15, 30, z.serial, 30)
    );
}

#[test]
fn serial_follows_content_only() {
    let a = Records::build(&cfg(), &cluster());
    let b = Records::build(&cfg(), &cluster());
    let mut changed = cluster();
    changed.services[0].kind = ServiceKind::ClusterIp(ips(&["10.96.0.2"]).into());
    let c = Records::build(&cfg(), &changed);
    assert_eq!(a.serial, b.serial);
    assert_ne!(a.serial, c.serial);
    let soa = a.soa();
    assert_eq!(
        (soa.refresh, soa.retry, soa.expire, soa.minimum, soa.serial),
        (7200, 1800, 86400, 30, a.serial)
    );
}

#[test]
fn kernel_pod_maps_follow_the_pods_mode() {
    let mut view = cluster();
    view.pods.push(PodView {
        namespace: "shop".into(),
        name: "web-1".into(),
        ips: ips(&["10.244.1.5", "fd00:244::5"]).into(),
    });
    let ns_names = |keys: &std::collections::BTreeSet<dns_common::PodKey>| -> Vec<String> {
        keys.iter()
            .map(|k| {
                let end = k.ns.iter().position(|b| *b == 0).unwrap_or(k.ns.len());
                String::from_utf8_lossy(&k.ns[..end]).into_owned()
            })
            .collect()
    };
    let mut c = cfg();
    for (mode, flags) in [
        (PodMode::Insecure, 0),
        (PodMode::Verified, dns_common::ZONE_PODS_VERIFIED),
        (PodMode::Disabled, dns_common::ZONE_PODS_DISABLED),
    ] {
        c.pods = mode;
        let z = Records::build(&c, &view);
        let k = z.kernel_view();
        assert_eq!(
            k.zone.flags & (dns_common::ZONE_PODS_VERIFIED | dns_common::ZONE_PODS_DISABLED),
            flags
        );
        assert_eq!(k.zone.record_ttl, 30);
        let namespaces = ns_names(&k.pod_namespaces);
        if mode == PodMode::Disabled {
            assert!(namespaces.is_empty(), "{namespaces:?}");
        } else {
            assert_eq!(namespaces, ["default", "empty", "kube-system", "shop"]);
            assert!(k.pod_namespaces.iter().all(|p| p.addr == [0; 16]));
        }
        if mode == PodMode::Verified {
            // Both families, IPv4 mapped.
            let got: Vec<(String, [u8; 16])> = k
                .pod_addrs
                .iter()
                .map(|p| (ns_names(&[*p].into()).concat(), p.addr))
                .collect();
            let mut want: Vec<(String, [u8; 16])> = view
                .pods
                .iter()
                .flat_map(|p| p.ips.iter().map(move |ip| (p, ip)))
                .map(|(p, ip)| {
                    let addr = match ip {
                        IpAddr::V4(v4) => dns_common::ServiceAddr::v4(v4.octets()),
                        IpAddr::V6(v6) => dns_common::ServiceAddr::v6(v6.octets()),
                    };
                    (p.namespace.to_string(), addr.addr)
                })
                .collect();
            want.sort();
            assert!(want.len() >= 3, "{want:?}");
            assert_eq!(got, want);
        } else {
            assert!(k.pod_addrs.is_empty());
        }
    }
}

#[test]
fn kernel_ptrs_are_the_single_ptr_reverse_names() {
    let z = Records::build(&cfg(), &cluster());
    let targets = z.kernel_targets();
    let find = |name: &str| {
        targets
            .iter()
            .find(|(k, _)| dotted(&k.name) == name)
            .map(|(_, v)| *v)
    };
    let web = find("7.12.96.10.in-addr.arpa.").expect("the cluster IP's PTR");
    let target = wire_from_dotted("web.shop.svc.cluster.local").unwrap();
    assert_eq!(
        (web.ttl, web.len as usize, &web.target[..target.len()]),
        (30, target.len(), target.as_slice())
    );
    assert!(web.target[target.len()..].iter().all(|b| *b == 0));
    assert_eq!(web.sum as u16, super::kernel::ones_sum(&target));
    assert!(
        find("5.0.1.10.in-addr.arpa.").is_some(),
        "a headless endpoint's PTR"
    );
    // A ClusterIP Service's endpoint has a PTR but no name: userspace answers it.
    let ep: IpAddr = "10.1.1.5".parse().unwrap();
    assert_eq!(
        z.ptrs(ep).map(|p| p[0].target(ep)),
        Some(wire_from_dotted("10-1-1-5.web.shop.svc.cluster.local").unwrap()),
        "the model answers it"
    );
    assert!(find("5.1.1.10.in-addr.arpa.").is_none());
    // A CNAME out of the zone is there too (answered whatever the type); one into the
    // zone is chased by userspace, so it is not.
    let ext = find("ext.shop.svc.cluster.local.").expect("the ExternalName's CNAME");
    let target = z
        .rrset(&wire_from_dotted("ext.shop.svc.cluster.local").unwrap())
        .and_then(|s| s.cname.clone())
        .unwrap();
    assert_eq!(
        (ext.rtype, &ext.target[..ext.len as usize]),
        (dns_common::RTYPE_CNAME, &target[..])
    );
    assert!(find("alias.shop.svc.cluster.local.").is_none());
    let flags = |n: &str| {
        z.kernel_records()
            .iter()
            .find(|(k, _)| dotted(&k.name) == n)
            .map(|(_, v)| v.flags)
    };
    assert_eq!(
        flags("ext.shop.svc.cluster.local."),
        Some(dns_common::NAME_TARGET)
    );
    assert_eq!(
        flags("alias.shop.svc.cluster.local."),
        Some(dns_common::NAME_PASS)
    );
    // Every reverse name the model answers with exactly one PTR to a name with addresses
    // is there, and the CNAMEs.
    let addressed = |t: &[u8]| {
        z.rrset(t)
            .is_some_and(|s| !s.a.is_empty() || !s.aaaa.is_empty())
    };
    let single = z
        .reverse_addrs()
        .filter(|ip| {
            z.ptrs(*ip)
                .is_some_and(|p| p.len() == 1 && addressed(&p[0].target(*ip)))
        })
        .count();
    let cnames = targets
        .values()
        .filter(|t| t.rtype == dns_common::RTYPE_CNAME)
        .count();
    assert_eq!(targets.len(), single + cnames);
    assert!(targets
        .iter()
        .all(|(k, t)| dotted(&k.name).ends_with("arpa.") == (t.rtype == dns_common::RTYPE_PTR)));
}

#[test]
fn ones_sum_is_rfc_1071() {
    use super::kernel::ones_sum;
    assert_eq!(ones_sum(&[]), 0);
    assert_eq!(ones_sum(&[0x12]), 0x1200);
    assert_eq!(ones_sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    // Carries wrap around: 0xffff + 0x0002 = 0x0002 (end-around carry).
    assert_eq!(ones_sum(&[0xff, 0xff, 0x00, 0x02]), 0x0002);
    // RFC 1071's example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
    assert_eq!(
        ones_sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        0xddf2
    );
}
