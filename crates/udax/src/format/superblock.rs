//! The superblock: static geometry, written once by mkfs (primary in block 0,
//! backup in block 1). Nothing in it changes at run time.

use super::codec::{crc, Reader, Writer};
use super::{FormatError, FORMAT_VERSION, SB_MAGIC, SUPERBLOCK_SIZE};
use crate::{BLOCKS_PER_HUGE, BLOCK_SIZE};

/// Smallest device: two 2 MiB chunks (metadata + one data chunk).
pub const MIN_DEVICE_BLOCKS: u64 = 2 * BLOCKS_PER_HUGE;

/// Where each region lives, in device blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Geometry {
    pub total_blocks: u64,
    pub log_start: u64,
    pub log_blocks: u64,
    /// First block of checkpoint slot 0; slot 1 follows it.
    pub cp_start: u64,
    /// Blocks per checkpoint slot.
    pub cp_blocks: u64,
    /// First data block (a multiple of 512: 2 MiB aligned).
    pub data_start: u64,
}

impl Geometry {
    /// The layout mkfs uses for a device of `total_blocks`: a log of 1/256 of the
    /// device (128 KiB..256 MiB) and two checkpoint slots of 1/64 each
    /// (256 KiB..1 GiB), then the data area from the next 2 MiB boundary.
    pub fn for_device(total_blocks: u64) -> Result<Self, FormatError> {
        check_min_size(total_blocks)?;
        let log_blocks = (total_blocks / 256).clamp(32, 65536);
        let cp_blocks = (total_blocks / 64).clamp(64, 262_144);
        let log_start = 2;
        let cp_start = log_start + log_blocks;
        let data_start = (cp_start + 2 * cp_blocks).next_multiple_of(BLOCKS_PER_HUGE);
        let g = Geometry {
            total_blocks,
            log_start,
            log_blocks,
            cp_start,
            cp_blocks,
            data_start,
        };
        g.validate()?;
        Ok(g)
    }

    /// Check the regions are in order, inside the device, and leave data space.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |m: &str| Err(FormatError::BadGeometry(m.to_string()));
        if self.log_start < 2 || self.log_blocks < 2 {
            return bad("log region");
        }
        if self.cp_start < self.log_start + self.log_blocks || self.cp_blocks < 2 {
            return bad("checkpoint region");
        }
        let cp_end = self
            .cp_blocks
            .checked_mul(2)
            .and_then(|n| n.checked_add(self.cp_start));
        match cp_end {
            Some(e) if e <= self.data_start => {}
            _ => return bad("checkpoint overlaps data"),
        }
        if !self.data_start.is_multiple_of(BLOCKS_PER_HUGE) {
            return bad("data area not 2 MiB aligned");
        }
        if self.data_start >= self.total_blocks {
            return bad("no data area");
        }
        check_max_size(self.total_blocks)
    }

    pub fn data_blocks(&self) -> u64 {
        self.total_blocks - self.data_start
    }
    /// Byte offset of checkpoint slot `i` (0 or 1).
    pub fn slot_offset(&self, i: u64) -> u64 {
        (self.cp_start + i * self.cp_blocks) * BLOCK_SIZE
    }
    pub fn slot_bytes(&self) -> u64 {
        self.cp_blocks * BLOCK_SIZE
    }
    pub fn log_offset(&self) -> u64 {
        self.log_start * BLOCK_SIZE
    }
    pub fn log_bytes(&self) -> u64 {
        self.log_blocks * BLOCK_SIZE
    }
}

impl Geometry {
    /// The log region, for the journal (which needs nothing else of the layout).
    pub fn log_region(&self) -> LogRegion {
        LogRegion {
            offset: self.log_offset(),
            bytes: self.log_bytes(),
            total_blocks: self.total_blocks,
        }
    }
}

/// Where the metadata log lies (format 2 and 3 alike), and the device size
/// that bounds the blocks its records may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRegion {
    /// Device offset of the log's first byte.
    pub offset: u64,
    /// Bytes of the log region (its last 64 are the tail line).
    pub bytes: u64,
    pub total_blocks: u64,
}

impl LogRegion {
    pub fn log_offset(&self) -> u64 {
        self.offset
    }
    pub fn log_bytes(&self) -> u64 {
        self.bytes
    }
}

