//! `/health` (the process serves) and `/ready` (the zone is synced and the kernel path
//! attached), as CoreDNS's `health` and `ready` plugins answer kubelet's probes.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use axum::{extract::State, http::StatusCode, routing::get, Router};

#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

async fn health() -> &'static str {
    "OK"
}

async fn ready(State(r): State<Readiness>) -> (StatusCode, &'static str) {
    if r.get() {
        (StatusCode::OK, "OK")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves `/health` on `health_addr` and `/ready` on `ready_addr` (they may be equal).
pub async fn serve(
    health_addr: SocketAddr,
    ready_addr: SocketAddr,
    r: Readiness,
) -> std::io::Result<()> {
    let health_app = Router::new().route("/health", get(health));
    let ready_app = Router::new().route("/ready", get(ready)).with_state(r);
    if health_addr == ready_addr {
        let l = tokio::net::TcpListener::bind(health_addr).await?;
        return axum::serve(l, health_app.merge(ready_app)).await;
    }
    let h = tokio::net::TcpListener::bind(health_addr).await?;
    let rd = tokio::net::TcpListener::bind(ready_addr).await?;
    let (a, b) = tokio::join!(axum::serve(h, health_app), axum::serve(rd, ready_app));
    a.and(b)
}
