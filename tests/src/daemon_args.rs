//! The daemon's command line for tests, benches and the demo, built from named parts so
//! each flag is spelled in one place here.
use std::path::Path;

/// `xdns run` arguments, in the order given.
#[derive(Clone, Debug)]
pub struct DaemonArgs(Vec<String>);

impl DaemonArgs {
    /// Records from a directory of manifests.
    pub fn manifests(dir: &Path) -> Self {
        Self(Vec::new()).pair("--manifests", dir.display())
    }

    /// Records from an API server (the test one's kubeconfig).
    pub fn kubeconfig(file: &Path) -> Self {
        Self(Vec::new()).pair("--kubeconfig", file.display())
    }

    fn pair(mut self, flag: &str, value: impl std::fmt::Display) -> Self {
        self.0.push(flag.into());
        self.0.push(value.to_string());
        self
    }

    fn switch(mut self, flag: &str) -> Self {
        self.0.push(flag.into());
        self
    }

    /// Served here: the kernel answers them, userspace listens on them.
    pub fn listen(self, addrs: &[&str]) -> Self {
        addrs.iter().fold(self, |a, ip| a.pair("--listen", ip))
    }

    /// Answered by the kernel in front of another server at `addr`.
    pub fn accelerate(self, addr: &str) -> Self {
        self.pair("--accelerate", addr)
    }

    pub fn accelerate_service(self, service: &str) -> Self {
        self.pair("--accelerate-service", service)
    }

    /// The kernel path on `iface`.
    pub fn iface(self, iface: &str) -> Self {
        self.pair("--iface", iface)
    }

    pub fn attach(self, mode: &str) -> Self {
        self.pair("--attach", mode)
    }

    pub fn pin_dir(self, dir: &Path) -> Self {
        self.pair("--pin-dir", dir.display())
    }

    /// Userspace only.
    pub fn no_kernel(self) -> Self {
        self.switch("--no-kernel")
    }

    /// REFUSED outside the zone, at once: no upstream in test namespaces.
    pub fn no_forward(self) -> Self {
        self.switch("--no-forward")
    }

    /// Answers in their order, to compare them byte for byte.
    pub fn no_loadbalance(self) -> Self {
        self.switch("--no-loadbalance")
    }

    pub fn upstream(self, addr: &str) -> Self {
        self.pair("--upstream", addr)
    }

    pub fn port(self, port: impl std::fmt::Display) -> Self {
        self.pair("--port", port)
    }

    /// The --listen addresses on a dummy interface of their own, with NOTRACK rules.
    pub fn node_local(self, iface: &str) -> Self {
        self.pair("--local-iface", iface).switch("--notrack")
    }

    /// `/health`, `/ready` and `/metrics` elsewhere than their defaults (a second daemon
    /// in the same namespace).
    pub fn probes(self, health: &str, ready: &str, metrics: &str) -> Self {
        self.pair("--health-addr", health)
            .pair("--ready-addr", ready)
            .pair("--metrics-addr", metrics)
    }

    pub fn config(self, file: &Path) -> Self {
        self.pair("--config", file.display())
    }

    /// Detach and remove the pins on exit: nothing left behind.
    pub fn detach_on_exit(self) -> Self {
        self.switch("--detach-on-exit")
    }

    /// Any other flags, as written.
    pub fn extra(mut self, args: &[&str]) -> Self {
        self.0.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn build(self) -> Vec<String> {
        self.0
    }
}

impl From<DaemonArgs> for Vec<String> {
    fn from(a: DaemonArgs) -> Self {
        a.0
    }
}