/// The superblock.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Superblock {
    pub version: u32,
    pub incompat: u32,
    pub compat: u32,
    pub ro_compat: u32,
    pub uuid: [u8; 16],
    pub geometry: Geometry,
    pub mkfs_time_ns: u64,
    pub label: [u8; 32],
}

const CRC_AT: usize = SUPERBLOCK_SIZE - 4;

/// The superblock's fields whatever the format version: format 2 and 3 lay
/// them out alike and differ only in what the six geometry words mean
/// (format 2: total, log start, log blocks, checkpoint start, checkpoint
/// blocks, data start; format 3: the same with the bitmap in place of the
/// checkpoint slots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawSuperblock {
    pub version: u32,
    pub incompat: u32,
    pub compat: u32,
    pub ro_compat: u32,
    pub uuid: [u8; 16],
    pub words: [u64; 6],
    pub mkfs_time_ns: u64,
    pub label: [u8; 32],
}

impl RawSuperblock {
    /// Exactly [`SUPERBLOCK_SIZE`] bytes for device offset `at`.
    pub fn encode(&self, at: u64) -> Vec<u8> {
        let mut w = Writer::with_capacity(SUPERBLOCK_SIZE);
        w.bytes(&SB_MAGIC)
            .u32(self.version)
            .u32(self.incompat)
            .u32(self.compat)
            .u32(self.ro_compat)
            .bytes(&self.uuid)
            .u32(BLOCK_SIZE as u32)
            .u32(0);
        for v in self.words {
            w.u64(v);
        }
        w.u64(self.mkfs_time_ns)
            .bytes(&self.label)
            .pad_to(SUPERBLOCK_SIZE);
        let c = crc(at, &w.buf[..CRC_AT]);
        w.patch_u32(CRC_AT, c);
        w.buf
    }

    /// Parse the bytes read from device offset `at`: magic, checksum, feature
    /// flags and block size checked; the version is the caller's to check.
    pub fn decode(buf: &[u8], at: u64) -> Result<Self, FormatError> {
        let mut r = Reader::new(buf, at, "superblock");
        if buf.len() < SUPERBLOCK_SIZE {
            return Err(r.corrupt("short read"));
        }
        if r.array::<8>()? != SB_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let stored = u32::from_le_bytes(buf[CRC_AT..SUPERBLOCK_SIZE].try_into().unwrap_or([0; 4]));
        if crc(at, &buf[..CRC_AT]) != stored {
            return Err(FormatError::Corrupted {
                what: "superblock: checksum mismatch".into(),
                device_offset: at,
            });
        }
        let version = r.u32()?;
        let incompat = r.u32()?;
        if incompat != 0 {
            return Err(FormatError::UnsupportedFeatures(incompat));
        }
        let compat = r.u32()?;
        let ro_compat = r.u32()?;
        let uuid = r.array::<16>()?;
        let bs = r.u32()?;
        if bs as u64 != BLOCK_SIZE {
            return Err(FormatError::BadGeometry(format!("block size {bs}")));
        }
        let _ = r.u32()?;
        let mut words = [0u64; 6];
        for v in &mut words {
            *v = r.u64()?;
        }
        Ok(RawSuperblock {
            version,
            incompat,
            compat,
            ro_compat,
            uuid,
            words,
            mkfs_time_ns: r.u64()?,
            label: r.array::<32>()?,
        })
    }
}

/// Refuse a device smaller than [`MIN_DEVICE_BLOCKS`] (both formats).
pub(crate) fn check_min_size(total_blocks: u64) -> Result<(), FormatError> {
    if total_blocks < MIN_DEVICE_BLOCKS {
        return Err(FormatError::TooSmall {
            size: total_blocks * BLOCK_SIZE,
            min: MIN_DEVICE_BLOCKS * BLOCK_SIZE,
        });
    }
    Ok(())
}

/// Refuse a device whose byte offsets would not fit comfortably in 64 bits
/// (both formats).
pub(crate) fn check_max_size(total_blocks: u64) -> Result<(), FormatError> {
    if total_blocks
        .checked_mul(BLOCK_SIZE)
        .is_none_or(|b| b > (1u64 << 62))
    {
        return Err(FormatError::BadGeometry("device too large".into()));
    }
    Ok(())
}

