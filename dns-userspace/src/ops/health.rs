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

use super::http::Capped;

/// Says why the process is not ready, if it is not (a source's health).
pub type Check = Arc<dyn Fn() -> Option<String> + Send + Sync>;

#[derive(Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    checks: Arc<std::sync::Mutex<Vec<Check>>>,
    /// A listener that ended: the process no longer serves, `/health` says so.
    down: Arc<std::sync::Mutex<Option<String>>>,
}

impl Readiness {
    /// A listener ended: `/health` (and `/ready`) are 503 with `why` from now on.
    pub fn listener_down(&self, why: String) {
        if let Ok(mut d) = self.down.lock() {
            d.get_or_insert(why);
        }
    }

    fn down(&self) -> Option<String> {
        self.down.lock().ok().and_then(|d| d.clone())
    }

    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Adds a condition: while it names a problem, `/ready` is 503 with that text.
    pub fn check(&self, c: Check) {
        if let Ok(mut checks) = self.checks.lock() {
            checks.push(c);
        }
    }

    pub fn get(&self) -> bool {
        self.problem().is_none()
    }

    fn problem(&self) -> Option<String> {
        if let Some(why) = self.down() {
            return Some(why);
        }
        if !self.ready.load(Ordering::SeqCst) {
            return Some("not ready".into());
        }
        let checks = self.checks.lock().ok()?;
        checks.iter().find_map(|c| c())
    }
}

async fn health(State(r): State<Readiness>) -> (StatusCode, String) {
    match r.down() {
        None => (StatusCode::OK, "OK".into()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn ready(State(r): State<Readiness>) -> (StatusCode, String) {
    match r.problem() {
        None => (StatusCode::OK, "OK".into()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// Serves `/health` on `health_addr` and `/ready` on `ready_addr` (they may be equal).
pub async fn serve(
    health_addr: SocketAddr,
    ready_addr: SocketAddr,
    r: Readiness,
) -> std::io::Result<()> {
    let health_app = Router::new()
        .route("/health", get(health))
        .with_state(r.clone());
    let ready_app = Router::new().route("/ready", get(ready)).with_state(r);
    if health_addr == ready_addr {
        let l = Capped::bind(health_addr).await?;
        return axum::serve(l, health_app.merge(ready_app)).await;
    }
    let h = Capped::bind(health_addr).await?;
    let rd = Capped::bind(ready_addr).await?;
    let (a, b) = tokio::join!(axum::serve(h, health_app), axum::serve(rd, ready_app));
    a.and(b)
}
