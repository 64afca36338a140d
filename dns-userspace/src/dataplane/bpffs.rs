//! Makes sure the pin folder sits on a bpffs (`ip netns exec` remounts /sys without one,
//! so the daemon mounts its own where there is none), and that one daemon at a time uses it.
use std::{
    ffi::CString,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::Path,
};

use super::{Error, Result};

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Ensures `dir` exists on a bpffs, mounting one on its parent if needed. A `dir` that is
/// itself on a bpffs (the host's folder mounted alone into a pod) is used as it is:
/// mounting a fresh bpffs over its parent would hide it, and the pins would not outlive
/// the pod.
pub fn ensure(dir: &Path) -> Result<()> {
    if is_bpffs(dir) {
        return Ok(());
    }
    let err = |path: &Path, source| Error::Bpffs {
        path: path.to_owned(),
        source,
    };
    let mount_point = dir.parent().unwrap_or(dir);
    if !is_bpffs(mount_point) {
        std::fs::create_dir_all(mount_point).map_err(|e| err(mount_point, e))?;
        let target = CString::new(mount_point.as_os_str().as_bytes())
            .map_err(|e| err(mount_point, std::io::Error::other(e)))?;
        // SAFETY: all arguments are valid C strings; no data argument.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(err(mount_point, std::io::Error::last_os_error()));
        }
        tracing::info!(path = %mount_point.display(), "mounted bpffs");
    }
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))
}

/// The pin folder held by this daemon: an exclusive `flock` on the folder itself (bpffs
/// holds no regular files), released when the daemon exits, however it exits.
pub struct PinLock(#[allow(dead_code)] std::fs::File);

/// Takes the pin folder for this daemon. Two daemons on one folder would overwrite each
/// other's maps and remove each other's pins: the second one refuses to start.
pub fn lock(dir: &Path) -> Result<PinLock> {
    ensure(dir)?;
    let err = |source| Error::Bpffs {
        path: dir.to_owned(),
        source,
    };
    let folder = std::fs::File::open(dir).map_err(err)?;
    // SAFETY: a valid descriptor; flock only changes the lock state of its file.
    if unsafe { libc::flock(folder.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::PinsInUse(dir.to_owned())
        } else {
            err(e)
        });
    }
    Ok(PinLock(folder))
}