/// Refuse a geometry larger than the device it was read from.
pub(crate) fn fits_device(total_blocks: u64, device_blocks: u64) -> Result<(), FormatError> {
    if total_blocks > device_blocks {
        return Err(FormatError::BadGeometry(format!(
            "file system has {total_blocks} blocks but the device only {device_blocks}"
        )));
    }
    Ok(())
}

impl Superblock {
    /// Encode to exactly [`SUPERBLOCK_SIZE`] bytes for device offset `at`.
    pub fn encode(&self, at: u64) -> Vec<u8> {
        let g = &self.geometry;
        RawSuperblock {
            version: self.version,
            incompat: self.incompat,
            compat: self.compat,
            ro_compat: self.ro_compat,
            uuid: self.uuid,
            words: [
                g.total_blocks,
                g.log_start,
                g.log_blocks,
                g.cp_start,
                g.cp_blocks,
                g.data_start,
            ],
            mkfs_time_ns: self.mkfs_time_ns,
            label: self.label,
        }
        .encode(at)
    }

    /// Decode a superblock read from device offset `at`, checking magic, checksum,
    /// version, features and geometry (`device_blocks` bounds the geometry).
    pub fn decode(buf: &[u8], at: u64, device_blocks: u64) -> Result<Self, FormatError> {
        let raw = RawSuperblock::decode(buf, at)?;
        if raw.version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion(raw.version));
        }
        let [total_blocks, log_start, log_blocks, cp_start, cp_blocks, data_start] = raw.words;
        let geometry = Geometry {
            total_blocks,
            log_start,
            log_blocks,
            cp_start,
            cp_blocks,
            data_start,
        };
        geometry.validate()?;
        fits_device(geometry.total_blocks, device_blocks)?;
        Ok(Superblock {
            version: raw.version,
            incompat: raw.incompat,
            compat: raw.compat,
            ro_compat: raw.ro_compat,
            uuid: raw.uuid,
            geometry,
            mkfs_time_ns: raw.mkfs_time_ns,
            label: raw.label,
        })
    }

    /// The label as text (up to the first NUL).
    pub fn label_str(&self) -> String {
        label_text(&self.label)
    }

    /// UUID in the usual 8-4-4-4-12 form.
    pub fn uuid_str(&self) -> String {
        uuid_text(&self.uuid)
    }
}

/// A superblock label as text (up to the first NUL; both formats).
pub(crate) fn label_text(label: &[u8; 32]) -> String {
    let end = label.iter().position(|&b| b == 0).unwrap_or(32);
    String::from_utf8_lossy(&label[..end]).into_owned()
}

/// A UUID in the usual 8-4-4-4-12 form (both formats).
pub(crate) fn uuid_text(uuid: &[u8; 16]) -> String {
    let h: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            version: FORMAT_VERSION,
            incompat: 0,
            compat: 0,
            ro_compat: 0,
            uuid: [7; 16],
            geometry: Geometry::for_device(16384).unwrap(),
            mkfs_time_ns: 42,
            label: [0; 32],
        }
    }

    #[test]
    fn superblock_round_trip() {
        let sb = sample();
        let b = sb.encode(0);
        assert_eq!(b.len(), SUPERBLOCK_SIZE);
        assert_eq!(Superblock::decode(&b, 0, 16384).unwrap(), sb);
    }

    #[test]
    fn f8_superblock_bit_flip_is_detected() {
        let b = sample().encode(0);
        for byte in 0..SUPERBLOCK_SIZE {
            let mut c = b.clone();
            c[byte] ^= 0x10;
            assert!(Superblock::decode(&c, 0, 16384).is_err(), "flip at {byte}");
        }
    }

    #[test]
    fn f8_superblock_at_wrong_offset_is_rejected() {
        let b = sample().encode(0);
        assert!(Superblock::decode(&b, 4096, 16384).is_err());
    }

    #[test]
    fn geometry_is_ordered_and_aligned() {
        for blocks in [MIN_DEVICE_BLOCKS, 16384, 262_144, 1 << 28] {
            let g = Geometry::for_device(blocks).unwrap();
            assert_eq!(g.data_start % BLOCKS_PER_HUGE, 0);
            assert!(g.data_start < g.total_blocks);
        }
        assert!(Geometry::for_device(MIN_DEVICE_BLOCKS - 1).is_err());
    }
}
