//! Permission checks for a caller other than this process: the owner of a
//! device serves many processes and checks each call with the caller's
//! credentials, as the kernel's `generic_permission` and `may_delete` do
//! (docs/multiprocess.md, "Security"). An [`Fs`] made by [`Fs::as_caller`]
//! checks with fixed credentials; one made by [`Fs::as_thread_caller`]
//! (the shim's embedded mount) with the calling thread's current ones, as
//! the kernel checks every call; a plain mount (the library used directly,
//! one process acting as itself) does not.
//!
//! This protects against accidents, not malice: a client holds the device
//! fd and could write any byte of it.

use super::{Error, Fs, Result};
use crate::format::{Attr, S_IFDIR, S_IFMT};
use std::borrow::Cow;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Who is asking: the caller's uid, gid and supplementary groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Read, write and search/execute, as the mode's bits.
pub const R: u32 = 4;
pub const W: u32 = 2;
pub const X: u32 = 1;

/// The sticky bit of a directory: only a name's owner, the directory's
/// owner or root may remove or rename it.
const S_ISVTX: u32 = 0o1000;
/// The set-group-ID bit: a directory's new entries take its group.
pub(crate) const S_ISGID: u32 = 0o2000;
/// The set-user-ID bit.
pub(crate) const S_ISUID: u32 = 0o4000;

/// Whose credentials a checking [`Fs`] uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// These, for every call ([`Fs::as_caller`]).
    Is(Arc<Cred>),
    /// The calling thread's at each call ([`Fs::as_thread_caller`]).
    Thread,
}

/// Whether [`Cred::of_this_thread`] keeps each thread's credentials
/// between calls ([`keep_credentials_per_thread`]).
static KEEP: AtomicBool = AtomicBool::new(false);
/// How many credential changes were announced ([`credentials_changed`]):
/// a thread's kept credentials are good while it is the count they were
/// read under.
static CHANGES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The credentials this thread read last, under the count of
    /// [`CHANGES`] read before them.
    static KEPT: Cell<Option<(u64, Cred)>> = const { Cell::new(None) };
}

/// From now on [`Cred::of_this_thread`] keeps what it reads per thread
/// until [`credentials_changed`] is called. Only for a process in which
/// every change of credentials announces itself: the preload shim, which
/// interposes libc's `set*id`, `setgroups`, `initgroups`, `setfs*id`,
/// `unshare` and `setns` to do so (a raw system call that changes them is
/// not seen, as the shim sees no raw file-system call either).
pub fn keep_credentials_per_thread() {
    // ORDERING: Relaxed: a switch; a thread that reads it late reads its
    // credentials afresh, which is always right.
    KEEP.store(true, Ordering::Relaxed);
}

/// Some thread's credentials may have changed: every thread reads its own
/// again at its next [`Cred::of_this_thread`]. Called after the change
/// returned.
pub fn credentials_changed() {
    // ORDERING: Release, paired with the Acquire in `of_this_thread`: a
    // thread that sees this count started its read after the change.
    CHANGES.fetch_add(1, Ordering::Release);
}

impl Cred {
    /// The calling thread's credentials as the kernel checks a file-system
    /// call with them: its file-system uid and gid (`setfsuid(-1)` and
    /// `setfsgid(-1)` answer them and change nothing) and its
    /// supplementary groups. Three system calls (~0.1 us each,
    /// docs/multiprocess.md), or none while the thread's last read is
    /// still good ([`keep_credentials_per_thread`]); a change made by a
    /// raw system call in one thread shows in that thread only, as in the
    /// kernel.
    pub fn of_this_thread() -> Cred {
        // ORDERING: Relaxed: see `keep_credentials_per_thread`.
        if !KEEP.load(Ordering::Relaxed) {
            return Cred::read_now();
        }
        // ORDERING: Acquire, paired with `credentials_changed`'s Release;
        // read before the credentials, so a change that lands between
        // the two leaves them under an old count, read again next time.
        let now = CHANGES.load(Ordering::Acquire);
        // Taken out and put back (not borrowed): a signal handler's call
        // in between finds nothing kept and reads for itself.
        let kept = KEPT.try_with(Cell::take).ok().flatten();
        let cred = match kept {
            Some((at, cred)) if at == now => cred,
            _ => Cred::read_now(),
        };
        let _ = KEPT.try_with(|k| k.set(Some((now, cred.clone()))));
        cred
    }

