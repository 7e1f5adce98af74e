//! A thin, safe wrapper over one userfaultfd.
//!
//! Only the pieces the fault engine uses: open (falling back to
//! `UFFD_USER_MODE_ONLY` where unprivileged userfaultfd is off), feature
//! negotiation, register, zero-page, write-protect, poison, wake and reading
//! messages. Structures and ioctl numbers come from linux-raw-sys; the two it
//! lacks (`UFFDIO_POISON`) are built here from the `_IOWR` encoding.
#![allow(
    unsafe_code,
    reason = "userfaultfd ioctls on structures from linux-raw-sys"
)]

use linux_raw_sys::general as g;
use linux_raw_sys::ioctl as io;
use std::io::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `_IOWR(UFFDIO, 0x08, struct uffdio_poison)`.
const UFFDIO_POISON: u32 =
    (3 << 30) | ((size_of::<g::uffdio_poison>() as u32) << 16) | (0xAA << 8) | 0x08;

/// `UFFDIO_WRITEPROTECT_MODE_WP` / `_DONTWAKE` (absent from linux-raw-sys).
const WP_MODE_WP: u64 = 1;
const WP_MODE_DONTWAKE: u64 = 2;
/// `UFFDIO_CONTINUE_MODE_DONTWAKE`.
const CONTINUE_MODE_DONTWAKE: u64 = 1;

/// Features udax asks for. `EVENT_REMAP` keeps registrations across the
/// `mremap` that atomically replaces a mapped range with a placeholder.
const WANTED: u64 = (g::UFFD_FEATURE_EVENT_REMAP
    | g::UFFD_FEATURE_THREAD_ID
    | g::UFFD_FEATURE_POISON
    | g::UFFD_FEATURE_PAGEFAULT_FLAG_WP
    | g::UFFD_FEATURE_MINOR_SHMEM) as u64;
/// Without these the engine cannot keep its promises.
const REQUIRED: u64 = (g::UFFD_FEATURE_EVENT_REMAP | g::UFFD_FEATURE_POISON) as u64;

/// One event read from the descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg {
    /// A thread touched an unpopulated page (`wp == false`) or wrote to a
    /// write-protected one (`wp == true`). `addr` is page aligned.
    Fault {
        addr: usize,
        write: bool,
        wp: bool,
        tid: u32,
    },
    /// A registered range moved (our own placeholder swaps); nothing to do but
    /// read it, which lets the `mremap` caller continue.
    Remap,
    /// An event udax does not ask for.
    Other(u8),
}

#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
    /// Features the kernel granted.
    pub features: u64,
    /// Opened with `UFFD_USER_MODE_ONLY`: faults taken inside the kernel (a
    /// syscall writing into a mapping) are not reported and fail with EFAULT.
    pub user_mode_only: bool,
}

fn raw_open(flags: u32) -> Result<OwnedFd> {
    // SAFETY: userfaultfd(2) takes one int of flags and returns a new descriptor
    // or -1; no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_userfaultfd, flags as libc::c_long) };
    if r < 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: `r` is a fresh descriptor owned by no one else.
    Ok(crate::fdnum::raise(unsafe {
        OwnedFd::from_raw_fd(r as RawFd)
    }))
}

impl Uffd {
    /// Open the fault userfaultfd for this process, non-blocking and close-on-exec.
    pub fn open() -> Result<Uffd> {
        Self::open_with(WANTED, REQUIRED)
    }

    /// Open a second userfaultfd in WP_ASYNC mode for dirty tracking of device
    /// mappings: stores to write-protected pages are resolved by the kernel with
    /// no message, and PAGEMAP_SCAN reports and re-protects the written pages.
    pub fn open_dirty_tracker() -> Result<Uffd> {
        let f = (g::UFFD_FEATURE_WP_ASYNC
            | g::UFFD_FEATURE_WP_HUGETLBFS_SHMEM
            | g::UFFD_FEATURE_WP_UNPOPULATED
            | g::UFFD_FEATURE_PAGEFAULT_FLAG_WP) as u64;
        Self::open_with(f, f)
    }

