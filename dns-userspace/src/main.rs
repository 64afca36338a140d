//! `xdns`: the daemon's command line.
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

mod cli;
mod daemon;
mod status;

use cli::RunArgs;

#[derive(Parser)]
#[command(name = "xdns", version, about = "Cluster DNS answered in the kernel")]
struct Cli {
    /// Log as JSON lines (one object per event) instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run(Box<RunArgs>),
    /// Print the kernel path's counters from the pinned map.
    Counters {
        #[arg(long, default_value = "/sys/fs/bpf/xdns")]
        pin_dir: PathBuf,
    },
    /// Watch the kernel path live from the pins: answered and passed per second per
    /// interface and reason, map occupancy, attach modes. Works with or without a daemon.
    Status(status::StatusArgs),
}

/// One malloc arena for the whole process. glibc gives each thread that allocates its own
/// arena; the zone is built on whichever tokio worker runs the loop, so its pages end up
/// spread over several arenas, each holding freed pages the others cannot reuse. Measured
/// at 10k Services: RSS 115 MiB with the default, 103 with two arenas, 90 with one.
/// Small allocations still go through each thread's lock-free cache.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: called before any thread starts; mallopt only changes allocator settings.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The soft descriptor limit up to the hard one: 1024 TCP connections plus the BPF maps,
/// links and sockets reach a 1024 soft limit, and the listeners would then pause on EMFILE.
fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only `l`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn main() -> anyhow::Result<()> {
    one_malloc_arena();
    raise_fd_limit();
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        fmt.json().init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    match cli.cmd {
        Cmd::Run(args) => tokio::runtime::Runtime::new()?.block_on(daemon::run(*args)),
        Cmd::Counters { pin_dir } => {
            let c = dns_userspace::dataplane::snapshot::pinned_counters(&pin_dir)
                .with_context(|| format!("reading counters under {}", pin_dir.display()))?;
            print!("{c}");
            Ok(())
        }
        Cmd::Status(a) => status::run(&a),
    }
}
