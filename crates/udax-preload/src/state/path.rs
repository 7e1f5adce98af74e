//! Configuration and path classification: does a path live in udax?
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
use crate::state::fds;
use crate::state::fds::DirPath;
use libc::c_int;
use std::ffi::{CStr, CString};
use std::sync::{Mutex, OnceLock};
use udax::fs::DirRef;

pub struct Config {
    /// Normalised, no trailing slash, never "/".
    pub mount: String,
    pub device: String,
}

impl Config {
    /// Inner udax path `inner` as the program spells it: under the prefix.
    pub fn outer(&self, inner: &str) -> String {
        if inner == "/" {
            self.mount.clone()
        } else {
            format!("{}{inner}", self.mount)
        }
    }
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
                crate::boundary::entry::init_log();
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
    String::from_utf8_lossy(&join(out)).into_owned()
}

/// Components as an absolute path: "/a/b", or "/" for none.
fn join<'a>(comps: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut s = Vec::new();
    for c in comps {
        s.push(b'/');
        s.extend_from_slice(c);
    }
    if s.is_empty() {
        s.push(b'/');
    }
    s
}

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

/// `p` without its empty and `.` components (which mean nothing anywhere,
/// symbolic links or not); `..` components stay.
fn drop_dots(p: &[u8]) -> Vec<u8> {
    join(
        p.split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b"."),
    )
}

/// Resolve an absolute path (`.` and empty components dropped) that may pass
/// through the mount prefix. Below the prefix, `..` is resolved lexically,
/// which is exact (udax has no symbolic links); a `..` at the mount's root
/// leaves it for the prefix's parent on the host, and the rest of the path is
/// resolved from there as written (it may even come back in). Any other
/// host path is normalised lexically only to see whether it names udax
/// (`/x/../udax/f`); if not, the kernel resolves it as written (`None`).
fn resolve_abs(p: &[u8], cfg: &Config) -> R<Option<Target>> {
    let m = cfg.mount.as_bytes();
    let Some(rest) = p.strip_prefix(m).filter(|r| r.is_empty() || r[0] == b'/') else {
        return Ok(match place(normalise(p), cfg)? {
            Target::Udax(inner) => Some(Target::Udax(check_utf8(inner)?)),
            _ => None,
        });
    };
    let mut inner: Vec<&[u8]> = Vec::new();
    let mut comps = rest.split(|&b| b == b'/').filter(|c| !c.is_empty());
    while let Some(c) = comps.next() {
        if c != b".." {
            inner.push(c);
        } else if inner.pop().is_none() {
            // Out of the mount's root: on the host, from the prefix's parent.
            let mut host = parent(&cfg.mount).as_bytes().to_vec();
            for c in comps {
                host.push(b'/');
                host.extend_from_slice(c);
            }
            let host = drop_dots(&host);
            return Ok(Some(match resolve_abs(&host, cfg)? {
                Some(t) => t,
                None => Target::HostPath(CString::new(host).map_err(|_| Errno(libc::EINVAL))?),
            }));
        }
    }
    let path = String::from_utf8_lossy(&join(inner)).into_owned();
    Ok(Some(Target::Udax(check_utf8(path)?)))
}

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
    Ok(match classify_bytes(dirfd, bytes, cfg)? {
        Target::Udax(inner) => Target::Udax(with_dir_suffix(inner, bytes)),
        t => t,
    })
}

/// The inner path `inner` of the written path `written`, with `/` if that
/// ends in a slash (it must name a directory: "f/" of a file is ENOTDIR),
/// or `/.` if it ends in `.` or `..` (it names a directory, not an entry
/// to create, remove or rename). The lexical resolution dropped both.
fn with_dir_suffix(inner: String, written: &[u8]) -> String {
    let end = written.rsplit(|&b| b == b'/').find(|c| !c.is_empty());
    let suffix = if matches!(end, Some(b"." | b"..")) {
        "/."
    } else if written.ends_with(b"/") && inner != "/" {
        "/"
    } else {
        return inner;
    };
    format!("{}{suffix}", inner.trim_end_matches('/'))
}

/// An inner path without the suffix [`classify`] keeps: "/d/" and "/d/."
/// are "/d", "/." is "/". For paths kept beyond the call (a descriptor's,
/// the working directory's).
pub fn canonical(p: &str) -> &str {
    let p = p.strip_suffix("/.").unwrap_or(p).trim_end_matches('/');
    if p.is_empty() {
        "/"
    } else {
        p
    }
}

