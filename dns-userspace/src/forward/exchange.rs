//! Sending a query to the upstreams: UDP first (TCP when the answer is truncated, or always
//! with `force_tcp`), one timeout per try, the next upstream on failure, and a cap on the
//! queries in flight (REFUSED past it, as CoreDNS's `max_concurrent`).
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use hickory_proto::op::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    sync::Semaphore,
};

use super::upstreams::{Policy, Upstreams};
use crate::ops::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("too many queries in flight")]
    Overloaded,
    #[error("every upstream failed; last: {0}")]
    AllFailed(String),
}

pub struct Forwarder {
    upstreams: Upstreams,
    policy: Policy,
    timeout: Duration,
    force_tcp: bool,
    prefer_udp: bool,
    slots: Semaphore,
    counter: AtomicUsize,
    /// Consecutive failures per upstream (same order as `upstreams`).
    fails: Vec<AtomicU32>,
    metrics: Option<Arc<Metrics>>,
}

/// Consecutive failures that take an upstream out of rotation (CoreDNS `max_fails`).
pub const MAX_FAILS: u32 = 2;
/// How often an upstream out of rotation is probed (CoreDNS `health_check`).
pub const HEALTH_CHECK_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub struct Options {
    pub policy: Policy,
    pub timeout: Duration,
    pub max_concurrent: usize,
    pub force_tcp: bool,
    /// Keep a truncated UDP answer rather than retrying over TCP.
    pub prefer_udp: bool,
}

impl Forwarder {
    pub fn new(upstreams: Upstreams, o: Options) -> Self {
        Self {
            policy: o.policy,
            timeout: o.timeout,
            force_tcp: o.force_tcp,
            prefer_udp: o.prefer_udp,
            slots: Semaphore::new(o.max_concurrent.max(1)),
            counter: AtomicUsize::new(0),
            fails: upstreams_fails(&upstreams),
            upstreams,
            metrics: None,
        }
    }

    /// Counts tries, answers and health-check failures in `m` (CoreDNS `forward` metrics).
    pub fn with_metrics(mut self, m: Arc<Metrics>) -> Self {
        for up in &self.upstreams.0 {
            m.upstream(*up);
        }
        self.metrics = Some(m);
        self
    }

    fn index(&self, up: SocketAddr) -> Option<usize> {
        self.upstreams.0.iter().position(|u| *u == up)
    }

    fn healthy(&self, up: SocketAddr) -> bool {
        self.index(up)
            .is_none_or(|i| self.fails[i].load(Ordering::Relaxed) < MAX_FAILS)
    }

    fn record(&self, up: SocketAddr, ok: bool) {
        if let Some(i) = self.index(up) {
            if ok {
                let was = self.fails[i].swap(0, Ordering::Relaxed);
                if was >= MAX_FAILS {
                    tracing::info!(%up, "upstream healthy again");
                }
            } else if self.fails[i].fetch_add(1, Ordering::Relaxed) + 1 == MAX_FAILS {
                tracing::warn!(%up, "upstream failing; out of rotation until a health check passes");
            }
        }
    }

    /// Probes the upstreams out of rotation with `. IN NS`, forever; any answer puts one
    /// back.
    /// Probes unhealthy upstreams until the forwarder is dropped (a reload replaces it).
    pub async fn health_checks(this: std::sync::Weak<Self>) {
        let mut probe = Message::new();
        probe
            .set_message_type(hickory_proto::op::MessageType::Query)
            .set_recursion_desired(true)
            .add_query(hickory_proto::op::Query::query(
                hickory_proto::rr::Name::root(),
                hickory_proto::rr::RecordType::NS,
            ));
        let bytes = match probe.to_vec() {
            Ok(b) => b,
            Err(_) => return,
        };
        loop {
            tokio::time::sleep(HEALTH_CHECK_EVERY).await;
            let Some(this) = this.upgrade() else { return };
            for up in this.upstreams.0.clone() {
                if this.healthy(up) {
                    continue;
                }
                let ok = this.udp(up, &bytes).await.is_ok();
                if !ok {
                    if let Some(m) = &this.metrics {
                        m.healthcheck_failed(up);
                    }
                }
                this.record(up, ok);
            }
        }
    }

