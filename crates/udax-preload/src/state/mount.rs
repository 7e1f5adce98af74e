//! The file system this process uses: by default a connection to the
//! device's owner (`udax serve`, started on first use if none runs), so any
//! number of processes share the device; with `UDAX_MOUNT_OPTIONS=embedded`,
//! mounted in this process alone (the device lock is then this process's).
//! Attached on the first udax call; released at exit (`state::exit`).
//!
//! A forked child attaches again on its first udax call: a connection of its
//! own (through an owner), or EIO (embedded: the device belongs to the
//! parent). What it inherited from the parent (descriptors, mappings, the
//! parent's connection) is never used or dropped in the child: dropping
//! would close the parent's handles at the owner (`Born`).

use crate::boundary::entry::{init_log, Errno, R};
use crate::state::config::config;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use std::sync::RwLock;
use udax::client::{Client, ConnectOptions};
use udax::fs::Fs;
use udax::vfs::Vfs;

/// The attachment of one process: made by `pid`.
struct Attached {
    pid: u32,
    vfs: Result<Vfs, i32>,
}

impl Attached {
    /// This process's, and still usable: not a connection the owner
    /// ended (it died or exited). A process whose owner is gone attaches
    /// again at its next call, to an owner started anew (which recovers
    /// the device from its journal); what it opened or mapped through the
    /// old one stays dead (`ENOTCONN`, SIGBUS on a fault).
    fn current(&self, me: u32) -> bool {
        self.pid == me && !matches!(&self.vfs, Ok(Vfs::Remote(c)) if c.is_closed())
    }
}

/// Taken at exit; replaced in a forked child (the parent's is leaked there).
static MOUNT: RwLock<Option<Attached>> = RwLock::new(None);

/// This process's pid, cached (`getpid` is a system call, and every udax
/// call asks whose descriptors and connection it holds); 0: not known yet.
///
/// The cache lives in a page of its own marked `MADV_WIPEONFORK`: the kernel
/// gives every child made without `CLONE_VM` a zeroed copy of that page. A
/// child made by a raw `clone` or `syscall(SYS_fork)` skips the
/// `pthread_atfork` handlers that reset the cache, but still finds it empty,
/// so it learns its own pid at its first udax call and is a forked child
/// without a handover (its own connection; what it inherited is the
/// parent's), instead of talking on the parent's connection as the parent.
/// Where the page cannot be had (a kernel before 4.14), the cache is
/// `PID_STATIC`, reset by the child handler only.
static PID_PAGE: AtomicPtr<AtomicU32> = AtomicPtr::new(std::ptr::null_mut());
static PID_STATIC: AtomicU32 = AtomicU32::new(0);

fn pid_cache() -> &'static AtomicU32 {
    // ORDERING: Acquire pairs with the Release in `wipe_pid_cache_on_fork`:
    // the page is mapped (and zero) before its address is seen.
    let p = PID_PAGE.load(Ordering::Acquire);
    if p.is_null() {
        return &PID_STATIC;
    }
    // SAFETY: `p` is the start of a private anonymous page mapped for this
    // purpose and never unmapped; an all-zero page is a valid `AtomicU32`
    // (alignment 4 <= page alignment), and the kernel zeroes it only in a
    // new process, never under this one's threads.
    unsafe { &*p }
}

/// At load: move the pid cache into a page the kernel wipes in any child
/// (see `PID_PAGE`). System calls are made directly: `mmap` and `madvise`
/// are the shim's own exported functions.
#[cfg_attr(test, allow(dead_code))]
pub fn wipe_pid_cache_on_fork() {
    // SAFETY: a fresh private anonymous mapping at an address the kernel
    // chooses; no existing memory is touched.
    let p = unsafe {
        libc::syscall(
            libc::SYS_mmap,
            std::ptr::null_mut::<libc::c_void>(),
            4096usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1 as libc::c_int,
            0 as libc::off_t,
        )
    };
    if p < 0 {
        return;
    }
    let page = p as usize as *mut libc::c_void;
    // SAFETY: advice on the page just mapped, which nothing else uses yet.
    let wiped = unsafe { libc::syscall(libc::SYS_madvise, page, 4096usize, libc::MADV_WIPEONFORK) };
    if wiped != 0 {
        // SAFETY: the page mapped above, never published.
        unsafe { libc::syscall(libc::SYS_munmap, page, 4096usize) };
        return;
    }
    // ORDERING: Release pairs with the Acquire in `pid_cache`.
    PID_PAGE.store(page.cast(), Ordering::Release);
}

