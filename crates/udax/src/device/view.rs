//! `DeviceView`: a shared mapping of a device descriptor that another
//! process handed over (a client of the device's owner reads file data
//! straight from it, and overwrites allocated blocks in place;
//! docs/multiprocess.md). Read-only unless the descriptor allows writing.
#![allow(
    unsafe_code,
    reason = "the read-only shared mapping of the device and copies out of it"
)]

use super::{check_range, classify, persistence_of, DeviceError, FlushInstr, PersistenceDomain};
use std::os::fd::{AsFd, OwnedFd};

/// A view of a whole device.
#[derive(Debug)]
pub struct DeviceView {
    base: *const u8,
    len: u64,
    writable: bool,
    /// How a store becomes durable on this device.
    persistence: PersistenceDomain,
    flush: FlushInstr,
    _fd: OwnedFd,
}

// SAFETY: the view is a mapping owned by this value; reading and writing it
// from several threads at once is as safe as shared memory is (the bytes may
// change under a reader; both directions copy, never forming a Rust
// reference into the mapping).
unsafe impl Send for DeviceView {}
// SAFETY: as for Send: no interior state but the mapping (accessed by copies).
unsafe impl Sync for DeviceView {}

impl DeviceView {
    /// Map all of `fd` (its size from `fstat`, or `len` if given: a device-dax
    /// node reports size 0 to `fstat`) shared; writable if `fd` was opened
    /// for writing.
    pub fn map(fd: OwnedFd, len: Option<u64>) -> Result<DeviceView, DeviceError> {
        let io = |e: rustix::io::Errno| DeviceError::Io(e.into());
        let st = rustix::fs::fstat(&fd).map_err(io)?;
        let len = len.unwrap_or(st.st_size as u64);
        let writable = rustix::fs::fcntl_getfl(&fd).map_err(io)? & rustix::fs::OFlags::RWMODE
            == rustix::fs::OFlags::RDWR;
        let is_char = rustix::fs::FileType::from_raw_mode(st.st_mode)
            == rustix::fs::FileType::CharacterDevice;
        let magic = rustix::fs::fstatfs(&fd).map_err(io)?.f_type as i64;
        let kind = classify(magic, is_char, is_char.then_some("dax")).map_err(|reason| {
            DeviceError::BadSpec {
                spec: "device view".into(),
                reason,
            }
        })?;
        let persistence = persistence_of(kind);
        if len == 0 {
            return Err(DeviceError::BadSpec {
                spec: "device view".into(),
                reason: "device has size 0".into(),
            });
        }
        // SAFETY: a fresh mapping at a kernel-chosen address (null hint)
        // replaces nothing; `fd` is a descriptor of at least `len` bytes.
        let prot = if writable {
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE
        } else {
            rustix::mm::ProtFlags::READ
        };
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len as usize,
                prot,
                rustix::mm::MapFlags::SHARED,
                fd.as_fd(),
                0,
            )
        }
        .map_err(|e| DeviceError::Io(e.into()))?;
        Ok(DeviceView {
            base: p.cast::<u8>().cast_const(),
            len,
            writable,
            persistence,
            flush: if persistence == PersistenceDomain::CpuCache {
                super::detect_flush_instr()
            } else {
                FlushInstr::None
            },
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

impl DeviceView {
    /// Whether [`DeviceView::write_durable`] may be used.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Store `data` at device offset `off` and make it durable before
    /// returning: nothing more on memory devices (their persistence domain
    /// is the memory), cache-line flushes and a fence on device-dax, `msync`
    /// of the pages on a regular file.
    pub fn write_durable(&self, off: u64, data: &[u8]) -> Result<(), DeviceError> {
        if !self.writable {
            return Err(DeviceError::Io(std::io::Error::from_raw_os_error(
                libc::EBADF,
            )));
        }
        check_range(off, data.len() as u64, self.len)?;
        let dst = self.base.cast_mut().wrapping_add(off as usize);
        // SAFETY: the range lies inside the live, writable mapping (checked
        // above); `data` is a distinct allocation.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        match self.persistence {
            PersistenceDomain::None => Ok(()),
            PersistenceDomain::CpuCache => {
                // SAFETY: the range is mapped (checked above).
                unsafe { super::persist::flush_lines(dst, data.len(), self.flush) };
                super::persist::sfence();
                Ok(())
            }
            PersistenceDomain::PageCache => {
                let page = off & !4095;
                let end = (off + data.len() as u64).div_ceil(4096) * 4096;
                let end = end.min(self.len);
                // SAFETY: msync of whole pages of the live mapping changes no
                // memory.
                unsafe {
                    rustix::mm::msync(
                        self.base.cast_mut().wrapping_add(page as usize).cast(),
                        (end - page) as usize,
                        rustix::mm::MsyncFlags::SYNC,
                    )
                }
                .map_err(|e| DeviceError::Io(e.into()))
            }
        }
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
        // Writable (the descriptor is): a durable store lands in the file.
        assert!(v.is_writable());
        v.write_durable(100, b"abc").unwrap();
        let mut got = [0u8; 3];
        f.read_exact_at(&mut got, 100).unwrap();
        assert_eq!(&got, b"abc");
        assert!(v.write_durable(8190, b"abcd").is_err());
    }

    #[test]
    fn a_read_only_descriptor_gives_a_view_that_refuses_stores() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().write_all_at(&[1u8; 4096], 0).unwrap();
        let ro: OwnedFd = std::fs::File::open(f.path()).unwrap().into();
        let v = DeviceView::map(ro, None).unwrap();
        assert!(!v.is_writable());
        assert!(v.write_durable(0, b"x").is_err());
    }
}
