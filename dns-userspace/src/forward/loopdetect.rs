//! CoreDNS's `loop`: at start-up, ask the upstreams for a random name and watch whether that
//! query comes back to us. If it does, forwarding would spin queries forever: refuse to run.
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RecordType},
};

use super::Forwarder;

pub struct LoopProbe {
    name: Name,
    seen: AtomicU64,
}

impl LoopProbe {
    /// A probe for a name nobody else asks: two random labels under the root.
    pub fn new() -> Self {
        let (a, b) = (random(1), random(2));
        let name = Name::from_ascii(format!("{a}.{b}.")).unwrap_or_else(|_| Name::root());
        Self {
            name,
            seen: AtomicU64::new(0),
        }
    }

    /// Whether `query` is our probe coming back (and counts it).
    pub fn is_probe(&self, query: &Message) -> bool {
        let hit = query
            .queries()
            .iter()
            .any(|q| q.name() == &self.name && q.query_type() == RecordType::HINFO);
        if hit {
            self.seen.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Sends the probe through the forwarder; the answer does not matter, only whether
    /// the query reached our own listeners meanwhile.
    pub async fn run(&self, forwarder: &Forwarder) -> bool {
        let mut m = Message::new();
        m.set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(self.name.clone(), RecordType::HINFO));
        let _ = forwarder.exchange(&m).await;
        self.seen() > 0
    }
}

impl Default for LoopProbe {
    fn default() -> Self {
        Self::new()
    }
}

fn random(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    h.finish() % 1_000_000_000
}
