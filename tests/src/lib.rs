//! Fixtures for the integration tests: packet builders, network-namespace and child-process
//! guards that clean up on drop, and the rule for when root-only tests may skip.
pub mod apiserver;
pub mod client;
pub mod daemon_args;
pub mod dashboard;
pub mod differ;
pub mod fixture;
pub mod ndots;
pub mod netns;
pub mod packet;
pub mod testrun;

/// Whether tests that need root (BPF, namespaces) can run. Under `CI=true` they must: a
/// missing privilege there is a failure, not a skip.
pub fn require_root(test: &str) -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: CI=true but not running as root"
        );
        eprintln!("SKIP {test}: needs root (BPF and network namespaces)");
    }
    root
}
