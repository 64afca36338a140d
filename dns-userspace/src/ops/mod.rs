//! What operators and kubelet probe: liveness and readiness, and metrics, over HTTP.
pub mod health;
pub mod http;
pub mod metrics;
pub mod series;
pub mod settings;
