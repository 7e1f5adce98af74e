//! The mounted file system: opened and mounted on the first udax call,
//! checkpointed and released at exit (`state::exit`); unusable in a forked
//! child.

use crate::boundary::entry::{init_log, Errno, R};
use crate::state::config::config;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};
use udax::fs::Fs;

struct Mounted {
    /// Taken at exit, so the device (and its lock) is released.
    fs: RwLock<Option<Fs>>,
    pid: u32,
}

static MOUNT: OnceLock<Result<Mounted, i32>> = OnceLock::new();

/// Set in a child after fork (pthread_atfork): the device belongs to the parent.
static FORKED: AtomicBool = AtomicBool::new(false);

extern "C" fn after_fork_in_child() {
    // ORDERING: read by the same (only) thread of the child afterwards.
    FORKED.store(true, Ordering::Relaxed);
}

/// True in a process forked from the one that mounted udax.
pub fn forked_child() -> bool {
    // ORDERING: see `after_fork_in_child`; in the parent it stays false.
    FORKED.load(Ordering::Relaxed)
}

fn mount() -> Result<Mounted, i32> {
    init_log();
    let Some(cfg) = config() else {
        return Err(libc::ENODEV);
    };
    // SAFETY: registering a handler that only stores to an atomic.
    unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    let dev = udax::device::open(&cfg.device, &Default::default()).map_err(|e| {
        tracing::error!(
            "udax-preload: cannot open UDAX_DEVICE={}: {e}; udax paths fail with errno {}",
            cfg.device,
            e.errno()
        );
        e.errno()
    })?;
    let opts = mount_options().map_err(|bad| {
        tracing::error!(
            "udax-preload: UDAX_MOUNT_OPTIONS: unknown option {bad:?} (known: ro, salvage); \
             udax paths fail with errno {}",
            libc::EINVAL
        );
        libc::EINVAL
    })?;
    let fs = Fs::mount_with(dev, &opts).map_err(|e| {
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
    Ok(Mounted {
        fs: RwLock::new(Some(fs)),
        pid: std::process::id(),
    })
}

/// `UDAX_MOUNT_OPTIONS`: a comma-separated list of `ro` (write nothing;
/// changes fail with EROFS) and `salvage` (read a damaged file system as far
/// as it can be read; implies `ro`). The unknown option is the error.
fn mount_options() -> Result<udax::fs::MountOptions, String> {
    let mut o = udax::fs::MountOptions::default();
    let Some(v) = std::env::var_os("UDAX_MOUNT_OPTIONS") else {
        return Ok(o);
    };
    for opt in v.to_string_lossy().split(',').filter(|s| !s.is_empty()) {
        match opt {
            "ro" => o.read_only = true,
            "salvage" => {
                o.read_only = true;
                o.salvage = true;
            }
            other => return Err(other.to_string()),
        }
    }
    Ok(o)
}

/// The file system (a cheap handle), mounting it on first use; EIO after the
/// exit teardown.
pub fn fs() -> R<Fs> {
    if forked_child() {
        return Err(crate::boundary::entry::unsupported(
            "udax",
            "used in a child process after fork; the device belongs to the parent",
            libc::EIO,
        ));
    }
    match MOUNT.get_or_init(mount) {
        Ok(m) => {
            m.fs.read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .ok_or(Errno(libc::EIO))
        }
        Err(e) => Err(Errno(*e)),
    }
}

/// The file system was mounted, by this process (not a forked child).
pub fn mounted_by_this_process() -> bool {
    matches!(MOUNT.get(), Some(Ok(m)) if !forked_child() && std::process::id() == m.pid)
}

/// At exit, after the descriptors and mappings are gone (`state::exit`):
/// wait for pages to be idle (briefly), checkpoint and close the device; the
/// file system is EIO from then on.
pub fn unmount_at_exit() {
    let Some(Ok(m)) = MOUNT.get() else {
        return;
    };
    let taken = m.fs.write().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(fs) = taken {
        if std::env::var_os("UDAX_STATS").is_some() {
            // One line of mapping counters (fault engine) to stderr.
            eprintln!(
                "udax-preload: mmap counters: file system {:?}; fault engine {:?}",
                fs.dax_stats(),
                udax::stats()
            );
        }
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
