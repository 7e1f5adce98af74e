//! A file's size and space: truncate, ftruncate, fallocate,
//! posix_fallocate; the hints posix_fadvise and readahead.

use crate::boundary::entry::{fwd, run, Errno, R};
use crate::dispatch::{fd_call, path_call};
use crate::state::fds::Desc;
use crate::state::mount;
use libc::{c_char, c_int, off64_t, size_t, ssize_t};
use udax::fs::OpenOptions;

fn set_len(d: &Desc, len: off64_t) -> R<c_int> {
    if len < 0 {
        return Err(Errno(libc::EINVAL));
    }
    if d.is_dir() {
        return Err(Errno(libc::EISDIR));
    }
    if !d.writable() {
        return Err(Errno(libc::EINVAL));
    }
    d.file()?.set_len(len as u64)?;
    Ok(0)
}

macro_rules! ftruncate_fn {
    ($name:ident) => {
        /// # Safety
        /// As ftruncate(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, len: off64_t) -> c_int {
            fd_call!(-1, fd, $name(fd, len), |d| set_len(&d, len))
        }
    };
}
ftruncate_fn!(ftruncate);
ftruncate_fn!(ftruncate64);

macro_rules! truncate_fn {
    ($name:ident) => {
        /// # Safety
        /// As truncate(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, len: off64_t) -> c_int {
            path_call!(-1, libc::AT_FDCWD, path, $name(path, len), |p| {
                if len < 0 {
                    return Err(Errno(libc::EINVAL));
                }
                let f = mount::fs()?.open(&p, &OpenOptions::read_write())?;
                f.set_len(len as u64)?;
                Ok(0)
            })
        }
    };
}
truncate_fn!(truncate);
truncate_fn!(truncate64);

fn fallocate_desc(d: &Desc, mode: c_int, off: off64_t, len: off64_t) -> R<()> {
    if off < 0 || len <= 0 {
        return Err(Errno(libc::EINVAL));
    }
    if d.is_dir() {
        return Err(Errno(libc::EISDIR));
    }
    if !d.writable() {
        return Err(Errno(libc::EBADF));
    }
    d.file()?.fallocate(mode as u32, off as u64, len as u64)?;
    Ok(())
}

macro_rules! fallocate_fn {
    ($name:ident) => {
        /// # Safety
        /// As fallocate(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            fd: c_int,
            mode: c_int,
            off: off64_t,
            len: off64_t,
        ) -> c_int {
            fd_call!(-1, fd, $name(fd, mode, off, len), |d| {
                fallocate_desc(&d, mode, off, len).map(|_| 0)
            })
        }
    };
}
fallocate_fn!(fallocate);
fallocate_fn!(fallocate64);

macro_rules! posix_fallocate_fn {
    ($name:ident) => {
        /// posix_fallocate(3): returns the error number (errno is not set).
        ///
        /// # Safety
        /// As posix_fallocate(3).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, off: off64_t, len: off64_t) -> c_int {
            run(
                libc::EIO,
                || fwd!($name(fd, off, len)),
                || match crate::dispatch::lookup(fd) {
                    None => Ok(fwd!($name(fd, off, len))),
                    Some(Err(Errno(e))) => Ok(e),
                    Some(Ok(d)) => Ok(match fallocate_desc(&d, 0, off, len) {
                        Ok(()) => 0,
                        Err(Errno(e)) => e,
                    }),
                },
            )
        }
    };
}
posix_fallocate_fn!(posix_fallocate);
posix_fallocate_fn!(posix_fallocate64);

macro_rules! posix_fadvise_fn {
    ($name:ident) => {
        /// posix_fadvise(2): advice about a page cache udax does not have;
        /// checked and accepted. Returns the error number.
        ///
        /// # Safety
        /// As posix_fadvise(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            fd: c_int,
            off: off64_t,
            len: off64_t,
            advice: c_int,
        ) -> c_int {
            run(
                libc::EIO,
                || fwd!($name(fd, off, len, advice)),
                || match crate::dispatch::lookup(fd) {
                    None => Ok(fwd!($name(fd, off, len, advice))),
                    Some(Err(Errno(e))) => Ok(e),
                    Some(Ok(_)) if !(0..=5).contains(&advice) || len < 0 => Ok(libc::EINVAL),
                    Some(Ok(_)) => Ok(0),
                },
            )
        }
    };
}
posix_fadvise_fn!(posix_fadvise);
posix_fadvise_fn!(posix_fadvise64);

/// # Safety
/// As readahead(2).
#[no_mangle]
pub unsafe extern "C" fn readahead(fd: c_int, off: off64_t, n: size_t) -> ssize_t {
    fd_call!(-1, fd, readahead(fd, off, n), |d| {
        d.file()?;
        Ok(0) // nothing to read ahead into: reads copy from device memory
    })
}
