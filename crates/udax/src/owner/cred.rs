//! Who may have the device: the peer's credentials against the device
//! file's owner and mode, as `open(2)` would judge them.

use crate::format::Attr;
use crate::fs::perm::{Cred, R, W};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The supplementary groups of process `pid` (its `Groups:` line in
/// `/proc/<pid>/status`). The pid comes from SO_PEERCRED at connect; a
/// process that exited and whose pid was reused meanwhile is not a concern,
/// as the connection is then already closed.
pub fn groups_of(pid: i32) -> std::io::Result<Vec<u32>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(parse_groups(&s))
}

fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Could a process of `uid`, `gid` and `groups` open a file owned by
/// `f_uid`:`f_gid` with mode `mode` for reading (and writing, with
/// `write`)? Root may (as with CAP_DAC_OVERRIDE); otherwise the owner's, the
/// group's or the others' bits decide, in that order, as the kernel's
/// permission check does ([`Cred::permits`]).
pub fn may_open(
    f_uid: u32,
    f_gid: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    groups: &[u32],
    write: bool,
) -> bool {
    let cred = Cred {
        uid,
        gid,
        groups: groups.to_vec(),
    };
    let file = Attr {
        mode,
        uid: f_uid,
        gid: f_gid,
        ..Default::default()
    };
    cred.permits(&file, if write { R | W } else { R })
}

/// `SO_PEERPIDFD` (Linux 6.5; the value of every architecture but mips,
/// parisc and sparc, which udax does not build for).
const SO_PEERPIDFD: i32 = 77;

/// A pidfd of the process at the other end of `sock`: the very process
/// that connected (`SO_PEERPIDFD`), else, on a kernel without it, one
/// opened now for `pid` (its SO_PEERCRED pid: a process that connected and
/// was reaped, its pid reused, before this call would be named wrongly;
/// docs/multiprocess.md, "Security"). `None`: neither could be had (the
/// client's claims of other credentials are then refused).
#[allow(
    unsafe_code,
    reason = "SO_PEERPIDFD has no safe wrapper: getsockopt fills an int"
)]
pub fn peer_pidfd(sock: BorrowedFd<'_>, pid: i32) -> Option<OwnedFd> {
    let mut fd: i32 = -1;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes (one int) into `fd`,
    // which lives across the call; `len` is its size.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut fd as *mut i32).cast(),
            &mut len,
        )
    };
    if rc == 0 && fd >= 0 {
        // SAFETY: the kernel made `fd` for this call; no one else owns it.
        return Some(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let pid = rustix::process::Pid::from_raw(pid)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// Whether the process `pidfd` names has not been reaped (a zombie still
/// holds its pid: no other process can have it).
#[allow(
    unsafe_code,
    reason = "pidfd_send_signal with signal 0 (a test) has no safe wrapper"
)]
fn alive(pidfd: BorrowedFd<'_>) -> bool {
    // SAFETY: signal 0 sends nothing; the info pointer is null, as allowed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0
}

/// The credentials the kernel checks a file-system call of thread `tid`
/// of process `pid` with, from its record (`/proc/<pid>/task/<tid>/status`:
/// the fourth field of `Uid:` and `Gid:` is the file-system id, and
/// `Groups:`). The path names only a thread of `pid`'s own thread group;
/// `pidfd` (that process, taken at connect) must show it unreaped after
/// the read, so the pid was not reused by another process meanwhile.
pub fn thread_cred(pid: i32, tid: u32, pidfd: BorrowedFd<'_>) -> Result<Cred, String> {
    let path = format!("/proc/{pid}/task/{tid}/status");
    let s = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    if !alive(pidfd) {
        return Err(format!("process {pid} is gone"));
    }
    parse_thread_cred(&s).ok_or_else(|| format!("{path}: no Uid:, Gid: or Groups: line"))
}

fn parse_thread_cred(status: &str) -> Option<Cred> {
    let fs_id = |key: &str| -> Option<u32> {
        let l = status.lines().find_map(|l| l.strip_prefix(key))?;
        l.split_whitespace().nth(3)?.parse().ok()
    };
    status.lines().find(|l| l.starts_with("Groups:"))?;
    Some(Cred {
        uid: fs_id("Uid:")?,
        gid: fs_id("Gid:")?,
        groups: parse_groups(status),
    })
}

/// Whether `a` and `b` are the same credentials (groups in any order).
pub fn same(a: &Cred, b: &Cred) -> bool {
    if a.uid != b.uid || a.gid != b.gid || a.groups.len() != b.groups.len() {
        return false;
    }
    if a.groups == b.groups {
        return true;
    }
    let (mut x, mut y) = (a.groups.clone(), b.groups.clone());
    x.sort_unstable();
    y.sort_unstable();
    x == y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_group_and_other_bits_decide_in_that_order() {
        // rw-r----- root:disk
        let (u, g, m) = (0, 6, 0o640);
        assert!(may_open(u, g, m, 0, 0, &[], true), "root");
        assert!(
            may_open(u, g, m, 1000, 100, &[6], false),
            "a member of disk reads"
        );
        assert!(
            !may_open(u, g, m, 1000, 100, &[6], true),
            "but does not write"
        );
        assert!(!may_open(u, g, m, 1000, 100, &[], false), "others nothing");
        // The owner's bits apply to the owner even if the group's are wider.
        assert!(!may_open(1000, 100, 0o070, 1000, 100, &[], false));
        assert!(may_open(1000, 100, 0o600, 1000, 5, &[], true));
    }

    #[test]
    fn groups_come_from_the_status_line() {
        let s = "Name:\tx\nUid:\t1 1 1 1\nGroups:\t4 24 27 \nNgid:\t0\n";
        assert_eq!(parse_groups(s), vec![4, 24, 27]);
        assert_eq!(parse_groups("Name:\tx\n"), Vec::<u32>::new());
    }

    #[test]
    fn the_fs_ids_are_the_fourth_fields() {
        let s = "Name:\tx\nUid:\t1 2 3 4\nGid:\t5 6 7 8\nGroups:\t9 10 \n";
        let c = parse_thread_cred(s).unwrap();
        assert_eq!((c.uid, c.gid, c.groups), (4, 8, vec![9, 10]));
        assert!(parse_thread_cred("Uid:\t1 2 3\nGid:\t5 6 7 8\nGroups:\n").is_none());
        assert!(parse_thread_cred("Uid:\t1 2 3 4\nGid:\t5 6 7 8\n").is_none());
    }

    #[test]
    fn this_thread_reads_as_it_says_it_is() {
        let me = std::process::id() as i32;
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(me).unwrap(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        use std::os::fd::AsFd;
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        let got = thread_cred(me, tid, pidfd.as_fd()).unwrap();
        assert!(same(&got, &Cred::of_this_thread()));
        // A thread id outside the process is not found there.
        assert!(thread_cred(me, u32::MAX / 2, pidfd.as_fd()).is_err());
    }

    #[test]
    fn credentials_compare_with_groups_in_any_order() {
        let c = |groups: Vec<u32>| Cred {
            uid: 1,
            gid: 2,
            groups,
        };
        assert!(same(&c(vec![3, 4]), &c(vec![4, 3])));
        assert!(!same(&c(vec![3, 4]), &c(vec![3])));
        assert!(!same(&c(vec![3, 4]), &c(vec![3, 5])));
    }

    #[test]
    fn this_process_has_a_groups_line() {
        assert!(groups_of(std::process::id() as i32).is_ok());
    }
}
