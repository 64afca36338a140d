//! Everything that is not the cluster zone: upstreams (from resolv.conf or a list), the
//! exchange with them over UDP and TCP, and the cache in front of them.
pub mod cache;
pub mod exchange;
pub mod loopdetect;
pub mod resolve;
pub mod settings;
pub mod stubs;
pub mod upstreams;

pub use cache::Cache;
pub use exchange::{ForwardError, Forwarder};
pub use upstreams::{Policy, Upstreams};
