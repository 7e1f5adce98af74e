//! Copies between descriptors (udax and udax, or udax and host):
//! copy_file_range, sendfile; splice and tee refuse udax descriptors.

use crate::boundary::entry::{fwd, run, unsupported, Errno, R};
use crate::calls::read_write::{read_desc, write_desc};
use crate::calls::seek::lseek_desc;
use crate::dispatch::{offset, MAX_RW};
use crate::state::fds;
use libc::{c_int, c_uint, off64_t, size_t, ssize_t};

/// Read from any descriptor, udax or host.
fn any_read(fd: c_int, buf: &mut [u8], off: Option<u64>) -> R<usize> {
    if let Some(d) = crate::dispatch::lookup(fd) {
        return read_desc(&*d?, buf, off);
    }
    let n = match off {
        Some(o) => fwd!(pread64(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            o as off64_t
        )),
        None => fwd!(read(fd, buf.as_mut_ptr().cast(), buf.len())),
    };
    if n < 0 {
        return Err(Errno(crate::boundary::entry::errno()));
    }
    Ok(n as usize)
}

fn any_write(fd: c_int, buf: &[u8], off: Option<u64>) -> R<usize> {
    if let Some(d) = crate::dispatch::lookup(fd) {
        return write_desc(&*d?, buf, off);
    }
    let n = match off {
        Some(o) => fwd!(pwrite64(fd, buf.as_ptr().cast(), buf.len(), o as off64_t)),
        None => fwd!(write(fd, buf.as_ptr().cast(), buf.len())),
    };
    if n < 0 {
        return Err(Errno(crate::boundary::entry::errno()));
    }
    Ok(n as usize)
}

/// Copy up to `len` bytes through a buffer; offsets given by pointer are
/// used and updated instead of the descriptors' own (copy_file_range, sendfile).
///
/// # Safety
/// `off_in` / `off_out` are null or valid.
unsafe fn copy_between(
    fd_in: c_int,
    off_in: *mut off64_t,
    fd_out: c_int,
    off_out: *mut off64_t,
    len: usize,
) -> R<usize> {
    // SAFETY: the caller's contract: null or valid pointers.
    let (mut oi, mut oo) = unsafe { (off_in.as_mut(), off_out.as_mut()) };
    let mut buf = vec![0u8; len.clamp(1, 1 << 20)];
    let mut done = 0usize;
    while done < len {
        let want = (len - done).min(buf.len());
        let at_in = oi.as_deref().map(|&o| offset(o)).transpose()?;
        let n = match any_read(fd_in, &mut buf[..want], at_in) {
            Ok(n) => n,
            Err(_) if done > 0 => break,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        let at_out = oo.as_deref().map(|&o| offset(o)).transpose()?;
        let w = match any_write(fd_out, &buf[..n], at_out) {
            Ok(w) => w,
            Err(_) if done > 0 => break,
            Err(e) => return Err(e),
        };
        if let Some(o) = oi.as_deref_mut() {
            *o += w as off64_t;
        }
        if let Some(o) = oo.as_deref_mut() {
            *o += w as off64_t;
        }
        done += w;
        if w < n {
            // Short write: the input already advanced past what was written
            // when it uses its own offset; put it back.
            if oi.is_none() {
                if let Some(d) = crate::dispatch::lookup(fd_in) {
                    lseek_desc(&*d?, (w as i64) - (n as i64), libc::SEEK_CUR)?;
                }
            }
            break;
        }
    }
    Ok(done)
}

fn any_udax(a: c_int, b: c_int) -> bool {
    fds::is_udax(a) || fds::is_udax(b)
}

/// # Safety
/// As copy_file_range(2).
#[no_mangle]
pub unsafe extern "C" fn copy_file_range(
    fd_in: c_int,
    off_in: *mut off64_t,
    fd_out: c_int,
    off_out: *mut off64_t,
    len: size_t,
    flags: c_uint,
) -> ssize_t {
    run(
        -1,
        || fwd!(copy_file_range(fd_in, off_in, fd_out, off_out, len, flags)),
        || {
            if !any_udax(fd_in, fd_out) {
                return Ok(fwd!(copy_file_range(
                    fd_in, off_in, fd_out, off_out, len, flags
                )));
            }
            if flags != 0 {
                return Err(Errno(libc::EINVAL));
            }
            // SAFETY: copy_file_range(2)'s contract for the offset pointers.
            Ok(
                unsafe { copy_between(fd_in, off_in, fd_out, off_out, len.min(MAX_RW)) }?
                    as ssize_t,
            )
        },
    )
}

macro_rules! sendfile_fn {
    ($name:ident) => {
        /// # Safety
        /// As sendfile(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            out_fd: c_int,
            in_fd: c_int,
            off: *mut off64_t,
            count: size_t,
        ) -> ssize_t {
            run(
                -1,
                || fwd!($name(out_fd, in_fd, off, count)),
                || {
                    if !any_udax(in_fd, out_fd) {
                        return Ok(fwd!($name(out_fd, in_fd, off, count)));
                    }
                    // SAFETY: sendfile(2)'s contract for `off`.
                    Ok(unsafe {
                        copy_between(in_fd, off, out_fd, std::ptr::null_mut(), count.min(MAX_RW))
                    }? as ssize_t)
                },
            )
        }
    };
}
sendfile_fn!(sendfile);
sendfile_fn!(sendfile64);

/// # Safety
/// As splice(2).
#[no_mangle]
pub unsafe extern "C" fn splice(
    fd_in: c_int,
    off_in: *mut off64_t,
    fd_out: c_int,
    off_out: *mut off64_t,
    len: size_t,
    flags: c_uint,
) -> ssize_t {
    run(
        -1,
        || fwd!(splice(fd_in, off_in, fd_out, off_out, len, flags)),
        || {
            if !any_udax(fd_in, fd_out) {
                return Ok(fwd!(splice(fd_in, off_in, fd_out, off_out, len, flags)));
            }
            Err(unsupported(
                "splice",
                "udax descriptors have no pipe buffers",
                libc::EINVAL,
            ))
        },
    )
}

/// # Safety
/// As tee(2).
#[no_mangle]
pub unsafe extern "C" fn tee(fd_in: c_int, fd_out: c_int, len: size_t, flags: c_uint) -> ssize_t {
    run(
        -1,
        || fwd!(tee(fd_in, fd_out, len, flags)),
        || {
            if !any_udax(fd_in, fd_out) {
                return Ok(fwd!(tee(fd_in, fd_out, len, flags)));
            }
            Err(unsupported(
                "tee",
                "udax descriptors are not pipes",
                libc::EINVAL,
            ))
        },
    )
}