fn classify_bytes(dirfd: c_int, bytes: &[u8], cfg: &Config) -> R<Target> {
    if let Some((fd, rest)) = fd_link(bytes) {
        if let Some(d) = fds::lookup(fd) {
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
        return Ok(resolve_abs(&drop_dots(bytes), cfg)?.unwrap_or(Target::Host));
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
    match resolve_abs(&joined, cfg)? {
        Some(t) => Ok(t),
        None => Ok(Target::HostPath(
            CString::new(joined).map_err(|_| Errno(libc::EINVAL))?,
        )),
    }
}

/// `/proc/self/fd/N` (also `/proc/thread-self/fd/N`, `/proc/PID/fd/N` of
/// this process, `/dev/fd/N`), followed by `rest` ("" or "/..."): the
/// kernel's link to descriptor N.
pub fn fd_link(p: &[u8]) -> Option<(c_int, &[u8])> {
    let after = if let Some(r) = p.strip_prefix(b"/dev/fd/") {
        r
    } else {
        let r = p.strip_prefix(b"/proc/")?;
        let slash = r.iter().position(|&b| b == b'/')?;
        let (who, r) = r.split_at(slash);
        let own = who == b"self"
            || who == b"thread-self"
            // SAFETY: getpid has no preconditions.
            || who == unsafe { libc::getpid() }.to_string().as_bytes();
        if !own {
            return None;
        }
        r.strip_prefix(b"/fd/")?
    };
    let end = after.iter().position(|&b| b == b'/').unwrap_or(after.len());
    let fd = std::str::from_utf8(&after[..end]).ok()?.parse().ok()?;
    Some((fd, &after[end..]))
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
    Ok(resolve_abs(&drop_dots(&full), cfg)?.unwrap_or(Target::Host))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mount: &str) -> Config {
        Config {
            mount: mount.into(),
            device: String::new(),
        }
    }

    /// "udax:/inner", "host:/path", or "as written".
    fn show(p: &str, mount: &str) -> String {
        match resolve_abs(&drop_dots(p.as_bytes()), &cfg(mount)) {
            Ok(Some(Target::Udax(i))) => format!("udax:{i}"),
            Ok(Some(Target::HostPath(h))) => format!("host:{}", h.to_str().unwrap()),
            Ok(Some(Target::Host)) => "host, unchanged".into(),
            Ok(None) => "as written".into(),
            Err(Errno(e)) => format!("errno {e}"),
        }
    }

    /// The kernel's answer where no symbolic links exist (the model): the
    /// whole path resolved lexically, with the mount a directory at the
    /// prefix; inside it the inner path, outside it the host path.
    fn model(p: &str, mount: &str) -> String {
        let n = normalise(p.as_bytes());
        match n.strip_prefix(mount) {
            Some("") => "udax:/".into(),
            Some(r) if r.starts_with('/') => format!("udax:{r}"),
            _ => format!("host:{n}"),
        }
    }

    proptest::proptest! {
        /// Any path made of `.`, `..`, empty components and names (among them
        /// the prefix's own): never a panic, and where it matters (the path
        /// passes through the prefix, or names udax) the kernel's answer. A
        /// host path the shim passes on as written is the kernel's to resolve.
        #[test]
        fn resolution_agrees_with_the_kernel_without_symlinks(
            comps in proptest::collection::vec(
                proptest::sample::select(vec!["", ".", "..", "a", "udax", "mnt", "b"]),
                0..12,
            ),
            deep in proptest::bool::ANY,
        ) {
            let mount = if deep { "/mnt/udax" } else { "/udax" };
            let p = format!("/{}", comps.join("/"));
            let got = match resolve_abs(&drop_dots(p.as_bytes()), &cfg(mount)) {
                Ok(Some(Target::Udax(i))) => format!("udax:{i}"),
                Ok(Some(Target::HostPath(h))) => {
                    format!("host:{}", normalise(h.to_bytes()))
                }
                // Passed on as written: the kernel resolves it (lexically,
                // here), and must not find the mount there.
                Ok(Some(Target::Host)) | Ok(None) => format!("host:{}", normalise(p.as_bytes())),
                Err(Errno(e)) => format!("errno {e}"),
            };
            proptest::prop_assert_eq!(got, model(&p, mount), "path {}", p);
        }
    }

    #[test]
    fn a_trailing_slash_dot_or_dotdot_is_kept_for_udax() {
        let s = |inner: &str, written: &str| with_dir_suffix(inner.into(), written.as_bytes());
        assert_eq!(s("/f", "/udax/f/"), "/f/");
        assert_eq!(s("/f", "/udax/f//"), "/f/");
        assert_eq!(s("/f", "/udax/f"), "/f");
        assert_eq!(s("/d", "/udax/d/."), "/d/.");
        assert_eq!(s("/d", "/udax/d/x/../"), "/d/.");
        assert_eq!(s("/", "/udax/d/.."), "/.");
        assert_eq!(s("/", "/udax/"), "/");
        assert_eq!(s("/d", "."), "/d/.");
        for (p, c) in [
            ("/d/", "/d"),
            ("/d/.", "/d"),
            ("/.", "/"),
            ("/", "/"),
            ("/d", "/d"),
        ] {
            assert_eq!(canonical(p), c);
        }
    }

    #[test]
    fn dots_and_empty_components_go_and_dotdot_stays() {
        assert_eq!(drop_dots(b"/a/./b//c/"), b"/a/b/c");
        assert_eq!(drop_dots(b"/./"), b"/");
        assert_eq!(drop_dots(b"/a/../b"), b"/a/../b");
    }

    #[test]
    fn paths_below_the_prefix_resolve_lexically() {
        assert_eq!(show("/udax", "/udax"), "udax:/");
        assert_eq!(show("/udax/a/b/../c", "/udax"), "udax:/a/c");
        assert_eq!(show("/udax/./a//", "/udax"), "udax:/a");
        assert_eq!(show("/x/../udax/f", "/udax"), "udax:/f");
        assert_eq!(show("/udaxy/f", "/udax"), "as written");
        assert_eq!(show("/etc/../tmp", "/udax"), "as written");
    }

    #[test]
    fn dotdot_out_of_the_mount_root_continues_from_the_prefix_parent() {
        assert_eq!(show("/udax/..", "/udax"), "host:/");
        assert_eq!(
            show("/udax/a/../../etc/passwd", "/udax"),
            "host:/etc/passwd"
        );
        // The host part is left to the kernel (its symbolic links).
        assert_eq!(show("/udax/../x/../y", "/udax"), "host:/x/../y");
        assert_eq!(show("/mnt/udax/../z", "/mnt/udax"), "host:/mnt/z");
        // Back in through the prefix.
        assert_eq!(show("/udax/a/../../udax/b", "/udax"), "udax:/b");
        assert_eq!(show("/mnt/udax/../udax/../udax", "/mnt/udax"), "udax:/");
    }
}
