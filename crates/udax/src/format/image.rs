//! The checkpoint image: the whole metadata (every inode with its attributes,
//! extent map and, for directories, entries) written into one checkpoint slot.
//!
//! ```text
//! slot + 0      header block: magic "UDAXCKPT", epoch, body_len, n_records, crc
//! slot + 4096   body: n_records records, each  len:u32 crc:u32 payload[len]
//! ```
//! A record's crc is seeded with (epoch, its device offset). The header is written
//! (and fenced) after the body, so a torn checkpoint has an old or invalid header.

use super::codec::{crc, Reader, Writer};
use super::{FormatError, NAME_MAX};

pub const CKPT_MAGIC: [u8; 8] = *b"UDAXCKPT";
/// Bytes of the checkpoint header record (it occupies the slot's first block).
pub const CKPT_HEADER_SIZE: usize = 64;
/// Bytes before each record's payload (len + crc).
pub const RECORD_HEADER: usize = 8;

const REC_INODE: u8 = 1;
/// The bad-block table (SPEC E1): `n:u32`, then `n` × (`dev_blk:u64`, `len:u64`).
const REC_BADBLOCKS: u8 = 3;
/// The reference counts of shared device blocks (reflink, SPEC R1): `n:u32`,
/// then `n` × (`dev_blk:u64`, `len:u64`, `refs:u32`), each with `refs >= 2`.
const REC_REFCOUNTS: u8 = 4;

/// Encoded bytes of an inode record (frame included) without extents or entries.
pub const INODE_RECORD_BYTES: u64 = RECORD_HEADER as u64 + 1 + 8 + 4 * 5 + 8 * 6 + 4 + 4;
/// Encoded bytes per extent of an inode record.
pub const EXTENT_RECORD_BYTES: u64 = 24;
/// Encoded bytes per directory entry of an inode record, plus its name.
pub const DIRENT_RECORD_BYTES: u64 = 10;
/// Encoded bytes of a bad-block or refcount record (frame included) without ranges.
pub const RANGES_RECORD_BYTES: u64 = RECORD_HEADER as u64 + 1 + 4;
/// Encoded bytes per range of the bad-block record.
pub const BADBLOCK_RANGE_BYTES: u64 = 16;
/// Encoded bytes per range of the refcount record.
pub const REFCOUNT_RANGE_BYTES: u64 = 20;

/// Exact encoded bytes of an inode record with `extents` extents and
/// `dirents` entries whose names total `name_bytes`.
pub fn inode_record_bytes(extents: u64, dirents: u64, name_bytes: u64) -> u64 {
    INODE_RECORD_BYTES + EXTENT_RECORD_BYTES * extents + DIRENT_RECORD_BYTES * dirents + name_bytes
}

/// One record of a checkpoint body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Inode(InodeImage),
    /// Device block ranges `(dev_blk, len)` with media errors.
    BadBlocks(Vec<(u64, u64)>),
    /// Device block ranges `(dev_blk, len, refs)` referenced by `refs >= 2` extents.
    Refcounts(Vec<(u64, u64, u32)>),
}

/// Inode attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Attr {
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub flags: u32,
    pub size: u64,
    pub atime_ns: u64,
    pub mtime_ns: u64,
    pub ctime_ns: u64,
    pub btime_ns: u64,
    /// Parent directory (directories; files keep the directory they were created in).
    pub parent: u64,
}

/// `len` blocks of a file starting at file block `file_blk` live at device block `dev_blk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Extent {
    pub file_blk: u64,
    pub dev_blk: u64,
    pub len: u64,
}

/// One directory entry (`.` and `..` are implicit).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DirentImage {
    pub ino: u64,
    pub file_type: u8,
    pub name: Vec<u8>,
}

/// One inode as stored in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InodeImage {
    pub ino: u64,
    pub attr: Attr,
    pub extents: Vec<Extent>,
    pub dirents: Vec<DirentImage>,
}

/// The checkpoint header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointHeader {
    pub epoch: u64,
    pub body_len: u64,
    pub n_records: u64,
}

/// crc seed of a record of `epoch` at device offset `at`.
pub fn record_seed(epoch: u64, at: u64) -> u64 {
    epoch.rotate_left(32) ^ at
}