/// This process's pid (a forked child's own, from its first call on).
pub fn pid() -> u32 {
    let cache = pid_cache();
    // ORDERING: a cache of a value every thread computes alike; the child
    // handler (or the kernel, for the page) empties it before the child's
    // only thread goes on.
    match cache.load(Ordering::Relaxed) {
        0 => {
            let p = std::process::id();
            cache.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

/// In a forked child (`lib.rs`'s child handler, first): the child is a new
/// process (its pid, its own attachment to come).
pub fn after_fork_in_child() {
    // ORDERING: read by the same (only) thread of the child afterwards.
    pid_cache().store(0, Ordering::Relaxed);
    unlock_after_fork();
}

/// In a forked child's handler (after [`after_fork_in_child`]): the
/// parent's connection, if the child inherited one (it is never dropped in
/// the child: [`fs`]), for [`crate::after_fork_in_child`] to let go of the
/// device it holds.
pub fn parents_connection() -> Option<std::sync::Arc<udax::client::Client>> {
    let g = MOUNT.read().unwrap_or_else(|p| p.into_inner());
    match g.as_ref() {
        Some(Attached {
            pid,
            vfs: Ok(Vfs::Remote(c)),
        }) if *pid != self::pid() => Some(c.clone()),
        _ => None,
    }
}

type Held = std::sync::RwLockWriteGuard<'static, Option<Attached>>;

thread_local! {
    /// The attachment, locked by the forking thread across the fork.
    static HELD: std::cell::RefCell<Option<Held>> = const { std::cell::RefCell::new(None) };
}

/// Last in the prepare handler: hold the attachment's lock across the fork,
/// so no other thread of the parent is inside it when the child's copy is
/// made (the child would find it locked for ever, and attach at its first
/// call).
pub fn lock_for_fork() {
    let g = MOUNT.write().unwrap_or_else(|p| p.into_inner());
    let _ = HELD.try_with(|h| *h.borrow_mut() = Some(g));
}

/// In the parent and in the child after fork: the lock is free again.
pub fn unlock_after_fork() {
    let _ = HELD.try_with(|h| h.borrow_mut().take());
}

/// Where the owner is started from when none serves the device:
/// `$UDAX_SERVE`, else the `udax` binary next to this library, else `udax`
/// from `PATH`.
fn serve_command() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("UDAX_SERVE") {
        return p.into();
    }
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr reads the address of a function of this library and
    // fills `info`; `dli_fname` is then a NUL-terminated path owned by the
    // loader, read at once.
    let here = unsafe {
        if libc::dladdr(serve_command as *const libc::c_void, info.as_mut_ptr()) != 0
            && !info.assume_init_ref().dli_fname.is_null()
        {
            let p = std::ffi::CStr::from_ptr(info.assume_init_ref().dli_fname);
            Some(std::path::PathBuf::from(p.to_string_lossy().into_owned()))
        } else {
            None
        }
    };
    if let Some(dir) = here.as_deref().and_then(|p| p.parent()) {
        let udax = dir.join("udax");
        if udax.is_file() {
            return udax;
        }
    }
    "udax".into()
}

fn attach() -> Result<Vfs, i32> {
    init_log();
    let Some(cfg) = config() else {
        return Err(libc::ENODEV);
    };
    let opts = mount_options().map_err(|bad| {
        tracing::error!(
            "udax-preload: UDAX_MOUNT_OPTIONS: unknown option {bad:?} (known: ro, salvage, \
             embedded); udax paths fail with errno {}",
            libc::EINVAL
        );
        libc::EINVAL
    })?;
    if !opts.embedded {
        let c = Client::connect(
            std::path::Path::new(&cfg.device),
            &ConnectOptions {
                write: !opts.mount.read_only,
                start: Some(serve_command()),
                ..Default::default()
            },
        )
        .map_err(|e| {
            tracing::error!(
                "udax-preload: cannot attach to the owner of UDAX_DEVICE={}: {e}; udax paths \
                 fail with errno {}",
                cfg.device,
                e.errno()
            );
            e.errno()
        })?;
        tracing::debug!(
            "udax-preload: attached to the owner of {} at {}",
            cfg.device,
            cfg.mount
        );
        return Ok(Vfs::Remote(std::sync::Arc::new(c)));
    }
    let dev = udax::device::open(&cfg.device, &Default::default()).map_err(|e| {
        tracing::error!(
            "udax-preload: cannot open UDAX_DEVICE={}: {e}; udax paths fail with errno {}",
            cfg.device,
            e.errno()
        );
        e.errno()
    })?;
    let fs = Fs::mount_with(dev, &opts.mount).map_err(|e| {
        tracing::error!(
            "udax-preload: cannot mount {}: {e}; udax paths fail with errno {}",
            cfg.device,
            e.errno()
        );
        e.errno()
    })?;
    for d in &fs.salvaged().damage {
        tracing::warn!(
            "udax-preload: {}: damage at device offset {:#x}: {} ({})",
            cfg.device,
            d.device_offset,
            d.what,
            d.salvage
        );
    }
    tracing::debug!("udax-preload: mounted {} at {}", cfg.device, cfg.mount);
    // Every call checked with the calling thread's credentials, as the
    // kernel checks it (a program that drops privileges is checked as what
    // it became).
    Ok(Vfs::Local(fs.as_thread_caller()))
}

struct Options {
    mount: udax::fs::MountOptions,
    embedded: bool,
}

/// `UDAX_MOUNT_OPTIONS`: a comma-separated list of `ro` (write nothing;
/// changes fail with EROFS), `embedded` (mount in this process instead of
/// attaching to the owner) and `salvage` (read a damaged file system as far
/// as it can be read; implies `ro` and `embedded`). The unknown option is
/// the error.
fn mount_options() -> Result<Options, String> {
    let mut o = Options {
        mount: udax::fs::MountOptions::default(),
        embedded: false,
    };
    let Some(v) = std::env::var_os("UDAX_MOUNT_OPTIONS") else {
        return Ok(o);
    };
    for opt in v.to_string_lossy().split(',').filter(|s| !s.is_empty()) {
        match opt {
            "ro" => o.mount.read_only = true,
            "embedded" => o.embedded = true,
            "salvage" => {
                o.mount.read_only = true;
                o.mount.salvage = true;
                o.embedded = true;
            }
            other => return Err(other.to_string()),
        }
    }
    Ok(o)
}

/// The file system (a cheap handle), attaching on first use (again in a
/// forked child); EIO after the exit teardown.
pub fn fs() -> R<Vfs> {
    let me = pid();
    {
        let g = MOUNT.read().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some(a) if a.current(me) => return a.vfs.clone().map_err(Errno),
            Some(_) => {}
            // ORDERING: the teardown stores EXITED before it takes the MOUNT
            // write lock; a reader that finds MOUNT emptied by it holds the
            // read lock after that, so sees the store. No data rides on it.
            None if EXITED.load(Ordering::Relaxed) => return Err(Errno(libc::EIO)),
            None => {}
        }
    }
    let mut g = MOUNT.write().unwrap_or_else(|p| p.into_inner());
    match g.as_ref() {
        Some(a) if a.current(me) => return a.vfs.clone().map_err(Errno),
        Some(a) if a.pid == me => {
            tracing::warn!(
                "udax-preload: the owner ended this process's connection; attaching anew"
            );
            // Descriptors and mappings made through it keep their clones.
            *g = None;
        }
        Some(a) => {
            if matches!(a.vfs, Ok(Vfs::Local(_))) {
                return Err(crate::boundary::entry::unsupported(
                    "udax",
                    "used in a child process after fork of a process that mounted udax \
                     embedded (UDAX_MOUNT_OPTIONS=embedded); the device belongs to the parent",
                    libc::EIO,
                ));
            }
            // The parent's connection: never dropped here (see the module).
            if let Some(old) = g.take() {
                std::mem::forget(old);
            }
        }
        None => {}
    }
    let vfs = attach();
    *g = Some(Attached { pid: me, vfs });
    g.as_ref().expect("just set").vfs.clone().map_err(Errno)
}

/// Set at the exit teardown: no attaching after it.
static EXITED: AtomicBool = AtomicBool::new(false);

/// The file system if this process has attached (not a forked child that
/// has not yet; never attaches).
pub fn attached() -> Option<Vfs> {
    let g = MOUNT.read().unwrap_or_else(|p| p.into_inner());
    match g.as_ref() {
        Some(Attached { pid: p, vfs: Ok(v) }) if *p == pid() => Some(v.clone()),
        _ => None,
    }
}

/// At exit, after the descriptors and mappings are gone (`state::exit`):
/// embedded, wait for pages to be idle (briefly), checkpoint and close the
/// device; through an owner, close the connection. The file system is EIO
/// from then on.
pub fn unmount_at_exit() {
    // ORDERING: stored before the MOUNT write lock is taken (see `fs`).
    EXITED.store(true, Ordering::Relaxed);
    let taken = MOUNT.write().unwrap_or_else(|p| p.into_inner()).take();
    let Some(Attached {
        pid: p,
        vfs: Ok(vfs),
    }) = taken
    else {
        return;
    };
    if p != pid() {
        std::mem::forget(vfs);
        return;
    }
    if std::env::var_os("UDAX_STATS").is_some() {
        // One line of mapping counters (fault engine) to stderr.
        eprintln!(
            "udax-preload: mmap counters: file system {:?}; fault engine {:?}",
            vfs.dax_stats(),
            udax::stats()
        );
    }
    if let Vfs::Local(fs) = vfs {
        let keep = fs.clone();
        if let Err(e) = fs.unmount_timeout(std::time::Duration::from_secs(2)) {
            tracing::warn!("udax-preload: unmount at exit: {e}; syncing instead");
            let _ = keep.sync();
        }
        // The last handle (unless a directory stream is still open):
        // the device closes, its lock goes.
        drop(keep);
    }
}
