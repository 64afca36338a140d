//! The manifests a cluster admin applies: a kustomize base (`deploy/base/`) and one overlay
//! per mode (`kubectl apply -k deploy/overlays/accelerator` or `.../node-local`); this crate holds
//! their test (`tests/manifests.rs`): each document parses as its real Kubernetes type with
//! nothing dropped, and the choices the README promises (least privilege, probes, host
//! mounts, a config the daemon accepts) hold in both modes.
