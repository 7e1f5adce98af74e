//! Directory streams (opendir/readdir/closedir) and getdents64 on udax directories.
//!
//! glibc's opendir opens the directory with its internal open, out of the
//! shim's reach, so the whole DIR API is interposed: a udax DIR* is a [`UDir`]
//! this module allocates, told apart from glibc's by a registry of addresses.

use crate::boundary::entry::{fwd, run, Errno, R};
use crate::dispatch::fd_call;
use crate::state::fds::{self, Desc, DirStream};
use libc::{c_char, c_int, c_long, c_void, size_t, ssize_t};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A udax directory stream.
struct UDir {
    fd: c_int,
    desc: Arc<Desc>,
    /// The position and the one page of entries held.
    stream: DirStream,
    /// The entry readdir returned last (valid until the next call, as POSIX says).
    ent: libc::dirent64,
}

static DIRS: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());
static NDIRS: AtomicUsize = AtomicUsize::new(0);

/// Is `p` a udax DIR*?
fn ours(p: *mut libc::DIR) -> bool {
    // ORDERING: Acquire pairs with the Release in `new_dir`; a DIR* reaches
    // another thread only through some synchronisation after that.
    NDIRS.load(Ordering::Acquire) != 0
        && DIRS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(p as usize))
}

fn new_dir(fd: c_int) -> R<*mut libc::DIR> {
    let desc = crate::dispatch::desc(fd)?;
    if !desc.is_dir() {
        return Err(Errno(libc::ENOTDIR));
    }
    // The first page now: an unreadable directory fails opendir.
    let mut stream = DirStream::at(0);
    stream.peek(&desc)?;
    let b = Box::new(UDir {
        fd,
        desc,
        stream,
        // SAFETY: all-zero is a valid dirent64.
        ent: unsafe { std::mem::zeroed() },
    });
    let p = Box::into_raw(b) as usize;
    DIRS.lock().unwrap_or_else(|p| p.into_inner()).insert(p);
    // ORDERING: pairs with the Acquire in `ours`; raised after the insert.
    NDIRS.fetch_add(1, Ordering::Release);
    Ok(p as *mut libc::DIR)
}

/// # Safety
/// `p` is a udax DIR* (checked by `ours`) and not used by another thread at
/// the same time (POSIX: a stream is not shared unsynchronised).
unsafe fn udir<'a>(p: *mut libc::DIR) -> &'a mut UDir {
    // SAFETY: the caller's contract; the pointer came from Box::into_raw.
    unsafe { &mut *(p as *mut UDir) }
}

/// # Safety
/// As opendir(3).
#[no_mangle]
pub unsafe extern "C" fn opendir(path: *const c_char) -> *mut libc::DIR {
    run(
        std::ptr::null_mut(),
        || fwd!(opendir(path)),
        || {
            crate::dispatch::path_call!(@on crate::dispatch::path_call!(@classify libc::AT_FDCWD, path), path, opendir(path), |p| {
                let fd = crate::calls::open::open_udax(
                    &p,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    0,
                )?;
                new_dir(fd).inspect_err(|_| {
                    let _ = fds::close(fd);
                })
            })
        },
    )
}

/// # Safety
/// As fdopendir(3).
#[no_mangle]
pub unsafe extern "C" fn fdopendir(fd: c_int) -> *mut libc::DIR {
    fd_call!(std::ptr::null_mut(), fd, fdopendir(fd), |_d| new_dir(fd))
}

/// The next entry of `d` in its `ent`; null at the end of the stream
/// (errno unchanged) or on an error (errno set by the caller).
fn next_entry(d: &mut UDir) -> R<*mut libc::dirent64> {
    let Some((_, e)) = d.stream.peek(&d.desc)? else {
        return Ok(std::ptr::null_mut());
    };
    let ent = &mut d.ent;
    ent.d_ino = e.ino;
    ent.d_type = e.dtype;
    let n = e.name.len().min(ent.d_name.len() - 1);
    for (dst, &src) in ent.d_name.iter_mut().zip(&e.name[..n]) {
        *dst = src as c_char;
    }
    ent.d_name[n] = 0;
    ent.d_reclen = std::mem::size_of::<libc::dirent64>() as u16;
    d.stream.advance();
    ent.d_off = d.stream.pos() as i64;
    Ok(ent as *mut libc::dirent64)
}

macro_rules! readdir_fn {
    ($name:ident) => {
        /// # Safety
        /// As readdir(3).
        #[no_mangle]
        pub unsafe extern "C" fn $name(dirp: *mut libc::DIR) -> *mut libc::dirent64 {
            run(
                std::ptr::null_mut(),
                || fwd!($name(dirp)),
                || {
                    if !ours(dirp) {
                        return Ok(fwd!($name(dirp)));
                    }
                    // SAFETY: a udax DIR*, used by this thread (readdir's contract).
                    next_entry(unsafe { udir(dirp) })
                },
            )
        }
    };
}
readdir_fn!(readdir);
readdir_fn!(readdir64);

/// # Safety
/// As closedir(3).
#[no_mangle]
pub unsafe extern "C" fn closedir(dirp: *mut libc::DIR) -> c_int {
    run(
        -1,
        || fwd!(closedir(dirp)),
        || {
            let removed = DIRS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(dirp as usize));
            if !removed {
                return Ok(fwd!(closedir(dirp)));
            }
            // ORDERING: lowered after the removal; a reader that still sees
            // nonzero only takes the registry lock for nothing.
            NDIRS.fetch_sub(1, Ordering::Release);
            // SAFETY: the pointer came from Box::into_raw in `new_dir` and was
            // just removed from the registry, so it is freed exactly once.
            let d = unsafe { Box::from_raw(dirp as *mut UDir) };
            fds::close(d.fd)
        },
    )
}

