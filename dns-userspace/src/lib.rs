//! xdns daemon library: sources → record model → sinks (kernel maps, userspace answers).
//!
//! - [`source`]: where Services come from (a manifest directory for now), trimmed on arrival.
//! - [`model`]: pure code turning Services into the zone's records, and query lookups.
//! - [`dataplane`]: the embedded kernel program: loading, pinning, attaching, map sync.
//! - [`answer`]: the userspace answer path and its UDP/TCP server.
//! - [`forward`]: upstreams and the cache for everything outside the zone.
//! - [`ops`]: health and readiness.
pub mod answer;
pub mod config;
pub mod dataplane;
pub mod forward;
pub mod model;
pub mod node;
pub mod ops;
pub mod source;