/// Encode the header for the slot at device offset `at`.
pub fn encode_checkpoint_header(h: &CheckpointHeader, at: u64) -> Vec<u8> {
    let mut w = Writer::with_capacity(CKPT_HEADER_SIZE);
    w.bytes(&CKPT_MAGIC)
        .u64(h.epoch)
        .u64(h.body_len)
        .u64(h.n_records)
        .pad_to(CKPT_HEADER_SIZE);
    let c = crc(at, &w.buf[..CKPT_HEADER_SIZE - 4]);
    w.patch_u32(CKPT_HEADER_SIZE - 4, c);
    w.buf
}

/// Decode a checkpoint header read from `at`. `slot_bytes` bounds `body_len`.
pub fn decode_checkpoint_header(
    buf: &[u8],
    at: u64,
    slot_bytes: u64,
) -> Result<CheckpointHeader, FormatError> {
    let mut r = Reader::new(buf, at, "checkpoint header");
    if buf.len() < CKPT_HEADER_SIZE {
        return Err(r.corrupt("short read"));
    }
    if r.array::<8>()? != CKPT_MAGIC {
        return Err(r.corrupt("bad magic"));
    }
    let stored = u32::from_le_bytes(
        buf[CKPT_HEADER_SIZE - 4..CKPT_HEADER_SIZE]
            .try_into()
            .unwrap_or([0; 4]),
    );
    if crc(at, &buf[..CKPT_HEADER_SIZE - 4]) != stored {
        return Err(FormatError::Corrupted {
            what: "checkpoint header: checksum mismatch".into(),
            device_offset: at,
        });
    }
    let h = CheckpointHeader {
        epoch: r.u64()?,
        body_len: r.u64()?,
        n_records: r.u64()?,
    };
    if h.body_len > slot_bytes.saturating_sub(crate::BLOCK_SIZE) {
        return Err(FormatError::Corrupted {
            what: format!("checkpoint header: body length {} exceeds slot", h.body_len),
            device_offset: at,
        });
    }
    Ok(h)
}

/// Frame the payload written by `body` as a record: `len:u32 crc:u32 payload`,
/// the crc seeded with (epoch, the record's device offset `body_at + start`).
fn framed(w: &mut Writer, epoch: u64, body_at: u64, body: impl FnOnce(&mut Writer)) {
    let start = w.len();
    w.u32(0).u32(0);
    body(w);
    let len = w.len() - start - RECORD_HEADER;
    w.patch_u32(start, len as u32);
    let at = body_at + start as u64;
    let c = crc(record_seed(epoch, at), &w.buf[start + RECORD_HEADER..]);
    w.patch_u32(start + 4, c);
}

/// Append the bad-block table record (ranges of device blocks).
pub fn encode_badblocks_record(w: &mut Writer, ranges: &[(u64, u64)], epoch: u64, body_at: u64) {
    framed(w, epoch, body_at, |w| {
        w.u8(REC_BADBLOCKS).u32(ranges.len() as u32);
        for &(b, l) in ranges {
            w.u64(b).u64(l);
        }
    });
}

/// Append the shared-block reference count record.
pub fn encode_refcount_record(
    w: &mut Writer,
    ranges: &[(u64, u64, u32)],
    epoch: u64,
    body_at: u64,
) {
    framed(w, epoch, body_at, |w| {
        w.u8(REC_REFCOUNTS).u32(ranges.len() as u32);
        for &(b, l, n) in ranges {
            w.u64(b).u64(l).u32(n);
        }
    });
}

/// Append the record of `ino` to `w`, as it will sit at device offset
/// `body_at + w.len()`, for checkpoint `epoch`.
pub fn encode_inode_record(w: &mut Writer, ino: &InodeImage, epoch: u64, body_at: u64) {
    framed(w, epoch, body_at, |w| encode_inode_payload(w, ino));
}

fn encode_inode_payload(w: &mut Writer, ino: &InodeImage) {
    w.u8(REC_INODE).u64(ino.ino);
    let a = &ino.attr;
    w.u32(a.mode)
        .u32(a.nlink)
        .u32(a.uid)
        .u32(a.gid)
        .u32(a.flags)
        .u64(a.size)
        .u64(a.atime_ns)
        .u64(a.mtime_ns)
        .u64(a.ctime_ns)
        .u64(a.btime_ns)
        .u64(a.parent);
    w.u32(ino.extents.len() as u32);
    for e in &ino.extents {
        w.u64(e.file_blk).u64(e.dev_blk).u64(e.len);
    }
    w.u32(ino.dirents.len() as u32);
    for d in &ino.dirents {
        w.u64(d.ino).u8(d.file_type).name(&d.name);
    }
}

