//! The userspace answer path: whatever the kernel passed, answered from the record model.
//!
//! Replies carry the same flags and records the kernel writes (QR AA, RD copied, the
//! question echoed in the client's case, an OPT with our payload size and the DO bit echoed
//! when the query had one), so a client cannot tell which path answered.
pub mod server;

use crate::wire::{
    encode, header_only, name_from_wire, random_start, rotate_addresses, wire_lower,
};
pub use crate::wire::{Chase, Transport, EDNS_PAYLOAD};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT},
        DNSClass, Name, RData, Record, RecordType,
    },
};

use crate::model::{Lookup, QType, RData as RDataModel, Rec, Records, Soa};

/// What to do with one query message.
pub enum Outcome {
    /// Nothing to send (too short to carry an ID, or itself a response).
    Drop,
    Reply(Vec<u8>),
    /// Not ours: a question outside the zone, for the forwarder. Carries the parsed query
    /// and the REFUSED reply to send when there is no forwarder.
    Forward {
        query: Message,
        refused: Vec<u8>,
    },
    /// An A or AAAA question whose zone answer ends in a CNAME out of the zone (an
    /// ExternalName Service): the target's addresses are to be resolved and appended, as
    /// CoreDNS does; `cname_only` is the reply without them.
    Chase(Box<Chase>),
}

/// The reply to one query message from the zone alone (out-of-zone names are REFUSED), or
/// `None` when nothing should be sent.
pub fn respond(query: &[u8], zone: &Records, transport: Transport) -> Option<Vec<u8>> {
    match answer(query, zone, transport) {
        Outcome::Drop => None,
        Outcome::Reply(r) | Outcome::Forward { refused: r, .. } => Some(r),
        Outcome::Chase(c) => Some(c.cname_only),
    }
}

/// Answers from the zone what is the zone's; says which questions are someone else's.
pub fn answer(query: &[u8], zone: &Records, transport: Transport) -> Outcome {
    match answer_inner(query, zone, transport) {
        Some((bytes, Then::Forward(query))) => Outcome::Forward {
            query,
            refused: bytes,
        },
        Some((_, Then::Chase(c))) => Outcome::Chase(c),
        Some((bytes, Then::Done)) => Outcome::Reply(bytes),
        None => Outcome::Drop,
    }
}

/// What follows a reply built from the zone alone.
enum Then {
    Done,
    Forward(Message),
    Chase(Box<Chase>),
}

fn answer_inner(query: &[u8], zone: &Records, transport: Transport) -> Option<(Vec<u8>, Then)> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let done = |r: Option<Vec<u8>>| r.map(|b| (b, Then::Done));
    let msg = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => return done(Some(header_only(query, ResponseCode::FormErr))),
    };
    let mut reply = Message::new();
    reply
        .set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(msg.op_code())
        .set_recursion_desired(msg.recursion_desired());
    if let Some(edns) = msg.extensions() {
        let mut ours = Edns::new();
        ours.set_max_payload(EDNS_PAYLOAD)
            .set_version(0)
            .set_dnssec_ok(edns.flags().dnssec_ok);
        reply.set_edns(ours);
        if edns.version() != 0 {
            reply.set_response_code(ResponseCode::BADVERS);
            return done(encode(reply, &msg, transport));
        }
    }
    if msg.op_code() != OpCode::Query {
        reply.set_response_code(ResponseCode::NotImp);
        return done(encode(reply, &msg, transport));
    }
    let [q] = msg.queries() else {
        reply.set_response_code(ResponseCode::FormErr);
        return done(encode(reply, &msg, transport));
    };
    reply.add_query(q.clone());
    let ours = answer_question(&mut reply, q, zone);
    let chase = ours.then(|| outside_target(&reply, q, zone)).flatten();
    let kept = chase.as_ref().map(|_| reply.clone());
    let bytes = encode(reply, &msg, transport)?;
    Some(match (ours, chase, kept) {
        (false, _, _) => (bytes, Then::Forward(msg)),
        (true, Some(target), Some(reply)) => {
            let chase = Chase {
                reply,
                target,
                qtype: q.query_type(),
                cname_only: bytes.clone(),
                transport,
                query: msg,
            };
            (bytes, Then::Chase(Box::new(chase)))
        }
        _ => (bytes, Then::Done),
    })
}