    fn open_with(wanted: u64, required: u64) -> Result<Uffd> {
        let base = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u32;
        let (fd, user_mode_only) = match raw_open(base) {
            Ok(fd) => (fd, false),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                (raw_open(base | g::UFFD_USER_MODE_ONLY)?, true)
            }
            Err(e) => return Err(e),
        };
        let mut api = g::uffdio_api {
            api: g::UFFD_API as u64,
            features: wanted,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes one `uffdio_api`, which `api` is.
        if unsafe { libc::ioctl(fd.as_raw_fd(), io::UFFDIO_API as _, &mut api) } < 0 {
            return Err(Error::last_os_error());
        }
        if api.features & required != required {
            return Err(Error::new(
                std::io::ErrorKind::Unsupported,
                format!(
                    "userfaultfd lacks features {:#x} (has {:#x}); Linux 6.7+ is needed",
                    required & !api.features,
                    api.features
                ),
            ));
        }
        Ok(Uffd {
            fd,
            features: api.features,
            user_mode_only,
        })
    }

    fn ioctl<T>(&self, req: u32, arg: &mut T) -> Result<()> {
        // SAFETY: every caller passes the structure type its request expects.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), req as _, arg as *mut T) } < 0 {
            return Err(Error::last_os_error());
        }
        Ok(())
    }

    fn range(addr: usize, len: usize) -> g::uffdio_range {
        g::uffdio_range {
            start: addr as u64,
            len: len as u64,
        }
    }

    /// Register `[addr, addr+len)` (anonymous memory) for missing-page and
    /// write-protect faults.
    pub fn register(&self, addr: usize, len: usize) -> Result<()> {
        self.register_as(
            addr,
            len,
            g::UFFDIO_REGISTER_MODE_MISSING | g::UFFDIO_REGISTER_MODE_WP,
        )
    }

    fn register_as(&self, addr: usize, len: usize, mode: u32) -> Result<()> {
        let mut r = g::uffdio_register {
            range: Self::range(addr, len),
            mode: mode as u64,
            ioctls: 0,
        };
        self.ioctl(io::UFFDIO_REGISTER, &mut r)
    }

    /// Can device windows be registered (minor faults on shmem, Linux 5.14+)?
    pub fn has_minor_shmem(&self) -> bool {
        self.features & g::UFFD_FEATURE_MINOR_SHMEM as u64 != 0
    }

    /// Register a shared mapping of a shmem device (a window) for minor and
    /// missing faults: every access to a page without a page-table entry is
    /// reported, though the device page exists.
    pub fn register_window(&self, addr: usize, len: usize) -> Result<()> {
        self.register_as(
            addr,
            len,
            g::UFFDIO_REGISTER_MODE_MISSING | g::UFFDIO_REGISTER_MODE_MINOR,
        )
    }

    /// Install page-table entries for the device pages behind `[addr,
    /// addr+len)` of a window (`UFFDIO_CONTINUE`), waking no one. Pages that
    /// already have one are left alone (not an error); a SIGBUS marker is
    /// replaced.
    pub fn continue_range(&self, addr: usize, len: usize) -> Result<()> {
        let mut at = addr;
        while at < addr + len {
            let mut c = g::uffdio_continue {
                range: Self::range(at, addr + len - at),
                mode: CONTINUE_MODE_DONTWAKE,
                mapped: 0,
            };
            match self.ioctl(io::UFFDIO_CONTINUE, &mut c) {
                Ok(()) => return Ok(()),
                // Stopped part way (EAGAIN with the bytes done): go on from
                // there; the next call reports why it stopped.
                Err(_) if c.mapped > 0 => at += c.mapped as usize,
                // The first page is already present: skip it.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => at += 4096,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Register a device mapping for write-protect tracking only.
    pub fn register_wp(&self, addr: usize, len: usize) -> Result<()> {
        self.register_as(addr, len, g::UFFDIO_REGISTER_MODE_WP)
    }

    /// Map the shared zero page over the unpopulated pages of the range.
    /// Pages already populated are left alone (not an error).
    pub fn zeropage(&self, addr: usize, len: usize, wake: bool) -> Result<()> {
        let mut z = g::uffdio_zeropage {
            range: Self::range(addr, len),
            mode: if wake {
                0
            } else {
                g::UFFDIO_ZEROPAGE_MODE_DONTWAKE as u64
            },
            zeropage: 0,
        };
        match self.ioctl(io::UFFDIO_ZEROPAGE, &mut z) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.fill_rest(addr, len, z.zeropage, wake)
            }
            r => r,
        }
    }

    /// After an EEXIST part way, zero the remaining pages one by one (a page
    /// populated by a racing resolution is skipped).
    fn fill_rest(&self, addr: usize, len: usize, done: i64, wake: bool) -> Result<()> {
        let mut at = addr + done.max(0) as usize;
        while at < addr + len {
            let mut z = g::uffdio_zeropage {
                range: Self::range(at, 4096),
                mode: if wake {
                    0
                } else {
                    g::UFFDIO_ZEROPAGE_MODE_DONTWAKE as u64
                },
                zeropage: 0,
            };
            match self.ioctl(io::UFFDIO_ZEROPAGE, &mut z) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
            at += 4096;
        }
        Ok(())
    }

    /// Set (`on`) or clear write protection on the range's present pages.
    pub fn writeprotect(&self, addr: usize, len: usize, on: bool, wake: bool) -> Result<()> {
        let mut mode = 0u64;
        if on {
            mode |= WP_MODE_WP;
        }
        // The kernel refuses WP together with DONTWAKE (setting protection
        // wakes no one anyway).
        if !wake && !on {
            mode |= WP_MODE_DONTWAKE;
        }
        let mut w = g::uffdio_writeprotect {
            range: Self::range(addr, len),
            mode,
        };
        self.ioctl(io::UFFDIO_WRITEPROTECT, &mut w)
    }

    /// Install poison markers: a later user access raises SIGBUS (BUS_ADRERR),
    /// a kernel access fails with EFAULT. Zapping the pages removes them.
    pub fn poison(&self, addr: usize, len: usize, wake: bool) -> Result<()> {
        let mut p = g::uffdio_poison {
            range: Self::range(addr, len),
            mode: if wake { 0 } else { 1 },
            updated: 0,
        };
        match self.ioctl(UFFDIO_POISON, &mut p) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                if wake {
                    self.wake(addr, len)?;
                }
                Ok(())
            }
            r => r,
        }
    }

    /// Wake the threads waiting on faults in the range (they retry the access).
    pub fn wake(&self, addr: usize, len: usize) -> Result<()> {
        let mut r = Self::range(addr, len);
        self.ioctl(io::UFFDIO_WAKE, &mut r)
    }

    /// Read one message; `Ok(None)` if none is pending.
    pub fn read(&self) -> Result<Option<Msg>> {
        let mut m = std::mem::MaybeUninit::<g::uffd_msg>::zeroed();
        let sz = size_of::<g::uffd_msg>();
        // SAFETY: reads at most `sz` bytes into the buffer of that size.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), m.as_mut_ptr().cast(), sz) };
        if n < 0 {
            let e = Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                return Ok(None);
            }
            return Err(e);
        }
        if n as usize != sz {
            return Err(Error::other(format!("short userfaultfd read: {n} bytes")));
        }
        // SAFETY: the kernel filled the whole message; `uffd_msg` is plain data.
        let m = unsafe { m.assume_init() };
        let ev = m.event;
        Ok(Some(match ev as u32 {
            g::UFFD_EVENT_PAGEFAULT => {
                // SAFETY: for PAGEFAULT events the `pagefault` union arm is the one written.
                let pf = unsafe { m.arg.pagefault };
                let flags = pf.flags;
                let addr = pf.address;
                // SAFETY: THREAD_ID was negotiated or the field is zero.
                let tid = unsafe { pf.feat.ptid };
                Msg::Fault {
                    addr: (addr & !4095) as usize,
                    write: flags & g::UFFD_PAGEFAULT_FLAG_WRITE as u64 != 0,
                    wp: flags & g::UFFD_PAGEFAULT_FLAG_WP as u64 != 0,
                    tid,
                }
            }
            g::UFFD_EVENT_REMAP => Msg::Remap,
            e => Msg::Other(e as u8),
        }))
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