    /// The calling thread's credentials read from the kernel. The raw
    /// system calls: the shim's `setfsuid` and `setfsgid` announce
    /// changes ([`credentials_changed`]), and a read is none.
    #[allow(
        unsafe_code,
        reason = "the file-system ids have no safe wrapper (setfsuid, setfsgid), and getgroups fills a vector's spare room"
    )]
    fn read_now() -> Cred {
        // SAFETY: setfsuid/setfsgid with an invalid id (-1) change nothing
        // and return the current id; no memory is involved.
        let (uid, gid) = unsafe {
            (
                libc::syscall(libc::SYS_setfsuid, u32::MAX),
                libc::syscall(libc::SYS_setfsgid, u32::MAX),
            )
        };
        let mut groups: Vec<u32> = Vec::with_capacity(16);
        loop {
            let cap = groups.capacity();
            // SAFETY: getgroups writes at most `cap` ids into the vector's
            // spare capacity; its length is set to what was written.
            let n = unsafe { libc::getgroups(cap as i32, groups.as_mut_ptr()) };
            if n >= 0 {
                // SAFETY: the first `n` (<= cap) elements were written.
                unsafe { groups.set_len(n as usize) };
                break;
            }
            // EINVAL: more groups than room (they changed since asked).
            // SAFETY: getgroups(0, NULL) only counts.
            let want = unsafe { libc::getgroups(0, std::ptr::null_mut()) }.max(0) as usize;
            groups.reserve(want.max(cap * 2));
        }
        Cred {
            uid: uid as u32,
            gid: gid as u32,
            groups,
        }
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    pub(crate) fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// May this caller access an inode of `attr` for `want` (a mix of
    /// [`R`], [`W`], [`X`])? Root may do anything but execute a file that
    /// no one may execute (`CAP_DAC_OVERRIDE`).
    pub fn permits(&self, attr: &Attr, want: u32) -> bool {
        self.permits_mode(attr.mode, attr.uid, attr.gid, want)
    }

    /// [`Cred::permits`] for an inode `stat` shows (the shim's `access`).
    pub fn permits_stat(&self, st: &super::Stat, want: u32) -> bool {
        self.permits_mode(st.mode, st.uid, st.gid, want)
    }

    fn permits_mode(&self, mode: u32, uid: u32, gid: u32, want: u32) -> bool {
        if self.is_root() {
            return want & X == 0 || mode & S_IFMT == S_IFDIR || mode & 0o111 != 0;
        }
        let bits = if self.uid == uid {
            mode >> 6
        } else if self.in_group(gid) {
            mode >> 3
        } else {
            mode
        } & 7;
        bits & want == want
    }
}

impl Fs {
    /// This file system as seen by `cred`: every namespace call checks the
    /// caller's permissions (search on each directory walked, write and
    /// search on a directory changed, the sticky bit, read or write on a
    /// file opened, ownership for chmod and utimes), and new files and
    /// directories belong to the caller (the group of a set-group-ID
    /// directory).
    pub fn as_caller(&self, cred: Cred) -> Fs {
        Fs {
            inner: self.inner.clone(),
            cred: Some(Caller::Is(Arc::new(cred))),
        }
    }

    /// This file system as seen by whichever thread calls it: as
    /// [`Fs::as_caller`], with the calling thread's credentials at each
    /// call ([`Cred::of_this_thread`]), as the kernel checks a call with
    /// the thread's current file-system ids and groups (a program that
    /// drops privileges with `setgroups`, `setegid`, `seteuid` or
    /// `setfsuid` is checked as what it became). Files opened through it
    /// check their own calls (`fchmod`, `fchown`, `futimens`) the same way.
    pub fn as_thread_caller(&self) -> Fs {
        Fs {
            inner: self.inner.clone(),
            cred: Some(Caller::Thread),
        }
    }

    /// The fixed credentials this view checks with ([`Fs::as_caller`]);
    /// `None` for a plain mount and for [`Fs::as_thread_caller`].
    pub fn caller(&self) -> Option<&Cred> {
        match &self.cred {
            Some(Caller::Is(c)) => Some(c),
            _ => None,
        }
    }

