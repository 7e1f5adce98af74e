//! udax descriptors and the working directory across fork and exec, when
//! the file system is served by an owner (docs/preload.md, "fork and exec").
//!
//! * **fork**: just before it (a `pthread_atfork` prepare handler), the
//!   parent offers each of its open files to the owner (`Share`: the
//!   offset moves to the owner, a token holds the description). A child's
//!   first use of an inherited descriptor adopts the description through
//!   the child's own connection, so parent and child share the offset and
//!   the OFD and flock locks, as after a kernel fork. Directories need no
//!   hand-over (they are held by inode number and birth time).
//! * **exec**: the exec family (`calls::exec`) writes `UDAX_INHERIT` into
//!   the new image's environment: the virtual working directory and, for
//!   each descriptor without `FD_CLOEXEC`, its number, status flags and a
//!   token (a file) or path and position (a directory). The kernel fds
//!   that reserve those numbers are kept open across the exec, and the new
//!   image adopts them at load ([`at_load`]).
//!
//! Embedded (`UDAX_MOUNT_OPTIONS=embedded`) nothing is handed over: the
//! device belongs to the process that mounted it.

use crate::boundary::entry::{init_log, unsupported, Errno, R};
use crate::state::fds::{self, Desc, Kind};
use crate::state::{mount, path};
use libc::c_int;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use udax::vfs::{VDir, VFile, Vfs};

/// The environment variable an exec hands the state over in.
pub const VAR: &str = "UDAX_INHERIT";

/// This process has taken a POSIX record lock (an exec then hands its
/// locks over: they belong to the process, which the exec keeps).
static POSIX_LOCKS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Note that this process took a POSIX record lock.
pub fn took_posix_locks() {
    // ORDERING: Relaxed: read by this process's exec, after the lock call
    // returned (program order on one thread, or the program's own
    // synchronisation between threads).
    POSIX_LOCKS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Tokens the last fork offered, by description key (`Desc::key`): a
/// forked child adopts from them (each once).
static FORK_TOKENS: Mutex<Option<HashMap<usize, u64>>> = Mutex::new(None);

/// Offer `d`'s open file to another process: its offset moves to the owner
/// first (a process that shares a description reads and moves the one
/// offset, as the kernel's). A token, held by the owner until adopted.
fn share(d: &Desc) -> R<u64> {
    let r = d.remote()?;
    let pos = d.pos.lock().unwrap_or_else(|p| p.into_inner());
    if !d.owner_pos() {
        r.seek(0, i64::try_from(*pos).map_err(|_| Errno(libc::EOVERFLOW))?)?;
        d.set_owner_pos();
    }
    drop(pos);
    Ok(r.share()?)
}

/// `d`'s token in `tokens`, offered to the owner the first time (one token
/// per description, however many descriptors share it).
fn token(tokens: &mut HashMap<usize, u64>, d: &Desc) -> R<u64> {
    if let Some(t) = tokens.get(&d.key()) {
        return Ok(*t);
    }
    let t = share(d)?;
    tokens.insert(d.key(), t);
    Ok(t)
}

/// Before fork (inside the shim; `lib.rs`'s prepare handler): offer every
/// open file of this process to the child about to be made (a round trip
/// each; nothing when no udax file is open). Returns whether this process
/// is attached to an owner (else nothing crosses fork).
pub fn before_fork() -> bool {
    let Some(Vfs::Remote(_)) = mount::attached() else {
        return false;
    };
    if fds::count() == 0 {
        return true;
    }
    let mut tokens = HashMap::new();
    for (fd, d, _) in fds::all() {
        if !matches!(*d.kind, Kind::File(VFile::Remote(_))) {
            continue;
        }
        // One inherited itself (this process is a child that has not
        // used it) is adopted first, so its own child gets a token too.
        let Some(Ok(d)) = lookup(fd) else { continue };
        if let Err(Errno(e)) = token(&mut tokens, &d) {
            tracing::warn!(
                "udax-preload: fork: {} not handed to the child (errno {e})",
                d.path_hint()
            );
        }
    }
    *FORK_TOKENS.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokens);
    true
}

