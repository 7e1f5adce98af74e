//! Log records: one transaction of logical metadata operations each.
//!
//! ```text
//! 0   magic  u32  "ULOG"
//! 4   len    u32  payload bytes
//! 8   epoch  u64  checkpoint epoch this record follows
//! 16  seq    u64  0, 1, 2, ... within the epoch
//! 24  crc    u32  crc32c(seed = epoch/offset) over bytes 0..24 and the payload
//! 28  pad    u32
//! 32  payload: ops, each a tag byte and its fields
//! ```
//! Records are 8-byte aligned in the log. Replay accepts records while magic, epoch,
//! seq and crc all match, and stops at the first that does not (a torn tail).

use super::codec::{crc, Reader, Writer};
use super::image::record_seed;
use super::FormatError;

pub const LOG_MAGIC: u32 = u32::from_le_bytes(*b"ULOG");
pub const LOG_HEADER_SIZE: usize = 32;
/// Upper bound of one encoded op (the largest is a link with a 255-byte name),
/// but for [`Op::Symlink`], whose target takes up to 4095 bytes more: its
/// transaction reserves log room for [`symlink_reserve_ops`] ops.
pub const MAX_OP_BYTES: usize = 1 + 8 + 8 + 1 + 1 + 255;

/// Ops' worth of log room an [`Op::Symlink`] of a `len`-byte target takes.
pub fn symlink_reserve_ops(len: usize) -> usize {
    1 + len.div_ceil(MAX_OP_BYTES)
}

/// A logical metadata operation. Applying the same sequence of ops to the same
/// image always gives the same state; the fs applies each op to its in-memory
/// state right after the op's record is in the log, and replay applies them again.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Op {
    /// A new inode with `nlink` 0 (files) or 1 (directories: their `.`).
    NewInode {
        ino: u64,
        mode: u32,
        uid: u32,
        gid: u32,
        time_ns: u64,
        parent: u64,
    },
    /// Add entry `name` -> `ino` in `dir`; `ino`'s link count grows (and `dir`'s, for a subdirectory).
    Link {
        dir: u64,
        ino: u64,
        file_type: u8,
        name: Vec<u8>,
        time_ns: u64,
    },
    /// Remove entry `name` from `dir`; its inode's link count drops.
    Unlink {
        dir: u64,
        name: Vec<u8>,
        time_ns: u64,
    },
    /// Set the size (no block is mapped or unmapped by this op).
    SetSize { ino: u64, size: u64, time_ns: u64 },
    /// Map file blocks `[file_blk, file_blk+len)` to device blocks from `dev_blk`
    /// (the range must be a hole).
    Map {
        ino: u64,
        file_blk: u64,
        dev_blk: u64,
        len: u64,
    },
    /// Map file blocks `[file_blk, file_blk+len)` (a hole) to device blocks from
    /// `dev_blk` that another extent already references (reflink, SPEC R1):
    /// their reference count grows by one.
    MapShared {
        ino: u64,
        file_blk: u64,
        dev_blk: u64,
        len: u64,
    },
    /// Turn file blocks `[file_blk, file_blk+len)` into a hole, dropping one
    /// reference on their blocks (a block no extent references is free).
    Unmap { ino: u64, file_blk: u64, len: u64 },
    /// Move every extent at or after `from_blk` by `delta` blocks (collapse/insert range).
    Shift { ino: u64, from_blk: u64, delta: i64 },
    /// Delete an inode (link count 0, or an empty directory) and free its blocks.
    FreeInode { ino: u64 },
    /// Set the timestamps.
    Times {
        ino: u64,
        atime_ns: u64,
        mtime_ns: u64,
        ctime_ns: u64,
    },
    /// Record a directory's new parent (rename).
    SetParent { ino: u64, parent: u64 },
    /// chmod/chown.
    SetMode {
        ino: u64,
        mode: u32,
        uid: u32,
        gid: u32,
        time_ns: u64,
    },
    /// Inode `ino`, a new symbolic link (mode `S_IFLNK`), points at
    /// `target` (1 to 4095 bytes, no NUL); its size becomes the target's
    /// length. A target longer than fits its slot inline (format 3) is also
    /// written to the data block the link maps, before the transaction.
    Symlink { ino: u64, target: Vec<u8> },
    /// Inode `ino`, a new character or block special file, has device
    /// number `rdev`.
    SetRdev { ino: u64, rdev: u64 },
    /// Device blocks `[dev_blk, dev_blk+len)` have a media error (SPEC E1): add
    /// them to the bad-block table. Changes no inode.
    Poison { dev_blk: u64, len: u64 },
    /// The media error of `[dev_blk, dev_blk+len)` is gone (the blocks were
    /// overwritten whole): drop them from the bad-block table.
    Unpoison { dev_blk: u64, len: u64 },
}

