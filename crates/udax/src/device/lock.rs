//! One owner per device (SPEC D3): `flock(LOCK_EX|LOCK_NB)` on the device file,
//! plus a pid file so a second opener can say who holds it.
//!
//! flock locks belong to the open file description, so a second open in the same
//! process conflicts too, and the kernel drops the lock when its holder dies: a
//! stale pid file left by a dead process is simply overwritten by the next owner.

use super::DeviceError;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

/// Held for as long as the device is open; dropping it releases the lock (the
/// kernel releases the flock when the device fd closes).
#[derive(Debug)]
pub struct DeviceLock {
    pid_file: PathBuf,
}

/// Directory for pid files: `$UDAX_LOCK_DIR`, else `/run/udax` if writable, else the temp dir.
fn lock_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("UDAX_LOCK_DIR") {
        return d.into();
    }
    let run = PathBuf::from("/run/udax");
    if std::fs::create_dir_all(&run).is_ok()
        && rustix::fs::access(&run, rustix::fs::Access::WRITE_OK).is_ok()
    {
        return run;
    }
    std::env::temp_dir().join("udax-locks")
}

fn pid_path(fd: BorrowedFd<'_>) -> Result<PathBuf, DeviceError> {
    let st = rustix::fs::fstat(fd).map_err(|e| DeviceError::Io(e.into()))?;
    Ok(lock_dir().join(format!("dev{:x}-ino{}.pid", st.st_dev, st.st_ino)))
}

/// Take the device lock on `fd`, or report who holds it.
pub fn lock(fd: BorrowedFd<'_>) -> Result<DeviceLock, DeviceError> {
    let pid_file = pid_path(fd)?;
    match rustix::fs::flock(
        fd.as_fd(),
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    ) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut s = String::new();
            let pid = std::fs::File::open(&pid_file)
                .and_then(|mut f| f.read_to_string(&mut s))
                .ok()
                .and_then(|_| s.trim().parse().ok())
                .unwrap_or(0);
            return Err(DeviceError::Busy { pid });
        }
        Err(e) => return Err(DeviceError::Io(e.into())),
    }
    if let Some(dir) = pid_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // Overwrites a stale file of a dead holder; failure to record is not fatal
    // (the flock is the real exclusion).
    if let Ok(mut f) = std::fs::File::create(&pid_file) {
        let _ = writeln!(f, "{}", std::process::id());
    }
    Ok(DeviceLock { pid_file })
}

impl Drop for DeviceLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pid_file);
    }
}
