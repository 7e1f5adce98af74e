//! The metadata journal: a redo log of logical operations plus double-buffered
//! checkpoints of the whole metadata image.
//!
//! * [`Journal::commit`] appends one record (a transaction: a list of [`Op`]s),
//!   and returns once it is durable. Records are written and flushed under the log
//!   lock, so they reach the log in sequence order.
//! * Group commit: where a fence is global (msync of a file device, the crash
//!   simulator), a committer whose record was already covered by another thread's
//!   fence returns at once; one fence serves every record appended before it.
//!   Where a fence only orders the calling thread's flushes (`sfence` on devdax),
//!   each record is fenced by its writer under the log lock, which keeps records
//!   durable in order (an `sfence` costs tens of nanoseconds).
//! * Ordering rule for data: a caller writes and flushes file data (and the zeroing
//!   of new blocks) **before** `commit(.., ordered_data = true)`, on the same
//!   thread; commit fences them before writing the record, so the data is durable
//!   before any metadata that points at it can be.
//! * [`Journal::write_checkpoint`] writes the full image into the other slot with
//!   the next epoch (body, fence, header, fence) and restarts the log at offset 0
//!   with that epoch; records of older epochs no longer verify.
//! * [`load`] picks the newest checkpoint whose header verifies, parses it, then
//!   scans the log for records of that epoch with consecutive sequence numbers and
//!   valid checksums; the first record that fails ends the log (a torn tail).

use crate::device::{Device, DeviceError};
use crate::format::codec::Reader;
use crate::format::{
    decode_checkpoint_header, decode_log_header, encode_checkpoint_header, encode_log_record_into,
    parse_record, CheckpointHeader, FormatError, Geometry, InodeImage, Op, Record,
    CKPT_HEADER_SIZE, LOG_HEADER_SIZE,
};
use crate::sync::{AtomicU64, Mutex, Ordering};
use crate::BLOCK_SIZE;
use std::sync::Arc;

/// Errors from the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("metadata log full (a checkpoint is needed)")]
    LogFull,
    #[error("metadata image of {need} bytes does not fit the checkpoint slot of {cap} bytes")]
    CheckpointTooBig { need: u64, cap: u64 },
}

/// Counters for `udax info` and the benchmarks.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct JournalStats {
    pub epoch: u64,
    pub commits: u64,
    pub fences: u64,
    pub log_used: u64,
    pub log_bytes: u64,
    pub checkpoints: u64,
}

#[derive(Debug)]
struct LogState {
    epoch: u64,
    /// Byte offset (within the log region) where the next record goes.
    head: u64,
    next_seq: u64,
    /// The last record's buffer, reused by the next (no allocation per commit).
    buf: Vec<u8>,
}

/// The journal of a mounted file system.
#[derive(Debug)]
pub struct Journal {
    dev: Arc<dyn Device>,
    geo: Geometry,
    log: Mutex<LogState>,
    fence_lock: Mutex<()>,
    /// Highest sequence number appended (+1), and made durable (+1), in this epoch.
    appended: AtomicU64,
    durable: AtomicU64,
    /// Bytes promised to operations in flight ([`Journal::try_reserve`]).
    reserved: AtomicU64,
    commits: AtomicU64,
    fences: AtomicU64,
    checkpoints: AtomicU64,
    global_fence: bool,
}

/// What [`load`] found on the device.
#[derive(Debug)]
pub struct Loaded {
    pub epoch: u64,
    pub inodes: Vec<InodeImage>,
    /// The bad-block table of the checkpoint: device block ranges `(start, len)`.
    pub bad: Vec<(u64, u64)>,
    /// The shared-block reference counts of the checkpoint `(start, len, refs)`.
    pub shared: Vec<(u64, u64, u32)>,
    /// Committed transactions after the checkpoint, with their device offsets.
    pub records: Vec<(u64, Vec<Op>)>,
    /// Where the next record goes and its sequence number.
    pub head: u64,
    pub next_seq: u64,
    /// Bytes of checkpoint body.
    pub checkpoint_bytes: u64,
    /// A note for fsck when the log ended on a record that did not verify.
    pub torn_tail_at: Option<u64>,
}

fn read_vec(dev: &dyn Device, off: u64, len: u64) -> Result<Vec<u8>, DeviceError> {
    let mut v = vec![0u8; len as usize];
    dev.read(off, &mut v)?;
    Ok(v)
}

