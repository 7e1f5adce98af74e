//! `OverlayDevice`: a device whose writes stay in memory, over another that
//! is only read. A read-only mount (and fsck) of a format-3 device whose log
//! is not empty replays the log into it, so the structures read as after
//! the replay while nothing is written to the real device.

// Used by format 3's recovery only until the file system switches to it.
#![allow(dead_code)]

use super::{check_range, BadList, Device, DeviceError, DeviceInfo, DeviceMapping};
use crate::sync::Mutex;
use crate::BLOCK_SIZE;
use std::collections::HashMap;
use std::sync::Arc;

const BLOCK: usize = BLOCK_SIZE as usize;

/// Writes kept in memory (whole 4 KiB blocks, copied from `base` on first
/// write) over `base`, which is never written.
#[derive(Debug)]
pub(crate) struct OverlayDevice {
    base: Arc<dyn Device>,
    blocks: Mutex<HashMap<u64, Vec<u8>>>,
}

impl OverlayDevice {
    pub fn new(base: Arc<dyn Device>) -> Self {
        OverlayDevice {
            base,
            blocks: Mutex::new(HashMap::new()),
        }
    }

    /// Blocks written so far.
    pub fn written_blocks(&self) -> usize {
        self.blocks.lock().len()
    }

    /// Apply `f` to the bytes `[off, off + len)` block by block, on the
    /// overlay's copy of each block (made on first use).
    fn change(
        &self,
        off: u64,
        len: u64,
        mut f: impl FnMut(&mut [u8], usize),
    ) -> Result<(), DeviceError> {
        check_range(off, len, self.len())?;
        let mut blocks = self.blocks.lock();
        let mut done = 0usize;
        while (done as u64) < len {
            let pos = off + done as u64;
            let (blk, at) = (pos / BLOCK_SIZE, (pos % BLOCK_SIZE) as usize);
            let n = (BLOCK - at).min(len as usize - done);
            let b = match blocks.entry(blk) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let mut b = vec![0u8; BLOCK];
                    self.base.read(blk * BLOCK_SIZE, &mut b)?;
                    e.insert(b)
                }
            };
            f(&mut b[at..at + n], done);
            done += n;
        }
        Ok(())
    }
}

impl Device for OverlayDevice {
    fn info(&self) -> &DeviceInfo {
        self.base.info()
    }

    fn forget_range(&self, off: u64, len: u64) {
        // The overlay's own blocks are memory it needs; the base's pages
        // under them may go.
        self.base.forget_range(off, len);
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        check_range(off, buf.len() as u64, self.len())?;
        let blocks = self.blocks.lock();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = off + done as u64;
            let (blk, at) = (pos / BLOCK_SIZE, (pos % BLOCK_SIZE) as usize);
            let n = (BLOCK - at).min(buf.len() - done);
            match blocks.get(&blk) {
                Some(b) => buf[done..done + n].copy_from_slice(&b[at..at + n]),
                None => self.base.read(pos, &mut buf[done..done + n])?,
            }
            done += n;
        }
        Ok(())
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.change(off, data.len() as u64, |dst, at| {
            dst.copy_from_slice(&data[at..at + dst.len()])
        })
    }

    fn zero(&self, off: u64, len: u64) -> Result<(), DeviceError> {
        self.change(off, len, |dst, _| dst.fill(0))
    }

    fn data_within(&self, off: u64, len: u64) -> Vec<(u64, u64)> {
        let (first, end) = (off / BLOCK_SIZE, (off + len).div_ceil(BLOCK_SIZE));
        // A block written here may lie over a hole of the base.
        if self.blocks.lock().keys().any(|b| (first..end).contains(b)) {
            return vec![(off, len)];
        }
        self.base.data_within(off, len)
    }

    /// Nothing to write back: the overlay is memory and never reaches `base`.
    fn flush(&self, _off: u64, _len: u64) {}

    fn fence(&self) -> Result<(), DeviceError> {
        Ok(())
    }

    fn fence_is_global(&self) -> bool {
        true
    }

    /// The base device's mapping: file data, which a log never changes, is
    /// read through it; metadata is read with [`Device::read`].
    fn mapping(&self) -> Option<DeviceMapping<'_>> {
        self.base.mapping()
    }

    fn bad_list(&self) -> &BadList {
        self.base.bad_list()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::device::RamDevice;

    #[test]
    fn writes_stay_in_the_overlay_and_reads_see_them_over_the_base() {
        let base = Arc::new(RamDevice::new(1 << 20));
        base.write(0, &[1u8; 10000]).unwrap();
        let o = OverlayDevice::new(base.clone());
        o.write(4000, &[7u8; 200]).unwrap();
        o.zero(9000, 100).unwrap();
        let mut b = vec![0u8; 10000];
        o.read(0, &mut b).unwrap();
        assert!(b[..4000].iter().all(|&x| x == 1));
        assert!(b[4000..4200].iter().all(|&x| x == 7));
        assert!(b[4200..9000].iter().all(|&x| x == 1));
        assert!(b[9000..9100].iter().all(|&x| x == 0));
        assert!(b[9100..].iter().all(|&x| x == 1));
        base.read(0, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 1), "the base is never written");
        assert_eq!(o.written_blocks(), 3);
        assert!(o.write((1 << 20) - 1, &[0, 0]).is_err());
    }
}