/// Parse the inode record at the start of `r` (a reader over the rest of the
/// body); the reader is left after the record. Any other kind is an error.
#[cfg(test)]
pub fn parse_inode_record(r: &mut Reader<'_>, epoch: u64) -> Result<InodeImage, FormatError> {
    let at = r.device_offset();
    match parse_record(r, epoch)? {
        Record::Inode(i) => Ok(i),
        Record::BadBlocks(_) | Record::Refcounts(_) => Err(FormatError::Corrupted {
            what: "checkpoint record: expected an inode".into(),
            device_offset: at,
        }),
    }
}

/// Parse the record at the start of `r`; the reader is left after it.
pub fn parse_record(r: &mut Reader<'_>, epoch: u64) -> Result<Record, FormatError> {
    let at = r.device_offset();
    let len = r.u32()? as usize;
    let stored = r.u32()?;
    if len > r.remaining() {
        return Err(FormatError::Corrupted {
            what: format!("checkpoint record: length {len} runs past the body"),
            device_offset: at,
        });
    }
    let payload = r.bytes(len)?;
    if crc(record_seed(epoch, at), payload) != stored {
        return Err(FormatError::Corrupted {
            what: "checkpoint record: checksum mismatch".into(),
            device_offset: at,
        });
    }
    let mut p = Reader::new(payload, at + RECORD_HEADER as u64, "checkpoint record");
    let kind = p.u8()?;
    match kind {
        REC_INODE => parse_inode_payload(&mut p).map(Record::Inode),
        REC_BADBLOCKS => {
            let n = p.count(16)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push((p.u64()?, p.u64()?));
            }
            if p.remaining() != 0 {
                return Err(p.corrupt("trailing bytes"));
            }
            Ok(Record::BadBlocks(v))
        }
        REC_REFCOUNTS => {
            let n = p.count(20)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let (b, l, c) = (p.u64()?, p.u64()?, p.u32()?);
                if l == 0 || c < 2 || b.checked_add(l).is_none() {
                    return Err(p.corrupt(format_args!("refcount range {b}+{l} x{c}")));
                }
                v.push((b, l, c));
            }
            if p.remaining() != 0 {
                return Err(p.corrupt("trailing bytes"));
            }
            Ok(Record::Refcounts(v))
        }
        _ => Err(p.corrupt(format_args!("unknown record kind {kind}"))),
    }
}