/// Load the newest valid checkpoint and the committed log after it.
pub fn load(dev: &dyn Device, geo: &Geometry) -> Result<Loaded, JournalError> {
    let slot_bytes = geo.slot_bytes();
    let mut best: Option<(u64, CheckpointHeader)> = None;
    let mut first_err = None;
    for i in 0..2 {
        let at = geo.slot_offset(i);
        let buf = read_vec(dev, at, CKPT_HEADER_SIZE as u64)?;
        match decode_checkpoint_header(&buf, at, slot_bytes) {
            Ok(h) if best.is_none_or(|(_, b)| h.epoch > b.epoch) => best = Some((at, h)),
            Ok(_) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let Some((at, h)) = best else {
        return Err(first_err.unwrap_or(FormatError::Corrupted {
            what: "no valid checkpoint".into(),
            device_offset: geo.slot_offset(0),
        }))?;
    };
    let body_at = at + BLOCK_SIZE;
    let body = read_vec(dev, body_at, h.body_len)?;
    let mut r = Reader::new(&body, body_at, "checkpoint body");
    let mut inodes = Vec::new();
    let mut bad = Vec::new();
    let mut shared = Vec::new();
    for _ in 0..h.n_records {
        match parse_record(&mut r, h.epoch)? {
            Record::Inode(i) => inodes.push(i),
            Record::BadBlocks(b) => bad.extend(b),
            Record::Refcounts(c) => shared.extend(c),
        }
    }
    if r.remaining() != 0 {
        return Err(r.corrupt("bytes after the last record").into());
    }

    // Scan the log.
    let log_at = geo.log_offset();
    let cap = geo.log_bytes();
    let mut pos = 0u64;
    let mut seq = 0u64;
    let mut records = Vec::new();
    let mut torn_tail_at = None;
    while pos + LOG_HEADER_SIZE as u64 <= cap {
        let head = read_vec(dev, log_at + pos, LOG_HEADER_SIZE as u64)?;
        let Some(lh) = decode_log_header(&head) else {
            break;
        };
        if lh.epoch != h.epoch || lh.seq != seq {
            break;
        }
        let total = LOG_HEADER_SIZE as u64 + lh.len as u64;
        if pos + total > cap {
            torn_tail_at = Some(log_at + pos);
            break;
        }
        let payload = read_vec(dev, log_at + pos + LOG_HEADER_SIZE as u64, lh.len as u64)?;
        match lh.verify_and_decode(&head, &payload, log_at + pos)? {
            Some(ops) => records.push((log_at + pos, ops)),
            None => {
                torn_tail_at = Some(log_at + pos);
                break;
            }
        }
        pos += total.next_multiple_of(8);
        seq += 1;
    }
    Ok(Loaded {
        epoch: h.epoch,
        inodes,
        bad,
        shared,
        records,
        head: pos,
        next_seq: seq,
        checkpoint_bytes: h.body_len,
        torn_tail_at,
    })
}

impl Journal {
    /// A journal continuing the log of `loaded` (after [`load`]).
    pub fn open(dev: Arc<dyn Device>, geo: Geometry, loaded: &Loaded) -> Journal {
        let global_fence = dev.fence_is_global();
        Journal {
            dev,
            geo,
            log: Mutex::new(LogState {
                epoch: loaded.epoch,
                head: loaded.head,
                next_seq: loaded.next_seq,
                buf: Vec::new(),
            }),
            fence_lock: Mutex::new(()),
            appended: AtomicU64::new(loaded.next_seq),
            durable: AtomicU64::new(loaded.next_seq),
            reserved: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            fences: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            global_fence,
        }
    }

    /// Write the first checkpoint (epoch 1) of a new file system and clear the log.
    pub fn format(
        dev: &dyn Device,
        geo: &Geometry,
        body: &[u8],
        n_records: u64,
    ) -> Result<(), JournalError> {
        // An empty log: zero its first block so no stale record can follow.
        dev.zero(geo.log_offset(), BLOCK_SIZE)?;
        // Invalidate both slots first (a re-mkfs over an old file system).
        for i in 0..2 {
            dev.zero(geo.slot_offset(i), BLOCK_SIZE)?;
        }
        dev.flush(geo.log_offset(), BLOCK_SIZE);
        for i in 0..2 {
            dev.flush(geo.slot_offset(i), BLOCK_SIZE);
        }
        dev.fence()?;
        write_slot(dev, geo, 1, body, n_records)
    }

    /// Bytes of log space an operation of at most `ops_bytes` encoded bytes needs.
    pub fn record_bytes(ops_bytes: usize) -> u64 {
        (LOG_HEADER_SIZE + ops_bytes).next_multiple_of(8) as u64
    }

    /// Reserve `bytes` of log space for an operation about to run. `false` when the
    /// log cannot promise it (the caller checkpoints, then retries).
    pub fn try_reserve(&self, bytes: u64) -> bool {
        let log = self.log.lock();
        let want = log.head + self.reserved.load(Ordering::Relaxed) + bytes;
        if want > self.geo.log_bytes() {
            return false;
        }
        self.reserved.fetch_add(bytes, Ordering::Relaxed);
        true
    }

    /// Give back a reservation (the operation finished or failed).
    pub fn release(&self, bytes: u64) {
        let _log = self.log.lock();
        self.reserved.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Append one transaction and return once it is durable. The caller holds a
    /// reservation covering it. Returns the record's sequence number.
    ///
    /// With `ordered_data`, the caller's data stores (flushed already) are fenced
    /// before the record is written: a record can reach the media before an
    /// unfenced store does, so this fence is what keeps a file from pointing at
    /// blocks whose data or zeroing is not yet durable.
    pub fn commit(&self, ops: &[Op], ordered_data: bool) -> Result<u64, JournalError> {
        if ordered_data {
            self.dev.fence()?;
            self.fences.fetch_add(1, Ordering::Relaxed);
        }
        let seq = self.append(ops)?;
        self.make_durable(seq)?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(seq)
    }

    fn append(&self, ops: &[Op]) -> Result<u64, JournalError> {
        let mut log = self.log.lock();
        let at = self.geo.log_offset() + log.head;
        let rec = encode_log_record_into(
            std::mem::take(&mut log.buf),
            ops,
            log.epoch,
            log.next_seq,
            at,
        );
        let len = rec.len() as u64;
        let stored = if log.head + len > self.geo.log_bytes() {
            Err(JournalError::LogFull)
        } else {
            self.dev.write(at, &rec).map_err(JournalError::from)
        };
        log.buf = rec;
        stored?;
        self.dev.flush(at, len);
        if !self.global_fence {
            // sfence orders only this thread's flushes: fence here, in log order.
            self.dev.fence()?;
            self.fences.fetch_add(1, Ordering::Relaxed);
        }
        let seq = log.next_seq;
        log.head += len;
        log.next_seq += 1;
        self.appended.store(seq + 1, Ordering::Release);
        if !self.global_fence {
            self.durable.store(seq + 1, Ordering::Release);
        }
        Ok(seq)
    }

    fn make_durable(&self, seq: u64) -> Result<(), JournalError> {
        if self.durable.load(Ordering::Acquire) > seq {
            return Ok(());
        }
        let _f = self.fence_lock.lock();
        if self.durable.load(Ordering::Acquire) > seq {
            return Ok(()); // another thread's fence covered this record
        }
        let target = self.appended.load(Ordering::Acquire);
        self.dev.fence()?;
        self.fences.fetch_add(1, Ordering::Relaxed);
        self.durable.fetch_max(target, Ordering::Release);
        Ok(())
    }

    /// Make every flushed store durable (fsync of data that needs no record).
    pub fn fence(&self) -> Result<(), JournalError> {
        self.dev.fence()?;
        self.fences.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Epoch and body offset the next checkpoint will use, and the room it has.
    pub fn next_checkpoint(&self) -> (u64, u64, u64) {
        let epoch = self.log.lock().epoch + 1;
        let at = self.geo.slot_offset(epoch % 2) + BLOCK_SIZE;
        (epoch, at, self.geo.slot_bytes() - BLOCK_SIZE)
    }

    /// Write a checkpoint body built for [`Journal::next_checkpoint`] and restart the
    /// log. The caller guarantees no commit runs concurrently.
    pub fn write_checkpoint(&self, body: &[u8], n_records: u64) -> Result<(), JournalError> {
        let mut log = self.log.lock();
        let epoch = log.epoch + 1;
        write_slot(&*self.dev, &self.geo, epoch, body, n_records)?;
        log.epoch = epoch;
        log.head = 0;
        log.next_seq = 0;
        self.appended.store(0, Ordering::Release);
        self.durable.store(0, Ordering::Release);
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes of log in use (excluding reservations).
    pub fn log_used(&self) -> u64 {
        self.log.lock().head
    }

    pub fn stats(&self) -> JournalStats {
        let log = self.log.lock();
        JournalStats {
            epoch: log.epoch,
            commits: self.commits.load(Ordering::Relaxed),
            fences: self.fences.load(Ordering::Relaxed),
            log_used: log.head,
            log_bytes: self.geo.log_bytes(),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
        }
    }
}

/// Write checkpoint `epoch` into its slot: body, flush, fence, then header, flush,
/// fence. Until the header is durable, the slot's old header (if any) fails to
/// verify its body (records are seeded with the epoch), so a torn checkpoint is
/// never taken for a good one, and the other slot still holds the previous one.
fn write_slot(
    dev: &dyn Device,
    geo: &Geometry,
    epoch: u64,
    body: &[u8],
    n_records: u64,
) -> Result<(), JournalError> {
    let cap = geo.slot_bytes() - BLOCK_SIZE;
    if body.len() as u64 > cap {
        return Err(JournalError::CheckpointTooBig {
            need: body.len() as u64,
            cap,
        });
    }
    let at = geo.slot_offset(epoch % 2);
    // Invalidate the old header first so a crash mid-body cannot pair it with a
    // half-written body whose leading records might still verify.
    dev.zero(at, CKPT_HEADER_SIZE as u64)?;
    dev.flush(at, CKPT_HEADER_SIZE as u64);
    dev.fence()?;
    dev.write(at + BLOCK_SIZE, body)?;
    dev.flush(at + BLOCK_SIZE, body.len() as u64);
    dev.fence()?;
    let h = CheckpointHeader {
        epoch,
        body_len: body.len() as u64,
        n_records,
    };
    let hb = encode_checkpoint_header(&h, at);
    dev.write(at, &hb)?;
    dev.flush(at, hb.len() as u64);
    dev.fence()?;
    Ok(())
}