impl Op {
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Op::NewInode {
                ino,
                mode,
                uid,
                gid,
                time_ns,
                parent,
            } => {
                w.u8(1).u64(*ino).u32(*mode).u32(*uid).u32(*gid);
                w.u64(*time_ns).u64(*parent);
            }
            Op::Link {
                dir,
                ino,
                file_type,
                name,
                time_ns,
            } => {
                w.u8(2).u64(*dir).u64(*ino).u8(*file_type).u64(*time_ns);
                w.name(name);
            }
            Op::Unlink { dir, name, time_ns } => {
                w.u8(3).u64(*dir).u64(*time_ns).name(name);
            }
            Op::SetSize { ino, size, time_ns } => {
                w.u8(4).u64(*ino).u64(*size).u64(*time_ns);
            }
            Op::Map {
                ino,
                file_blk,
                dev_blk,
                len,
            } => {
                w.u8(5).u64(*ino).u64(*file_blk).u64(*dev_blk).u64(*len);
            }
            Op::MapShared {
                ino,
                file_blk,
                dev_blk,
                len,
            } => {
                w.u8(16).u64(*ino).u64(*file_blk).u64(*dev_blk).u64(*len);
            }
            Op::Unmap { ino, file_blk, len } => {
                w.u8(6).u64(*ino).u64(*file_blk).u64(*len);
            }
            Op::Shift {
                ino,
                from_blk,
                delta,
            } => {
                w.u8(7).u64(*ino).u64(*from_blk).i64(*delta);
            }
            Op::FreeInode { ino } => {
                w.u8(8).u64(*ino);
            }
            Op::Times {
                ino,
                atime_ns,
                mtime_ns,
                ctime_ns,
            } => {
                w.u8(9)
                    .u64(*ino)
                    .u64(*atime_ns)
                    .u64(*mtime_ns)
                    .u64(*ctime_ns);
            }
            Op::SetParent { ino, parent } => {
                w.u8(10).u64(*ino).u64(*parent);
            }
            Op::SetMode {
                ino,
                mode,
                uid,
                gid,
                time_ns,
            } => {
                w.u8(11)
                    .u64(*ino)
                    .u32(*mode)
                    .u32(*uid)
                    .u32(*gid)
                    .u64(*time_ns);
            }
            Op::Poison { dev_blk, len } => {
                w.u8(14).u64(*dev_blk).u64(*len);
            }
            Op::Symlink { ino, target } => {
                w.u8(17).u64(*ino).u16(target.len() as u16).bytes(target);
            }
            Op::SetRdev { ino, rdev } => {
                w.u8(18).u64(*ino).u64(*rdev);
            }
            Op::Unpoison { dev_blk, len } => {
                w.u8(15).u64(*dev_blk).u64(*len);
            }
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Op, FormatError> {
        let tag = r.u8()?;
        Ok(match tag {
            1 => Op::NewInode {
                ino: r.u64()?,
                mode: r.u32()?,
                uid: r.u32()?,
                gid: r.u32()?,
                time_ns: r.u64()?,
                parent: r.u64()?,
            },
            2 => Op::Link {
                dir: r.u64()?,
                ino: r.u64()?,
                file_type: r.u8()?,
                time_ns: r.u64()?,
                name: r.name()?,
            },
            3 => Op::Unlink {
                dir: r.u64()?,
                time_ns: r.u64()?,
                name: r.name()?,
            },
            4 => Op::SetSize {
                ino: r.u64()?,
                size: r.u64()?,
                time_ns: r.u64()?,
            },
            5 => Op::Map {
                ino: r.u64()?,
                file_blk: r.u64()?,
                dev_blk: r.u64()?,
                len: r.u64()?,
            },
            6 => Op::Unmap {
                ino: r.u64()?,
                file_blk: r.u64()?,
                len: r.u64()?,
            },
            7 => Op::Shift {
                ino: r.u64()?,
                from_blk: r.u64()?,
                delta: r.i64()?,
            },
            8 => Op::FreeInode { ino: r.u64()? },
            9 => Op::Times {
                ino: r.u64()?,
                atime_ns: r.u64()?,
                mtime_ns: r.u64()?,
                ctime_ns: r.u64()?,
            },
            10 => Op::SetParent {
                ino: r.u64()?,
                parent: r.u64()?,
            },
            11 => Op::SetMode {
                ino: r.u64()?,
                mode: r.u32()?,
                uid: r.u32()?,
                gid: r.u32()?,
                time_ns: r.u64()?,
            },
            14 => Op::Poison {
                dev_blk: r.u64()?,
                len: r.u64()?,
            },
            15 => Op::Unpoison {
                dev_blk: r.u64()?,
                len: r.u64()?,
            },
            16 => Op::MapShared {
                ino: r.u64()?,
                file_blk: r.u64()?,
                dev_blk: r.u64()?,
                len: r.u64()?,
            },
            17 => {
                let ino = r.u64()?;
                let n = usize::from(r.u16()?);
                let target = r.bytes(n)?.to_vec();
                if n == 0 || n > super::SYMLINK_MAX || target.contains(&0) {
                    return Err(r.corrupt("invalid symbolic link target"));
                }
                Op::Symlink { ino, target }
            }
            18 => Op::SetRdev {
                ino: r.u64()?,
                rdev: r.u64()?,
            },
            t => return Err(r.corrupt(format_args!("unknown op tag {t}"))),
        })
    }
}

