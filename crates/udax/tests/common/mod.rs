//! Helpers shared by the mmap test binaries (each uses a part of them).
#![allow(dead_code, unsafe_code)]

pub mod serving;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use udax::device::{self, Device, OpenOptions as DevOpen};
use udax::fs::{Fs, MkfsOptions, OpenOptions};

/// A fresh file system on a memfd device of `mib` MiB.
pub fn fresh(mib: u64) -> Fs {
    let dev: Arc<dyn Device> =
        device::open(&format!("memfd:{mib}M"), &DevOpen::default()).expect("memfd device");
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    Fs::mount(dev).unwrap()
}

/// Free blocks for file data: free, plus those format 3's metadata holds
/// (inode chunks and tree nodes come and go with the trees, so block counts
/// that follow file data add them back).
pub fn free_for_data(st: &udax::fs::StatFs) -> u64 {
    st.free_blocks + st.metadata_bytes / st.block_size
}

pub fn pipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid 2-int array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

/// `write(2)` from `src` into a pipe: the kernel loads from the mapping.
/// The bytes, or the errno (EFAULT where the access would raise SIGBUS).
pub fn kernel_load(src: *const u8, n: usize) -> Result<Vec<u8>, i32> {
    let (r, w) = pipe();
    let mut out = vec![0u8; n];
    // SAFETY: the kernel only reads `src` (reporting a bad address as
    // EFAULT); `out` holds `n` bytes; both fds are ours and closed.
    unsafe {
        let k = libc::write(w, src.cast(), n);
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if k >= 0 {
            libc::read(r, out.as_mut_ptr().cast(), k as usize);
        }
        libc::close(r);
        libc::close(w);
        if k < 0 {
            Err(e)
        } else {
            out.truncate(k as usize);
            Ok(out)
        }
    }
}

/// Aborts the test process if it is not finished within `secs` seconds (a
/// lost wake-up would otherwise hang the test instead of failing it).
pub struct Watchdog {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(secs: u64, what: &'static str) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let thread = std::thread::spawn(move || {
            for _ in 0..secs * 10 {
                if d.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            eprintln!("{what} still running after {secs} s: a lost wake-up?");
            std::process::abort();
        });
        Watchdog {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the last caught signal reported (see [`catch`]).
static SIGNO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
static CODE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
static ADDR: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn on_signal(sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    SIGNO.store(sig, Ordering::SeqCst);
    CODE.store(code, Ordering::SeqCst);
    ADDR.store(addr, Ordering::SeqCst);
    // Let the access complete: put a private page over the faulting one (the
    // test only looks at what was reported). mmap is async-signal-safe.
    let page = addr & !4095;
    // SAFETY: the page is inside a udax mapping owned by the test, which drops
    // it (munmapping the whole range) right after.
    unsafe {
        libc::mmap(
            page as *mut _,
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
    }
}

/// Catch `sig` process-wide from now on (one test per binary uses this).
pub fn catch(sig: i32) {
    // SAFETY: a zeroed sigaction with a valid SA_SIGINFO handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
    }
}

/// Run `access`, return (signal, si_code, si_addr) it raised, or zeros.
pub fn caught(access: impl FnOnce()) -> (i32, i32, usize) {
    SIGNO.store(0, Ordering::SeqCst);
    access();
    (
        SIGNO.load(Ordering::SeqCst),
        CODE.load(Ordering::SeqCst),
        ADDR.load(Ordering::SeqCst),
    )
}

/// path -> (is_dir, size, nlink, crc32c of the content (a symbolic link's:
/// of its target), or u64::MAX where a read fails)
pub type Snapshot = BTreeMap<String, (bool, u64, u32, u64)>;

/// The whole tree: every path with its kind, size, link count and content.
pub fn snapshot(fs: &Fs) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut stack = vec!["/".to_string()];
    while let Some(dir) = stack.pop() {
        for e in fs.read_dir(&dir).unwrap() {
            let p = format!("{}{}", dir, e.name);
            let st = fs.lstat(&p).unwrap();
            if st.is_symlink() {
                let t = fs.readlink(&p).unwrap();
                out.insert(p, (false, st.size, st.nlink, u64::from(crc32c::crc32c(&t))));
            } else if !st.is_dir() && !st.is_file() {
                // A special file: its type and device number.
                out.insert(
                    p,
                    (false, st.size, st.nlink, u64::from(st.mode) << 32 ^ st.rdev),
                );
            } else if st.is_dir() {
                out.insert(p.clone(), (true, 0, st.nlink, 0));
                stack.push(format!("{p}/"));
            } else {
                let f = fs.open(&p, &OpenOptions::read_only()).unwrap();
                let mut v = vec![0u8; st.size as usize];
                let sum = match f.read_at(&mut v, 0) {
                    Ok(_) => u64::from(crc32c::crc32c(&v)),
                    Err(_) => u64::MAX,
                };
                out.insert(p, (false, st.size, st.nlink, sum));
            }
        }
    }
    out
}

/// Whether this test process runs as root (tests that act as other users
/// need it; CI runs as root).
pub fn root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Make the calling thread alone act as `uid`, `gid` and `groups` (its
/// effective and file-system ids and its supplementary groups), by raw
/// system calls: the kernel keeps credentials per thread, and glibc's
/// wrappers would change every thread of the test process (the owner's
/// too). The real and saved ids stay root, so `as_thread(0, 0, &[])` makes
/// it root again. Needs root.
pub fn as_thread(uid: u32, gid: u32, groups: &[u32]) {
    let keep = u32::MAX as libc::c_long;
    // SAFETY: plain system calls on this thread's credentials; `groups`
    // lives across the setgroups call, which only reads it.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setresuid, keep, 0, keep),
            0,
            "root again"
        );
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()),
            0,
            "setgroups"
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresgid, keep, gid, keep),
            0,
            "gid"
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresuid, keep, uid, keep),
            0,
            "uid"
        );
    }
}

/// Set only the calling thread's file-system uid (the effective one
/// stays), by the raw system call.
pub fn thread_fsuid(uid: u32) {
    // SAFETY: a plain system call on this thread's credentials.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid as libc::c_long) };
}