macro_rules! readdir_r_fn {
    ($name:ident) => {
        /// readdir_r(3): returns the error number; `*result` is null at the end.
        ///
        /// # Safety
        /// As readdir_r(3): `entry` has room for a dirent, `result` is valid.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dirp: *mut libc::DIR,
            entry: *mut libc::dirent64,
            result: *mut *mut libc::dirent64,
        ) -> c_int {
            run(
                libc::EIO,
                || fwd!($name(dirp, entry, result)),
                || {
                    if !ours(dirp) {
                        return Ok(fwd!($name(dirp, entry, result)));
                    }
                    if entry.is_null() || result.is_null() {
                        return Ok(libc::EFAULT);
                    }
                    // SAFETY: a udax DIR*, used by this thread.
                    let e = match next_entry(unsafe { udir(dirp) }) {
                        Ok(e) => e,
                        Err(Errno(n)) => return Ok(n),
                    };
                    // SAFETY: `e` (if not null) points into the stream; `entry`
                    // and `result` are the caller's valid pointers.
                    unsafe {
                        if e.is_null() {
                            *result = std::ptr::null_mut();
                        } else {
                            std::ptr::copy_nonoverlapping(e, entry, 1);
                            *result = entry;
                        }
                    }
                    Ok(0)
                },
            )
        }
    };
}
readdir_r_fn!(readdir_r);
readdir_r_fn!(readdir64_r);

/// # Safety
/// As dirfd(3).
#[no_mangle]
pub unsafe extern "C" fn dirfd(dirp: *mut libc::DIR) -> c_int {
    run(
        -1,
        || fwd!(dirfd(dirp)),
        || {
            if !ours(dirp) {
                return Ok(fwd!(dirfd(dirp)));
            }
            // SAFETY: a udax DIR*.
            Ok(unsafe { udir(dirp) }.fd)
        },
    )
}

/// # Safety
/// As rewinddir(3).
#[no_mangle]
pub unsafe extern "C" fn rewinddir(dirp: *mut libc::DIR) {
    run(
        (),
        || fwd!(rewinddir(dirp)),
        || {
            if !ours(dirp) {
                fwd!(rewinddir(dirp));
                return Ok(());
            }
            // SAFETY: a udax DIR*.
            // The next readdir reads the directory afresh from its start.
            unsafe { udir(dirp) }.stream = DirStream::at(0);
            Ok(())
        },
    )
}

/// # Safety
/// As telldir(3).
#[no_mangle]
pub unsafe extern "C" fn telldir(dirp: *mut libc::DIR) -> c_long {
    run(
        -1,
        || fwd!(telldir(dirp)),
        || {
            if !ours(dirp) {
                return Ok(fwd!(telldir(dirp)));
            }
            // SAFETY: a udax DIR*.
            Ok(unsafe { udir(dirp) }.stream.pos() as c_long)
        },
    )
}

/// # Safety
/// As seekdir(3).
#[no_mangle]
pub unsafe extern "C" fn seekdir(dirp: *mut libc::DIR, loc: c_long) {
    run(
        (),
        || fwd!(seekdir(dirp, loc)),
        || {
            if !ours(dirp) {
                fwd!(seekdir(dirp, loc));
                return Ok(());
            }
            // SAFETY: a udax DIR*.
            unsafe { udir(dirp) }.stream = DirStream::at(loc.max(0) as u64);
            Ok(())
        },
    )
}

/// getdents64(2) of a udax directory: linux_dirent64 records read a page
/// at a time ([`DirStream`], kept in the description while the offset is
/// where it left it); `d_off` is the position after the record, which
/// lseek accepts, and the description's offset is the position of the
/// next record.
fn getdents(d: &Desc, buf: *mut c_void, n: size_t) -> R<ssize_t> {
    if !d.is_dir() {
        return Err(Errno(libc::ENOTDIR));
    }
    let mut pos = d.pos.lock().unwrap_or_else(|p| p.into_inner());
    let mut held = d.dents.lock().unwrap_or_else(|p| p.into_inner());
    let s = match &mut *held {
        Some(s) if s.pos() == *pos => s,
        _ => held.insert(DirStream::at(*pos)),
    };
    // SAFETY: getdents64(2)'s contract: `buf` has room for `n` bytes.
    let out = unsafe { crate::dispatch::slice_mut(buf, n) }?;
    let mut used = 0usize;
    loop {
        let e = match s.peek(d) {
            Ok(Some((_, e))) => e,
            Ok(None) => break,
            // Records already given go back; the error comes next call.
            Err(_) if used > 0 => break,
            Err(e) => return Err(e),
        };
        // d_ino (8) d_off (8) d_reclen (2) d_type (1) name NUL, padded to 8.
        let reclen = (19 + e.name.len() + 1).div_ceil(8) * 8;
        if used + reclen > out.len() {
            if used == 0 {
                return Err(Errno(libc::EINVAL));
            }
            break;
        }
        let r = &mut out[used..used + reclen];
        r.fill(0);
        r[0..8].copy_from_slice(&e.ino.to_ne_bytes());
        r[16..18].copy_from_slice(&(reclen as u16).to_ne_bytes());
        r[18] = e.dtype;
        r[19..19 + e.name.len()].copy_from_slice(&e.name);
        s.advance();
        *pos = s.pos();
        r[8..16].copy_from_slice(&(*pos as i64).to_ne_bytes());
        used += reclen;
    }
    Ok(used as ssize_t)
}

/// # Safety
/// As getdents64(2).
#[no_mangle]
pub unsafe extern "C" fn getdents64(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    fd_call!(-1, fd, getdents64(fd, buf, n), |d| getdents(&d, buf, n))
}
