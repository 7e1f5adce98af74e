//! `udax mount` and `udax umount` (docs/fuse.md): a kernel mount of a udax
//! device through FUSE, served by the device's owner.
//!
//! The mount is made here, with the caller's privileges: `mount(2)` as
//! root, the set-user-ID `fusermount3` otherwise (it hands back the
//! `/dev/fuse` descriptor over a socket). The descriptor then goes to the
//! owner ([`Client::serve_fuse`]), started if none runs, and this process
//! keeps no copy: the connection lives exactly as long as the owner does.
//! A mount whose owner died answers `ENOTCONN`; [`mount`] finds it so and
//! detaches it (a lazy unmount) before it mounts again.

use super::{Client, ConnectOptions};
use crate::fs::{Error, Result};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to mount.
#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    /// Every change fails with EROFS (the mount is read-only too).
    pub read_only: bool,
    /// Users other than the mounting one may use the mount (as FUSE's
    /// `allow_other`; for a user, `/etc/fuse.conf` must allow it).
    pub allow_other: bool,
}

impl MountOptions {
    /// Parse `-o` options: `ro`, `rw`, `allow_other`, and
    /// `default_permissions` (always on).
    pub fn parse(opts: &str) -> Result<MountOptions> {
        let mut o = MountOptions::default();
        for w in opts.split(',').filter(|w| !w.is_empty()) {
            match w {
                "ro" => o.read_only = true,
                "rw" => o.read_only = false,
                "allow_other" => o.allow_other = true,
                "default_permissions" => {}
                _ => {
                    return Err(Error::Remote {
                        errno: libc::EINVAL,
                        message: format!(
                            "unknown mount option {w:?} (udax knows ro, rw, allow_other, default_permissions)"
                        ),
                    })
                }
            }
        }
        Ok(o)
    }
}

/// What is mounted at a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountState {
    /// No udax mount (nothing, or another file system).
    None,
    /// A udax mount whose owner answers.
    Live,
    /// A udax mount whose owner is gone: every access fails with ENOTCONN.
    Stale,
}

/// The file-system type udax mounts show (`/proc/mounts`).
pub const FSTYPE: &str = "fuse.udax";

/// `dir` made absolute without following its last component (a stale
/// mount cannot be followed: ENOTCONN).
fn absolute(dir: &Path) -> Result<PathBuf> {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().map_err(Error::Io)?.join(dir)
    };
    match (abs.parent(), abs.file_name()) {
        (Some(p), Some(n)) => Ok(p.canonicalize().map_err(Error::Io)?.join(n)),
        _ => Ok(abs),
    }
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The type of the file system mounted last at `dir` (the one seen there),
/// if any is.
fn mounted_type(dir: &Path) -> Result<Option<String>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(Error::Io)?;
    let want = dir.to_string_lossy();
    let mut found = None;
    for line in info.lines() {
        let Some((a, b)) = line.split_once(" - ") else {
            continue;
        };
        let point = a.split(' ').nth(4).map(unescape);
        if point.as_deref() == Some(&*want) {
            found = b.split(' ').next().map(str::to_string);
        }
    }
    Ok(found)
}

/// What is mounted at `dir`.
pub fn mount_state(dir: &Path) -> Result<MountState> {
    let dir = absolute(dir)?;
    if mounted_type(&dir)?.as_deref() != Some(FSTYPE) {
        return Ok(MountState::None);
    }
    match std::fs::metadata(&dir) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(MountState::Stale),
        _ => Ok(MountState::Live),
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The `fusermount3` to run (`$FUSERMOUNT_PATH`, else found on `PATH`).
fn fusermount() -> PathBuf {
    std::env::var_os("FUSERMOUNT_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fusermount3"))
}

