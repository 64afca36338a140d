//! UDP and TCP listeners that feed the answer path.
use std::{
    io,
    net::SocketAddr,
    sync::atomic::{AtomicBool, Ordering},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
};

use super::{answer, Outcome, Transport};
use crate::forward::resolve::{Pending, Resolver};
use crate::model::Records;
pub use crate::swap::Swap;
use crate::{
    forward::loopdetect::LoopProbe,
    ops::metrics::{Metrics, Path},
};

/// The cluster zone's records as last built.
pub type Zone = Swap<Records>;

/// What the listeners answer from: the zone, and the resolver for everything else (none:
/// REFUSED outside the zone).
#[derive(Clone)]
pub struct Handler {
    pub zone: Zone,
    /// Replaced whole when the configuration is reloaded.
    pub resolver: Swap<Option<Arc<Resolver>>>,
    /// The start-up loop probe: seen coming back, it is answered SERVFAIL, never forwarded.
    pub probe: Option<Arc<LoopProbe>>,
    /// Log one line per query (reloadable).
    pub log_queries: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

impl Handler {
    fn is_loop_probe(&self, query: &hickory_proto::op::Message) -> bool {
        self.probe.as_ref().is_some_and(|p| p.is_probe(query))
    }
}

const TCP_IDLE: Duration = Duration::from_secs(10);
const TCP_MAX_CONNECTIONS: usize = 1024;

/// Binds UDP and TCP on `addr` now, so queries (the loop probe's first) reach us from the
/// moment this returns; [`serve`] then answers on them. With SO_REUSEPORT, so a new daemon
/// binds beside the one it replaces and the node is never without a listener in a rollout.
pub fn bind(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = |ty: Type, proto: Protocol| -> io::Result<Socket> {
        let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
        s.set_reuse_port(true)?;
        if ty == Type::STREAM {
            // Rebinding while old connections sit in TIME_WAIT.
            s.set_reuse_address(true)?;
        }
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        Ok(s)
    };
    let udp = socket(Type::DGRAM, Protocol::UDP)?;
    let tcp = socket(Type::STREAM, Protocol::TCP)?;
    tcp.listen(1024)?;
    Ok((
        UdpSocket::from_std(udp.into())?,
        TcpListener::from_std(tcp.into())?,
    ))
}

/// Answers on the sockets [`bind`] gave until the task is dropped.
pub async fn serve((udp, tcp): (UdpSocket, TcpListener), handler: Handler) -> io::Result<()> {
    let udp = Arc::new(udp);
    let u = tokio::spawn(serve_udp(udp, handler.clone()));
    let t = tokio::spawn(serve_tcp(tcp, handler));
    let (u, t) = tokio::join!(u, t);
    u.map_err(io::Error::other)??;
    t.map_err(io::Error::other)??;
    Ok(())
}

impl Handler {
    /// The CoreDNS request metrics, from the reply's header and question (no full parse on
    /// the hot path).
    fn count(&self, req: &Req, reply: &[u8], path: Path) {
        if reply.len() < 12 {
            return;
        }
        // The configured zone, as CoreDNS labels its server block's zone.
        let zone = match path {
            Path::Zone => crate::model::name::dotted(&self.zone.get().cfg.zone),
            _ => ".".to_owned(),
        };
        let proto = match req.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        let qtype = question_type(reply).map(type_name).unwrap_or("other");
        let rcode = crate::ops::metrics::rcode_name(u16::from(reply[3] & 0x0f));
        let plugin = path.plugin();
        self.metrics.answered(
            &zone,
            proto,
            req.peer.is_ipv6(),
            qtype,
            req.size,
            reply.len(),
            req.started.elapsed(),
            rcode,
            plugin,
        );
    }
}

/// The QTYPE of a message's first question.
fn question_type(msg: &[u8]) -> Option<u16> {
    let mut at = 12;
    loop {
        let n = *msg.get(at)? as usize;
        if n == 0 {
            at += 1;
            break;
        }
        if n & 0xc0 != 0 {
            at += 2;
            break;
        }
        at += 1 + n;
    }
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

fn type_name(t: u16) -> &'static str {
    match t {
        1 => "A",
        28 => "AAAA",
        33 => "SRV",
        12 => "PTR",
        5 => "CNAME",
        16 => "TXT",
        6 => "SOA",
        2 => "NS",
        _ => "other",
    }
}

/// One query as received, for its log line and metrics.
#[derive(Clone, Copy)]
struct Req {
    peer: SocketAddr,
    transport: Transport,
    started: Instant,
    size: usize,
}

/// How a query is answered: at once from the zone, or later by the resolver.
enum Next {
    Now(Vec<u8>, Path),
    Later(Pending, Arc<Resolver>),
    Nothing,
}

impl Handler {
    fn first(&self, query: &[u8], transport: Transport) -> Next {
        match answer(query, &self.zone.get(), transport) {
            Outcome::Drop => Next::Nothing,
            Outcome::Reply(r) => Next::Now(r, Path::Zone),
            Outcome::Chase(c) => match &*self.resolver.get() {
                None => Next::Now(c.cname_only, Path::Zone),
                Some(r) => Next::Later(Pending::Chase(c), r.clone()),
            },
            Outcome::Forward { query, refused } => match &*self.resolver.get() {
                None => Next::Now(refused, Path::Refused),
                Some(_) if self.is_loop_probe(&query) => {
                    Next::Now(servfail(&query), Path::LoopProbe)
                }
                Some(r) => Next::Later(Pending::Forward(query), r.clone()),
            },
        }
    }

