//! Times: utimensat, futimens, utime, utimes, lutimes, futimes.

use crate::boundary::entry::{fwd, run, Errno, R};
use crate::dispatch::{fd_call, path_call};
use libc::{c_char, c_int};

/// The `(atime, mtime)` a utimensat-style `times` argument asks for (ns since
/// the epoch; `None` = `UTIME_OMIT`; a null pointer or `UTIME_NOW` = now).
/// Times before 1970 cannot be stored (EINVAL).
///
/// # Safety
/// `times` is null or points to two timespecs.
unsafe fn wanted_times(times: *const libc::timespec) -> R<(Option<u64>, Option<u64>)> {
    if times.is_null() {
        return Ok((Some(udax::fs::TIME_NOW), Some(udax::fs::TIME_NOW)));
    }
    // SAFETY: the caller's contract.
    let t = unsafe { std::slice::from_raw_parts(times, 2) };
    let one = |ts: &libc::timespec| -> R<Option<u64>> {
        match ts.tv_nsec {
            libc::UTIME_OMIT => Ok(None),
            libc::UTIME_NOW => Ok(Some(udax::fs::TIME_NOW)),
            n if (0..1_000_000_000).contains(&n) && ts.tv_sec >= 0 => Ok(Some(
                (ts.tv_sec as u64).saturating_mul(1_000_000_000) + n as u64,
            )),
            _ => Err(Errno(libc::EINVAL)),
        }
    };
    Ok((one(&t[0])?, one(&t[1])?))
}

/// `timeval`s (utimes, futimes) as timespecs.
///
/// # Safety
/// `t` is null or points to two timevals.
unsafe fn timevals(t: *const libc::timeval) -> R<Option<[libc::timespec; 2]>> {
    if t.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract.
    let v = unsafe { std::slice::from_raw_parts(t, 2) };
    let mut out = [libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    }; 2];
    for (o, i) in out.iter_mut().zip(v) {
        if !(0..1_000_000).contains(&i.tv_usec) {
            return Err(Errno(libc::EINVAL));
        }
        o.tv_sec = i.tv_sec;
        o.tv_nsec = i.tv_usec * 1000;
    }
    Ok(Some(out))
}

/// utimes of a udax path; `follow`: a symbolic link at its end is
/// followed (`lutimes`, `AT_SYMLINK_NOFOLLOW`: not).
fn set_times_path(p: &str, times: *const libc::timespec, follow: bool) -> R<c_int> {
    // SAFETY: the interposed call's contract for `times`.
    let (a, m) = unsafe { wanted_times(times) }?;
    let fs = crate::state::mount::fs()?;
    if follow {
        fs.set_times(p, a, m)?;
    } else {
        fs.set_times_nofollow(p, a, m)?;
    }
    Ok(0)
}

fn set_times_fd(d: &crate::state::fds::Desc, times: *const libc::timespec) -> R<c_int> {
    // SAFETY: the interposed call's contract for `times`.
    let (a, m) = unsafe { wanted_times(times) }?;
    match &*d.kind {
        // O_PATH descriptors may set times too (by path, as the kernel allows).
        crate::state::fds::Kind::File(f) => f.set_times(a, m)?,
        crate::state::fds::Kind::Dir(_) => {
            crate::state::mount::fs()?.set_times(&d.path()?, a, m)?
        }
        crate::state::fds::Kind::Node { .. } => {
            crate::state::mount::fs()?.set_times_nofollow(&d.path()?, a, m)?
        }
    }
    Ok(0)
}

/// # Safety
/// As utimensat(2).
#[no_mangle]
pub unsafe extern "C" fn utimensat(
    dirfd: c_int,
    path: *const c_char,
    times: *const libc::timespec,
    flags: c_int,
) -> c_int {
    run(
        -1,
        || fwd!(utimensat(dirfd, path, times, flags)),
        || {
            if path.is_null() {
                // utimensat(fd, NULL, ...) is futimens(fd).
                return match crate::dispatch::lookup(dirfd) {
                    None => Ok(fwd!(utimensat(dirfd, path, times, flags))),
                    Some(d) => set_times_fd(&*d?, times),
                };
            }
            if flags & !(libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH) != 0 {
                return Err(Errno(libc::EINVAL));
            }
            // SAFETY: utimensat(2)'s contract.
            if let Some(d) = unsafe { crate::calls::stat::empty_path_desc(dirfd, path, flags) } {
                return set_times_fd(&*d?, times);
            }
            let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
            path_call!(@on path_call!(@classify dirfd, path), path, utimensat(dirfd, path, times, flags), |p| {
                set_times_path(&p, times, follow)
            })
        },
    )
}

/// # Safety
/// As futimens(3).
#[no_mangle]
pub unsafe extern "C" fn futimens(fd: c_int, times: *const libc::timespec) -> c_int {
    fd_call!(-1, fd, futimens(fd, times), |d| set_times_fd(&d, times))
}

/// # Safety
/// As utime(2).
#[no_mangle]
pub unsafe extern "C" fn utime(path: *const c_char, t: *const libc::utimbuf) -> c_int {
    path_call!(-1, libc::AT_FDCWD, path, utime(path, t), |p| {
        if t.is_null() {
            return set_times_path(&p, std::ptr::null(), true);
        }
        // SAFETY: utime(2)'s contract: `t` points to a struct utimbuf.
        let u = unsafe { t.read() };
        let ts = [
            libc::timespec {
                tv_sec: u.actime,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: u.modtime,
                tv_nsec: 0,
            },
        ];
        set_times_path(&p, ts.as_ptr(), true)
    })
}

macro_rules! utimes_fn {
    ($name:ident, $follow:expr) => {
        /// # Safety
        /// As utimes(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, t: *const libc::timeval) -> c_int {
            path_call!(-1, libc::AT_FDCWD, path, $name(path, t), |p| {
                // SAFETY: utimes(2)'s contract for `t`.
                let ts = unsafe { timevals(t) }?;
                set_times_path(
                    &p,
                    ts.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()),
                    $follow,
                )
            })
        }
    };
}
utimes_fn!(utimes, true);
utimes_fn!(lutimes, false);

/// # Safety
/// As futimes(3).
#[no_mangle]
pub unsafe extern "C" fn futimes(fd: c_int, t: *const libc::timeval) -> c_int {
    fd_call!(-1, fd, futimes(fd, t), |d| {
        // SAFETY: futimes(3)'s contract for `t`.
        let ts = unsafe { timevals(t) }?;
        set_times_fd(&d, ts.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()))
    })
}