fn run_fusermount(args: &[&std::ffi::OsStr], commfd: Option<i32>) -> Result<()> {
    let mut cmd = Command::new(fusermount());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(fd) = commfd {
        cmd.env("_FUSE_COMMFD", fd.to_string());
    }
    let out = cmd.output().map_err(|e| Error::Remote {
        errno: e.raw_os_error().unwrap_or(libc::ENOENT),
        message: format!(
            "running {}: {e} (install fuse3, or mount as root)",
            fusermount().display()
        ),
    })?;
    if !out.status.success() {
        return Err(Error::Remote {
            errno: libc::EPERM,
            message: format!(
                "{} failed: {}",
                fusermount().display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// Unmount the udax mount at `dir`: `lazy` detaches it at once even if it
/// is busy (as `umount -l`; it goes when its last user does).
pub fn unmount(dir: &Path, lazy: bool) -> Result<()> {
    let dir = absolute(dir)?;
    if mounted_type(&dir)?.as_deref() != Some(FSTYPE) {
        return Err(Error::Remote {
            errno: libc::EINVAL,
            message: format!("{} is not a udax mount", dir.display()),
        });
    }
    if is_root() {
        let flags = if lazy {
            rustix::mount::UnmountFlags::DETACH
        } else {
            rustix::mount::UnmountFlags::empty()
        };
        rustix::mount::unmount(&dir, flags).map_err(|e| Error::Io(e.into()))
    } else {
        let mut args: Vec<&std::ffi::OsStr> = vec!["-u".as_ref()];
        if lazy {
            args.push("-z".as_ref());
        }
        args.push("--".as_ref());
        args.push(dir.as_os_str());
        run_fusermount(&args, None)
    }
}

/// Make the kernel mount at `dir` and return its `/dev/fuse` connection.
fn kernel_mount(device: &Path, dir: &Path, opts: &MountOptions) -> Result<OwnedFd> {
    if is_root() {
        let fd = rustix::fs::open(
            "/dev/fuse",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::Remote {
            errno: e.raw_os_error(),
            message: format!("/dev/fuse: {e} (is the fuse module loaded?)"),
        })?;
        let mut data = format!(
            "fd={},rootmode=40000,user_id={},group_id={},default_permissions",
            fd.as_raw_fd(),
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw()
        );
        if opts.allow_other {
            data.push_str(",allow_other");
        }
        let mut flags = rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV;
        if opts.read_only {
            flags |= rustix::mount::MountFlags::RDONLY;
        }
        let data = CString::new(data).map_err(|_| Error::Invalid("NUL in mount options"))?;
        rustix::mount::mount(device, dir, FSTYPE, flags, data.as_c_str()).map_err(|e| {
            Error::Remote {
                errno: e.raw_os_error(),
                message: format!("mount {}: {e}", dir.display()),
            }
        })?;
        return Ok(fd);
    }
    // fusermount3 mounts for a user and sends the connection back over
    // the socket named by _FUSE_COMMFD.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(Error::Io)?;
    // Inherited by fusermount3: a copy without close-on-exec.
    let inherited = rustix::io::dup(theirs.as_fd()).map_err(|e| Error::Io(e.into()))?;
    let mut o = format!(
        "default_permissions,fsname={},subtype=udax",
        device.display().to_string().replace(',', "_")
    );
    if opts.allow_other {
        o.push_str(",allow_other");
    }
    if opts.read_only {
        o.push_str(",ro");
    }
    let r = run_fusermount(
        &["-o".as_ref(), o.as_ref(), "--".as_ref(), dir.as_os_str()],
        Some(inherited.as_raw_fd()),
    );
    drop(inherited);
    drop(theirs);
    r?;
    match crate::proto::wire::recv(ours.as_fd()).map_err(Error::Io)? {
        Some((_, Some(fd))) => Ok(fd),
        _ => Err(Error::Remote {
            errno: libc::EIO,
            message: "fusermount3 mounted but sent no /dev/fuse descriptor".into(),
        }),
    }
}

/// Mount the udax device at `device` on directory `dir`, served by the
/// device's owner (connected, or started, with `connect`). A stale udax
/// mount at `dir` (its owner died) is detached first; a live one is
/// refused (EBUSY).
pub fn mount(
    device: &Path,
    dir: &Path,
    opts: &MountOptions,
    connect: &ConnectOptions,
) -> Result<()> {
    let dir = absolute(dir)?;
    match mount_state(&dir)? {
        MountState::Live => {
            return Err(Error::Busy(format!(
                "{} is already a udax mount (udax umount it first)",
                dir.display()
            )))
        }
        MountState::Stale => {
            tracing::info!("{}: detaching a mount whose owner is gone", dir.display());
            unmount(&dir, true)?;
        }
        MountState::None => {}
    }
    if !std::fs::metadata(&dir).map_err(Error::Io)?.is_dir() {
        return Err(Error::NotDir);
    }
    let client = Client::connect(
        device,
        &ConnectOptions {
            write: !opts.read_only,
            ..connect.clone()
        },
    )?;
    let fd = kernel_mount(device, &dir, opts)?;
    if let Err(e) = client.serve_fuse(fd.as_fd(), &dir, opts.read_only) {
        // Nobody serves it: take it away again.
        drop(fd);
        let _ = unmount(&dir, true);
        return Err(e);
    }
    Ok(())
}
