//! open, close, read, write and friends.

use crate::boundary::entry::{fwd, run, unsupported, Errno, R};
use crate::dispatch::{fd_call, path_call, slice, slice_mut, MAX_RW};
use crate::state::fds::{self, Desc, Kind};
use crate::state::mount;
use libc::{c_char, c_int, c_uint, c_void, iovec, mode_t, off64_t, size_t, ssize_t};
use std::sync::Arc;
use udax::fs::extent::Lookup;
use udax::fs::OpenOptions;

/// Flags udax understands (the rest are refused rather than ignored).
const KNOWN: c_int = libc::O_ACCMODE
    | libc::O_CREAT
    | libc::O_EXCL
    | libc::O_NOCTTY
    | libc::O_TRUNC
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_DIRECT
    | libc::O_LARGEFILE
    | libc::O_DIRECTORY
    | libc::O_NOFOLLOW
    | libc::O_NOATIME
    | libc::O_CLOEXEC
    | libc::O_PATH
    | libc::O_ASYNC;

/// The process umask as last known: `u32::MAX` until first needed.
static UMASK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// At load, in the process's only thread: the umask by setting it to 0 and
/// back (no other thread can create a file in between, and no signal handler
/// is installed yet), which saves the `/proc` read below (~25 us a process).
pub fn umask_at_load() {
    // SAFETY: umask(2) takes one integer and cannot fail (the raw system
    // call: libc's `umask` is the interposer below).
    let m = unsafe { libc::syscall(libc::SYS_umask, 0) } as u32 & 0o777;
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_umask, m) };
    UMASK.store(m, std::sync::atomic::Ordering::Relaxed);
}

/// The process umask, without changing it (`umask(2)` can only set it): as
/// learnt at load, or read from `/proc/self/status` once (~20 us, which every
/// file creation used to pay), then kept by the `umask` interposer below.
pub fn umask_of_process() -> u32 {
    use std::sync::atomic::Ordering::Relaxed;
    let known = UMASK.load(Relaxed);
    if known != u32::MAX {
        return known;
    }
    let m = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022);
    // A umask(2) that ran meanwhile stored the newer value: keep it.
    match UMASK.compare_exchange(u32::MAX, m, Relaxed, Relaxed) {
        Ok(_) => m,
        Err(newer) => newer,
    }
}

/// umask(2): set it (the system call; it never fails) and remember it.
#[no_mangle]
pub extern "C" fn umask(mask: mode_t) -> mode_t {
    // SAFETY: umask(2) takes one integer and cannot fail; the raw system
    // call (libc's `umask` is this very symbol).
    let old = unsafe { libc::syscall(libc::SYS_umask, mask & 0o777) };
    UMASK.store(mask & 0o777, std::sync::atomic::Ordering::Relaxed);
    old as mode_t
}

/// open(2) of a udax path.
pub fn open_udax(path: &str, flags: c_int, mode: mode_t) -> R<c_int> {
    // Debug builds only: a panic on demand, for the test that a panic inside
    // the shim becomes EIO and the program goes on (the unwinder is linked
    // statically: build.rs).
    #[cfg(debug_assertions)]
    if path == "/.udax-test-panic" {
        panic!("udax-preload: the test panic");
    }
    let fs = mount::fs()?;
    if flags & libc::O_TMPFILE == libc::O_TMPFILE {
        return open_unnamed(&fs, path, flags, mode);
    }
    if flags & !KNOWN != 0 {
        return Err(unsupported(
            "open",
            &format!("flags {:#o} not supported", flags & !KNOWN),
            libc::EINVAL,
        ));
    }
    let acc = flags & libc::O_ACCMODE;
    if acc == libc::O_ACCMODE {
        return Err(Errno(libc::EINVAL));
    }
    let cloexec = flags & libc::O_CLOEXEC != 0;
    let status = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC);
    let creat = flags & libc::O_CREAT != 0;
    match fs.stat(path) {
        Ok(_) if creat && flags & libc::O_EXCL != 0 => return Err(Errno(libc::EEXIST)),
        Ok(st) if st.is_dir() => {
            if flags & libc::O_PATH == 0 && (acc != libc::O_RDONLY || creat) {
                return Err(Errno(libc::EISDIR));
            }
            let d = Desc::new(Kind::Dir(fs.dir_ref(path)?), path.to_string(), status);
            return fds::install(d, cloexec);
        }
        Ok(_) if flags & libc::O_DIRECTORY != 0 => return Err(Errno(libc::ENOTDIR)),
        Ok(_) => {}
        Err(udax::Error::NotFound) if creat && flags & libc::O_DIRECTORY != 0 => {
            return Err(Errno(libc::EINVAL));
        }
        // O_CREAT of "f/": `Fs::open` has the kernel's EISDIR.
        Err(udax::Error::NotFound | udax::Error::NotDir) if creat => {}
        Err(e) => return Err(e.into()),
    }
    let path_only = flags & libc::O_PATH != 0;
    let opts = OpenOptions {
        read: true,
        write: !path_only && acc != libc::O_RDONLY,
        append: flags & libc::O_APPEND != 0,
        create: creat && !path_only,
        create_new: creat && !path_only && flags & libc::O_EXCL != 0,
        truncate: !path_only && acc != libc::O_RDONLY && flags & libc::O_TRUNC != 0,
        mode: if creat {
            mode & 0o7777 & !umask_of_process()
        } else {
            0o644
        },
    };
    let f = fs.open(path, &opts)?;
    fds::install(Desc::new(Kind::File(f), path.to_string(), status), cloexec)
}

