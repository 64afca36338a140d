//! Makes sure the pin folder sits on a bpffs. `ip netns exec` remounts /sys without one,
//! so the daemon mounts its own where there is none.
use std::{ffi::CString, os::unix::ffi::OsStrExt, path::Path};

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

/// Ensures `dir` exists on a bpffs, mounting one on its parent if needed.
pub fn ensure(dir: &Path) -> Result<()> {
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
