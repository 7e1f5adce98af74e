//! [`adopt`]: a device descriptor that another process handed over (a
//! client of the device's owner gets it with SCM_RIGHTS,
//! docs/multiprocess.md), mapped whole as a [`MappedDevice`] without the
//! device lock (the owner holds it). Read-only unless the descriptor allows
//! writing.

use super::mapped::MappedDevice;
use super::open::{classify, info};
use super::{Device, DeviceError};
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// Map all of `fd` (its size from `fstat`, or `len` if given: a device-dax
/// node reports size 0 to `fstat`) shared; writable if `fd` was opened for
/// writing, else every store is refused (`EBADF`).
pub fn adopt(fd: OwnedFd, len: Option<u64>) -> Result<Arc<dyn Device>, DeviceError> {
    let io = |e: rustix::io::Errno| DeviceError::Io(e.into());
    let st = rustix::fs::fstat(&fd).map_err(io)?;
    let len = len.unwrap_or(st.st_size as u64);
    let writable = rustix::fs::fcntl_getfl(&fd).map_err(io)? & rustix::fs::OFlags::RWMODE
        == rustix::fs::OFlags::RDWR;
    let is_char =
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::CharacterDevice;
    let magic = rustix::fs::fstatfs(&fd).map_err(io)?.f_type as i64;
    let kind = classify(magic, is_char, is_char.then_some("dax")).map_err(|reason| {
        DeviceError::BadSpec {
            spec: "handed-over device".into(),
            reason,
        }
    })?;
    let d = MappedDevice::map_shared(info(kind, "handed-over device", len), fd, writable)?;
    Ok(Arc::new(d))
}