/// One entry of a log record's payload: format 2's logical [`Op`]s, or format
/// 3's physical entries (`format::v3::PhysOp`).
pub trait Entry: Sized {
    fn encode(&self, w: &mut Writer);
    /// Parse one entry of a verified record; `total_blocks` bounds the device
    /// blocks an entry may name.
    fn decode(r: &mut Reader<'_>, total_blocks: u64) -> Result<Self, FormatError>;
}

impl Entry for Op {
    fn encode(&self, w: &mut Writer) {
        Op::encode(self, w)
    }
    fn decode(r: &mut Reader<'_>, _total_blocks: u64) -> Result<Self, FormatError> {
        Op::decode(r)
    }
}

/// A parsed log record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogHeader {
    pub len: u32,
    pub epoch: u64,
    pub seq: u64,
    pub crc: u32,
    /// How many records right before this one were not yet known durable
    /// when it was written (group commit fences several at once). Records
    /// before `seq - unfenced` were fenced: a valid record vouches for them,
    /// so one of them that fails to verify is damage, not a torn tail.
    pub unfenced: u32,
}

impl LogHeader {
    /// The records `0..durable_before()` were durable before this one was written.
    pub fn durable_before(&self) -> u64 {
        self.seq.saturating_sub(u64::from(self.unfenced))
    }
}

/// Bytes of the log's tail line (the last cache line of the log region).
pub const LOG_TAIL_SIZE: usize = 64;
const LOG_TAIL_MAGIC: u32 = u32::from_le_bytes(*b"ULTL");

/// The log's tail line: a copy of the newest record's identity, rewritten
/// (one whole cache line) with every record, so the log's end is vouched for
/// by something outside the records themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogTail {
    pub epoch: u64,
    pub seq: u64,
    /// Records `0..durable_before` were durable when record `seq` was written.
    pub durable_before: u64,
}

/// Encode the tail line for the log whose tail line sits at device offset `at`.
pub fn encode_log_tail(t: &LogTail, at: u64) -> [u8; LOG_TAIL_SIZE] {
    let mut w = Writer::with_capacity(LOG_TAIL_SIZE);
    w.u32(LOG_TAIL_MAGIC)
        .u32(0)
        .u64(t.epoch)
        .u64(t.seq)
        .u64(t.durable_before)
        .pad_to(LOG_TAIL_SIZE);
    let c = crc(record_seed(t.epoch, at), &w.buf[..LOG_TAIL_SIZE - 4]);
    w.patch_u32(LOG_TAIL_SIZE - 4, c);
    let mut out = [0u8; LOG_TAIL_SIZE];
    out.copy_from_slice(&w.buf);
    out
}

/// Decode the tail line read from `at`; an error says why it does not verify.
pub fn decode_log_tail(buf: &[u8], at: u64) -> Result<LogTail, FormatError> {
    let mut r = Reader::new(buf, at, "log tail line");
    if buf.len() < LOG_TAIL_SIZE {
        return Err(r.corrupt("short read"));
    }
    if r.u32()? != LOG_TAIL_MAGIC {
        return Err(r.corrupt("bad magic"));
    }
    r.u32()?;
    let t = LogTail {
        epoch: r.u64()?,
        seq: r.u64()?,
        durable_before: r.u64()?,
    };
    let stored = u32::from_le_bytes([buf[60], buf[61], buf[62], buf[63]]);
    if crc(record_seed(t.epoch, at), &buf[..LOG_TAIL_SIZE - 4]) != stored {
        return Err(r.corrupt("checksum mismatch"));
    }
    Ok(t)
}