    /// The upstream's answer to `query` (whose ID the caller restores).
    pub async fn exchange(&self, query: &Message) -> Result<Message, ForwardError> {
        let _permit = self.slots.try_acquire().map_err(|_| {
            if let Some(m) = &self.metrics {
                m.max_concurrent_reject();
            }
            ForwardError::Overloaded
        })?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut out = query.clone();
        // Our own ID upstream: the client's is not ours to expose, nor unique among clients.
        let id: u16 = rand_u16(n);
        out.set_id(id);
        let bytes = out
            .to_vec()
            .map_err(|e| ForwardError::AllFailed(e.to_string()))?;
        let mut last = String::from("no upstream");
        let order = self
            .upstreams
            .order(self.policy, n, rand_u16(n ^ 0x5a5a) as usize);
        // Healthy upstreams first; the failing ones only when nothing else is left.
        let (healthy, failing): (Vec<_>, Vec<_>) =
            order.into_iter().partition(|u| self.healthy(*u));
        let tries = if healthy.is_empty() { failing } else { healthy };
        for up in tries {
            let t = std::time::Instant::now();
            let tried = if self.force_tcp {
                self.tcp(up, &bytes).await
            } else {
                match self.udp(up, &bytes).await {
                    Ok(r) if r.truncated() && !self.prefer_udp => self.tcp(up, &bytes).await,
                    other => other,
                }
            };
            if let Some(m) = &self.metrics {
                let rcode = tried
                    .as_ref()
                    .ok()
                    .map(|r| crate::ops::metrics::rcode_name(u16::from(r.response_code())));
                m.forwarded(up, rcode, t.elapsed());
            }
            match tried {
                Ok(r) if r.id() == id && r.queries() == query.queries() => {
                    self.record(up, true);
                    return Ok(r);
                }
                Ok(_) => last = format!("{up}: mismatched answer"),
                Err(e) => {
                    self.record(up, false);
                    last = format!("{up}: {e}");
                }
            }
        }
        Err(ForwardError::AllFailed(last))
    }

    async fn udp(&self, up: SocketAddr, q: &[u8]) -> std::io::Result<Message> {
        let bind: SocketAddr = if up.is_ipv4() {
            "0.0.0.0:0".parse().unwrap_or(up)
        } else {
            "[::]:0".parse().unwrap_or(up)
        };
        let sock = UdpSocket::bind(bind).await?;
        sock.connect(up).await?;
        sock.send(q).await?;
        let mut buf = vec![0u8; 65535];
        let n = tokio::time::timeout(self.timeout, sock.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "udp read timeout"))??;
        Message::from_vec(&buf[..n]).map_err(std::io::Error::other)
    }

    async fn tcp(&self, up: SocketAddr, q: &[u8]) -> std::io::Result<Message> {
        let t = self.timeout;
        let run = async {
            let mut s = TcpStream::connect(up).await?;
            let mut out = Vec::with_capacity(q.len() + 2);
            out.extend_from_slice(&(q.len() as u16).to_be_bytes());
            out.extend_from_slice(q);
            s.write_all(&out).await?;
            let len = s.read_u16().await? as usize;
            let mut buf = vec![0u8; len];
            s.read_exact(&mut buf).await?;
            Message::from_vec(&buf).map_err(std::io::Error::other)
        };
        tokio::time::timeout(t, run)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "tcp timeout"))?
    }
}

fn upstreams_fails(u: &Upstreams) -> Vec<AtomicU32> {
    u.0.iter().map(|_| AtomicU32::new(0)).collect()
}

/// A query ID nobody can guess from the last one: hashed with the process's random state.
fn rand_u16(n: usize) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(n);
    h.finish() as u16
}