    /// This view with the calling thread's credentials read once
    /// ([`Fs::as_thread_caller`]: a call that checks several times, a path
    /// walk, reads them once); any other view as it is.
    pub fn for_this_call(&self) -> Cow<'_, Fs> {
        match &self.cred {
            Some(Caller::Thread) => Cow::Owned(self.as_caller(Cred::of_this_thread())),
            _ => Cow::Borrowed(self),
        }
    }

    /// Whether `other` checks with the same credentials as this view.
    pub(crate) fn same_caller(&self, other: &Fs) -> bool {
        self.cred == other.cred
    }

    /// The credentials a check uses now: `None` for a plain mount.
    pub(crate) fn who(&self) -> Option<Cow<'_, Cred>> {
        match &self.cred {
            None => None,
            Some(Caller::Is(c)) => Some(Cow::Borrowed(&**c)),
            Some(Caller::Thread) => Some(Cow::Owned(Cred::of_this_thread())),
        }
    }

    /// `want` access to an inode of `attr`, for the caller (EACCES).
    pub(crate) fn permit(&self, attr: &Attr, want: u32, what: &'static str) -> Result<()> {
        match self.who() {
            Some(c) if !c.permits(attr, want) => Err(Error::Access(what)),
            _ => Ok(()),
        }
    }

    /// Removing (or renaming away) an entry for `target` from a directory
    /// of `dir`: write and search on the directory, and under the sticky
    /// bit ownership of the entry or the directory (EPERM).
    pub(crate) fn permit_remove(&self, dir: &Attr, target: &Attr) -> Result<()> {
        let Some(c) = self.who() else { return Ok(()) };
        if !c.permits(dir, W | X) {
            return Err(Error::Access("write permission on the directory"));
        }
        if dir.mode & S_ISVTX != 0 && !c.is_root() && c.uid != dir.uid && c.uid != target.uid {
            return Err(Error::NotPermitted(
                "the directory is sticky and the entry is another user's",
            ));
        }
        Ok(())
    }

    /// Changing an inode's mode or times: only its owner or root (EPERM).
    pub(crate) fn permit_owner(&self, attr: &Attr) -> Result<()> {
        match self.who() {
            Some(c) if !c.is_root() && c.uid != attr.uid => {
                Err(Error::NotPermitted("only the owner may change this"))
            }
            _ => Ok(()),
        }
    }

    /// The owner (uid, gid) and extra mode bits of a new inode in a
    /// directory of `dir`: the caller's (or this process's), with the
    /// directory's group and, for a directory, its set-group-ID bit, where
    /// the directory has that bit.
    pub(crate) fn new_owner(&self, dir: &Attr, is_dir: bool) -> (u32, u32, u32) {
        let (uid, gid) = match self.who() {
            Some(c) => (c.uid, c.gid),
            None => (self.inner.uid, self.inner.gid),
        };
        if dir.mode & S_ISGID != 0 {
            (uid, dir.gid, if is_dir { S_ISGID } else { 0 })
        } else {
            (uid, gid, 0)
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn attr(mode: u32, uid: u32, gid: u32) -> Attr {
        Attr {
            mode,
            uid,
            gid,
            ..Default::default()
        }
    }

    #[test]
    fn u_owner_group_and_other_bits_decide_and_root_overrides_but_exec() {
        let user = Cred {
            uid: 1000,
            gid: 100,
            groups: vec![27],
        };
        let f = attr(0o100640, 1000, 27);
        assert!(user.permits(&f, R | W));
        assert!(!user.permits(&f, X));
        let g = attr(0o100640, 5, 27);
        assert!(user.permits(&g, R));
        assert!(!user.permits(&g, W), "group bits via a supplementary group");
        let o = attr(0o100604, 5, 5);
        assert!(user.permits(&o, R) && !user.permits(&o, W));
        // The owner class applies even when it is stricter than others'.
        assert!(!user.permits(&attr(0o100077, 1000, 5), R));
        let root = Cred {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        assert!(root.permits(&attr(0o100000, 5, 5), R | W));
        assert!(!root.permits(&attr(0o100644, 5, 5), X));
        assert!(root.permits(&attr(0o100744, 5, 5), X));
        assert!(
            root.permits(&attr(0o040000, 5, 5), X),
            "search any directory"
        );
    }
}
