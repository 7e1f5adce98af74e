//! Path classification: does a path live in udax? (The facade the layers
//! above use: it re-exports what they need of `config` and `lexical`.)
//!
//! A path is a udax path when, made absolute (against the virtual working
//! directory, or a udax directory descriptor for the `*at` calls) and
//! normalised lexically (`//`, `.`, `..`; udax has no symbolic links), it is
//! the mount prefix or below it. Host paths are passed to libc unchanged,
//! except those the kernel could not resolve because they pass through the
//! mount prefix (which does not exist on the host): a relative path while the
//! working directory is inside the mount, or a `..` that leaves the mount's
//! root (`/udax/..`). Those are rewritten to start where they leave the
//! mount: at its parent, as the kernel goes from a mount point's root to the
//! mount point's parent.

use crate::boundary::entry::{unsupported, Errno, R};
pub use crate::state::config::config;
use crate::state::config::Config;
use crate::state::fds;
use crate::state::fds::DirPath;
pub use crate::state::lexical::{canonical, fd_link, parent, Target};
use crate::state::lexical::{drop_dots, resolve_abs, with_dir_suffix, Real};
use libc::c_int;
use std::ffi::{CStr, CString};
use std::sync::Mutex;
use udax::vfs::VDir as DirRef;

/// The virtual working directory, a udax directory, set by chdir/fchdir into
/// udax (`None`: the kernel's working directory, on the host).
static CWD: Mutex<Option<(DirRef, DirPath)>> = Mutex::new(None);

/// The virtual working directory as an absolute path under the mount prefix
/// (its current path: it follows renames); `Some(Err(ENOENT))` once it has
/// been removed; `None` while the working directory is on the host.
pub fn cwd() -> Option<R<String>> {
    let mut g = CWD.lock().unwrap_or_else(|p| p.into_inner());
    let (dir, path) = g.as_mut()?;
    let inner = path.get(dir);
    let cfg = config()?;
    Some(inner.map(|p| cfg.outer(&p)))
}

/// The virtual working directory's current path inside udax (as [`cwd`]).
pub fn cwd_inner() -> Option<R<String>> {
    let mut g = CWD.lock().unwrap_or_else(|p| p.into_inner());
    let (dir, path) = g.as_mut()?;
    Some(path.get(dir))
}

/// Set the virtual working directory to udax directory `dir` (at `inner`),
/// or back to the host.
pub fn set_cwd(v: Option<(String, DirRef)>) {
    let mut g = CWD.lock().unwrap_or_else(|p| p.into_inner());
    // ORDERING: only a hint for taking the namespace lock; `cwd()` reads the
    // working directory itself under CWD's mutex.
    CWD_IN_UDAX.store(v.is_some(), std::sync::atomic::Ordering::Relaxed);
    *g = v.map(|(p, dir)| (dir, DirPath::new(p)));
}

