use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, RData, RecordType},
};

use super::{respond, Transport};
use crate::model::{
    view::{ClusterView, NamespaceView, ServiceKind, ServiceView},
    Records, ZoneConfig,
};

fn zone() -> Records {
    let cfg = ZoneConfig::new("cluster.local", 30).unwrap();
    let many: Vec<std::net::IpAddr> = (0..100u8)
        .map(|i| format!("fd00::{i:x}").parse().unwrap())
        .collect();
    let svc = |name: &str, kind| ServiceView {
        namespace: "shop".into(),
        name: name.into(),
        kind,
        ports: Box::default(),
        publish_not_ready: false,
        labels: Default::default(),
    };
    let view = ClusterView {
        services: vec![
            svc(
                "web",
                ServiceKind::ClusterIp(Box::new([
                    "10.96.1.2".parse().unwrap(),
                    "fd00::12".parse().unwrap(),
                ])),
            ),
            svc("many", ServiceKind::ClusterIp(many.into())),
            svc(
                "alias",
                ServiceKind::ExternalName("web.shop.svc.cluster.local".into()),
            ),
            svc(
                "gone",
                ServiceKind::ExternalName("nothing.shop.svc.cluster.local".into()),
            ),
        ],
        namespaces: vec![NamespaceView {
            name: "shop".into(),
            labels: Default::default(),
        }],
        ..Default::default()
    };
    Records::build(&cfg, &view)
}

fn query(name: &str, qtype: RecordType, edns: Option<(u16, bool)>) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0xbeef)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    let mut q = Query::query(Name::from_ascii(name).unwrap(), qtype);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    if let Some((size, dnssec_ok)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size).set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn ask(bytes: &[u8]) -> Message {
    Message::from_vec(&respond(bytes, &zone(), Transport::Udp).expect("a reply")).unwrap()
}

#[test]
fn a_record_with_client_case_and_copied_flags() {
    let r = ask(&query("WEB.Shop.svc.cluster.local.", RecordType::A, None));
    assert_eq!(r.id(), 0xbeef);
    assert_eq!(r.message_type(), MessageType::Response);
    assert!(r.authoritative() && r.recursion_desired() && !r.recursion_available());
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert_eq!(
        r.queries()[0].name().to_ascii(),
        "WEB.Shop.svc.cluster.local."
    );
    assert_eq!(r.answers().len(), 1);
    assert_eq!(r.answers()[0].ttl(), 30);
    assert_eq!(
        r.answers()[0].data(),
        &RData::A("10.96.1.2".parse().unwrap())
    );
    assert!(r.extensions().is_none(), "no OPT unless the query had one");
}

#[test]
fn opt_is_echoed_with_our_size_and_the_do_bit() {
    let r = ask(&query(
        "web.shop.svc.cluster.local.",
        RecordType::A,
        Some((4096, true)),
    ));
    let e = r.extensions().as_ref().expect("OPT echoed");
    assert_eq!(
        (e.max_payload(), e.version(), e.flags().dnssec_ok),
        (1232, 0, true)
    );
}

#[test]
fn aaaa_nodata_and_nxdomain_carry_the_soa() {
    let r = ask(&query(
        "web.shop.svc.cluster.local.",
        RecordType::AAAA,
        None,
    ));
    assert_eq!(
        r.answers()[0].data(),
        &RData::AAAA("fd00::12".parse().unwrap())
    );

    let r = ask(&query("web.shop.svc.cluster.local.", RecordType::TXT, None));
    assert_eq!(
        (r.response_code(), r.answers().len()),
        (ResponseCode::NoError, 0)
    );
    assert_eq!(r.name_servers()[0].record_type(), RecordType::SOA);
    assert!(r.authoritative());

    let r = ask(&query("nope.shop.svc.cluster.local.", RecordType::A, None));
    assert_eq!(r.response_code(), ResponseCode::NXDomain);
    let soa = &r.name_servers()[0];
    assert_eq!(soa.name().to_ascii(), "cluster.local.");
    assert_eq!(soa.ttl(), 30);
    match soa.data() {
        RData::SOA(s) => {
            assert_eq!(s.mname().to_ascii(), "ns.dns.cluster.local.");
            assert_eq!(s.rname().to_ascii(), "hostmaster.cluster.local.");
            assert_eq!(
                (s.serial(), s.refresh(), s.retry(), s.expire(), s.minimum()),
                (zone().serial, 7200, 1800, 86400, 30)
            );
        }
        other => panic!("not an SOA: {other:?}"),
    }
}

#[test]
fn outside_the_zone_is_refused_without_aa() {
    let r = ask(&query("example.com.", RecordType::A, None));
    assert_eq!(r.response_code(), ResponseCode::Refused);
    assert!(!r.authoritative());
}

