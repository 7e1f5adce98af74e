//! One owner per device (SPEC D3): `flock(LOCK_EX|LOCK_NB)` on the device file.
//!
//! flock locks belong to the open file description, so a second open in the same
//! process conflicts too, and the kernel drops the lock when its holder dies. A
//! second opener names the holder from `/proc/locks`, where the kernel lists
//! every flock with the pid that took it and its file's device and inode: no pid
//! file to write at open (an open, a write and an unlink on `/run` for every
//! process: ~30 us here), nor to leave stale when a holder dies.

use super::DeviceError;
use std::os::fd::{AsFd, BorrowedFd};

/// Held for as long as the device is open; the kernel releases the flock when
/// the device fd closes.
#[derive(Debug)]
pub struct DeviceLock(());

/// Take the device lock on `fd`, or report who holds it.
pub fn lock(fd: BorrowedFd<'_>) -> Result<DeviceLock, DeviceError> {
    match rustix::fs::flock(
        fd.as_fd(),
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    ) {
        Ok(()) => Ok(DeviceLock(())),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(DeviceError::Busy {
            pid: holder(fd).unwrap_or(0),
        }),
        Err(e) => Err(DeviceError::Io(e.into())),
    }
}

/// The device is busy: an error naming who holds a lock on `fd`'s file.
pub fn busy(fd: BorrowedFd<'_>) -> DeviceError {
    DeviceError::Busy {
        pid: holder(fd).unwrap_or(0),
    }
}

/// The pid of the process holding a flock on `fd`'s file: its line of
/// `/proc/locks` (`1: FLOCK  ADVISORY  WRITE 1234 00:1b:21392 0 EOF`; the
/// device as the kernel prints it, major and minor in hex). None if the
/// holder is gone meanwhile or the file cannot be read.
fn holder(fd: BorrowedFd<'_>) -> Option<i32> {
    let st = rustix::fs::fstat(fd).ok()?;
    let dev = st.st_dev;
    let file = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        st.st_ino
    );
    parse_holder(&std::fs::read_to_string("/proc/locks").ok()?, &file)
}

/// The pid of the first granted flock on `file` (`MAJ:MIN:INO`) in `locks`
/// (waiters' lines, `1: -> FLOCK ...`, are not holders).
fn parse_holder(locks: &str, file: &str) -> Option<i32> {
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            [_, "FLOCK", _, _, pid, at, ..] if *at == file => pid.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse_holder;

    #[test]
    fn the_holder_is_read_from_proc_locks_lines() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 00:1b:21392 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 1234 00:1b:21392 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 99 00:1b:21392 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 555 fd:01:7 0 EOF\n";
        assert_eq!(parse_holder(locks, "00:1b:21392"), Some(1234));
        assert_eq!(parse_holder(locks, "fd:01:7"), Some(555));
        assert_eq!(parse_holder(locks, "00:1b:1"), None);
        assert_eq!(parse_holder("garbage\n\n1:\n", "00:1b:1"), None);
    }
}
