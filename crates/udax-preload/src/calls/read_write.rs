//! read, write and their positioned and vectored forms: straight between
//! the caller's buffer and device memory; `O_APPEND`, `O_SYNC`/`O_DSYNC`.

use crate::boundary::entry::{Errno, R};
use crate::dispatch::{fd_call, offset, slice, slice_mut, MAX_RW};
use crate::state::fds::Desc;
use libc::{c_int, c_void, iovec, off64_t, size_t, ssize_t};

fn sync_after_write(d: &Desc) -> R<()> {
    let s = d.status();
    if s & libc::O_SYNC == libc::O_SYNC {
        d.file()?.fsync()?;
    } else if s & libc::O_DSYNC != 0 {
        d.file()?.sync_data()?;
    }
    Ok(())
}

/// Read at `off`, or at the description's offset (advancing it).
pub fn read_desc(d: &Desc, buf: &mut [u8], off: Option<u64>) -> R<usize> {
    if d.is_dir() {
        return Err(Errno(libc::EISDIR));
    }
    if !d.readable() {
        return Err(Errno(libc::EBADF));
    }
    let f = d.file()?;
    let n = buf.len().min(MAX_RW);
    crate::calls::mem::check_writable(buf.as_ptr() as usize, n)?;
    match off {
        Some(o) => Ok(f.read_at(&mut buf[..n], o)?),
        None => {
            let mut pos = d.pos.lock().unwrap_or_else(|p| p.into_inner());
            if d.owner_pos() {
                // Shared with another process: claimed at the owner.
                return Ok(d.remote()?.read(&mut buf[..n])?);
            }
            let got = f.read_at(&mut buf[..n], *pos)?;
            *pos += got as u64;
            Ok(got)
        }
    }
}

/// Write at `off`, or at the description's offset / end of file (O_APPEND).
pub fn write_desc(d: &Desc, buf: &[u8], off: Option<u64>) -> R<usize> {
    if !d.writable() {
        return Err(Errno(libc::EBADF));
    }
    let f = d.file()?;
    let buf = &buf[..buf.len().min(MAX_RW)];
    let n = match off {
        // Linux pwrite on an O_APPEND file appends too.
        Some(_) if d.status() & libc::O_APPEND != 0 => f.append(buf)?.1,
        Some(o) => f.write_at(buf, o)?,
        None => {
            let mut pos = d.pos.lock().unwrap_or_else(|p| p.into_inner());
            // Shared with another process: the offset lives at the owner.
            let shared = d.owner_pos();
            if d.status() & libc::O_APPEND != 0 {
                let (at, n) = f.append(buf)?;
                if shared {
                    d.remote()?.seek(0, (at + n as u64) as i64)?;
                } else {
                    *pos = at + n as u64;
                }
                n
            } else if shared {
                // Claims its range of the shared offset atomically.
                d.remote()?.write(buf)?
            } else {
                let n = f.write_at(buf, *pos)?;
                *pos += n as u64;
                n
            }
        }
    };
    sync_after_write(d)?;
    Ok(n)
}

/// # Safety
/// As read(2).
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    fd_call!(-1, fd, read(fd, buf, n), |d| {
        // SAFETY: read(2)'s contract: `buf` has room for `n` bytes.
        let b = unsafe { slice_mut(buf, n) }?;
        Ok(read_desc(&d, b, None)? as ssize_t)
    })
}

/// # Safety
/// As write(2).
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    fd_call!(-1, fd, write(fd, buf, n), |d| {
        // SAFETY: write(2)'s contract: `buf` holds `n` bytes.
        let b = unsafe { slice(buf, n) }?;
        Ok(write_desc(&d, b, None)? as ssize_t)
    })
}

macro_rules! pread_fn {
    ($name:ident) => {
        /// # Safety
        /// As pread(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            fd: c_int,
            buf: *mut c_void,
            n: size_t,
            off: off64_t,
        ) -> ssize_t {
            fd_call!(-1, fd, $name(fd, buf, n, off), |d| {
                // SAFETY: pread(2)'s contract.
                let b = unsafe { slice_mut(buf, n) }?;
                Ok(read_desc(&d, b, Some(offset(off)?))? as ssize_t)
            })
        }
    };
}
pread_fn!(pread);
pread_fn!(pread64);

macro_rules! pwrite_fn {
    ($name:ident) => {
        /// # Safety
        /// As pwrite(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            fd: c_int,
            buf: *const c_void,
            n: size_t,
            off: off64_t,
        ) -> ssize_t {
            fd_call!(-1, fd, $name(fd, buf, n, off), |d| {
                // SAFETY: pwrite(2)'s contract.
                let b = unsafe { slice(buf, n) }?;
                Ok(write_desc(&d, b, Some(offset(off)?))? as ssize_t)
            })
        }
    };
}
pwrite_fn!(pwrite);
pwrite_fn!(pwrite64);

/// # Safety
/// `iov` points to `cnt` iovecs.
unsafe fn iovecs<'a>(iov: *const iovec, cnt: c_int) -> R<&'a [iovec]> {
    if !(0..=libc::UIO_MAXIOV).contains(&cnt) {
        return Err(Errno(libc::EINVAL));
    }
    if cnt == 0 {
        return Ok(&[]);
    }
    if iov.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(iov, cnt as usize) })
}

