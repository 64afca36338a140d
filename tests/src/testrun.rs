//! The one BPF_PROG_TEST_RUN harness: a frame through a loaded program (the XDP or the tc
//! one, told apart by its type), the verdict and the frame that came out, or the kernel's
//! time for a run repeated in place.
use std::time::Duration;

use aya::{
    programs::{Program, TestRun, TestRunOptions},
    Ebpf,
};

pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_REDIRECT: u32 = 7;

/// Where the program runs: what it returns for an answer, and for a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    Tc,
}

pub const HOOKS: [Hook; 2] = [Hook::Xdp, Hook::Tc];

impl Hook {
    pub fn answered(self) -> u32 {
        match self {
            Hook::Xdp => XDP_TX,
            Hook::Tc => TC_ACT_REDIRECT,
        }
    }

    pub fn passed(self) -> u32 {
        match self {
            Hook::Xdp => XDP_PASS,
            Hook::Tc => TC_ACT_OK,
        }
    }

    /// The daemon's main program for this hook.
    pub fn program(self) -> &'static str {
        match self {
            Hook::Xdp => dns_common::programs::XDP,
            Hook::Tc => dns_common::programs::TC,
        }
    }
}

/// One run: the program's verdict, the frame it left, and the kernel's time for it.
pub struct Ran {
    pub action: u32,
    pub frame: Vec<u8>,
    pub duration: Duration,
}

/// Runs `frame` once through the program `name`.
pub fn run(ebpf: &Ebpf, name: &str, frame: &[u8]) -> Result<Ran, String> {
    let mut out = vec![0u8; 4096];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let r = test_run(ebpf, name, opts)
        .map_err(|e| format!("{name}: test_run on {} bytes: {e}", frame.len()))?;
    out.truncate(r.data_size_out as usize);
    Ok(Ran {
        action: r.return_value,
        frame: out,
        duration: r.duration,
    })
}

/// The kernel's time for `repeat` runs of `frame` through `name`, in place: each run sees
/// the frame the one before left (an answer, once answered).
pub fn repeated(ebpf: &Ebpf, name: &str, frame: &[u8], repeat: u32) -> Result<Duration, String> {
    let opts = TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..Default::default()
    };
    Ok(test_run(ebpf, name, opts)?.duration)
}

fn test_run(
    ebpf: &Ebpf,
    name: &str,
    opts: TestRunOptions<'_>,
) -> Result<aya::programs::TestRunResult, String> {
    let r = match ebpf.program(name).ok_or(format!("no program {name}"))? {
        Program::Xdp(p) => p.test_run(opts),
        Program::SchedClassifier(p) => p.test_run(opts),
        _ => return Err(format!("{name}: neither XDP nor tc")),
    };
    r.map_err(|e| e.to_string())
}