/// The target to resolve when an A or AAAA answer ends in a CNAME leaving the zone.
fn outside_target(reply: &Message, q: &Query, zone: &Records) -> Option<Name> {
    if !matches!(q.query_type(), RecordType::A | RecordType::AAAA) {
        return None;
    }
    match reply.answers().last()?.data() {
        RData::CNAME(CNAME(target))
            if !crate::model::name::is_within(&wire_lower(target), &zone.cfg.zone) =>
        {
            Some(target.clone())
        }
        _ => None,
    }
}

/// Fills in the answer; false when the question is not the zone's (REFUSED filled in).
fn answer_question(reply: &mut Message, q: &Query, zone: &Records) -> bool {
    let qname = wire_lower(q.name());
    let qtype = match q.query_type() {
        RecordType::A => QType::A,
        RecordType::AAAA => QType::Aaaa,
        RecordType::SRV => QType::Srv,
        RecordType::PTR => QType::Ptr,
        RecordType::CNAME => QType::Cname,
        RecordType::TXT => QType::Txt,
        RecordType::SOA => QType::Soa,
        RecordType::NS => QType::Ns,
        _ => QType::Other,
    };
    let lookup = zone.lookup(&qname, qtype);
    if lookup == Lookup::OutOfZone || q.query_class() != DNSClass::IN {
        // Not ours: the forwarder's, or REFUSED without one.
        reply.set_response_code(ResponseCode::Refused);
        return false;
    }
    if !zone.synced {
        reply.set_response_code(ResponseCode::ServFail);
        return true;
    }
    reply.set_authoritative(true);
    let ttl = zone.cfg.ttl;
    // Owners equal to the question keep the client's spelling, as the kernel path does.
    let owner = |wire: &[u8]| {
        if wire == qname.as_slice() {
            q.name().clone()
        } else {
            name_from_wire(wire)
        }
    };
    let to_record = |r: &Rec| Record::from_rdata(owner(&r.owner), ttl, rdata(&r.data));
    match lookup {
        Lookup::Answer {
            answers,
            additional,
        } => {
            let mut records: Vec<Record> = answers.iter().map(to_record).collect();
            if zone.cfg.loadbalance {
                rotate_addresses(&mut records, random_start());
            }
            for r in records {
                reply.add_answer(r);
            }
            for r in &additional {
                reply.add_additional(to_record(r));
            }
        }
        Lookup::NoData => {
            reply.add_name_server(soa_record(zone));
        }
        Lookup::NxDomain => {
            reply.set_response_code(ResponseCode::NXDomain);
            reply.add_name_server(soa_record(zone));
        }
        Lookup::CnameToNxDomain(chain) => {
            // RFC 6604: the rcode describes the end of the chain.
            reply.set_response_code(ResponseCode::NXDomain);
            for r in &chain {
                reply.add_answer(to_record(r));
            }
            reply.add_name_server(soa_record(zone));
        }
        Lookup::OutOfZone => {}
    }
    true
}

fn rdata(d: &RDataModel) -> RData {
    match d {
        RDataModel::A(a) => RData::A(A(*a)),
        RDataModel::Aaaa(a) => RData::AAAA(AAAA(*a)),
        RDataModel::Srv(s) => RData::SRV(SRV::new(
            s.priority,
            s.weight,
            s.port,
            name_from_wire(&s.target),
        )),
        RDataModel::Ptr(t) => RData::PTR(PTR(name_from_wire(t))),
        RDataModel::Cname(t) => RData::CNAME(CNAME(name_from_wire(t))),
        RDataModel::Txt(t) => RData::TXT(TXT::new(vec![t.clone()])),
        RDataModel::Ns(t) => RData::NS(NS(name_from_wire(t))),
        RDataModel::Soa(soa) => RData::SOA(soa_rdata(soa)),
    }
}

fn soa_rdata(soa: &Soa) -> SOA {
    SOA::new(
        name_from_wire(&soa.mname),
        name_from_wire(&soa.rname),
        soa.serial,
        soa.refresh as i32,
        soa.retry as i32,
        soa.expire as i32,
        soa.minimum,
    )
}

fn soa_record(zone: &Records) -> Record {
    let soa = zone.soa();
    // RFC 2308 §5: the negative TTL is the lesser of the SOA's TTL and its minimum.
    Record::from_rdata(
        name_from_wire(&zone.cfg.zone),
        zone.cfg.ttl.min(soa.minimum),
        RData::SOA(soa_rdata(&soa)),
    )
}

#[cfg(test)]
mod tests;
