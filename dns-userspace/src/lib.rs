//! xdns daemon library: sources → record model → sinks (kernel maps, userspace answers).
//!
//! - [`source`]: where Services come from (the API's watches or a manifest directory),
//!   trimmed on arrival.
//! - [`model`]: pure code turning Services into the zone's records, and query lookups.
//! - [`dataplane`]: the embedded kernel program: loading, pinning, attaching, map sync.
//! - [`answer`]: the userspace answer path and its UDP/TCP server.
//! - [`forward`]: upstreams, the cache and the resolver for everything outside the zone.
//! - [`wire`], [`swap`]: what both answer paths share (encoding and truncation, rotation;
//!   a value replaced whole under readers).
//! - [`ops`]: health, readiness, metrics.
pub mod answer;
pub mod config;
pub mod dataplane;
pub mod forward;
pub mod model;
pub mod node;
pub mod ops;
pub mod settings;
pub mod source;
pub mod swap;
pub mod wire;