    /// One line per query, when asked for: client, transport, name, type, rcode, time
    /// taken and which path answered.
    fn log(&self, req: &Req, reply: &[u8], path: Path) {
        self.count(req, reply, path);
        let Req {
            peer,
            transport,
            started,
            ..
        } = *req;
        if !self.log_queries.load(Ordering::Relaxed) {
            return;
        }
        let Ok(m) = hickory_proto::op::Message::from_vec(reply) else {
            return;
        };
        let (name, qtype) = m
            .queries()
            .first()
            .map(|q| (q.name().to_string(), q.query_type().to_string()))
            .unwrap_or_default();
        tracing::info!(
            target: "query",
            client = %peer,
            proto = ?transport,
            name,
            qtype,
            rcode = %m.response_code(),
            us = started.elapsed().as_micros() as u64,
            path = path.name(),
        );
    }
}

/// A listener's receive or accept errors (EMFILE, ENOBUFS, ECONNABORTED): each is retried
/// after a pause that grows while they last, and logged once per burst, so a descriptor
/// shortage slows a listener down instead of ending it.
struct Retry {
    what: &'static str,
    failures: u64,
    pause: Duration,
}

impl Retry {
    const FIRST: Duration = Duration::from_millis(5);
    const MOST: Duration = Duration::from_secs(1);

    fn new(what: &'static str) -> Self {
        Self {
            what,
            failures: 0,
            pause: Self::FIRST,
        }
    }

    async fn failed(&mut self, e: &io::Error) {
        if self.failures == 0 {
            tracing::warn!(listener = self.what, error = %e, "listener error; retrying");
        }
        self.failures += 1;
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Self::MOST);
    }

    /// The value of a receive or accept, or `None` once its error has been paused on.
    async fn take<T>(&mut self, r: io::Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.worked();
                Some(v)
            }
            Err(e) => {
                self.failed(&e).await;
                None
            }
        }
    }

    fn worked(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                listener = self.what,
                failures = self.failures,
                "listener recovered"
            );
            *self = Self::new(self.what);
        }
    }
}

