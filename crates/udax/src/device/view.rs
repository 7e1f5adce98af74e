//! `DeviceView`: a read-only shared mapping of a device descriptor that
//! another process handed over (a client of the device's owner reads file
//! data straight from it, docs/multiprocess.md).
#![allow(
    unsafe_code,
    reason = "the read-only shared mapping of the device and copies out of it"
)]

use super::{check_range, DeviceError};
use std::os::fd::{AsFd, OwnedFd};

/// A read-only view of a whole device.
#[derive(Debug)]
pub struct DeviceView {
    base: *const u8,
    len: u64,
    _fd: OwnedFd,
}

// SAFETY: the view is a read-only mapping owned by this value; reading it
// from several threads at once is as safe as reading shared memory (the
// bytes may change under the reader, which copies them out, never forming a
// reference into the mapping).
unsafe impl Send for DeviceView {}
// SAFETY: as for Send: no interior state but the immutable mapping.
unsafe impl Sync for DeviceView {}

impl DeviceView {
    /// Map all of `fd` (its size from `fstat`, or `len` if given: a device-dax
    /// node reports size 0 to `fstat`) shared and read-only.
    pub fn map(fd: OwnedFd, len: Option<u64>) -> Result<DeviceView, DeviceError> {
        let len = match len {
            Some(l) => l,
            None => {
                rustix::fs::fstat(&fd)
                    .map_err(|e| DeviceError::Io(e.into()))?
                    .st_size as u64
            }
        };
        if len == 0 {
            return Err(DeviceError::BadSpec {
                spec: "device view".into(),
                reason: "device has size 0".into(),
            });
        }
        // SAFETY: a fresh mapping at a kernel-chosen address (null hint)
        // replaces nothing; `fd` is a descriptor of at least `len` bytes.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len as usize,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::SHARED,
                fd.as_fd(),
                0,
            )
        }
        .map_err(|e| DeviceError::Io(e.into()))?;
        Ok(DeviceView {
            base: p.cast::<u8>().cast_const(),
            len,
            _fd: fd,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copy `buf.len()` bytes at device offset `off` into `buf`.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        check_range(off, buf.len() as u64, self.len)?;
        // SAFETY: the range lies inside the live mapping (checked above) and
        // `buf` is a distinct allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(off as usize), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }
}

impl Drop for DeviceView {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once; nothing refers
        // into it (reads copy out).
        unsafe {
            let _ = rustix::mm::munmap(self.base.cast_mut().cast(), self.len as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_view_reads_what_the_file_holds_and_refuses_past_its_end() {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(&[7u8; 8192], 0).unwrap();
        let fd: OwnedFd = f.try_clone().unwrap().into();
        let v = DeviceView::map(fd, None).unwrap();
        let mut b = [0u8; 100];
        v.read(4000, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 7));
        // A store by another writer is seen (one shared mapping).
        f.write_all_at(&[9u8; 4], 4096).unwrap();
        v.read(4096, &mut b[..4]).unwrap();
        assert_eq!(&b[..4], &[9; 4]);
        assert!(v.read(8190, &mut b[..4]).is_err());
    }
}