/// The virtual working directory is set (a cheap test for `classify`).
static CWD_IN_UDAX: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Classify `path` as given to an `*at` call with directory `dirfd`
/// (`AT_FDCWD` for the plain calls).
///
/// A udax path keeps what its end asks of it (see [`with_dir_suffix`]):
/// udax applies the kernel's rules to "f/" and "d/.".
///
/// # Safety
/// `path` is null or a NUL-terminated string.
pub unsafe fn classify(dirfd: c_int, path: *const libc::c_char) -> R<Target> {
    let Some(cfg) = config() else {
        return Ok(Target::Host);
    };
    if path.is_null() {
        return Ok(Target::Host); // the real call reports EFAULT
    }
    // SAFETY: the caller guarantees a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    // The kernel's getname: the caller's string with its NUL fits PATH_MAX.
    if bytes.len() >= libc::PATH_MAX as usize {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    Ok(match classify_bytes(dirfd, bytes, cfg)? {
        Target::Udax(inner) => Target::Udax(with_dir_suffix(inner, bytes)),
        t => t,
    })
}

/// [`resolve_abs`], each `..` below the prefix going back from where the
/// path up to it really leads on the file system (`Vfs::real_dir`).
fn resolve(p: &[u8], mount: &str) -> R<Option<Target>> {
    resolve_abs(
        p,
        mount,
        &mut |dir| match crate::state::mount::fs()?.real_dir(dir) {
            Ok(r) => Ok(Real::Udax(r)),
            Err(udax::Error::Escape { path }) => Ok(Real::Escaped(path)),
            Err(e) => Err(e.into()),
        },
    )
}

/// Where a udax path that left the file system goes on (the path the last
/// [`crate::boundary::entry::ESCAPED`] error carries): an absolute path, or
/// one relative to the mount point (`../x`), classified as any path is.
/// `hops` counts the escapes of one call: past the kernel's 40 links, ELOOP.
pub fn escaped(hops: &mut u32) -> R<Target> {
    let path = crate::boundary::entry::take_escape().ok_or(Errno(libc::EXDEV))?;
    *hops += 1;
    if *hops > udax::fs::MAX_SYMLINKS {
        return Err(Errno(libc::ELOOP));
    }
    let cfg = config().ok_or(Errno(libc::EXDEV))?;
    let abs = if path.starts_with('/') {
        path
    } else {
        format!("{}/{path}", cfg.mount)
    };
    let c = CString::new(abs).map_err(|_| Errno(libc::EINVAL))?;
    // SAFETY: `c` is a NUL-terminated string.
    match unsafe { classify(libc::AT_FDCWD, c.as_ptr()) }? {
        Target::Host => Ok(Target::HostPath(c)),
        t => Ok(t),
    }
}

fn classify_bytes(dirfd: c_int, bytes: &[u8], cfg: &Config) -> R<Target> {
    if let Some((fd, rest)) = fd_link(bytes) {
        if let Some(d) = fds::lookup_for_path(fd) {
            return through_fd_link(&*d?, rest, cfg);
        }
    }
    if bytes.first() == Some(&b'/') {
        let m = cfg.mount.as_bytes();
        let maybe = bytes.starts_with(m) || bytes.windows(2).any(|w| w == b"//" || w == b"/.");
        if !maybe {
            return Ok(Target::Host);
        }
        // An absolute host path the kernel can resolve is passed on as written.
        return Ok(resolve(&drop_dots(bytes), &cfg.mount)?.unwrap_or(Target::Host));
    }
    if bytes.is_empty() {
        return Ok(Target::Host); // ENOENT from libc, or AT_EMPTY_PATH handled by the caller
    }
    // Relative to a udax directory: its path must not change until the call
    // ends (`names`), so the lock is taken before the path is looked at.
    let base = if dirfd == libc::AT_FDCWD {
        // ORDERING: a hint; `cwd()` reads the working directory under its mutex.
        if CWD_IN_UDAX.load(std::sync::atomic::Ordering::Relaxed) {
            crate::state::names::hold_shared();
        }
        match cwd() {
            Some(c) => c?,
            None => return Ok(Target::Host),
        }
    } else {
        match fds::get(dirfd) {
            Some(d) => {
                if !d.is_dir() {
                    return Err(Errno(libc::ENOTDIR));
                }
                crate::state::names::hold_shared();
                cfg.outer(&d.path()?)
            }
            None => return Ok(Target::Host),
        }
    };
    let mut joined = base.into_bytes();
    joined.push(b'/');
    joined.extend_from_slice(bytes);
    let joined = drop_dots(&joined);
    match resolve(&joined, &cfg.mount)? {
        Some(t) => Ok(t),
        None => Ok(Target::HostPath(
            CString::new(joined).map_err(|_| Errno(libc::EINVAL))?,
        )),
    }
}

/// The path through `/proc/self/fd/N` of udax descriptor `d`: the directory's
/// current path (then `rest` below it), or the file's if it still names the
/// file. A file renamed or unlinked since it was opened has no path the shim
/// knows (the kernel would reopen the file itself): EOPNOTSUPP, never another
/// file or the reserved descriptor's `/dev/null`.
fn through_fd_link(d: &fds::Desc, rest: &[u8], cfg: &Config) -> R<Target> {
    if d.is_dir() {
        crate::state::names::hold_shared();
    }
    let p = d.path()?;
    if !d.is_dir() {
        if !rest.iter().all(|&b| b == b'/') {
            return Err(Errno(libc::ENOTDIR));
        }
        if !d.still_named(&p)? {
            return Err(unsupported(
                "path",
                "/proc/self/fd/N of a udax file renamed or unlinked since it was opened",
                libc::EOPNOTSUPP,
            ));
        }
        return Ok(Target::Udax(p));
    }
    let mut full = cfg.outer(&p).into_bytes();
    full.extend_from_slice(rest);
    Ok(resolve(&drop_dots(&full), &cfg.mount)?.unwrap_or(Target::Host))
}
