//! open, openat, creat (and O_TMPFILE), close, close_range.

use crate::boundary::entry::{fwd, run, unsupported, Errno, R};
use crate::calls::umask::umask_of_process;
use crate::dispatch::path_call;
use crate::state::fds::{self, Desc, Kind};
use crate::state::mount;
use libc::{c_char, c_int, c_uint, mode_t};
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
    let nofollow = flags & libc::O_NOFOLLOW != 0;
    match if nofollow {
        fs.lstat(path)
    } else {
        fs.stat(path)
    } {
        Ok(_) if creat && flags & libc::O_EXCL != 0 => return Err(Errno(libc::EEXIST)),
        // O_NOFOLLOW of a symbolic link: ELOOP; a special file is not a
        // udax file: a FIFO is a host pipe, a device node does not open
        // (nodev: EACCES), a socket ENXIO. O_PATH opens either itself.
        Ok(st) if !st.is_file() && !st.is_dir() => {
            if flags & libc::O_DIRECTORY != 0 {
                return Err(Errno(libc::ENOTDIR));
            }
            if flags & libc::O_PATH != 0 {
                let d = Desc::new(Kind::Node { ino: st.ino }, path.to_string(), status);
                return fds::install(d, cloexec);
            }
            if st.is_symlink() {
                return Err(Errno(libc::ELOOP));
            }
            if st.is_fifo() {
                return open_fifo(path, &st, flags);
            }
            // EACCES or ENXIO, from the file system.
            fs.open(path, &OpenOptions::read_only())?;
            return Err(Errno(libc::EIO));
        }
        Ok(st) if st.is_dir() => {
            if flags & libc::O_PATH == 0 && (acc != libc::O_RDONLY || creat) {
                return Err(Errno(libc::EISDIR));
            }
            // Reading a directory needs read permission (O_PATH none).
            if flags & libc::O_PATH == 0 {
                crate::calls::access::access_udax(path, libc::R_OK, true)?;
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
    // O_PATH asks for no access (and needs no permission); O_WRONLY no read.
    let opts = OpenOptions {
        read: !path_only && acc != libc::O_WRONLY,
        write: !path_only && acc != libc::O_RDONLY,
        append: flags & libc::O_APPEND != 0,
        create: creat && !path_only,
        create_new: creat && !path_only && flags & libc::O_EXCL != 0,
        truncate: !path_only && flags & libc::O_TRUNC != 0,
        nofollow: flags & libc::O_NOFOLLOW != 0,
        mode: if creat {
            mode & 0o7777 & !umask_of_process()
        } else {
            0o644
        },
    };
    let f = fs.open(path, &opts)?;
    fds::install(Desc::new(Kind::File(f), path.to_string(), status), cloexec)
}

/// A udax FIFO's pipe: a host FIFO every process that opens the udax one
/// opens too, its host twin (`mknod::host_twin`), made on first use. Opened as the kernel opens a
/// FIFO (blocking until the other end opens, unless `O_NONBLOCK`); the
/// descriptor is the host's. Access is checked on the udax inode first.
fn open_fifo(path: &str, st: &udax::fs::Stat, flags: c_int) -> R<c_int> {
    let want = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => libc::R_OK,
        libc::O_WRONLY => libc::W_OK,
        _ => libc::R_OK | libc::W_OK,
    };
    crate::calls::access::access_udax(path, want, true)?;
    let c = crate::calls::mknod::host_twin("fifo", st)?;
    // SAFETY: `c` is a NUL-terminated path; mkfifo and chmod only read it.
    unsafe {
        if libc::mkfifo(c.as_ptr(), 0o600) == 0 {
            // Anyone the udax inode lets in (checked above) may open it.
            libc::chmod(c.as_ptr(), 0o666);
        }
    }
    let keep = libc::O_ACCMODE | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: as above; the flags are the caller's access mode and
    // blocking choice.
    let fd = unsafe { libc::open(c.as_ptr(), flags & keep) };
    if fd < 0 {
        return Err(Errno(crate::boundary::entry::errno()));
    }
    Ok(fd)
}

/// `O_TMPFILE`: an unnamed file in directory `dir` (`Fs::create_unnamed`),
/// which `linkat` may name unless `O_EXCL` was given.
fn open_unnamed(fs: &udax::vfs::Vfs, dir: &str, flags: c_int, mode: mode_t) -> R<c_int> {
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
