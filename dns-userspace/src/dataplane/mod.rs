//! The embedded kernel program: loading with pinned maps, attaching, and the maps' contents.
pub mod attach;
pub mod batch;
pub mod bpffs;
pub mod collector;
pub mod discover;
pub mod kernel;
pub mod kernel_log;
pub mod links;
pub mod maps;
mod mirror;
pub mod snapshot;

use std::path::{Path, PathBuf};

use aya::{
    maps::ProgramArray,
    programs::{SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
use dns_common::{maps as m, programs, TAIL_ANSWER, TAIL_POD, TAIL_TARGET};

/// The kernel object, built for bpfel-unknown-none by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dns-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the BPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("drawing the seed of the records' keys: {0}")]
    Seed(std::io::Error),
    #[error("program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("bpffs at {path}: {source}")]
    Bpffs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("interface {iface}: {message}")]
    Attach { iface: String, message: String },
    #[error("map {name} is full: {wanted} entries wanted, it holds {capacity}")]
    Full {
        name: &'static str,
        wanted: usize,
        capacity: usize,
    },
    #[error("the maps are degraded; waiting for a full sync")]
    Degraded,
    #[error(
        "another xdns daemon is using the pin folder {0}: stop it first, or give this one its \
         own --pin-dir"
    )]
    PinsInUse(PathBuf),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps shared across daemon restarts, pinned by name under the pin folder.
pub const PINNED_MAPS: [&str; 10] = [
    m::RECORDS,
    m::ZONE,
    m::SERVICE_ADDRS,
    m::COUNTERS,
    m::IFACE_COUNTERS,
    m::IFACE_SLOTS,
    m::ZONE_NAME,
    m::POD_NS,
    m::POD_ADDRS,
    m::TARGETS,
];

/// The program arrays of one load, pinned (an unpinned program array is emptied with its
/// last fd, and the pinned links' programs must keep reaching their tail-called ones while
/// no daemon runs) but never shared: each load pins its own, in a folder of its own
/// (`tails-*`). A main program then only ever tail-calls programs of its own load, which
/// read the per-CPU state it wrote for the packet in hand; sharing them, an old main
/// program still on the links would reach the next load's programs, which read that
/// load's state (another packet's).
pub const TAIL_MAPS: [&str; 2] = [m::XDP_TAILS, m::TC_TAILS];

/// A fresh folder for one load's program arrays.
fn tails_dir(pin_dir: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    pin_dir.join(format!("tails-{}-{nanos}", std::process::id()))
}

/// Removes the program arrays of every load but the one in `ours` (once every link runs
/// our programs); returns the folders removed.
pub fn sweep_other_tails(pin_dir: &Path, ours: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(dir) = std::fs::read_dir(pin_dir) else {
        return removed;
    };
    for e in dir.flatten() {
        let p = e.path();
        let tails = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("tails-"));
        if tails && p != ours {
            remove_tails(&p);
            removed.push(p);
        }
    }
    removed
}

/// Unpins one load's program arrays and removes their folder.
pub fn remove_tails(dir: &Path) {
    for name in TAIL_MAPS {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let _ = std::fs::remove_dir(dir);
}

/// Where this layout's maps are pinned under the pin folder.
pub fn maps_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(format!("maps-v{}", dns_common::LAYOUT_VERSION))
}

/// Removes the pinned maps of other layouts (an older daemon's, once its links run our
/// programs); returns the folders removed.
pub fn sweep_other_layouts(pin_dir: &Path) -> Vec<PathBuf> {
    let ours = maps_dir(pin_dir);
    let mut removed = Vec::new();
    let Ok(dir) = std::fs::read_dir(pin_dir) else {
        return removed;
    };
    for e in dir.flatten() {
        let p = e.path();
        let name = e.file_name();
        let old = name.to_str().is_some_and(|n| n.starts_with("maps-v")) && p != ours;
        // Before layouts had folders, maps were pinned in the pin folder itself.
        let unversioned = PINNED_MAPS.iter().any(|m| name.to_str() == Some(*m));
        if old {
            if let Ok(files) = std::fs::read_dir(&p) {
                for f in files.flatten() {
                    let _ = std::fs::remove_file(f.path());
                }
            }
            let _ = std::fs::remove_dir(&p);
            removed.push(p);
        } else if unversioned {
            let _ = std::fs::remove_file(&p);
            removed.push(p);
        }
    }
    removed
}

