//! Record sources. Each yields a whole snapshot of the cluster view; a snapshot that fails
//! to load is reported and the previous one keeps serving.
pub mod convert;
pub mod kube;
pub mod manifests;
pub mod ratelimit;
