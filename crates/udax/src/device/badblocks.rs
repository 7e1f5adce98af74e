//! Media errors of a device (SPEC E1): the device's list of bad byte ranges.
//!
//! Sources: [`Device::inject_poison`](super::Device::inject_poison) (tests, `udax
//! inject-poison`), and for `/dev/dax` devices the kernel's bad-block list of the
//! nvdimm region, read from sysfs when the device is opened
//! ([`devdax_badblocks`]). The file system keeps its own persistent table
//! (checkpoint record kind 3, log ops 14/15); this list is what the hardware says.

use crate::sync::Mutex;
use rangemap::RangeSet;
use std::ops::Range;
use std::path::Path;

/// Granularity of the kernel's bad-block lists.
pub const SECTOR: u64 = 512;

/// What an emulated poisoned range holds after [`super::Device::inject_poison`]:
/// the data is gone, as it is on real hardware, and a reader that ignored the
/// error would see this pattern instead of its data.
pub const POISON_PATTERN: &[u8; 8] = b"POISONED";

/// Bad byte ranges of a device, rounded out to sectors. Internally locked.
#[derive(Debug, Default)]
pub struct BadList(Mutex<RangeSet<u64>>);

impl BadList {
    pub fn insert(&self, r: Range<u64>) {
        if r.start < r.end {
            self.0.lock().insert(round_out(r));
        }
    }

    pub fn remove(&self, r: Range<u64>) {
        if r.start < r.end {
            self.0.lock().remove(r);
        }
    }

    pub fn ranges(&self) -> Vec<Range<u64>> {
        self.0.lock().iter().cloned().collect()
    }
}

/// `r` widened to whole sectors.
pub fn round_out(r: Range<u64>) -> Range<u64> {
    r.start / SECTOR * SECTOR..r.end.div_ceil(SECTOR) * SECTOR
}

/// The bad byte ranges of a device-dax device, from sysfs.
///
/// `dax_dir` is the device's sysfs directory (`/sys/dev/char/MAJ:MIN`, a link into
/// `.../ndbusN/regionM/daxM.K/daxM.K`). The region's `badblocks` file lists
/// `sector count` pairs (512-byte sectors from the start of the region); the
/// region's and the dax device's `resource` files give their physical start
/// addresses, so a bad sector maps to device offset
/// `region_start + sector*512 - dax_start`. Ranges outside the device are dropped.
/// A device without a region with a bad-block list (e.g. CXL or hmem dax) has none.
pub fn devdax_badblocks(dax_dir: &Path, dev_len: u64) -> Result<Vec<Range<u64>>, String> {
    let dir = dax_dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dax_dir.display()))?;
    let Some(region) = dir.ancestors().find(|a| a.join("badblocks").is_file()) else {
        return Ok(Vec::new());
    };
    let hex = |p: &Path| -> Result<u64, String> {
        let s = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let t = s.trim();
        u64::from_str_radix(t.trim_start_matches("0x"), 16)
            .map_err(|_| format!("{}: not a hex address: {t:?}", p.display()))
    };
    let region_start = hex(&region.join("resource"))?;
    let dax_start = hex(&dir.join("resource"))?;
    let list = std::fs::read_to_string(region.join("badblocks"))
        .map_err(|e| format!("{}: {e}", region.join("badblocks").display()))?;
    let mut out = Vec::new();
    for (n, line) in list.lines().enumerate() {
        let mut it = line.split_whitespace();
        let (Some(a), Some(b), None) = (it.next(), it.next(), it.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!("badblocks line {}: {line:?}", n + 1));
        };
        let parse = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("badblocks line {}: {line:?}", n + 1))
        };
        let (sector, count) = (parse(a)?, parse(b)?);
        let start = sector
            .checked_mul(SECTOR)
            .and_then(|o| o.checked_add(region_start))
            .ok_or_else(|| format!("badblocks line {}: overflows", n + 1))?;
        let end = start.saturating_add(count.saturating_mul(SECTOR));
        // Clip to the dax device's own range.
        let (s, e) = (
            start.max(dax_start),
            end.min(dax_start.saturating_add(dev_len)),
        );
        if s < e {
            out.push(s - dax_start..e - dax_start);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e1_devdax_badblocks_read_from_a_fake_sysfs_tree() {
        let t = tempfile::tempdir().unwrap();
        let region = t.path().join("devices/ndbus0/region0");
        let dax = region.join("dax0.1/dax0.1");
        std::fs::create_dir_all(&dax).unwrap();
        // Region at 0x100000000; the dax device starts 2 MiB into it, 64 MiB long.
        std::fs::write(region.join("resource"), "0x100000000\n").unwrap();
        std::fs::write(dax.join("resource"), "0x100200000\n").unwrap();
        // Sector 8 (before the device), sector 4096+8 (4 KiB into the device,
        // 2 sectors), and one past its end.
        std::fs::write(
            region.join("badblocks"),
            format!("8 1\n{} 2\n{} 1\n", 4096 + 8, 4096 + (64 << 20) / 512 + 10),
        )
        .unwrap();
        // sysfs reaches the device through a link, as /sys/dev/char/MAJ:MIN does.
        let link = t.path().join("251:1");
        std::os::unix::fs::symlink(&dax, &link).unwrap();
        let got = devdax_badblocks(&link, 64 << 20).unwrap();
        assert_eq!(got, vec![4096..4096 + 1024]);
        // A device with no region list has no bad blocks.
        let lone = t.path().join("lone");
        std::fs::create_dir_all(&lone).unwrap();
        assert!(devdax_badblocks(&lone, 1 << 20).unwrap().is_empty());
        // A malformed list is an error naming the line, not a panic.
        std::fs::write(region.join("badblocks"), "8 x\n").unwrap();
        let e = devdax_badblocks(&link, 64 << 20).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn bad_list_rounds_to_sectors() {
        let b = BadList::default();
        b.insert(1000..1001);
        b.insert(4096..8192);
        assert_eq!(b.ranges(), vec![512..1024, 4096..8192]);
        b.remove(4096..8192);
        assert_eq!(b.ranges(), vec![512..1024]);
    }
}
