//! xdns daemon library: sources → record model → sinks (kernel maps, userspace answers).
//!
//! - [`source`]: where Services come from (a manifest directory for now), trimmed on arrival.
//! - [`model`]: pure code turning Services into the zone's records, and query lookups.
//! - [`dataplane`]: the embedded kernel program: loading, pinning, attaching, map sync.
//! - [`answer`]: the userspace answer path and its UDP/TCP server.
//! - [`ops`]: health and readiness.
pub mod answer;
pub mod dataplane;
pub mod model;
pub mod ops;
pub mod source;
