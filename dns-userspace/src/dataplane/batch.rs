//! Many entries written into a BPF hash map in one system call (`BPF_MAP_UPDATE_BATCH`,
//! Linux 5.6), which aya 0.14 does not offer. A first sync at 100k Services writes half a
//! million entries: one `bpf()` call each spent most of that stage entering and leaving
//! the kernel.
use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya::{maps::MapData, Pod};

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h); the kernel
/// zero-fills the rest of the union when given a shorter one.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Why a batch did not land whole.
#[derive(Debug)]
pub struct BatchError {
    /// Entries written before the failure (the kernel writes in order).
    pub written: usize,
    pub source: io::Error,
}

impl BatchError {
    /// The kernel has no batch operations for this map (before 5.6): write one by one.
    pub fn unsupported(&self) -> bool {
        matches!(
            self.source.raw_os_error(),
            Some(libc::EINVAL | libc::ENOTSUP | libc::ENOSYS)
        ) && self.written == 0
    }
}

/// Writes `keys[i] → values[i]` for every `i` (BPF_ANY); `keys` and `values` have the
/// map's key and value types, so their layouts are the map's.
pub fn update<K: Pod, V: Pod>(map: &MapData, keys: &[K], values: &[V]) -> Result<(), BatchError> {
    debug_assert_eq!(keys.len(), values.len());
    let n = keys.len().min(values.len());
    if n == 0 {
        return Ok(());
    }
    let fd = map.fd().as_fd();
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: u32::try_from(n).unwrap_or(u32::MAX),
        map_fd: fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` points at `count` keys and values of the map's sizes, alive for the
    // call; the kernel writes only `attr.count` back.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as u32,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    Err(BatchError {
        source: io::Error::last_os_error(),
        written: attr.count as usize,
    })
}
