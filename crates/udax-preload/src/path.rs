//! Configuration and path classification: does a path live in udax?
//!
//! A path is a udax path when, made absolute (against the virtual working
//! directory, or a udax directory descriptor for the `*at` calls) and
//! normalised lexically (`//`, `.`, `..`; udax has no symbolic links), it is
//! the mount prefix or below it. Host paths are passed to libc unchanged,
//! except relative ones while the working directory is inside the mount: those
//! are made absolute, as the kernel cannot resolve them against a directory it
//! does not know.

use crate::entry::{unsupported, Errno, R};
use crate::fds;
use libc::c_int;
use std::ffi::{CStr, CString};
use std::sync::{OnceLock, RwLock};

pub struct Config {
    /// Normalised, no trailing slash, never "/".
    pub mount: String,
    pub device: String,
}

/// `None`: `UDAX_MOUNT` or `UDAX_DEVICE` unset (or the mount unusable): the
/// shim forwards everything.
pub fn config() -> Option<&'static Config> {
    static CONFIG: OnceLock<Option<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mount = std::env::var("UDAX_MOUNT").ok()?;
            let device = std::env::var("UDAX_DEVICE").ok()?;
            let mount = normalise(mount.as_bytes());
            if !mount.starts_with('/') || mount == "/" {
                crate::entry::init_log();
                tracing::error!(
                    "udax-preload: UDAX_MOUNT={mount:?} must be an absolute path other than /; shim disabled"
                );
                return None;
            }
            Some(Config { mount, device })
        })
        .as_ref()
}

/// Lexical normalisation of an absolute path: "/a//b/./c/../d" -> "/a/b/d".
pub fn normalise(p: &[u8]) -> String {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    let mut s = Vec::with_capacity(p.len() + 1);
    for c in &out {
        s.push(b'/');
        s.extend_from_slice(c);
    }
    if s.is_empty() {
        s.push(b'/');
    }
    String::from_utf8_lossy(&s).into_owned()
}

/// The virtual working directory (an absolute path under the mount), set by
/// chdir/fchdir into udax.
pub static CWD: RwLock<Option<String>> = RwLock::new(None);

pub fn cwd() -> Option<String> {
    CWD.read().unwrap_or_else(|p| p.into_inner()).clone()
}

pub fn set_cwd(v: Option<String>) {
    *CWD.write().unwrap_or_else(|p| p.into_inner()) = v;
}

/// Where a path argument lives.
pub enum Target {
    /// On the host: pass the caller's pointer on unchanged.
    Host,
    /// On the host, but the shim rewrote it (relative to a udax directory or
    /// the virtual cwd): pass this instead.
    HostPath(CString),
    /// In udax: the path inside the file system ("/" = the mount point).
    Udax(String),
}

/// Map an absolute normalised path to udax (inner path) or the host.
fn place(abs: String, cfg: &Config) -> R<Target> {
    let m = cfg.mount.as_str();
    if abs == m {
        return Ok(Target::Udax("/".into()));
    }
    if abs.len() > m.len() && abs.starts_with(m) && abs.as_bytes()[m.len()] == b'/' {
        return Ok(Target::Udax(abs[m.len()..].to_string()));
    }
    CString::new(abs)
        .map(Target::HostPath)
        .map_err(|_| Errno(libc::EINVAL))
}

/// Classify `path` as given to an `*at` call with directory `dirfd`
/// (`AT_FDCWD` for the plain calls).
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
    if bytes.first() == Some(&b'/') {
        let m = cfg.mount.as_bytes();
        let maybe = bytes.starts_with(m) || bytes.windows(2).any(|w| w == b"//" || w == b"/.");
        if !maybe {
            return Ok(Target::Host);
        }
        return match place(normalise(bytes), cfg)? {
            Target::Udax(p) => Ok(Target::Udax(check_utf8(p)?)),
            // An absolute host path is passed on as written.
            _ => Ok(Target::Host),
        };
    }
    if bytes.is_empty() {
        return Ok(Target::Host); // ENOENT from libc, or AT_EMPTY_PATH handled by the caller
    }
    let base = if dirfd == libc::AT_FDCWD {
        match cwd() {
            Some(c) => c,
            None => return Ok(Target::Host),
        }
    } else {
        match fds::get(dirfd) {
            Some(d) => {
                if !d.is_dir() {
                    return Err(Errno(libc::ENOTDIR));
                }
                format!("{}{}", cfg.mount, d.path())
            }
            None => return Ok(Target::Host),
        }
    };
    let mut joined = base.into_bytes();
    joined.push(b'/');
    joined.extend_from_slice(bytes);
    match place(normalise(&joined), cfg)? {
        Target::Udax(p) => Ok(Target::Udax(check_utf8(p)?)),
        t => Ok(t),
    }
}

fn check_utf8(p: String) -> R<String> {
    // `normalise` replaced invalid UTF-8 with U+FFFD; udax names are UTF-8.
    if p.contains('\u{FFFD}') {
        return Err(unsupported(
            "path",
            "udax file names must be valid UTF-8",
            libc::EINVAL,
        ));
    }
    Ok(p)
}

/// The parent of an inner udax path ("/a/b" -> "/a", "/a" -> "/").
pub fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}