/// Loads the object and both programs into the kernel. With a pin folder, the maps are
/// pinned there, and maps already pinned by an earlier daemon are adopted as they are;
/// the program arrays are this load's own (see [`TAIL_MAPS`]).
pub fn load(pin_dir: Option<&Path>) -> Result<Ebpf> {
    Ok(load_sized(pin_dir, m::RECORDS_MAX)?.0)
}

/// [`load`] with a records map of `records_max` names (a smaller map for tests of a full
/// map; a pinned map keeps the size it was made with), and the folder of this load's
/// program arrays, if pinned.
pub fn load_sized(pin_dir: Option<&Path>, records_max: u32) -> Result<(Ebpf, Option<PathBuf>)> {
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(m::RECORDS, records_max);
    let mut tails = None;
    let paths: Vec<(&str, PathBuf)> = match pin_dir {
        Some(dir) => {
            bpffs::ensure(dir)?;
            let maps = maps_dir(dir);
            let own = tails_dir(dir);
            for d in [&maps, &own] {
                std::fs::create_dir_all(d).map_err(|source| Error::Bpffs {
                    path: d.clone(),
                    source,
                })?;
            }
            let mut paths: Vec<_> = PINNED_MAPS.iter().map(|n| (*n, maps.join(n))).collect();
            paths.extend(TAIL_MAPS.iter().map(|n| (*n, own.join(n))));
            tails = Some(own);
            paths
        }
        None => Vec::new(),
    };
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(OBJECT)?;
    for name in [
        programs::XDP,
        programs::XDP_POD,
        programs::XDP_TARGET,
        programs::XDP_ANSWER,
    ] {
        program::<Xdp>(&mut ebpf, name)?
            .load()
            .map_err(|source| Error::Program { name, source })?;
    }
    for name in [
        programs::TC,
        programs::TC_POD,
        programs::TC_TARGET,
        programs::TC_ANSWER,
    ] {
        program::<SchedClassifier>(&mut ebpf, name)?
            .load()
            .map_err(|source| Error::Program { name, source })?;
    }
    fill_tails(
        &mut ebpf,
        m::XDP_TAILS,
        programs::XDP_POD,
        programs::XDP_TARGET,
        programs::XDP_ANSWER,
    )?;
    fill_tails(
        &mut ebpf,
        m::TC_TAILS,
        programs::TC_POD,
        programs::TC_TARGET,
        programs::TC_ANSWER,
    )?;
    Ok((ebpf, tails))
}

fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(Error::MissingProgram(name))?
        .try_into()
        .map_err(|source| Error::Program { name, source })
}

/// Points a program array's slots at this object's pod and PTR programs (replacing an
/// earlier daemon's, when the array was adopted from the pins).
fn fill_tails(
    ebpf: &mut Ebpf,
    array: &'static str,
    pod: &'static str,
    ptr: &'static str,
    answer: &'static str,
) -> Result<()> {
    let fd = |name: &'static str| -> Result<aya::programs::ProgramFd> {
        let p = ebpf.program(name).ok_or(Error::MissingProgram(name))?;
        let fd = p.fd().map_err(|source| Error::Program { name, source })?;
        fd.try_clone().map_err(|e| Error::Program {
            name,
            source: aya::programs::ProgramError::IOError(e),
        })
    };
    let (pod_fd, ptr_fd, answer_fd) = (fd(pod)?, fd(ptr)?, fd(answer)?);
    let map = ebpf.map_mut(array).ok_or(Error::MissingMap(array))?;
    let err = |source| Error::Map {
        name: array,
        source,
    };
    let mut tails = ProgramArray::try_from(map).map_err(err)?;
    tails.set(TAIL_POD, &pod_fd, 0).map_err(err)?;
    tails.set(TAIL_TARGET, &ptr_fd, 0).map_err(err)?;
    tails.set(TAIL_ANSWER, &answer_fd, 0).map_err(err)?;
    Ok(())
}

/// Instructions the verifier processed for each program (kernel 5.16+).
pub fn verified_insns(ebpf: &Ebpf) -> Vec<(&'static str, Option<u32>)> {
    [
        programs::XDP,
        programs::XDP_POD,
        programs::XDP_TARGET,
        programs::XDP_ANSWER,
        programs::TC,
        programs::TC_POD,
        programs::TC_TARGET,
        programs::TC_ANSWER,
    ]
    .into_iter()
    .map(|name| {
        let n = ebpf
            .program(name)
            .and_then(|p| p.info().ok())
            .and_then(|i| i.verified_instruction_count());
        (name, n)
    })
    .collect()
}
