//! The listener under `/health`, `/ready` and `/metrics`: a cap on connections at once, and
//! a connection that sends no request in time, or lives too long, is closed. kubelet and
//! Prometheus open a connection per probe or scrape (or keep one a little while); without
//! these, idle connections held open by anyone who can reach the port take descriptors
//! and memory without end, and a probe behind them waits.
use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// Connections served at once; more wait for a slot.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a new connection has to send its first bytes.
pub const FIRST_REQUEST: Duration = Duration::from_secs(5);
/// How long any connection lives (a kept-alive scraper reconnects).
pub const LIFETIME: Duration = Duration::from_secs(30);

/// A TCP listener for axum with the limits above.
pub struct Capped {
    inner: TcpListener,
    slots: Arc<Semaphore>,
}

/// A listening socket with SO_REUSEPORT: in a rollout the next daemon, on the host
/// network too, binds the same probe and metrics ports beside this one.
pub fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    Ok(s.into())
}

impl Capped {
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            inner: TcpListener::from_std(listen(addr)?)?,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        })
    }
}

impl axum::serve::Listener for Capped {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // The semaphore is never closed; a slot frees when a connection ends.
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => return (Guarded::new(stream, slot), addr),
                // Out of descriptors and the like: wait, do not spin or end.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// One accepted connection: its slot, and the deadline after which reads and writes fail
/// (which makes the server close it).
pub struct Guarded {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    deadline: Pin<Box<Sleep>>,
    closes_at: Instant,
    spoke: bool,
}

impl Guarded {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit) -> Self {
        let now = Instant::now();
        Self {
            stream,
            _slot: slot,
            deadline: Box::pin(tokio::time::sleep_until(now + FIRST_REQUEST)),
            closes_at: now + LIFETIME,
            spoke: false,
        }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "http connection past its deadline")
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if !self.spoke && buf.filled().len() > before {
            self.spoke = true;
            let at = self.closes_at;
            self.deadline.as_mut().reset(at);
        }
        r
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves `/metrics` on `addr`.
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    m: std::sync::Arc<super::metrics::Metrics>,
) -> std::io::Result<()> {
    use axum::{routing::get, Router};
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let m = m.clone();
            async move {
                // Reading the pinned maps is blocking syscalls: off the async workers.
                let text = tokio::task::spawn_blocking(move || m.render())
                    .await
                    .unwrap_or_default();
                ([("content-type", "text/plain; version=0.0.4")], text)
            }
        }),
    );
    let l = Capped::bind(addr).await?;
    axum::serve(l, app).await
}