#[test]
fn malformed_input() {
    let z = zone();
    assert_eq!(
        respond(&[1, 2, 3], &z, Transport::Udp),
        None,
        "no ID to answer"
    );
    let mut resp = query("web.shop.svc.cluster.local.", RecordType::A, None);
    resp[2] |= 0x80;
    assert_eq!(
        respond(&resp, &z, Transport::Udp),
        None,
        "responses are not answered"
    );

    // A label running past the end.
    let mut bad = query("web.shop.svc.cluster.local.", RecordType::A, None);
    bad.truncate(20);
    let r = Message::from_vec(&respond(&bad, &z, Transport::Udp).unwrap()).unwrap();
    assert_eq!((r.id(), r.response_code()), (0xbeef, ResponseCode::FormErr));

    // Two questions.
    let mut m = Message::from_vec(&query("a.cluster.local.", RecordType::A, None)).unwrap();
    m.add_query(Query::query(
        Name::from_ascii("b.cluster.local.").unwrap(),
        RecordType::A,
    ));
    let r = ask(&m.to_vec().unwrap());
    assert_eq!(r.response_code(), ResponseCode::FormErr);
}

#[test]
fn edns_version_one_gets_badvers() {
    let mut m = Message::from_vec(&query(
        "web.shop.svc.cluster.local.",
        RecordType::A,
        Some((1232, false)),
    ))
    .unwrap();
    m.extensions_mut().as_mut().unwrap().set_version(1);
    let r = ask(&m.to_vec().unwrap());
    // 16 is BADVERS in an OPT-carrying reply (hickory names the shared code BADSIG).
    assert_eq!(u16::from(r.response_code()), 16);
    assert!(r.answers().is_empty());
}

#[test]
fn large_answers_truncate_over_udp_and_not_over_tcp() {
    let q = query("many.shop.svc.cluster.local.", RecordType::AAAA, None);
    let bytes = respond(&q, &zone(), Transport::Udp).unwrap();
    let r = Message::from_vec(&bytes).unwrap();
    // As many whole AAAA records as fit in 512 bytes, and no more.
    assert!(r.truncated());
    assert!(
        bytes.len() <= 512 && bytes.len() + 28 > 512,
        "{} bytes",
        bytes.len()
    );
    assert!(r.answers().len() >= 15, "{} records", r.answers().len());
    let full = respond(&q, &zone(), Transport::Tcp).unwrap();
    let r = Message::from_vec(&full).unwrap();
    assert!(!r.truncated());
    assert_eq!(r.answers().len(), 100);
}

#[test]
fn cname_chains_inside_the_zone() {
    let r = ask(&query("Alias.shop.svc.cluster.local.", RecordType::A, None));
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert_eq!(r.answers().len(), 2);
    assert_eq!(
        r.answers()[0].name().to_ascii(),
        "Alias.shop.svc.cluster.local."
    );
    assert_eq!(r.answers()[0].record_type(), RecordType::CNAME);
    assert_eq!(
        r.answers()[1].name().to_ascii(),
        "web.shop.svc.cluster.local."
    );
    assert_eq!(
        r.answers()[1].data(),
        &RData::A("10.96.1.2".parse().unwrap())
    );

    let r = ask(&query("gone.shop.svc.cluster.local.", RecordType::A, None));
    assert_eq!(r.response_code(), ResponseCode::NXDomain);
    assert_eq!(r.answers()[0].record_type(), RecordType::CNAME);
    assert_eq!(r.name_servers()[0].record_type(), RecordType::SOA);
}

#[test]
fn ptr_and_txt() {
    let r = ask(&query("2.1.96.10.in-addr.arpa.", RecordType::PTR, None));
    assert_eq!(
        r.answers()[0].data(),
        &RData::PTR(hickory_proto::rr::rdata::PTR(
            Name::from_ascii("web.shop.svc.cluster.local.").unwrap()
        ))
    );
    let r = ask(&query("dns-version.cluster.local.", RecordType::TXT, None));
    assert_eq!(r.answers()[0].data().to_string(), "1.1.0");
    // A reverse name we hold nothing for is not ours.
    let r = ask(&query("1.1.1.1.in-addr.arpa.", RecordType::PTR, None));
    assert_eq!(r.response_code(), ResponseCode::Refused);
}

#[test]
fn unsynced_zone_is_servfail_not_nxdomain() {
    let z = Records::unsynced(&ZoneConfig::new("cluster.local", 30).unwrap());
    let reply = respond(
        &query("web.shop.svc.cluster.local.", RecordType::A, None),
        &z,
        Transport::Udp,
    )
    .unwrap();
    let r = Message::from_vec(&reply).unwrap();
    assert_eq!(r.response_code(), ResponseCode::ServFail);
    assert!(!r.authoritative() && r.name_servers().is_empty());
    let reply = respond(
        &query("example.com.", RecordType::A, None),
        &z,
        Transport::Udp,
    )
    .unwrap();
    assert_eq!(
        Message::from_vec(&reply).unwrap().response_code(),
        ResponseCode::Refused
    );
}

#[test]
fn loadbalance_rotates_address_runs_and_keeps_cnames_first() {
    use hickory_proto::rr::Record;
    let name = Name::from_ascii("a.example.").unwrap();
    let a = |i: u8| {
        Record::from_rdata(
            name.clone(),
            30,
            RData::A(std::net::Ipv4Addr::new(10, 0, 0, i).into()),
        )
    };
    let cname = Record::from_rdata(
        name.clone(),
        30,
        RData::CNAME(hickory_proto::rr::rdata::CNAME(
            Name::from_ascii("b.example.").unwrap(),
        )),
    );
    let mut rs = vec![cname.clone(), a(1), a(2), a(3)];
    super::rotate_addresses(&mut rs, 4);
    assert_eq!(rs, vec![cname, a(2), a(3), a(1)]);
}
