//! Descriptor numbers of the library's own long-lived fds (sockets to the
//! owner, the device, the userfaultfds, `/proc/self/pagemap`): moved out of
//! the low range programs address by number. Under the LD_PRELOAD shim a
//! shell's `exec 3>file` is a `dup2` onto fd 3: had the shim's socket to
//! the owner been fd 3, the program would have closed it. Shells keep their
//! own saved descriptors at 10 and up (bash: 10-255); these go at 512 and
//! up, or half the soft `RLIMIT_NOFILE` where that is lower.

use std::os::fd::{AsRawFd, OwnedFd};

/// The lowest number for a long-lived fd of the library.
fn floor() -> i32 {
    static FLOOR: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *FLOOR.get_or_init(|| {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(1024);
        (soft / 2).clamp(3, 512) as i32
    })
}

/// `fd` at a number at or above the floor (close-on-exec), or `fd` itself
/// where no such number is free.
pub fn raise(fd: OwnedFd) -> OwnedFd {
    let floor = floor();
    if fd.as_raw_fd() >= floor {
        return fd;
    }
    rustix::io::fcntl_dupfd_cloexec(&fd, floor).unwrap_or(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_fd_is_above_the_floor_and_close_on_exec() {
        let f: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let low = f.as_raw_fd();
        let h = raise(f);
        assert!(h.as_raw_fd() >= floor(), "{} from {low}", h.as_raw_fd());
        let flags = rustix::io::fcntl_getfd(&h).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }
}
