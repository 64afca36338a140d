//! Attachments that outlive the daemon. Each is a bpf link pinned as
//! `<pin_dir>/links/<mode>-<ifindex>-<ifname>`: the pin keeps the program answering while no
//! daemon runs; the next daemon finds it by name, checks the interface is still the same
//! device (same index), and swaps its own program in. The name carries the mode and index
//! so `xdns status` can tell what is attached where without the daemon.
use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use aya::{
    programs::links::{FdLink, PinnedLink},
    Ebpf,
};

use super::{
    attach::{self, AttachMode},
    Error, Result,
};

/// One pinned attachment, as its file name tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub iface: String,
    pub ifindex: u32,
    pub mode: AttachMode,
    pub path: PathBuf,
}

impl Pin {
    fn file_name(mode: AttachMode, ifindex: u32, iface: &str) -> String {
        format!("{mode}-{ifindex}-{iface}")
    }

    fn parse(path: PathBuf) -> Option<Pin> {
        let name = path.file_name()?.to_str()?;
        let (mode, rest) = name.split_once('-')?;
        let (ifindex, iface) = rest.split_once('-')?;
        Some(Pin {
            mode: AttachMode::from_name(mode)?,
            ifindex: ifindex.parse().ok()?,
            iface: iface.to_owned(),
            path,
        })
    }
}

/// The pins under `dir` (none if it does not exist).
pub fn pins(dir: &Path) -> Vec<Pin> {
    let mut out: Vec<Pin> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| Pin::parse(e.ok()?.path()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.iface.cmp(&b.iface));
    out
}

/// The index of `iface` in this network namespace, if it exists.
pub fn ifindex(iface: &str) -> Option<u32> {
    let c = CString::new(iface).ok()?;
    // SAFETY: `c` is a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// How an interface came to be served.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An earlier daemon's link, now running this daemon's program.
    Adopted(AttachMode),
    /// A new link; `note` says why the mode is not the one asked for.
    Attached {
        mode: AttachMode,
        note: Option<String>,
    },
}

/// This daemon's attachments, by interface name.
pub struct Links {
    dir: PathBuf,
    held: BTreeMap<String, Pin>,
}

fn pin_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Bpffs {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl Links {
    pub fn open(dir: PathBuf) -> Result<Self> {
        fs::create_dir_all(&dir).map_err(|source| Error::Bpffs {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            held: BTreeMap::new(),
        })
    }

    /// Makes this daemon's program answer on `iface`: adopts a pinned link to the same
    /// device in a compatible mode, else attaches anew and pins.
    pub fn ensure(&mut self, ebpf: &mut Ebpf, iface: &str, mode: AttachMode) -> Result<Outcome> {
        let index = ifindex(iface).ok_or_else(|| Error::Attach {
            iface: iface.to_owned(),
            message: "no such interface".into(),
        })?;
        let mut old = Vec::new();
        for pin in pins(&self.dir).into_iter().filter(|p| p.iface == iface) {
            let same_device = pin.ifindex == index;
            if same_device && (mode == AttachMode::Auto || mode == pin.mode) {
                let link = FdLink::from(
                    PinnedLink::from_pin(&pin.path).map_err(|e| pin_err(&pin.path, e))?,
                );
                // The pin file stays: it now holds the link running our program.
                drop(attach::replace(ebpf, iface, pin.mode, link)?);
                let m = pin.mode;
                self.held.insert(iface.to_owned(), pin);
                return Ok(Outcome::Adopted(m));
            }
            if same_device && pin.mode != AttachMode::Tc {
                // Our old XDP link holds the hook: it has to go before a new one can attach.
                remove_pin(&pin);
            } else {
                old.push(pin);
            }
        }
        let a = attach::attach(ebpf, iface, mode)?;
        let path = self.dir.join(Pin::file_name(a.mode, index, iface));
        let _ = fs::remove_file(&path);
        a.link.pin(&path).map_err(|e| pin_err(&path, e))?;
        // Only now, with the new program in place, do the old links go.
        old.iter().for_each(remove_pin);
        self.held.insert(
            iface.to_owned(),
            Pin {
                iface: iface.to_owned(),
                ifindex: index,
                mode: a.mode,
                path,
            },
        );
        Ok(Outcome::Attached {
            mode: a.mode,
            note: a.note,
        })
    }

    /// The interfaces this daemon serves, with their index and mode.
    pub fn held(&self) -> impl Iterator<Item = &Pin> {
        self.held.values()
    }

    pub fn get(&self, iface: &str) -> Option<&Pin> {
        self.held.get(iface)
    }

    /// The device went away (the kernel detached the program with it): drop its pin, which
    /// would otherwise keep a dead link and its program alive.
    pub fn forget(&mut self, iface: &str) -> Option<Pin> {
        let pin = self.held.remove(iface)?;
        remove_pin(&pin);
        Some(pin)
    }

    /// Drops the pins this daemon does not hold: interfaces that are gone or no longer
    /// wanted. Returns their names.
    pub fn sweep(&mut self) -> Vec<String> {
        let mut swept = Vec::new();
        for pin in pins(&self.dir) {
            if self.held.get(&pin.iface).map(|h| &h.path) != Some(&pin.path) {
                remove_pin(&pin);
                swept.push(pin.iface);
            }
        }
        swept
    }

    /// Detaches everything: with the pins gone, nothing holds the links any more.
    pub fn detach_all(&mut self) {
        for (_, pin) in std::mem::take(&mut self.held) {
            remove_pin(&pin);
        }
        self.sweep();
    }
}

fn remove_pin(pin: &Pin) {
    if let Err(e) = fs::remove_file(&pin.path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %pin.path.display(), error = %e, "removing a link pin");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_round_trip() {
        let name = Pin::file_name(AttachMode::Tc, 42, "cali1a2b.100");
        assert_eq!(name, "tc-42-cali1a2b.100");
        let p = Pin::parse(PathBuf::from("/x/links").join(&name)).unwrap();
        assert_eq!(
            (p.mode, p.ifindex, p.iface.as_str()),
            (AttachMode::Tc, 42, "cali1a2b.100")
        );
        for bad in ["tc-x-eth0", "auto", "bogus-1-eth0", "native-1"] {
            assert!(Pin::parse(PathBuf::from(bad)).is_none(), "{bad}");
        }
    }
}
