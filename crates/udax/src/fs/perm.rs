//! Permission checks for a caller other than this process: the owner of a
//! device serves many processes and checks each call with the caller's
//! credentials, as the kernel's `generic_permission` and `may_delete` do
//! (docs/multiprocess.md, "Security"). An [`Fs`] made by [`Fs::as_caller`]
//! checks; a plain mount (embedded, one process acting as itself) does not.
//!
//! This protects against accidents, not malice: a client holds the device
//! fd and could write any byte of it.

use super::{Error, Fs, Result};
use crate::format::{Attr, S_IFDIR, S_IFMT};

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

impl Cred {
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
        if self.is_root() {
            return want & X == 0 || attr.mode & S_IFMT == S_IFDIR || attr.mode & 0o111 != 0;
        }
        let bits = if self.uid == attr.uid {
            attr.mode >> 6
        } else if self.in_group(attr.gid) {
            attr.mode >> 3
        } else {
            attr.mode
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
            cred: Some(std::sync::Arc::new(cred)),
        }
    }

    /// The caller's credentials, if this view checks them.
    pub fn caller(&self) -> Option<&Cred> {
        self.cred.as_deref()
    }

    /// `want` access to an inode of `attr`, for the caller (EACCES).
    pub(crate) fn permit(&self, attr: &Attr, want: u32, what: &'static str) -> Result<()> {
        match &self.cred {
            Some(c) if !c.permits(attr, want) => Err(Error::Access(what)),
            _ => Ok(()),
        }
    }

    /// Removing (or renaming away) an entry for `target` from a directory
    /// of `dir`: write and search on the directory, and under the sticky
    /// bit ownership of the entry or the directory (EPERM).
    pub(crate) fn permit_remove(&self, dir: &Attr, target: &Attr) -> Result<()> {
        let Some(c) = &self.cred else { return Ok(()) };
        self.permit(dir, W | X, "write permission on the directory")?;
        if dir.mode & S_ISVTX != 0 && !c.is_root() && c.uid != dir.uid && c.uid != target.uid {
            return Err(Error::NotPermitted(
                "the directory is sticky and the entry is another user's",
            ));
        }
        Ok(())
    }

    /// Changing an inode's mode or times: only its owner or root (EPERM).
    pub(crate) fn permit_owner(&self, attr: &Attr) -> Result<()> {
        match &self.cred {
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
        let (uid, gid) = match &self.cred {
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