/// `O_TMPFILE`: an unnamed file in directory `dir` (`Fs::create_unnamed`),
/// which `linkat` may name unless `O_EXCL` was given.
fn open_unnamed(fs: &udax::fs::Fs, dir: &str, flags: c_int, mode: mode_t) -> R<c_int> {
    let acc = flags & libc::O_ACCMODE;
    // As the kernel: O_TMPFILE needs write access and takes neither O_CREAT
    // nor O_PATH.
    if flags & (libc::O_CREAT | libc::O_PATH) != 0 || !matches!(acc, libc::O_WRONLY | libc::O_RDWR)
    {
        return Err(Errno(libc::EINVAL));
    }
    let rest = flags & !libc::O_TMPFILE;
    if rest & !KNOWN != 0 {
        return Err(unsupported(
            "open",
            &format!("flags {:#o} not supported", rest & !KNOWN),
            libc::EINVAL,
        ));
    }
    let f = fs.create_unnamed(
        dir,
        mode & 0o7777 & !umask_of_process(),
        flags & libc::O_EXCL == 0,
    )?;
    let ino = f.ino();
    let status = rest & !(libc::O_EXCL | libc::O_CLOEXEC);
    // The name the kernel shows for it (`readlink` of /proc/self/fd/N).
    let name = format!(
        "{}/#{ino}",
        crate::state::path::canonical(dir).trim_end_matches('/')
    );
    fds::install(
        Desc::new(Kind::File(f), name, status),
        flags & libc::O_CLOEXEC != 0,
    )
}

macro_rules! open_fn {
    ($name:ident) => {
        /// # Safety
        /// As open(2): `path` is a C string; `mode` is read only with O_CREAT.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
            path_call!(-1, libc::AT_FDCWD, path, $name(path, flags, mode), |p| {
                open_udax(&p, flags, mode as mode_t)
            })
        }
    };
}
open_fn!(open);
open_fn!(open64);

macro_rules! openat_fn {
    ($name:ident) => {
        /// # Safety
        /// As openat(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dirfd: c_int,
            path: *const c_char,
            flags: c_int,
            mode: c_uint,
        ) -> c_int {
            path_call!(-1, dirfd, path, $name(dirfd, path, flags, mode), |p| {
                open_udax(&p, flags, mode as mode_t)
            })
        }
    };
}
openat_fn!(openat);
openat_fn!(openat64);

macro_rules! creat_fn {
    ($name:ident) => {
        /// # Safety
        /// As creat(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: mode_t) -> c_int {
            path_call!(-1, libc::AT_FDCWD, path, $name(path, mode), |p| open_udax(
                &p,
                libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                mode
            ))
        }
    };
}
creat_fn!(creat);
creat_fn!(creat64);

/// # Safety
/// As close(2).
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    run(
        -1,
        || fwd!(close(fd)),
        || {
            if fds::is_udax(fd) {
                // Also in a forked child: closing an inherited fd is allowed
                // (fds::close leaks the description there instead of closing it).
                fds::close(fd)
            } else {
                Ok(fwd!(close(fd)))
            }
        },
    )
}

/// # Safety
/// As close_range(2).
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    run(
        -1,
        || fwd!(close_range(first, last, flags)),
        || {
            let r = fwd!(close_range(first, last, flags));
            if r == 0 && flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
                fds::forget_range(first, last);
            }
            Ok(r)
        },
    )
}

// ---- data I/O on a description ----

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
        Some(_) if d.status() & libc::O_APPEND != 0 => f.write_at(buf, f.len())?,
        Some(o) => f.write_at(buf, o)?,
        None => {
            let mut pos = d.pos.lock().unwrap_or_else(|p| p.into_inner());
            let at = if d.status() & libc::O_APPEND != 0 {
                f.len()
            } else {
                *pos
            };
            let n = f.write_at(buf, at)?;
            *pos = at + n as u64;
            n
        }
    };
    sync_after_write(d)?;
    Ok(n)
}

