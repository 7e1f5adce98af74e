//! Less common calls whose glibc implementation would reach the host (or the
//! kernel) for a udax path: pathconf/fpathconf (glibc asks statfs internally),
//! scandir (glibc's internal opendir), inotify_add_watch (the kernel cannot
//! watch udax files).

use crate::boundary::entry::{fwd, run, unsupported, Errno, R};
use crate::dispatch::{fd_call, path_call};
use crate::state::path::{classify, Target};
use libc::{c_char, c_int, c_long};

/// The limits of a udax file system (pathconf(3) names).
fn limit(name: c_int) -> R<c_long> {
    Ok(match name {
        libc::_PC_LINK_MAX => 65000,
        libc::_PC_NAME_MAX => 255,
        libc::_PC_PATH_MAX => 4096,
        libc::_PC_PIPE_BUF => 4096,
        libc::_PC_CHOWN_RESTRICTED | libc::_PC_NO_TRUNC => 1,
        libc::_PC_FILESIZEBITS => 64,
        libc::_PC_REC_XFER_ALIGN | libc::_PC_ALLOC_SIZE_MIN | libc::_PC_REC_MIN_XFER_SIZE => 4096,
        // No symbolic links; no limit known for the rest (-1, errno unchanged).
        libc::_PC_SYMLINK_MAX | libc::_PC_2_SYMLINKS => 0,
        libc::_PC_MAX_CANON | libc::_PC_MAX_INPUT | libc::_PC_VDISABLE => {
            return Err(Errno(libc::EINVAL))
        }
        _ => -1,
    })
}

/// # Safety
/// As pathconf(3).
#[no_mangle]
pub unsafe extern "C" fn pathconf(path: *const c_char, name: c_int) -> c_long {
    path_call!(-1, libc::AT_FDCWD, path, pathconf(path, name), |p| {
        crate::state::mount::fs()?.stat(&p)?;
        limit(name)
    })
}

/// # Safety
/// As fpathconf(3).
#[no_mangle]
pub unsafe extern "C" fn fpathconf(fd: c_int, name: c_int) -> c_long {
    fd_call!(-1, fd, fpathconf(fd, name), |_d| limit(name))
}

/// # Safety
/// As inotify_add_watch(2).
#[no_mangle]
pub unsafe extern "C" fn inotify_add_watch(ifd: c_int, path: *const c_char, mask: u32) -> c_int {
    path_call!(
        -1,
        libc::AT_FDCWD,
        path,
        inotify_add_watch(ifd, path, mask),
        |_p| Err(unsupported(
            "inotify_add_watch",
            "udax files cannot be watched (no kernel inode)",
            libc::EOPNOTSUPP,
        ))
    )
}

type Filter = Option<unsafe extern "C" fn(*const libc::dirent64) -> c_int>;
type Compar =
    Option<unsafe extern "C" fn(*mut *const libc::dirent64, *mut *const libc::dirent64) -> c_int>;

/// scandir of a udax directory: each entry read by the shim's readdir, kept
/// if `filter` says so, copied into malloc'ed memory, sorted with `compar`.
///
/// # Safety
/// As scandir(3).
unsafe fn scandir_udax(
    p: &str,
    list: *mut *mut *mut libc::dirent64,
    filter: Filter,
    compar: Compar,
) -> R<c_int> {
    if list.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    let fd =
        crate::calls::open::open_udax(p, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC, 0)?;
    let d = crate::dispatch::desc(fd);
    let _ = crate::state::fds::close(fd);
    let d = d?;
    let mut stream = crate::state::fds::DirStream::at(0);
    let mut out: Vec<*mut libc::dirent64> = Vec::new();
    let free_all = |v: &Vec<*mut libc::dirent64>| {
        for &e in v {
            // SAFETY: each pointer came from malloc below and was not handed out.
            unsafe { libc::free(e.cast()) };
        }
    };
    loop {
        let e = match stream.peek(&d) {
            Ok(Some((_, e))) => e.clone(),
            Ok(None) => break,
            Err(x) => {
                free_all(&out);
                return Err(x);
            }
        };
        stream.advance();
        // SAFETY: all-zero is a valid dirent64.
        let mut de: libc::dirent64 = unsafe { std::mem::zeroed() };
        de.d_ino = e.ino;
        de.d_type = e.dtype;
        de.d_reclen = std::mem::size_of::<libc::dirent64>() as u16;
        let n = e.name.len().min(de.d_name.len() - 1);
        for (dst, &src) in de.d_name.iter_mut().zip(&e.name[..n]) {
            *dst = src as c_char;
        }
        if let Some(f) = filter {
            // SAFETY: the caller's filter, given a valid entry it may only read.
            if unsafe { f(&de) } == 0 {
                continue;
            }
        }
        // SAFETY: malloc of a dirent; glibc's scandir entries are malloc'ed too
        // (the caller frees each one, then the array).
        let m =
            unsafe { libc::malloc(std::mem::size_of::<libc::dirent64>()) } as *mut libc::dirent64;
        if m.is_null() {
            free_all(&out);
            return Err(Errno(libc::ENOMEM));
        }
        // SAFETY: `m` has room for one dirent64.
        unsafe { m.write(de) };
        out.push(m);
    }
    if let Some(c) = compar {
        out.sort_by(|a, b| {
            let (mut x, mut y) = (*a as *const libc::dirent64, *b as *const libc::dirent64);
            // SAFETY: the caller's comparison, given pointers to two valid entries.
            unsafe { c(&mut x, &mut y) }.cmp(&0)
        });
    }
    let bytes = out.len().max(1) * std::mem::size_of::<*mut libc::dirent64>();
    // SAFETY: malloc of the pointer array the caller frees.
    let arr = unsafe { libc::malloc(bytes) } as *mut *mut libc::dirent64;
    if arr.is_null() {
        free_all(&out);
        return Err(Errno(libc::ENOMEM));
    }
    // SAFETY: `arr` has room for out.len() pointers; `list` is the caller's.
    unsafe {
        std::ptr::copy_nonoverlapping(out.as_ptr(), arr, out.len());
        *list = arr;
    }
    Ok(out.len() as c_int)
}

macro_rules! scandir_fn {
    ($name:ident) => {
        /// # Safety
        /// As scandir(3).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dir: *const c_char,
            list: *mut *mut *mut libc::dirent64,
            filter: Filter,
            compar: Compar,
        ) -> c_int {
            run(
                -1,
                || fwd!($name(dir, list, filter, compar)),
                || {
                    // SAFETY: scandir(3)'s contract.
                    match unsafe { classify(libc::AT_FDCWD, dir) }? {
                        Target::Host => Ok(fwd!($name(dir, list, filter, compar))),
                        Target::HostPath(c) => Ok(fwd!($name(c.as_ptr(), list, filter, compar))),
                        // SAFETY: as above.
                        Target::Udax(p) => unsafe { scandir_udax(&p, list, filter, compar) },
                    }
                },
            )
        }
    };
}
scandir_fn!(scandir);
scandir_fn!(scandir64);
