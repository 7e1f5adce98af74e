//! `MappedCrashDevice`: a crash simulator that can be mapped (memfd memory), for
//! testing stores made through mmap (SPEC M9). The memory is what the CPU sees;
//! a separate durable image receives a cache line only when it is flushed and a
//! later fence completes, as on persistent memory. A crash keeps the durable
//! image and loses everything else — including every store made through a
//! mapping that was not flushed.

use super::mapped::MappedDevice;
use super::{
    Device, DeviceError, DeviceInfo, DeviceKind, DeviceMapping, FlushInstr, PersistenceDomain,
};
use crate::sync::Mutex;
use crate::CACHE_LINE;

#[derive(Debug)]
pub struct MappedCrashDevice {
    mem: MappedDevice,
    info: DeviceInfo,
    pending: Mutex<Vec<(u64, Vec<u8>)>>,
    durable: Mutex<Vec<u8>>,
    /// With [`MappedCrashDevice::record_fences`]: the durable image after
    /// each fence since, i.e. every state a crash could leave.
    snapshots: Mutex<Option<Vec<Vec<u8>>>>,
}

impl MappedCrashDevice {
    /// A zeroed device of `len` bytes (a multiple of 4096).
    pub fn new(len: u64) -> Result<Self, DeviceError> {
        Self::with_page_size(len, crate::BLOCK_SIZE)
    }

    /// The same, saying it can be mapped only in pages of `page_size` bytes
    /// (`HUGE_SIZE`: behaves as a hugetlbfs device does for the DAX layer).
    pub fn with_page_size(len: u64, page_size: u64) -> Result<Self, DeviceError> {
        use rustix::fs::MemfdFlags;
        let fd = rustix::fs::memfd_create("udax-crash", MemfdFlags::CLOEXEC)
            .map_err(|e| DeviceError::Io(e.into()))?;
        rustix::fs::ftruncate(&fd, len).map_err(|e| DeviceError::Io(e.into()))?;
        let info = DeviceInfo {
            kind: DeviceKind::Crash,
            path: "mapped-crash".into(),
            len,
            persistence: PersistenceDomain::CpuCache,
            flush: FlushInstr::None,
            page_size,
        };
        let mem = MappedDevice::map(info.clone(), fd, None)?;
        Ok(Self {
            mem,
            info,
            pending: Mutex::new(Vec::new()),
            durable: Mutex::new(vec![0; len as usize]),
            snapshots: Mutex::new(None),
        })
    }

    /// Start (`true`) or stop (`false`) keeping the durable image after every
    /// fence; stopping returns the images kept.
    pub fn record_fences(&self, on: bool) -> Vec<Vec<u8>> {
        let mut s = self.snapshots.lock();
        let kept = s.take().unwrap_or_default();
        if on {
            *s = Some(Vec::new());
        }
        kept
    }

    /// What would be on the device after a power failure now.
    pub fn crash_image(&self) -> Vec<u8> {
        self.durable.lock().clone()
    }
}

impl Device for MappedCrashDevice {
    fn bad_list(&self) -> &super::BadList {
        self.mem.bad_list()
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.mem.read(off, buf)
    }
    fn write(&self, off: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.mem.write(off, data)
    }
    fn zero(&self, off: u64, len: u64) -> Result<(), DeviceError> {
        self.mem.zero(off, len)
    }
    fn flush(&self, off: u64, len: u64) {
        if len == 0 || super::check_range(off, len, self.info.len).is_err() {
            return;
        }
        let a = off / CACHE_LINE * CACHE_LINE;
        let b = (off + len).div_ceil(CACHE_LINE) * CACHE_LINE;
        let b = b.min(self.info.len);
        let mut bytes = vec![0u8; (b - a) as usize];
        if self.mem.read(a, &mut bytes).is_ok() {
            self.pending.lock().push((a, bytes));
        }
    }
    fn fence(&self) -> Result<(), DeviceError> {
        let pending = std::mem::take(&mut *self.pending.lock());
        let mut d = self.durable.lock();
        for (a, bytes) in pending {
            d[a as usize..a as usize + bytes.len()].copy_from_slice(&bytes);
        }
        if let Some(v) = self.snapshots.lock().as_mut() {
            v.push(d.clone());
        }
        Ok(())
    }
    fn fence_is_global(&self) -> bool {
        true // one fence commits every thread's flushed lines
    }
    fn mapping(&self) -> Option<DeviceMapping<'_>> {
        self.mem.mapping()
    }
}
