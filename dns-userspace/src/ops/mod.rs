//! What operators and kubelet probe: liveness and readiness over HTTP.
pub mod health;
