//! `cargo xtask image`: the OCI image, built offline with podman from what this machine
//! has (no registry to pull a base from): the release `xdns` (eBPF object embedded) and,
//! for node-local's NOTRACK rules, `nft`, each with the shared libraries `ldd` lists, on
//! `scratch`. `deploy/Dockerfile` builds the same contents where a registry is at hand.
//! `cargo xtask test` builds it first: the pod tests run it.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// podman as it works on these machines: vfs storage (no overlay mounts), runc (crun fails
/// on cgroup v1 hybrid mode and rlimits).
/// The image the pod tests run (`tests/tests/pod.rs` names it too).
pub const TEST_TAG: &str = "localhost/xdns:test";
const PODMAN: &[&str] = &["--storage-driver", "vfs", "--runtime", "runc"];

/// Builds the image from the release daemon.
pub fn build(root: &Path, tag: &str) -> Result<()> {
    let binary = release_xdns(root)?;
    assemble(root, &binary, tag)
}

/// Builds the image around `binary` (the test build's daemon for the pod tests: the pod's
/// settings are what they check, and it is already built).
pub fn assemble(root: &Path, binary: &Path, tag: &str) -> Result<()> {
    let ctx = target_dir(root).join("image");
    let _ = fs::remove_dir_all(&ctx);
    let rootfs = ctx.join("rootfs");
    install(binary, &rootfs.join("usr/local/bin/xdns"))?;
    run(
        "strip",
        &[rootfs
            .join("usr/local/bin/xdns")
            .to_str()
            .context("utf-8 path")?],
    )?;
    for lib in shared_libraries(binary)? {
        install(&lib, &rootfs.join(lib.strip_prefix("/").unwrap_or(&lib)))?;
    }
    let nft = which("nft")?;
    install(&nft, &rootfs.join(nft.strip_prefix("/").unwrap_or(&nft)))?;
    for lib in shared_libraries(&nft)? {
        install(&lib, &rootfs.join(lib.strip_prefix("/").unwrap_or(&lib)))?;
    }
    fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         ENTRYPOINT [\"/usr/local/bin/xdns\"]\n",
    )?;
    let ctx_s = ctx.to_str().context("utf-8 path")?;
    // The image this tag named before: untagged by the build, removed after it, so test
    // runs do not pile up images of 50 MB each.
    let previous = output(
        "podman",
        &[PODMAN, &["image", "inspect", "--format", "{{.Id}}", tag]].concat(),
    )
    .ok()
    .map(|id| id.trim().to_owned());
    podman(&[
        "build",
        "--network",
        "none",
        "-t",
        tag,
        "-f",
        &format!("{ctx_s}/Containerfile"),
        ctx_s,
    ])?;
    let now = output(
        "podman",
        &[PODMAN, &["image", "inspect", "--format", "{{.Id}}", tag]].concat(),
    )?;
    if let Some(old) = previous.filter(|old| !old.is_empty() && *old != now.trim()) {
        // Still used by a container (a pod left running): kept, and said.
        if let Err(e) = podman(&["rmi", &old]) {
            println!("xtask: the previous image {old} stays: {e:#}");
        }
    }
    // It starts: the entry point runs and knows its subcommands. Limits no higher than
    // this machine lets a process raise them (no CAP_SYS_RESOURCE): podman's defaults, and
    // here even `--ulimit host`, fail with EPERM in runc.
    let run_args = [
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        tag,
        "--help",
    ];
    let help = output("podman", &[PODMAN, &run_args].concat())?;
    if !help.contains("run") {
        bail!("the image's xdns --help printed no subcommands:\n{help}");
    }
    // nft finds every library it loads (node-local's NOTRACK rules run it).
    let mut nft_args = run_args.to_vec();
    nft_args.splice(
        nft_args.len() - 2..,
        ["--entrypoint", "/usr/sbin/nft", tag, "--version"],
    );
    let version = output("podman", &[PODMAN, &nft_args].concat())?;
    if !version.starts_with("nftables") {
        bail!("nft in the image: {version}");
    }
    let size: u64 = output(
        "podman",
        &[PODMAN, &["image", "inspect", "--format", "{{.Size}}", tag]].concat(),
    )?
    .trim()
    .parse()
    .context("image size")?;
    println!(
        "xtask: image {tag}: {:.1} MiB (xdns and nft with their libraries, on scratch)",
        size as f64 / 1048576.0
    );
    Ok(())
}

/// The daemon as every other step builds it (shared with the tests' build).
fn release_xdns(root: &Path) -> Result<PathBuf> {
    let status = Command::new("cargo")
        .args(["build", "--release", "-p", "dns-userspace", "--bin", "xdns"])
        .current_dir(root)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("building xdns failed ({status})");
    }
    Ok(target_dir(root).join("release/xdns"))
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn install(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to.parent().context("a parent folder")?)?;
    fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    Ok(())
}

fn which(cmd: &str) -> Result<PathBuf> {
    let p = output("sh", &["-c", &format!("command -v {cmd}")])?;
    let p = fs::canonicalize(p.trim()).with_context(|| format!("{cmd} not found (nftables)"))?;
    Ok(p)
}

/// What `ldd` says `bin` loads, the dynamic loader included.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let text = output("ldd", &[bin.to_str().context("utf-8 path")?])?;
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
            // Keep the path the binary asks for, and the file behind a symlink too.
            if let Ok(real) = fs::canonicalize(p) {
                if real != Path::new(p) {
                    libs.push(real);
                }
            }
        }
    }
    Ok(libs)
}

fn podman(args: &[&str]) -> Result<()> {
    run("podman", &[PODMAN, args].concat())
}

fn run(cmd: &str, args: &[&str]) -> Result<()> {
    println!("xtask: {cmd} {}", args.join(" "));
    let status = Command::new(cmd)
        .args(args)
        .status()
        .with_context(|| format!("running {cmd}"))?;
    if !status.success() {
        bail!("{cmd} failed ({status})");
    }
    Ok(())
}

fn output(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