async fn serve_udp(sock: Arc<UdpSocket>, h: Handler) -> io::Result<()> {
    let mut buf = vec![0u8; 65535];
    let mut retry = Retry::new("udp");
    loop {
        let Some((n, peer)) = retry.take(sock.recv_from(&mut buf).await).await else {
            continue;
        };
        let req = Req {
            peer,
            transport: Transport::Udp,
            started: Instant::now(),
            size: n,
        };
        match h.first(&buf[..n], Transport::Udp) {
            Next::Nothing => {}
            Next::Now(reply, path) => {
                if let Err(e) = sock.send_to(&reply, peer).await {
                    tracing::debug!(%peer, error = %e, "udp send failed");
                }
                h.log(&req, &reply, path);
            }
            Next::Later(query, resolver) => {
                // Upstream round trips must not hold up the zone's answers.
                let (h, sock) = (h.clone(), sock.clone());
                tokio::spawn(async move {
                    if let Some((reply, path)) = resolver.settle(query, Transport::Udp).await {
                        let _ = sock.send_to(&reply, peer).await;
                        h.log(&req, &reply, path);
                    }
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, h: Handler) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(TCP_MAX_CONNECTIONS));
    let mut refused = 0u64;
    let mut last_warned = std::time::Instant::now() - Duration::from_secs(3600);
    let mut retry = Retry::new("tcp");
    loop {
        let Some((stream, peer)) = retry.take(listener.accept().await).await else {
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused += 1;
            // One line per burst, not one per connection: a flood must not flood the log.
            if last_warned.elapsed() >= Duration::from_secs(10) {
                tracing::warn!(%peer, refused, "tcp connection cap reached; closing new connections");
                last_warned = std::time::Instant::now();
                refused = 0;
            }
            continue;
        };
        let h = h.clone();
        tokio::spawn(async move {
            if let Err(e) = tcp_conn(stream, h).await {
                tracing::debug!(%peer, error = %e, "tcp connection ended");
            }
            drop(permit);
        });
    }
}

/// Queries one TCP connection may have in flight to the upstreams at once.
const TCP_MAX_INFLIGHT: usize = 64;

/// RFC 7766: length-prefixed messages, several per connection, answered as they are ready
/// (a slow upstream does not hold up the zone's answers behind it), closed when idle.
async fn tcp_conn(stream: TcpStream, h: Handler) -> io::Result<()> {
    let peer = stream.peer_addr()?;
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(TCP_MAX_INFLIGHT);
    let writer = tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            let mut out = Vec::with_capacity(reply.len() + 2);
            out.extend_from_slice(&(reply.len() as u16).to_be_bytes());
            out.extend_from_slice(&reply);
            // A client that sends and never reads fills its window: closed after the idle
            // time, not held (with its replies) for ever.
            tokio::time::timeout(TCP_IDLE, wr.write_all(&out))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client not reading"))??;
        }
        io::Result::Ok(())
    });
    let inflight = Arc::new(Semaphore::new(TCP_MAX_INFLIGHT));
    let result = async {
        loop {
            let len = match tokio::time::timeout(TCP_IDLE, rd.read_u16()).await {
                Ok(Ok(len)) => len as usize,
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            };
            // Sized per message: an idle connection holds no buffer.
            let mut buf = vec![0u8; len];
            tokio::time::timeout(TCP_IDLE, rd.read_exact(&mut buf))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "stalled mid-message"))??;
            let req = Req {
                peer,
                transport: Transport::Tcp,
                started: Instant::now(),
                size: len,
            };
            match h.first(&buf, Transport::Tcp) {
                Next::Nothing => {}
                Next::Now(reply, path) => {
                    h.log(&req, &reply, path);
                    if tx.send(reply).await.is_err() {
                        return Ok(());
                    }
                }
                Next::Later(query, resolver) => {
                    let Ok(permit) = inflight.clone().acquire_owned().await else {
                        return Ok(());
                    };
                    let (h, tx) = (h.clone(), tx.clone());
                    tokio::spawn(async move {
                        if let Some((reply, path)) = resolver.settle(query, Transport::Tcp).await {
                            h.log(&req, &reply, path);
                            let _ = tx.send(reply).await;
                        }
                        drop(permit);
                    });
                }
            }
        }
    }
    .await;
    // The writer ends once every reply in flight is written.
    drop(tx);
    let _ = writer.await;
    result
}

fn servfail(query: &hickory_proto::op::Message) -> Vec<u8> {
    let mut m = hickory_proto::op::Message::error_msg(
        query.id(),
        query.op_code(),
        hickory_proto::op::ResponseCode::ServFail,
    );
    m.add_queries(query.queries().to_vec());
    m.to_vec().unwrap_or_default()
}
