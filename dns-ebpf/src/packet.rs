//! The one bounds-checked accessor every packet read and write goes through.
use dns_common::Counter;

/// Start and end of the linear packet data, as the verifier knows them.
#[derive(Clone, Copy)]
pub struct Bounds {
    pub data: usize,
    pub end: usize,
}

impl Bounds {
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.data
    }
}

/// A `T` at `off` bytes into the packet, or `Malformed` if the packet is shorter.
#[inline(always)]
pub fn ptr_at<T>(b: &Bounds, off: usize) -> Result<*mut T, Counter> {
    let start = b.data + off;
    if start + core::mem::size_of::<T>() > b.end {
        return Err(Counter::Malformed);
    }
    Ok(start as *mut T)
}
