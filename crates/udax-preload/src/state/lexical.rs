//! Paths as text: lexical normalisation (`//`, `.`, `..`; udax has no
//! symbolic links), the mount prefix, the kernel's links to descriptors
//! (`/proc/self/fd/N`). Nothing here looks at the file system or the
//! descriptor table (that is `path`).

use crate::boundary::entry::{unsupported, Errno, R};
use libc::c_int;
use std::ffi::CString;

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
fn place(abs: String, mount: &str) -> R<Target> {
    let m = mount;
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
pub fn drop_dots(p: &[u8]) -> Vec<u8> {
    join(
        p.split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b"."),
    )
}

/// Where a udax directory's `..` goes: the directory the walk really
/// reached (its canonical inner path), or, when a symbolic link on the way
/// left the file system, the host path it continues at (absolute, or
/// relative to the mount point when it begins with `..`).
pub enum Real {
    Udax(String),
    Escaped(String),
}

/// Resolve an absolute path (`.` and empty components dropped) that may pass
/// through the mount prefix. Below the prefix, a `..` goes back from where
/// the path up to it really leads (`real`: symbolic links followed; it must
/// exist and be a directory, so "d/missing/.." is ENOENT and "d/file/.."
/// ENOTDIR, as the kernel's walk); a `..` at the mount's root leaves it for
/// the prefix's parent on the host, and the rest of the path is resolved
/// from there as written (it may even come back in). Any other host path is
/// normalised lexically only to see whether it names udax (`/x/../udax/f`);
/// if not, the kernel resolves it as written (`None`).
pub fn resolve_abs(
    p: &[u8],
    mount: &str,
    real: &mut dyn FnMut(&str) -> R<Real>,
) -> R<Option<Target>> {
    let m = mount.as_bytes();
    let Some(rest) = p.strip_prefix(m).filter(|r| r.is_empty() || r[0] == b'/') else {
        return Ok(match place(normalise(p), mount)? {
            Target::Udax(inner) => Some(Target::Udax(check_utf8(inner)?)),
            _ => None,
        });
    };
    let mut inner: Vec<Vec<u8>> = Vec::new();
    let mut comps = rest.split(|&b| b == b'/').filter(|c| !c.is_empty());
    // The host path the rest of `comps` continues from, if it leaves udax.
    let mut out_at: Option<Vec<u8>> = None;
    for c in comps.by_ref() {
        if c != b".." {
            inner.push(c.to_vec());
            continue;
        }
        if inner.is_empty() {
            // Out of the mount's root: on the host, from the prefix's parent.
            out_at = Some(parent(mount).as_bytes().to_vec());
            break;
        }
        let here =
            check_utf8(String::from_utf8_lossy(&join(inner.iter().map(|c| &c[..]))).into_owned())?;
        match real(&here)? {
            Real::Udax(r) => {
                inner = r
                    .as_bytes()
                    .split(|&b| b == b'/')
                    .filter(|c| !c.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect();
                inner.pop();
            }
            Real::Escaped(e) => {
                // A link on the way left udax: its `..` is the host's.
                let mut host = if e.starts_with('/') {
                    e.into_bytes()
                } else {
                    format!("{mount}/{e}").into_bytes()
                };
                host.extend_from_slice(b"/..");
                out_at = Some(host);
                break;
            }
        }
    }
    if let Some(mut host) = out_at {
        for c in comps {
            host.push(b'/');
            host.extend_from_slice(c);
        }
        let host = drop_dots(&host);
        return Ok(Some(match resolve_abs(&host, mount, real)? {
            Some(t) => t,
            None => Target::HostPath(CString::new(host).map_err(|_| Errno(libc::EINVAL))?),
        }));
    }
    let path = String::from_utf8_lossy(&join(inner.iter().map(|c| &c[..]))).into_owned();
    Ok(Some(Target::Udax(check_utf8(path)?)))
}

/// The inner path `inner` of the written path `written`, with `/` if that
/// ends in a slash (it must name a directory: "f/" of a file is ENOTDIR),
/// or `/.` if it ends in `.` or `..` (it names a directory, not an entry
/// to create, remove or rename). The lexical resolution dropped both.
pub fn with_dir_suffix(inner: String, written: &[u8]) -> String {
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

/// An inner path without the suffix `path::classify` keeps: "/d/" and "/d/."
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

    /// "udax:/inner", "host:/path", or "as written".
    /// No symbolic links: every directory's real path is its own.
    fn own(p: &str) -> R<Real> {
        Ok(Real::Udax(p.to_string()))
    }

    fn show(p: &str, mount: &str) -> String {
        match resolve_abs(&drop_dots(p.as_bytes()), mount, &mut own) {
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
            let got = match resolve_abs(&drop_dots(p.as_bytes()), mount, &mut own) {
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

    #[test]
    fn dotdot_after_a_link_goes_back_from_where_the_link_led() {
        // /udax/a/l is a link to /udax/b/c; /udax/out a link to /tmp/x.
        let mut real = |p: &str| -> R<Real> {
            Ok(match p {
                "/a/l" => Real::Udax("/b/c".into()),
                "/out" => Real::Escaped("/tmp/x".into()),
                "/up" => Real::Escaped("../elsewhere".into()),
                "/a/missing" => return Err(Errno(libc::ENOENT)),
                p => Real::Udax(p.into()),
            })
        };
        let mut show = |p: &str| match resolve_abs(&drop_dots(p.as_bytes()), "/udax", &mut real) {
            Ok(Some(Target::Udax(i))) => format!("udax:{i}"),
            Ok(Some(Target::HostPath(h))) => format!("host:{}", h.to_str().unwrap()),
            Ok(_) => "as written".into(),
            Err(Errno(e)) => format!("errno {e}"),
        };
        assert_eq!(show("/udax/a/l/../f"), "udax:/b/f");
        assert_eq!(show("/udax/a/l/../../g"), "udax:/g");
        assert_eq!(show("/udax/out/../y"), "host:/tmp/x/../y");
        assert_eq!(show("/udax/up/../z"), "host:/elsewhere/../z");
        assert_eq!(
            show("/udax/a/missing/../f"),
            format!("errno {}", libc::ENOENT)
        );
    }
}
