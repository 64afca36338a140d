//! The questions the zone does not own: answered from the cache or by the upstreams, and
//! fitted to the client (its ID, its spelling of the question, its EDNS, its size).
use std::{sync::Arc, time::Instant};

use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};

use super::{cache::Key, exchange, stubs, Cache, ForwardError, Forwarder, Upstreams};
use crate::{
    ops::metrics::{Metrics, Path},
    swap::Swap,
    wire::{encode, random_start, rotate_addresses, wire_lower, Chase, Transport, EDNS_PAYLOAD},
};

pub struct Resolver {
    /// Replaced whole when the upstreams change (`--upstream-service`); the cache stays.
    pub forwarder: Swap<Forwarder>,
    /// What a forwarder for new upstreams is made with.
    pub options: exchange::Options,
    /// Stub domains (lower-case wire name → its forwarder), most specific wins.
    pub stubs: Vec<(Vec<u8>, Arc<Forwarder>)>,
    pub cache: Cache,
    /// Rotate forwarded address answers too (CoreDNS `loadbalance` acts on every answer).
    pub loadbalance: bool,
    pub metrics: Arc<Metrics>,
}

/// What the resolver is to finish for a client.
pub enum Pending {
    /// A question outside the zone.
    Forward(Message),
    /// An ExternalName answer whose target's addresses are to be appended.
    Chase(Box<Chase>),
}

impl Resolver {
    /// The reply for `pending`, and where it came from (see [`Resolver::resolve`]; a chased
    /// answer is `zone` plus the target's path).
    pub async fn settle(
        self: &Arc<Self>,
        pending: Pending,
        transport: Transport,
    ) -> Option<(Vec<u8>, Path)> {
        match pending {
            Pending::Forward(query) => self.resolve(query, transport).await,
            Pending::Chase(c) => {
                // Over TCP to the resolver: the whole answer, fitted to the client after.
                let target = self.resolve(c.target_query(), Transport::Tcp).await;
                let parsed = target.and_then(|(bytes, _)| Message::from_vec(&bytes).ok());
                Some((c.finish(parsed.as_ref()), Path::Zone))
            }
        }
    }

    /// The reply to a query the zone does not own, and where it came from (`cache`,
    /// `upstream`, `stale`, or `error` when the upstreams gave nothing).
    pub async fn resolve(
        self: &Arc<Self>,
        query: Message,
        transport: Transport,
    ) -> Option<(Vec<u8>, Path)> {
        let q = query.queries().first()?.clone();
        let dnssec_ok = query
            .extensions()
            .as_ref()
            .is_some_and(|e| e.flags().dnssec_ok);
        let key = Key {
            name: wire_lower(q.name()),
            qtype: u16::from(q.query_type()),
            dnssec_ok,
        };
        let now = Instant::now();
        let mut path = Path::Upstream;
        let cached = self.cache.get(&key, now);
        if cached.is_none() {
            self.metrics.cache_miss();
        }
        let answer = match cached {
            Some(hit) => {
                path = Path::Cache;
                if hit.prefetch {
                    self.clone().prefetch(key.clone(), query.clone());
                }
                let denial = hit.msg.response_code() == ResponseCode::NXDomain
                    || hit.msg.answers().is_empty();
                self.metrics.cache_hit(denial);
                Ok(hit.msg)
            }
            None => match stubs::pick(&self.stubs, &key.name)
                .unwrap_or(&self.forwarder.get())
                .as_ref()
                .exchange(&query)
                .await
            {
                Ok(m) => {
                    self.cache.put(key, &m, now);
                    self.metrics.cache_entries(self.cache.len());
                    Ok(m)
                }
                Err(ForwardError::Overloaded) => {
                    path = Path::Error;
                    Err(ResponseCode::Refused)
                }
                Err(e @ ForwardError::AllFailed(_)) => match self.cache.get_stale(&key, now) {
                    Some(hit) => {
                        tracing::debug!(error = %e, "upstreams failing; serving stale");
                        path = Path::Stale;
                        self.metrics.served_stale();
                        Ok(hit.msg)
                    }
                    None => {
                        tracing::debug!(error = %e, "upstreams failing");
                        path = Path::Error;
                        Err(ResponseCode::ServFail)
                    }
                },
            },
        };
        let mut reply = match answer {
            Ok(m) => m,
            Err(rcode) => {
                let mut m = Message::new();
                m.set_response_code(rcode);
                m
            }
        };
        // The client's ID, question as it spelled it, RD; our EDNS if it sent one.
        reply
            .set_id(query.id())
            .set_message_type(MessageType::Response)
            .set_op_code(query.op_code())
            .set_recursion_desired(query.recursion_desired())
            .set_recursion_available(true);
        reply.take_queries();
        reply.add_query(q);
        if self.loadbalance {
            rotate_addresses(reply.answers_mut(), random_start());
        }
        *reply.extensions_mut() = query.extensions().as_ref().map(|e| {
            let mut ours = Edns::new();
            ours.set_max_payload(EDNS_PAYLOAD)
                .set_version(0)
                .set_dnssec_ok(e.flags().dnssec_ok);
            ours
        });
        encode(reply, &query, transport).map(|r| (r, path))
    }
}

impl Resolver {
    /// Refreshes `key` in the background (the one refresh in flight for it).
    fn prefetch(self: Arc<Self>, key: Key, query: Message) {
        tokio::spawn(async move {
            let f = stubs::pick(&self.stubs, &key.name)
                .unwrap_or(&self.forwarder.get())
                .clone();
            match f.exchange(&query).await {
                Ok(m) => {
                    self.cache.put(key, &m, Instant::now());
                }
                Err(_) => self.cache.refresh_failed(&key),
            }
        });
    }

    /// Starts the health checks of every forwarder.
    /// Forwards to `upstreams` from now on; answers cached so far stay.
    pub fn set_upstreams(&self, upstreams: Upstreams) {
        let f = Forwarder::new(upstreams, self.options.clone()).with_metrics(self.metrics.clone());
        self.forwarder.set(f);
        tokio::spawn(Forwarder::health_checks(Arc::downgrade(
            &self.forwarder.get(),
        )));
    }

    pub fn spawn_health_checks(&self) {
        tokio::spawn(Forwarder::health_checks(Arc::downgrade(
            &self.forwarder.get(),
        )));
        for (_, f) in &self.stubs {
            tokio::spawn(Forwarder::health_checks(Arc::downgrade(f)));
        }
    }
}
