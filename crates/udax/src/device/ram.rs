//! A heap-backed device for unit tests: volatile, no flushing.

use super::{
    check_range, Device, DeviceError, DeviceInfo, DeviceKind, FlushInstr, PersistenceDomain,
};
use crate::sync::RwLock;

/// Heap memory pretending to be a device. `flush`/`fence` do nothing.
#[derive(Debug)]
pub struct RamDevice {
    info: DeviceInfo,
    mem: RwLock<Vec<u8>>,
    bad: super::BadList,
}

impl RamDevice {
    /// A zero-filled device of `len` bytes.
    pub fn new(len: u64) -> Self {
        Self::from_image(vec![0; len as usize])
    }

    /// A device whose content is `image` (e.g. a post-crash image).
    pub fn from_image(image: Vec<u8>) -> Self {
        let info = DeviceInfo {
            kind: DeviceKind::Ram,
            path: "ram".into(),
            len: image.len() as u64,
            persistence: PersistenceDomain::None,
            flush: FlushInstr::None,
            page_size: crate::BLOCK_SIZE,
        };
        Self {
            info,
            mem: RwLock::new(image),
            bad: Default::default(),
        }
    }

    /// A copy of the whole content.
    pub fn image(&self) -> Vec<u8> {
        self.mem.read().clone()
    }
}

impl Device for RamDevice {
    fn bad_list(&self) -> &super::BadList {
        &self.bad
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        check_range(off, buf.len() as u64, self.info.len)?;
        let mem = self.mem.read();
        buf.copy_from_slice(&mem[off as usize..off as usize + buf.len()]);
        Ok(())
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<(), DeviceError> {
        check_range(off, data.len() as u64, self.info.len)?;
        let mut mem = self.mem.write();
        mem[off as usize..off as usize + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn zero(&self, off: u64, len: u64) -> Result<(), DeviceError> {
        check_range(off, len, self.info.len)?;
        let mut mem = self.mem.write();
        mem[off as usize..(off + len) as usize].fill(0);
        Ok(())
    }

    fn flush(&self, _off: u64, _len: u64) {}

    fn fence(&self) -> Result<(), DeviceError> {
        Ok(())
    }
}