/// Encode a record of `ops` for `epoch`/`seq`, to be written at device offset
/// `at`, written while the `unfenced` records before it were not yet known
/// durable. The result is padded to a multiple of 8 bytes.
pub fn encode_log_record<E: Entry>(
    ops: &[E],
    epoch: u64,
    seq: u64,
    unfenced: u32,
    at: u64,
) -> Vec<u8> {
    encode_log_record_into(Vec::new(), ops, epoch, seq, unfenced, at)
}

/// [`encode_log_record`] into `buf` (cleared first; its capacity is reused).
pub fn encode_log_record_into<E: Entry>(
    mut buf: Vec<u8>,
    ops: &[E],
    epoch: u64,
    seq: u64,
    unfenced: u32,
    at: u64,
) -> Vec<u8> {
    buf.clear();
    buf.reserve(LOG_HEADER_SIZE + 64 * ops.len());
    let mut w = Writer { buf };
    w.u32(LOG_MAGIC)
        .u32(0)
        .u64(epoch)
        .u64(seq)
        .u32(0)
        .u32(unfenced);
    for op in ops {
        op.encode(&mut w);
    }
    let len = w.len() - LOG_HEADER_SIZE;
    w.patch_u32(4, len as u32);
    let c = record_crc(
        &w.buf[..LOG_HEADER_SIZE],
        &w.buf[LOG_HEADER_SIZE..],
        epoch,
        at,
    );
    w.patch_u32(24, c);
    let padded = w.len().next_multiple_of(8);
    w.pad_to(padded);
    w.buf
}

/// crc of a record: its header without the crc field (bytes 0..24 and 28..32),
/// then the payload, seeded with the epoch and the record's device offset.
fn record_crc(head: &[u8], payload: &[u8], epoch: u64, at: u64) -> u32 {
    let c = crc(record_seed(epoch, at), &head[..24]);
    let c = crc32c::crc32c_append(c, &head[28..LOG_HEADER_SIZE]);
    crc32c::crc32c_append(c, payload)
}

/// Parse and verify the record whose header is `head` (32 bytes) and payload
/// `payload` at device offset `at`. Returns the ops, or `None` if the record is not
/// a valid record of `epoch` with sequence number `seq` (the end of the log).
pub fn decode_log_header(head: &[u8]) -> Option<LogHeader> {
    if head.len() < LOG_HEADER_SIZE {
        return None;
    }
    let mut r = Reader::new(head, 0, "log record");
    let magic = r.u32().ok()?;
    if magic != LOG_MAGIC {
        return None;
    }
    Some(LogHeader {
        len: r.u32().ok()?,
        epoch: r.u64().ok()?,
        seq: r.u64().ok()?,
        crc: r.u32().ok()?,
        unfenced: r.u32().ok()?,
    })
}