fn offset(o: off64_t) -> R<u64> {
    u64::try_from(o).map_err(|_| Errno(libc::EINVAL))
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
    let start = off.unwrap_or_else(|| **pos_guard.as_ref().expect("locked"));
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
    if let Some(p) = pos_guard.as_mut() {
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
                    Some(d.file()?.len())
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

/// SEEK_DATA / SEEK_HOLE from the extent map.
fn seek_data_hole(f: &udax::fs::File, from: u64, data: bool) -> R<u64> {
    let size = f.len();
    if from >= size {
        return Err(Errno(libc::ENXIO));
    }
    let bs = udax::BLOCK_SIZE;
    let mut blk = from / bs;
    loop {
        let at = (blk * bs).max(from);
        if at >= size {
            return if data {
                Err(Errno(libc::ENXIO))
            } else {
                Ok(size)
            };
        }
        match f.iomap(blk) {
            Lookup::Mapped { len, .. } => {
                if data {
                    return Ok(at);
                }
                blk += len.max(1);
            }
            Lookup::Hole { len } => {
                if !data {
                    return Ok(at);
                }
                if len == u64::MAX {
                    return Err(Errno(libc::ENXIO));
                }
                blk += len.max(1);
            }
        }
    }
}

pub fn lseek_desc(d: &Desc, off: off64_t, whence: c_int) -> R<off64_t> {
    let mut pos = d.pos.lock().unwrap_or_else(|p| p.into_inner());
    if d.is_dir() {
        // A directory offset is an index into its entries (getdents d_off).
        let new = match whence {
            libc::SEEK_SET => off,
            libc::SEEK_CUR => *pos as i64 + off,
            _ => return Err(Errno(libc::EINVAL)),
        };
        if new < 0 {
            return Err(Errno(libc::EINVAL));
        }
        if new == 0 {
            *d.dents.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        *pos = new as u64;
        return Ok(new);
    }
    let f = d.file()?;
    let new: i128 = match whence {
        libc::SEEK_SET => off as i128,
        libc::SEEK_CUR => *pos as i128 + off as i128,
        libc::SEEK_END => f.len() as i128 + off as i128,
        libc::SEEK_DATA | libc::SEEK_HOLE => seek_data_hole(
            f,
            offset(off).map_err(|_| Errno(libc::ENXIO))?,
            whence == libc::SEEK_DATA,
        )? as i128,
        _ => return Err(Errno(libc::EINVAL)),
    };
    if new < 0 {
        return Err(Errno(libc::EINVAL));
    }
    let new = i64::try_from(new).map_err(|_| Errno(libc::EOVERFLOW))?;
    *pos = new as u64;
    Ok(new)
}

macro_rules! lseek_fn {
    ($name:ident) => {
        /// # Safety
        /// As lseek(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, off: off64_t, whence: c_int) -> off64_t {
            fd_call!(-1, fd, $name(fd, off, whence), |d| lseek_desc(
                &d, off, whence
            ))
        }
    };
}
lseek_fn!(lseek);
lseek_fn!(lseek64);

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

fn sync_desc(d: &Desc, data_only: bool) -> R<c_int> {
    match &d.kind {
        Kind::Dir(_) => mount::fs()?.sync()?,
        Kind::File(f) if data_only => f.sync_data()?,
        Kind::File(f) => f.fsync()?,
    }
    Ok(0)
}

/// # Safety
/// As fsync(2).
#[no_mangle]
pub unsafe extern "C" fn fsync(fd: c_int) -> c_int {
    fd_call!(-1, fd, fsync(fd), |d| sync_desc(&d, false))
}

/// # Safety
/// As fdatasync(2).
#[no_mangle]
pub unsafe extern "C" fn fdatasync(fd: c_int) -> c_int {
    fd_call!(-1, fd, fdatasync(fd), |d| sync_desc(&d, true))
}

/// # Safety
/// As syncfs(2).
#[no_mangle]
pub unsafe extern "C" fn syncfs(fd: c_int) -> c_int {
    fd_call!(-1, fd, syncfs(fd), |_d| {
        mount::fs()?.sync()?;
        Ok(0)
    })
}

/// # Safety
/// As sync_file_range(2).
#[no_mangle]
pub unsafe extern "C" fn sync_file_range(
    fd: c_int,
    off: off64_t,
    n: off64_t,
    flags: c_uint,
) -> c_int {
    fd_call!(-1, fd, sync_file_range(fd, off, n, flags), |d| {
        let known = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        if off < 0 || n < 0 || flags & !known != 0 {
            return Err(Errno(libc::EINVAL));
        }
        sync_desc(&d, true)
    })
}

/// # Safety
/// As sync(2).
#[no_mangle]
pub unsafe extern "C" fn sync() {
    run(
        (),
        || fwd!(sync()),
        || {
            fwd!(sync());
            if let Ok(fs) = mount::fs() {
                if let Err(e) = fs.sync() {
                    tracing::warn!("udax-preload: sync: {e}");
                }
            }
            Ok(())
        },
    )
}

// ---- copies between descriptors (udax <-> udax or host) ----

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

/// The description of `fd` (for other modules).
pub fn desc(fd: c_int) -> R<Arc<Desc>> {
    crate::dispatch::lookup(fd).unwrap_or(Err(Errno(libc::EBADF)))
}