fn parse_inode_payload(p: &mut Reader<'_>) -> Result<InodeImage, FormatError> {
    let ino = p.u64()?;
    let attr = Attr {
        mode: p.u32()?,
        nlink: p.u32()?,
        uid: p.u32()?,
        gid: p.u32()?,
        flags: p.u32()?,
        size: p.u64()?,
        atime_ns: p.u64()?,
        mtime_ns: p.u64()?,
        ctime_ns: p.u64()?,
        btime_ns: p.u64()?,
        parent: p.u64()?,
    };
    let n = p.count(24)?;
    let mut extents = Vec::with_capacity(n);
    for _ in 0..n {
        extents.push(Extent {
            file_blk: p.u64()?,
            dev_blk: p.u64()?,
            len: p.u64()?,
        });
    }
    let n = p.count(10)?;
    let mut dirents = Vec::with_capacity(n);
    for _ in 0..n {
        let ino = p.u64()?;
        let file_type = p.u8()?;
        let name = p.name()?;
        debug_assert!(name.len() <= NAME_MAX);
        dirents.push(DirentImage {
            ino,
            file_type,
            name,
        });
    }
    if p.remaining() != 0 {
        return Err(p.corrupt("trailing bytes"));
    }
    Ok(InodeImage {
        ino,
        attr,
        extents,
        dirents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(ino: u64) -> InodeImage {
        InodeImage {
            ino,
            attr: Attr {
                mode: 0o100644,
                nlink: 1,
                size: 12345,
                parent: 1,
                ..Default::default()
            },
            extents: vec![Extent {
                file_blk: 0,
                dev_blk: 1024,
                len: 4,
            }],
            dirents: vec![DirentImage {
                ino: 9,
                file_type: 8,
                name: b"a".to_vec(),
            }],
        }
    }

    #[test]
    fn inode_record_round_trip() {
        let mut w = Writer::new();
        encode_inode_record(&mut w, &sample(2), 5, 8192);
        encode_inode_record(&mut w, &sample(3), 5, 8192);
        let mut r = Reader::new(&w.buf, 8192, "body");
        assert_eq!(parse_inode_record(&mut r, 5).unwrap(), sample(2));
        assert_eq!(parse_inode_record(&mut r, 5).unwrap(), sample(3));
        // Wrong epoch: a stale record does not verify.
        let mut r = Reader::new(&w.buf, 8192, "body");
        assert!(parse_inode_record(&mut r, 4).is_err());
    }

    #[test]
    fn e1_badblocks_record_round_trip() {
        let mut w = Writer::new();
        encode_badblocks_record(&mut w, &[(600, 1), (900, 3)], 7, 4096);
        encode_inode_record(&mut w, &sample(2), 7, 4096);
        let mut r = Reader::new(&w.buf, 4096, "body");
        assert_eq!(
            parse_record(&mut r, 7).unwrap(),
            Record::BadBlocks(vec![(600, 1), (900, 3)])
        );
        assert_eq!(parse_record(&mut r, 7).unwrap(), Record::Inode(sample(2)));
        let mut r = Reader::new(&w.buf, 4096, "body");
        assert!(parse_inode_record(&mut r, 7).is_err(), "kind checked");
    }

    /// The sizes the metadata accounting uses are the encoder's, exactly.
    #[test]
    fn record_sizes_match_the_encoder() {
        let mut img = sample(2);
        for (ne, nd) in [(0usize, 0usize), (1, 1), (5, 0), (0, 7), (3, 4)] {
            img.extents = vec![img_extent(); ne];
            img.dirents = (0..nd)
                .map(|i| DirentImage {
                    ino: 9,
                    file_type: 8,
                    name: vec![b'n'; i + 1],
                })
                .collect();
            let names: u64 = img.dirents.iter().map(|d| d.name.len() as u64).sum();
            let mut w = Writer::new();
            encode_inode_record(&mut w, &img, 1, 0);
            assert_eq!(
                w.len() as u64,
                inode_record_bytes(ne as u64, nd as u64, names)
            );
        }
        for n in [0usize, 1, 3] {
            let mut w = Writer::new();
            encode_badblocks_record(&mut w, &vec![(1, 1); n], 1, 0);
            assert_eq!(
                w.len() as u64,
                RANGES_RECORD_BYTES + BADBLOCK_RANGE_BYTES * n as u64
            );
            let mut w = Writer::new();
            encode_refcount_record(&mut w, &vec![(1, 1, 2); n], 1, 0);
            assert_eq!(
                w.len() as u64,
                RANGES_RECORD_BYTES + REFCOUNT_RANGE_BYTES * n as u64
            );
        }
    }

    fn img_extent() -> Extent {
        Extent {
            file_blk: 0,
            dev_blk: 1024,
            len: 4,
        }
    }

    #[test]
    fn checkpoint_header_round_trip() {
        let h = CheckpointHeader {
            epoch: 3,
            body_len: 100,
            n_records: 2,
        };
        let b = encode_checkpoint_header(&h, 4096 * 70);
        assert_eq!(decode_checkpoint_header(&b, 4096 * 70, 1 << 20).unwrap(), h);
        assert!(decode_checkpoint_header(&b, 4096 * 71, 1 << 20).is_err());
    }

    proptest! {
        /// F8: arbitrary bytes never panic the record parser.
        #[test]
        fn f8_arbitrary_record_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), epoch in any::<u64>()) {
            let mut r = Reader::new(&bytes, 0, "body");
            let _ = parse_record(&mut r, epoch);
            let _ = decode_checkpoint_header(&bytes, 0, 1 << 20);
        }

        /// F8: any single bit flip in a record is detected.
        #[test]
        fn f8_record_bit_flip_detected(bit in 0usize..(8 * 120)) {
            let mut w = Writer::new();
            encode_inode_record(&mut w, &sample(2), 1, 0);
            let mut b = w.buf.clone();
            let bit = bit % (b.len() * 8);
            b[bit / 8] ^= 1 << (bit % 8);
            let mut r = Reader::new(&b, 0, "body");
            prop_assert!(parse_inode_record(&mut r, 1).map(|i| i != sample(2)).unwrap_or(true));
        }
    }
}
