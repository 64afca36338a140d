//! Installs the toolchain pieces and test tools that are missing, and only those, saying
//! what it does. Where it cannot (not root, no apt) it stops with the exact command.
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

/// Debian packages: the LLVM that bpf-linker links against, and the test/bench tools.
const PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "LLVM 22 for bpf-linker"),
    ("libpolly-22-dev", "LLVM 22 for bpf-linker"),
    ("zlib1g-dev", "bpf-linker's link"),
    ("libzstd-dev", "bpf-linker's link"),
    ("iproute2", "network namespaces and veth"),
    ("dnsutils", "dig"),
    ("knot-dnsutils", "kdig"),
    ("dnsperf", "latency percentiles"),
    (
        "knot",
        "kxdpgun load generator, and Knot DNS in XDP mode (bench)",
    ),
    ("nsd", "an authoritative server the benchmark compares with"),
    ("nftables", "proving answered queries skip netfilter"),
    ("curl", "probing /health and /ready"),
    ("python3", "Python's getaddrinfo as a client"),
    ("musl-tools", "musl's getaddrinfo as a client"),
    ("kubectl", "rendering deploy/overlays (kubectl kustomize)"),
    (
        "podman",
        "building and running the image (cargo xtask image)",
    ),
    (
        "runc",
        "podman's runtime here (crun fails on cgroup v1 hybrid)",
    ),
    (
        "unbound",
        "the forwarding cache the benchmark compares with",
    ),
    ("iperf3", "bulk TCP through an attached veth (bench)"),
];

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn ensure() -> Result<()> {
    apt_packages()?;
    rust_src()?;
    bpf_linker()
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&(&str, &str)> = PACKAGES.iter().filter(|(p, _)| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|(p, _)| *p).collect();
    let cmd = format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {}",
        names.join(" ")
    );
    if !is_root() || !have("apt-get") {
        bail!("missing Debian packages {names:?}; run as root:\n  {cmd}");
    }
    for (p, why) in &missing {
        println!("xtask: installing {p} ({why})");
    }
    run("sh", &["-c", &cmd]).context("apt-get install")
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("rustup (the BPF build needs the nightly toolchain)")?;
    if !out.status.success() {
        // Installing a new nightly would bring an LLVM newer than bpf-linker links.
        bail!("the nightly toolchain is missing; this project expects the machine's nightly (LLVM 22)");
    }
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    println!("xtask: installing rust-src for nightly (to build core for bpfel-unknown-none)");
    run(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    )
}

fn bpf_linker() -> Result<()> {
    if have("bpf-linker") {
        return Ok(());
    }
    println!("xtask: installing bpf-linker (built against {LLVM_PREFIX}, about a minute)");
    let path = format!(
        "{LLVM_PREFIX}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let status = Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("PATH", path)
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
        .status()
        .context("cargo install bpf-linker")?;
    if !status.success() {
        bail!(
            "cargo install bpf-linker failed; run:\n  PATH={LLVM_PREFIX}/bin:$PATH LLVM_SYS_221_PREFIX={LLVM_PREFIX} \
             cargo install bpf-linker --no-default-features --features llvm-22"
        );
    }
    Ok(())
}

/// cargo-fuzz, for `cargo xtask fuzz` only (the test suite does not need it).
pub fn cargo_fuzz() -> Result<()> {
    if have("cargo-fuzz") {
        return Ok(());
    }
    println!("xtask: installing cargo-fuzz (about a minute)");
    run("cargo", &["install", "cargo-fuzz", "--locked"])
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program).args(args).status()?;
    if !status.success() {
        bail!("{program} {} failed ({status})", args.join(" "));
    }
    Ok(())
}