/// The description behind udax fd `fd` (as `fds::lookup`); in a forked
/// child, an inherited file's is adopted first.
pub fn lookup(fd: c_int) -> Option<R<Arc<Desc>>> {
    let d = fds::get(fd)?;
    if d.is_own() || !matches!(*d.kind, Kind::File(VFile::Remote(_))) {
        return fds::lookup(fd);
    }
    Some(adopt_forked(fd, &d))
}

/// A forked child's own copy of inherited description `d` (every
/// descriptor of it is switched over).
fn adopt_forked(fd: c_int, d: &Arc<Desc>) -> R<Arc<Desc>> {
    let mut g = FORK_TOKENS.lock().unwrap_or_else(|p| p.into_inner());
    // Adopted meanwhile by another thread of this child?
    if let Some(now) = fds::get(fd) {
        if !Arc::ptr_eq(&now, d) {
            return Ok(now);
        }
    }
    let token = g.as_mut().and_then(|m| m.remove(&d.key())).ok_or_else(|| {
        unsupported(
            "descriptor",
            &format!("udax fd {fd} inherited across fork was not handed over"),
            libc::EIO,
        )
    })?;
    let Vfs::Remote(c) = mount::fs()? else {
        return Err(Errno(libc::EIO));
    };
    let f = c.adopt(token)?;
    let new = Desc::adopted(Kind::File(VFile::Remote(f)), d.path_hint(), d.status(), 0);
    fds::replace(d, &new);
    Ok(new)
}

/// Hex, for paths inside the record (any byte but NUL may be in a name).
fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// What an exec hands over, and the kernel fds to close on exec again if
/// the exec fails.
pub struct Handover {
    pub record: String,
    kept: Vec<c_int>,
    /// The token of the POSIX record locks handed over, if any.
    locks: Option<u64>,
}

impl Handover {
    /// The exec failed: the descriptors and the locks are this process's
    /// again.
    pub fn undo(self) {
        for fd in self.kept {
            fds::set_kernel_cloexec(fd, true);
        }
        if let (Some(t), Ok(Vfs::Remote(c))) = (self.locks, mount::fs()) {
            if let Err(e) = c.adopt_locks(t) {
                tracing::warn!("udax-preload: exec failed and its record locks are lost: {e}");
            }
        }
    }
}

/// Would an exec now hand anything over (a udax working directory or
/// descriptor)? Cheap: no round trip.
pub fn anything_to_hand_over() -> bool {
    fds::count() > 0 || path::cwd_inner().is_some()
}

/// The record for an exec about to happen (`None`: nothing to hand over,
/// the environment stays as it is). Through an owner only.
pub fn before_exec() -> Option<Handover> {
    let cwd = path::cwd_inner();
    if fds::count() == 0 && cwd.is_none() {
        return None;
    }
    let Ok(Vfs::Remote(c)) = mount::fs() else {
        tracing::warn!(
            "udax-preload: exec: udax descriptors and the working directory are not handed \
             to the new program (embedded mount)"
        );
        return None;
    };
    let mut files: Vec<Arc<Desc>> = Vec::new();
    let mut parts = vec!["1".to_string()];
    if let Some(Ok(p)) = cwd {
        parts.push(format!("c,{}", hex(&p)));
    }
    let mut tokens: HashMap<usize, u64> = HashMap::new();
    let mut kept = Vec::new();
    for (fd, _, cloexec) in fds::all() {
        if cloexec {
            continue;
        }
        let d = match lookup(fd) {
            Some(Ok(d)) => d,
            _ => continue,
        };
        let entry = match &*d.kind {
            Kind::File(VFile::Remote(_)) => {
                let t = match token(&mut tokens, &d) {
                    Ok(t) => t,
                    Err(Errno(e)) => {
                        tracing::warn!(
                            "udax-preload: exec: udax fd {fd} not handed over (errno {e})"
                        );
                        continue;
                    }
                };
                files.push(d.clone());
                format!("f,{fd},{},{t},{}", d.status(), hex(&d.path_hint()))
            }
            Kind::Dir(VDir::Remote { .. }) => {
                let Ok(p) = d.path() else { continue };
                let pos = *d.pos.lock().unwrap_or_else(|p| p.into_inner());
                format!("d,{fd},{},{pos},{}", d.status(), hex(&p))
            }
            _ => continue,
        };
        parts.push(entry);
        fds::set_kernel_cloexec(fd, false);
        kept.push(fd);
    }
    if parts.len() == 1 {
        return None;
    }
    // ORDERING: as in `took_posix_locks`.
    let locks = if POSIX_LOCKS.load(std::sync::atomic::Ordering::Relaxed) && !files.is_empty() {
        let refs: Vec<&udax::client::RemoteFile> = files
            .iter()
            .filter_map(|d| match &*d.kind {
                Kind::File(VFile::Remote(f)) => Some(f),
                _ => None,
            })
            .collect();
        match c.share_locks(&refs) {
            Ok(t) => {
                parts.push(format!("l,{t}"));
                Some(t)
            }
            Err(e) => {
                tracing::warn!("udax-preload: exec: record locks not handed over ({e})");
                None
            }
        }
    } else {
        None
    };
    Some(Handover {
        record: parts.join(";"),
        kept,
        locks,
    })
}

