//! `cargo xtask`: the one entry point. Installs what is missing, builds, tests, runs the
//! demo and the benchmark.
mod image;
mod setup;
mod sweep;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, test, demo and benchmark xdns")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and the tests need (idempotent).
    Setup,
    /// Build the daemon (eBPF object embedded) in release mode.
    Build,
    /// Build the OCI image with podman, offline: the static daemon (and nft) on scratch.
    Image {
        #[arg(long, default_value = "localhost/xdns:0.1.0")]
        tag: String,
    },
    /// Format and lint checks, then every test (unit, BPF_PROG_TEST_RUN, namespaces).
    Test {
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Run the daemon on a demo node with two pods (namespaces), until Ctrl-C.
    Demo {
        /// Stop by itself after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Measure the kernel path and userspace, in one run; prints a Markdown table.
    Bench {
        /// Seconds of load per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Only this part: program, namespaces, scale (scale-10k, scale-100k), cache, ndots or chaos.
        #[arg(long)]
        only: Option<String>,
    },
    /// Fuzz (nightly, cargo-fuzz): `kernel_vs_userspace` (the kernel program against the
    /// userspace answer path, as root) or `userspace_answer` (the userspace parser).
    Fuzz {
        #[arg(default_value = "kernel_vs_userspace")]
        target: String,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    setup::ensure()?;
    match cli.cmd {
        Cmd::Setup => Ok(()),
        Cmd::Build => cargo(&["build", "--release", "-p", "dns-userspace"]),
        Cmd::Image { tag } => image::build(&root(), &tag),
        Cmd::Test {
            no_lint,
            cargo_args,
        } => test(no_lint, &cargo_args),
        Cmd::Demo { duration } => {
            let mut args = Vec::new();
            if let Some(d) = duration {
                args.extend(["--duration".to_owned(), d.to_string()]);
            }
            run_bin("xdns-demo", &args)
        }
        Cmd::Fuzz { target, seconds } => {
            setup::cargo_fuzz()?;
            // Seeds from the differential battery's corpus, so the fuzzer starts from queries
            // that reach every answer path instead of from random bytes.
            let kind = if target == "kernel_vs_userspace" {
                "kernel"
            } else {
                "plain"
            };
            let corpus = root().join("fuzz/corpus").join(&target);
            cargo(&[
                "run",
                "--quiet",
                "-p",
                "tests",
                "--bin",
                "xdns-corpus",
                "--",
                &corpus.display().to_string(),
                kind,
            ])?;
            let max = format!("-max_total_time={seconds}");
            cargo_with(
                &["+nightly"],
                &["fuzz", "run", "--fuzz-dir", "fuzz", &target, "--", &max],
            )
        }
        Cmd::Bench { seconds, only } => {
            let mut args = vec!["--seconds".to_owned(), seconds.to_string()];
            if let Some(o) = only {
                args.extend(["--only".to_owned(), o]);
            }
            run_bin("xdns-bench", &args)
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_owned()
}

fn cargo(args: &[&str]) -> Result<()> {
    cargo_with(&[], args)
}

fn cargo_with(toolchain: &[&str], args: &[&str]) -> Result<()> {
    let mut c = Command::new("cargo");
    c.args(toolchain).args(args).current_dir(root());
    println!("xtask: cargo {}", [toolchain, args].concat().join(" "));
    let status = c.status().context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds the daemon and the tests crate's binaries (release) and runs `name` with the
/// daemon's path in `XDNS_BIN`.
fn run_bin(name: &str, args: &[String]) -> Result<()> {
    cargo(&[
        "build",
        "--release",
        "-p",
        "dns-userspace",
        "-p",
        "tests",
        "--bins",
    ])?;
    let dir = root().join("target/release");
    let status = Command::new(dir.join(name))
        .args(args)
        .env("XDNS_BIN", dir.join("xdns"))
        .status()
        .with_context(|| format!("running {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

fn test(no_lint: bool, extra: &[String]) -> Result<()> {
    if !no_lint {
        cargo(&["fmt", "--all", "--", "--check"])?;
        cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
        // The eBPF crate only builds for the BPF target, with nightly.
        cargo_with(
            &["+nightly"],
            &[
                "clippy",
                "-p",
                "dns-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ],
        )?;
    }
    sweep::stale_fixtures();
    // The namespace tests start the daemon binary and the demo; the pod tests its image.
    cargo(&["build", "-p", "dns-userspace", "-p", "tests", "--bins"])?;
    image::assemble(&root(), &root().join("target/debug/xdns"), image::TEST_TAG)?;
    let mut args = vec!["test"];
    if !extra.is_empty() {
        args.push("--");
        args.extend(extra.iter().map(String::as_str));
    }
    let daemon = root().join("target/debug/xdns");
    let mut c = Command::new("cargo");
    c.args(&args)
        .current_dir(root())
        .env("XDNS_BIN", daemon)
        .stdout(Stdio::piped());
    println!("xtask: cargo {}", args.join(" "));
    let mut child = c.spawn()?;
    let out = child.stdout.take().context("cargo test stdout")?;
    // Echo everything, and total the per-binary summaries: cargo's own last line is the
    // (often empty) doc-test run, which says nothing about the suite.
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, "passed");
            failed += count(rest, "failed");
            ignored += count(rest, "ignored");
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("tests failed ({status})");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// The number before `label` in a `test result:` line ("ok. 18 passed; 0 failed; ...").
fn count(summary: &str, label: &str) -> u64 {
    summary
        .split(';')
        .find_map(
            |part| match part.split_whitespace().collect::<Vec<_>>().as_slice() {
                [.., n, l] if *l == label => n.parse().ok(),
                _ => None,
            },
        )
        .unwrap_or(0)
}
