//! The manifests a cluster admin applies live in `deploy/manifests/`; this crate holds
//! their test (`tests/manifests.rs`): each document parses as its real Kubernetes type with
//! nothing dropped, and the choices the README promises (least privilege, probes, host
//! mounts, a config the daemon accepts) hold in both modes.