/// At load of a new image: take over what the exec handed over (if
/// anything), then forget the record (a later exec writes its own).
pub fn at_load() {
    let Some(rec) = std::env::var_os(VAR) else {
        return;
    };
    // Removed at load, while the process is single threaded and before any
    // other code reads the environment.
    std::env::remove_var(VAR);
    init_log();
    let rec = rec.to_string_lossy().into_owned();
    if let Err(Errno(e)) = take_over(&rec) {
        tracing::warn!(
            "udax-preload: the udax descriptors handed over by exec are lost (errno {e})"
        );
    }
}

fn bad() -> Errno {
    Errno(libc::EINVAL)
}

fn take_over(rec: &str) -> R<()> {
    let mut it = rec.split(';');
    if it.next() != Some("1") {
        return Err(bad());
    }
    let fs = mount::fs()?;
    let Vfs::Remote(c) = &fs else {
        return Err(Errno(libc::EIO));
    };
    let mut adopted: HashMap<u64, Arc<Desc>> = HashMap::new();
    for part in it {
        let f: Vec<&str> = part.split(',').collect();
        match f.as_slice() {
            ["c", p] => {
                let p = unhex(p).ok_or_else(bad)?;
                let dir = fs.dir_ref(&p)?;
                path::set_cwd(Some((p, dir)));
            }
            ["f", fd, status, token, p] => {
                let fd: c_int = fd.parse().map_err(|_| bad())?;
                let status: c_int = status.parse().map_err(|_| bad())?;
                let token: u64 = token.parse().map_err(|_| bad())?;
                if !kernel_fd_open(fd) {
                    continue;
                }
                let d = match adopted.get(&token) {
                    Some(d) => d.clone(),
                    None => {
                        let file = c.adopt(token)?;
                        let p = unhex(p).ok_or_else(bad)?;
                        let d = Desc::adopted(Kind::File(VFile::Remote(file)), p, status, 0);
                        adopted.insert(token, d.clone());
                        d
                    }
                };
                fds::adopt_at(fd, d);
            }
            ["l", token] => {
                let token: u64 = token.parse().map_err(|_| bad())?;
                c.adopt_locks(token)?;
            }
            ["d", fd, status, pos, p] => {
                let fd: c_int = fd.parse().map_err(|_| bad())?;
                let status: c_int = status.parse().map_err(|_| bad())?;
                let pos: u64 = pos.parse().map_err(|_| bad())?;
                if !kernel_fd_open(fd) {
                    continue;
                }
                let p = unhex(p).ok_or_else(bad)?;
                let dir = fs.dir_ref(&p)?;
                let d = Desc::new(Kind::Dir(dir), p, status);
                *d.pos.lock().unwrap_or_else(|p| p.into_inner()) = pos;
                fds::adopt_at(fd, d);
            }
            _ => return Err(bad()),
        }
    }
    Ok(())
}

/// `fd` is open in this process (the placeholder the old image kept).
fn kernel_fd_open(fd: c_int) -> bool {
    // SAFETY: F_GETFD takes no argument and only reads the fd table.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_through_hex() {
        for p in ["/", "/a b/ü;,=", ""] {
            assert_eq!(unhex(&hex(p)).as_deref(), Some(p));
        }
        assert_eq!(unhex("4"), None);
        assert_eq!(unhex("zz"), None);
    }
}
