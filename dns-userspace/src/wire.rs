//! Messages on the wire, shared by the zone's answers and the forwarder's: the encoder that
//! truncates to the client's size, address rotation, a chased CNAME's answer, names in the
//! model's lower-case wire form.
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, Record, RecordType},
};

/// Largest UDP payload we accept to send; also what our OPT record advertises.
pub const EDNS_PAYLOAD: u16 = dns_common::EDNS_PAYLOAD;
/// Without EDNS, RFC 1035 limits UDP messages to 512 bytes.
const PLAIN_UDP_LIMIT: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The zone's part of a chased answer and what remains to resolve.
pub struct Chase {
    pub reply: Message,
    pub query: Message,
    pub target: Name,
    pub qtype: RecordType,
    pub cname_only: Vec<u8>,
    pub transport: Transport,
}

impl Chase {
    /// The question to resolve: the target, the client's type, recursion desired.
    pub fn target_query(&self) -> Message {
        let mut m = Message::new();
        m.set_id(self.query.id())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(self.target.clone(), self.qtype));
        m
    }

    /// The whole reply once the target's reply (if any) is known: the CNAME chain, then
    /// the target's records of the asked type (and its own CNAMEs), every TTL the smallest
    /// of them; the target's NXDOMAIN passed on (RFC 6604: the rcode is the chain's end).
    /// Without a usable reply (no upstream, SERVFAIL), the CNAME alone, as before.
    pub fn finish(self, target: Option<&Message>) -> Vec<u8> {
        let Some(t) = target else {
            return self.cname_only;
        };
        let mut reply = self.reply;
        match t.response_code() {
            ResponseCode::NoError => {
                let more: Vec<Record> = t
                    .answers()
                    .iter()
                    .filter(|r| {
                        r.record_type() == self.qtype || r.record_type() == RecordType::CNAME
                    })
                    .cloned()
                    .collect();
                let mut answers = reply.take_answers();
                answers.extend(more);
                if let Some(ttl) = answers.iter().map(Record::ttl).min() {
                    for r in &mut answers {
                        r.set_ttl(ttl);
                    }
                }
                reply.insert_answers(answers);
            }
            ResponseCode::NXDomain => {
                reply.set_response_code(ResponseCode::NXDomain);
            }
            _ => return self.cname_only,
        }
        encode(reply, &self.query, self.transport).unwrap_or(self.cname_only)
    }
}

/// Encodes `reply`, truncating (TC=1, answer and authority dropped) when it does not fit
/// the client's UDP payload size.
pub fn encode(mut reply: Message, query: &Message, transport: Transport) -> Option<Vec<u8>> {
    let bytes = reply.to_vec().ok()?;
    let limit = match (transport, query.extensions()) {
        (Transport::Tcp, _) => u16::MAX as usize,
        (Transport::Udp, Some(e)) => {
            (e.max_payload().min(EDNS_PAYLOAD) as usize).max(PLAIN_UDP_LIMIT)
        }
        (Transport::Udp, None) => PLAIN_UDP_LIMIT,
    };
    if bytes.len() <= limit {
        return Some(bytes);
    }
    // TC=1 with as many whole answer records as fit (RFC 2181 §9), the authority and
    // additional sections dropped (the OPT kept): the largest prefix found by bisection.
    let answers = reply.take_answers();
    reply.take_name_servers();
    reply.take_additionals();
    reply.set_truncated(true);
    let with = |n: usize| {
        let mut m = reply.clone();
        m.insert_answers(answers[..n].to_vec());
        m.to_vec().ok()
    };
    let (mut lo, mut hi) = (0, answers.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        match with(mid) {
            Some(b) if b.len() <= limit => lo = mid,
            _ => hi = mid - 1,
        }
    }
    with(lo)
}

/// A reply for a message hickory could not parse: the ID, opcode and RD from its header.
pub(crate) fn header_only(query: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    out[0..2].copy_from_slice(&query[0..2]);
    out[2] = 0x80 | (query[2] & 0x79);
    out[3] = rcode.low();
    out
}

/// CoreDNS `loadbalance`, as the kernel path does it: each run of A records, and of AAAA
/// records, starts at `start` (mod its length) and wraps; CNAMEs stay where they are.
pub fn rotate_addresses(records: &mut [Record], start: usize) {
    let mut i = 0;
    while i < records.len() {
        let t = records[i].record_type();
        let mut j = i;
        while j < records.len() && records[j].record_type() == t {
            j += 1;
        }
        if matches!(t, RecordType::A | RecordType::AAAA) {
            let run = &mut records[i..j];
            let n = run.len();
            run.rotate_left(start % n);
        }
        i = j;
    }
}

/// A start offset for [`rotate_addresses`], different for every answer.
pub fn random_start() -> usize {
    use std::{
        hash::{BuildHasher, Hasher},
        sync::atomic::{AtomicUsize, Ordering},
    };
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(N.fetch_add(1, Ordering::Relaxed));
    h.finish() as usize
}

/// Lower-case wire form of a parsed name, the model's key.
pub fn wire_lower(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

pub(crate) fn name_from_wire(wire: &[u8]) -> Name {
    let mut labels = Vec::new();
    let mut at = 0;
    while let Some(&n) = wire.get(at) {
        if n == 0 {
            break;
        }
        let Some(label) = wire.get(at + 1..at + 1 + n as usize) else {
            break;
        };
        labels.push(label);
        at += 1 + n as usize;
    }
    let mut name = Name::from_labels(labels).unwrap_or_default();
    name.set_fqdn(true);
    name
}