impl LogHeader {
    /// Verify the crc of this record (header bytes `head`, `payload`) at offset `at`
    /// and decode its entries (`None`: it does not verify). A record that
    /// verifies but does not parse is damage (an error).
    pub fn verify_and_decode<E: Entry>(
        &self,
        head: &[u8],
        payload: &[u8],
        at: u64,
        total_blocks: u64,
    ) -> Result<Option<Vec<E>>, FormatError> {
        if head.len() < LOG_HEADER_SIZE || record_crc(head, payload, self.epoch, at) != self.crc {
            return Ok(None);
        }
        let mut r = Reader::new(payload, at + LOG_HEADER_SIZE as u64, "log record");
        let mut ops = Vec::new();
        while r.remaining() > 0 {
            ops.push(E::decode(&mut r, total_blocks)?);
        }
        Ok(Some(ops))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_ops() -> Vec<Op> {
        vec![
            Op::NewInode {
                ino: 5,
                mode: 0o100644,
                uid: 1,
                gid: 2,
                time_ns: 3,
                parent: 1,
            },
            Op::Link {
                dir: 1,
                ino: 5,
                file_type: 8,
                name: b"file".to_vec(),
                time_ns: 4,
            },
            Op::Unlink {
                dir: 1,
                name: vec![b'x'; 255],
                time_ns: 5,
            },
            Op::SetSize {
                ino: 5,
                size: 99,
                time_ns: 6,
            },
            Op::Map {
                ino: 5,
                file_blk: 1,
                dev_blk: 600,
                len: 3,
            },
            Op::MapShared {
                ino: 6,
                file_blk: 0,
                dev_blk: 600,
                len: 2,
            },
            Op::Unmap {
                ino: 5,
                file_blk: 1,
                len: 1,
            },
            Op::Shift {
                ino: 5,
                from_blk: 9,
                delta: -4,
            },
            Op::FreeInode { ino: 5 },
            Op::Times {
                ino: 5,
                atime_ns: 1,
                mtime_ns: 2,
                ctime_ns: 3,
            },
            Op::SetParent { ino: 5, parent: 1 },
            Op::Poison {
                dev_blk: 700,
                len: 2,
            },
            Op::Unpoison {
                dev_blk: 700,
                len: 1,
            },
            Op::SetMode {
                ino: 5,
                mode: 0o100600,
                uid: 0,
                gid: 0,
                time_ns: 7,
            },
            Op::Symlink {
                ino: 6,
                target: b"../a/b".to_vec(),
            },
            Op::SetRdev {
                ino: 7,
                rdev: 0x0103,
            },
        ]
    }

    #[test]
    fn log_record_round_trip_every_op() {
        let ops = all_ops();
        let rec = encode_log_record(&ops, 7, 3, 0, 8192);
        assert_eq!(rec.len() % 8, 0);
        let h = decode_log_header(&rec).unwrap();
        assert_eq!((h.epoch, h.seq), (7, 3));
        let payload = &rec[LOG_HEADER_SIZE..LOG_HEADER_SIZE + h.len as usize];
        let got: Vec<Op> = h
            .verify_and_decode(&rec, payload, 8192, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(got, ops);
        for op in &ops {
            let mut w = Writer::new();
            op.encode(&mut w);
            assert!(w.len() <= MAX_OP_BYTES);
        }
        // The longest symbolic link: within the room its transaction reserves.
        let mut w = Writer::new();
        Op::Symlink {
            ino: 1,
            target: vec![b'a'; crate::format::SYMLINK_MAX],
        }
        .encode(&mut w);
        assert!(w.len() <= symlink_reserve_ops(crate::format::SYMLINK_MAX) * MAX_OP_BYTES);
    }

    #[test]
    fn log_tail_round_trip_and_every_bit_flip_detected() {
        let t = LogTail {
            epoch: 9,
            seq: 4,
            durable_before: 3,
        };
        let b = encode_log_tail(&t, 4096);
        assert_eq!(decode_log_tail(&b, 4096).unwrap(), t);
        assert!(decode_log_tail(&b, 8192).is_err(), "seeded with its offset");
        for bit in 0..LOG_TAIL_SIZE * 8 {
            let mut bad = b;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_log_tail(&bad, 4096).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn f7_every_bit_of_a_record_header_is_checked() {
        let rec = encode_log_record(&all_ops()[..2], 3, 5, 2, 64);
        for bit in 0..LOG_HEADER_SIZE * 8 {
            let mut bad = rec.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let ok = decode_log_header(&bad).is_some_and(|h| {
                (LOG_HEADER_SIZE + h.len as usize) <= bad.len()
                    && h.verify_and_decode::<Op>(
                        &bad,
                        &bad[LOG_HEADER_SIZE..LOG_HEADER_SIZE + h.len as usize],
                        64,
                        1 << 20,
                    )
                    .is_ok_and(|o| o.is_some())
            });
            assert!(!ok, "bit {bit} of the header not detected");
        }
    }

    #[test]
    fn f7_torn_record_fails_crc() {
        let rec = encode_log_record(&all_ops(), 1, 0, 0, 0);
        for cut in [LOG_HEADER_SIZE + 1, rec.len() / 2, rec.len() - 9] {
            let mut torn = rec.clone();
            torn[cut..].fill(0xa5);
            let h = decode_log_header(&torn).unwrap();
            let payload = &torn[LOG_HEADER_SIZE..LOG_HEADER_SIZE + h.len as usize];
            assert_eq!(
                h.verify_and_decode::<Op>(&torn, payload, 0, 1 << 20)
                    .unwrap(),
                None
            );
        }
    }

    proptest! {
        #[test]
        fn f8_arbitrary_op_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut r = Reader::new(&bytes, 0, "log");
            while r.remaining() > 0 {
                if Op::decode(&mut r).is_err() { break; }
            }
            let _ = decode_log_header(&bytes);
        }
    }
}