/// readv/preadv: fill the buffers in order; stop at the first short read.
/// With `off` = None the description's offset is used and advanced once, under
/// its lock, so the vector is read as one contiguous range.
fn readv_desc(d: &Desc, iov: &[iovec], off: Option<u64>) -> R<usize> {
    let mut pos_guard = match off {
        Some(_) => None,
        None => Some(d.pos.lock().unwrap_or_else(|p| p.into_inner())),
    };
    // Shared with another process: the offset is read from and written
    // back to the owner (under this process's lock; not atomic against the
    // other process's calls).
    let shared = pos_guard.is_some() && d.owner_pos();
    let start = match off {
        Some(o) => o,
        None if shared => d.remote()?.seek(1, 0)?,
        None => **pos_guard.as_ref().expect("locked"),
    };
    if !d.readable() || d.is_dir() {
        return Err(Errno(if d.is_dir() {
            libc::EISDIR
        } else {
            libc::EBADF
        }));
    }
    let f = d.file()?;
    let mut done = 0usize;
    for v in iov {
        // SAFETY: readv(2)'s contract: each iovec describes a writable buffer.
        let b = unsafe { slice_mut(v.iov_base, v.iov_len) }?;
        if let Err(e) = crate::calls::mem::check_writable(b.as_ptr() as usize, b.len()) {
            if done > 0 {
                break;
            }
            return Err(e);
        }
        let n = match f.read_at(b, start + done as u64) {
            Ok(n) => n,
            Err(_) if done > 0 => break,
            Err(e) => return Err(e.into()),
        };
        done += n;
        if n < b.len() {
            break;
        }
    }
    if shared {
        d.remote()?.seek(0, (start + done as u64) as i64)?;
    } else if let Some(p) = pos_guard.as_mut() {
        **p = start + done as u64;
    }
    Ok(done)
}

fn writev_desc(d: &Desc, iov: &[iovec], off: Option<u64>) -> R<usize> {
    if !d.writable() {
        return Err(Errno(libc::EBADF));
    }
    // One contiguous buffer: the vector is written as one write (atomically
    // with respect to O_APPEND and the offset), as the kernel does.
    let total: usize = iov.iter().map(|v| v.iov_len).sum();
    let mut buf = Vec::with_capacity(total.min(MAX_RW));
    for v in iov {
        // SAFETY: writev(2)'s contract: each iovec describes a readable buffer.
        buf.extend_from_slice(unsafe { slice(v.iov_base, v.iov_len) }?);
        if buf.len() >= MAX_RW {
            break;
        }
    }
    write_desc(d, &buf, off)
}

/// # Safety
/// As readv(2).
#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    fd_call!(-1, fd, readv(fd, iov, cnt), |d| {
        // SAFETY: readv(2)'s contract.
        let v = unsafe { iovecs(iov, cnt) }?;
        Ok(readv_desc(&d, v, None)? as ssize_t)
    })
}

/// # Safety
/// As writev(2).
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    fd_call!(-1, fd, writev(fd, iov, cnt), |d| {
        // SAFETY: writev(2)'s contract.
        let v = unsafe { iovecs(iov, cnt) }?;
        Ok(writev_desc(&d, v, None)? as ssize_t)
    })
}

macro_rules! preadv_fn {
    ($name:ident, $inner:ident) => {
        /// # Safety
        /// As preadv(2) / pwritev(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            fd: c_int,
            iov: *const iovec,
            cnt: c_int,
            off: off64_t,
        ) -> ssize_t {
            fd_call!(-1, fd, $name(fd, iov, cnt, off), |d| {
                // SAFETY: preadv(2)'s contract.
                let v = unsafe { iovecs(iov, cnt) }?;
                Ok($inner(&d, v, Some(offset(off)?))? as ssize_t)
            })
        }
    };
}
preadv_fn!(preadv, readv_desc);
preadv_fn!(preadv64, readv_desc);
preadv_fn!(pwritev, writev_desc);
preadv_fn!(pwritev64, writev_desc);

macro_rules! preadv2_fn {
    ($name:ident, $inner:ident) => {
        /// # Safety
        /// As preadv2(2) / pwritev2(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            fd: c_int,
            iov: *const iovec,
            cnt: c_int,
            off: off64_t,
            flags: c_int,
        ) -> ssize_t {
            fd_call!(-1, fd, $name(fd, iov, cnt, off, flags), |d| {
                // Hints with no meaning on DAX (no page cache): HIPRI, NOWAIT.
                let sync = libc::RWF_DSYNC | libc::RWF_SYNC;
                let known = libc::RWF_HIPRI | libc::RWF_NOWAIT | libc::RWF_APPEND | sync;
                if flags & !known != 0 {
                    return Err(Errno(libc::EOPNOTSUPP));
                }
                // SAFETY: preadv2(2)'s contract.
                let v = unsafe { iovecs(iov, cnt) }?;
                let at = if off == -1 { None } else { Some(offset(off)?) };
                let at = if flags & libc::RWF_APPEND != 0 {
                    Some(d.file()?.len()?)
                } else {
                    at
                };
                let n = $inner(&d, v, at)?;
                if flags & sync != 0 {
                    d.file()?.sync_data()?;
                }
                Ok(n as ssize_t)
            })
        }
    };
}
preadv2_fn!(preadv2, readv_desc);
preadv2_fn!(pwritev2, writev_desc);
// What preadv2/pwritev2 are in a program built with -D_FILE_OFFSET_BITS=64.
preadv2_fn!(preadv64v2, readv_desc);
preadv2_fn!(pwritev64v2, writev_desc);
