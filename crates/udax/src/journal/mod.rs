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
//!
//! ORDERING: the atomics of [`Journal`].
//! * `appended` and `durable` are sequence-number watermarks: `appended` is
//!   stored (Release) under the log lock after the record's write and flush;
//!   `durable` is raised (Release, `fetch_max`) after a fence, to the
//!   `appended` read (Acquire) before that fence, so every record below it was
//!   written and flushed before the fence (where a fence is thread-local,
//!   `append` stores it after its own fence, under the log lock). Readers load `durable` (Acquire):
//!   a committer that sees its seq covered returns (its record is durable),
//!   and `append` computes a record's `unfenced` count from it (under the log
//!   lock, so `next_seq` cannot move); a stale (lower) value only claims fewer
//!   records durable, never more. `durable <= appended` holds throughout:
//!   `durable` only takes values `appended` had (checked by the loom model
//!   `loom_group_commit_durable_claims_and_returns_follow_fences`). A
//!   checkpoint resets both under the log lock with no commit running.
//! * `reserved` is read and changed only under the log lock (Relaxed).
//! * `commits`, `fences`, `checkpoints` are statistics (Relaxed).

use crate::device::{Device, DeviceError, PersistenceDomain};
use crate::format::codec::Reader;
use crate::format::{
    decode_checkpoint_header, decode_log_header, encode_checkpoint_header, encode_log_record,
    encode_log_record_into, parse_record, CheckpointHeader, Entry, FormatError, Geometry,
    InodeImage, LogHeader, LogRegion, Op, Record,
};
use crate::format::{decode_log_tail, encode_log_tail, LogTail, LOG_TAIL_SIZE};
use crate::format::{CKPT_HEADER_SIZE, LOG_HEADER_SIZE, LOG_MAGIC};
use crate::sync::{AtomicU64, Mutex, Ordering};
use crate::BLOCK_SIZE;
use std::sync::Arc;

mod in_place;
pub use in_place::{clear_log, load_in_place, start_log};

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
    #[error("this file system's log is truncated, it has no checkpoint slots")]
    NoCheckpoints,
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
    /// The newest epoch seen on the device (beyond `epoch` after a salvage
    /// that rolled back): the next checkpoint goes past it.
    newest: u64,
    /// Byte offset (within the log region) where the next record goes.
    head: u64,
    next_seq: u64,
    /// The last record's buffer, reused by the next (no allocation per commit).
    buf: Vec<u8>,
}

/// The journal of a mounted file system (its atomics: "ORDERING" in the
/// module docs).
#[derive(Debug)]
pub struct Journal {
    dev: Arc<dyn Device>,
    /// The checkpoint slots (format 2); `None` in format 3, whose log is
    /// truncated ([`Journal::truncate`]) instead.
    slots: Option<Geometry>,
    region: LogRegion,
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
    /// Flush the tail line with every record. Not where a flush writes a
    /// whole page (a file device: one more page per fsync); there the kernel's
    /// writeback and each checkpoint make it durable.
    tail_each_commit: bool,
}

/// Damage that recovery found: metadata that fails its checksum where no
/// crash could have left it so (see docs/format.md, "Telling a torn tail
/// from damage").
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    /// One line: the structure, what is wrong, and why it is not a torn write.
    pub what: String,
    pub device_offset: u64,
    /// What a salvage (a read-only salvage mount, or `fsck --repair`) does about it.
    pub salvage: String,
}

/// How [`load`] treats damage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Damage is an error naming the structure and its device offset.
    #[default]
    Strict,
    /// Damage is reported in [`Loaded::damage`] and worked around: the newest
    /// checkpoint's header rebuilt from its body (or the older checkpoint
    /// taken), the log cut before a damaged record.
    Salvage,
}

/// What [`load`] found on the device (format 2): the checkpoint, and its log.
#[derive(Debug)]
pub struct Loaded {
    pub inodes: Vec<InodeImage>,
    /// The bad-block table of the checkpoint: device block ranges `(start, len)`.
    pub bad: Vec<(u64, u64)>,
    /// The shared-block reference counts of the checkpoint `(start, len, refs)`.
    pub shared: Vec<(u64, u64, u32)>,
    pub log: LoadedLog<Op>,
}

/// The log a load found, of either format: the records of the epoch that
/// applies (format 2: after the checkpoint; format 3: to replay in place).
#[derive(Debug)]
pub struct LoadedLog<E> {
    /// The epoch whose log applies (the checkpoint's, or the root block's).
    pub epoch: u64,
    /// Committed transactions of that epoch, with their device offsets.
    pub records: Vec<(u64, Vec<E>)>,
    /// Where the next record goes and its sequence number.
    pub head: u64,
    pub next_seq: u64,
    /// A note for fsck when the log ended on a record that did not verify, or
    /// with records written after it that were never acknowledged (a torn
    /// tail after a crash; not an error).
    pub torn_tail_at: Option<u64>,
    /// Valid records after the torn tail that no later record vouches for
    /// (written, never fenced, so never acknowledged): dropped.
    pub unacknowledged: u64,
    /// Damage found ([`Recovery::Salvage`] only; strict loading fails instead).
    pub damage: Vec<Damage>,
    /// Valid log records a salvage discards (after a damaged record, or the log
    /// of a checkpoint that could not be read), for the loss report.
    pub discarded: Vec<(u64, Vec<E>)>,
    /// The newest epoch of any checkpoint, root header or log record that
    /// verifies: the next epoch must be beyond it, so no stale record of it
    /// can ever verify as part of the new log.
    pub newest_epoch: u64,
    /// What a salvage lost that no surviving record names: a checkpoint it
    /// rolled back past, a damaged log record (one line each).
    pub lost_unnamed: Vec<String>,
}

fn read_vec(dev: &dyn Device, off: u64, len: u64) -> Result<Vec<u8>, DeviceError> {
    let mut v = vec![0u8; len as usize];
    dev.read(off, &mut v)?;
    Ok(v)
}

/// A log record that verifies, wherever it is.
struct Verified<E> {
    h: LogHeader,
    ops: Vec<E>,
    /// Bytes it occupies (padded).
    size: u64,
}

/// The record at log position `pos` if one verifies there (any epoch).
fn verified_at<E: Entry>(
    dev: &dyn Device,
    geo: &LogRegion,
    pos: u64,
) -> Result<Option<Verified<E>>, JournalError> {
    let cap = geo.log_bytes();
    let at = geo.log_offset() + pos;
    if pos + LOG_HEADER_SIZE as u64 > cap {
        return Ok(None);
    }
    let head = read_vec(dev, at, LOG_HEADER_SIZE as u64)?;
    let Some(h) = decode_log_header(&head) else {
        return Ok(None);
    };
    let size = LOG_HEADER_SIZE as u64 + h.len as u64;
    if pos + size > cap {
        return Ok(None);
    }
    let payload = read_vec(dev, at + LOG_HEADER_SIZE as u64, h.len as u64)?;
    Ok(h.verify_and_decode(&head, &payload, at, geo.total_blocks)?
        .map(|ops| Verified {
            h,
            ops,
            size: size.next_multiple_of(8),
        }))
}

/// Log positions from `from` on (8-byte aligned) that start with the record
/// magic and name an epoch of at least `min_epoch` (unverified: a filter, so
/// the stale records of older epochs that fill a used log cost no checksum).
/// The parts of the log the device reports as holes are skipped (zeros hold
/// no record; a memory device would allocate a page for each 4 KiB read),
/// and the magic is searched for, not compared at every position: a mount
/// reads the whole log region (1/256 of the device).
fn candidate_positions(
    dev: &dyn Device,
    geo: &LogRegion,
    from: u64,
    min_epoch: u64,
) -> Result<Vec<u64>, DeviceError> {
    const CHUNK: u64 = 1 << 20;
    let cap = record_space(geo);
    let from = from.next_multiple_of(8);
    let mut out = Vec::new();
    if from >= cap {
        return Ok(out);
    }
    let magic = LOG_MAGIC.to_le_bytes();
    let finder = memchr::memmem::Finder::new(&magic);
    for (part_at, part_len) in dev.data_within(geo.log_offset() + from, cap - from) {
        // Log positions of the part, 8-aligned (a record starts at a
        // multiple of 8, so one cannot begin in the bytes rounded off).
        let mut pos = (part_at - geo.log_offset()) / 8 * 8;
        let end = (part_at + part_len - geo.log_offset()).min(cap);
        while pos < end {
            let n = CHUNK.min(end - pos);
            let buf = read_vec(dev, geo.log_offset() + pos, n)?;
            // Read once: its pages need not stay resident (a 64 MiB log would).
            dev.forget_range(geo.log_offset() + pos, n);
            // ("ULOG" cannot overlap itself: every occurrence is found.)
            for i in finder.find_iter(&buf).filter(|i| i % 8 == 0) {
                // The epoch field (bytes 8..16); a header cut by the chunk's
                // end is kept, to be verified.
                let epoch = buf.get(i + 8..i + 16).map_or(u64::MAX, |b| {
                    u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8]))
                });
                if epoch >= min_epoch {
                    out.push(pos + i as u64);
                }
            }
            pos += n;
        }
    }
    Ok(out)
}

/// Remember `(epoch, at)` if `epoch` is the newest seen so far.
fn note(epoch: u64, at: u64, newest: &mut Option<(u64, u64)>) {
    if newest.is_none_or(|(n, _)| epoch > n) {
        *newest = Some((epoch, at));
    }
}

/// What the log holds for checkpoint `epoch`.
struct LogScan<E> {
    records: Vec<(u64, Vec<E>)>,
    head: u64,
    /// The position where the walk stopped was not a clean end.
    torn: bool,
    unacknowledged: u64,
    /// A valid record past the end vouches for the record that ended the walk
    /// (or sits where no crash could put it): why the stop is damage.
    vouched: Option<String>,
    /// Valid records past the end (for the loss report).
    beyond: Vec<(u64, Vec<E>)>,
    /// The newest epoch of any valid record (or tail line), and where the first of it is.
    newest: Option<(u64, u64)>,
    /// The log's tail line, or why it does not verify.
    tail: Result<LogTail, FormatError>,
}

impl<E> LogScan<E> {
    /// What is left of the log after falling back from the checkpoint this
    /// scan followed to the older one: nothing applies (the older checkpoint's
    /// own log was overwritten by the newer one's); its records are reported.
    fn rolled_back(self) -> LogScan<E> {
        LogScan {
            records: Vec::new(),
            head: 0,
            torn: false,
            unacknowledged: 0,
            vouched: None,
            beyond: self.records.into_iter().chain(self.beyond).collect(),
            newest: self.newest,
            tail: self.tail,
        }
    }
}

/// The loss line of a salvage that fell back past checkpoint `lost` to `kept`.
fn lost_checkpoint(lost: u64, kept: u64) -> String {
    format!("checkpoint epoch {lost}: every change between checkpoint epoch {kept} and it")
}

/// The records of the checkpoint `h` in the slot at `at`: inodes, bad-block
/// ranges and shared-block counts.
type Body = (Vec<InodeImage>, Vec<(u64, u64)>, Vec<(u64, u64, u32)>);

fn read_body(dev: &dyn Device, at: u64, h: &CheckpointHeader) -> Result<Body, JournalError> {
    let body_at = at + BLOCK_SIZE;
    let body = read_vec(dev, body_at, h.body_len)?;
    let mut r = Reader::new(&body, body_at, "checkpoint body");
    let (mut inodes, mut bad, mut shared) = (Vec::new(), Vec::new(), Vec::new());
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
    Ok((inodes, bad, shared))
}

/// Walk the log from its start for records of `epoch` with consecutive
/// sequence numbers, then look at every record that verifies past the point
/// where the walk stopped: a record of `epoch` that vouches for one before it
/// (see [`LogHeader::durable_before`]) makes the stop damage, not a tear.
fn scan_log<E: Entry>(
    dev: &dyn Device,
    geo: &LogRegion,
    epoch: u64,
) -> Result<LogScan<E>, JournalError> {
    let log_at = geo.log_offset();
    let mut pos = 0u64;
    let mut records = Vec::new();
    let mut newest: Option<(u64, u64)> = None;
    let tail_at = tail_offset(geo);
    let tail = decode_log_tail(&read_vec(dev, tail_at, LOG_TAIL_SIZE as u64)?, tail_at);
    if let Ok(t) = &tail {
        note(t.epoch, tail_at, &mut newest);
    }
    let end_clean = loop {
        match verified_at(dev, geo, pos)? {
            Some(v) if v.h.epoch == epoch && v.h.seq == records.len() as u64 => {
                note(epoch, log_at + pos, &mut newest);
                records.push((log_at + pos, v.ops));
                pos += v.size;
            }
            Some(v) => {
                note(v.h.epoch, log_at + pos, &mut newest);
                // A stale record of an older epoch is the normal end.
                break v.h.epoch < epoch;
            }
            None => {
                let head = read_vec(
                    dev,
                    log_at + pos,
                    (LOG_HEADER_SIZE as u64).min(record_space(geo).saturating_sub(pos)),
                )?;
                break decode_log_header(&head).is_none();
            }
        }
    };
    let n = records.len() as u64;
    let mut scan = LogScan {
        head: pos,
        torn: !end_clean,
        unacknowledged: 0,
        vouched: None,
        beyond: Vec::new(),
        newest,
        records,
        tail,
    };
    let mut skip_to = pos + 8;
    // Older epochs cannot vouch for anything here, nor name a newer checkpoint.
    for p in candidate_positions(dev, geo, pos + 8, epoch)? {
        if p < skip_to {
            continue;
        }
        let Some(v) = verified_at(dev, geo, p)? else {
            continue;
        };
        skip_to = p + v.size;
        note(v.h.epoch, log_at + p, &mut scan.newest);
        if v.h.epoch != epoch {
            continue;
        }
        if v.h.seq < n {
            scan.vouched.get_or_insert(format!(
                "record {} of epoch {epoch} appears again past the end of the log, at offset {}",
                v.h.seq,
                log_at + p
            ));
        } else if v.h.durable_before() > n {
            scan.vouched.get_or_insert(format!(
                "record {} at offset {} follows it, written once records 0..{} were durable",
                v.h.seq,
                log_at + p,
                v.h.durable_before()
            ));
        } else {
            scan.unacknowledged += 1;
            scan.torn = true;
        }
        scan.beyond.push((log_at + p, v.ops));
    }
    Ok(scan)
}

/// The header of checkpoint `epoch` in the slot at `at`, rebuilt from its body:
/// the records that verify for `epoch`, one after another from the start.
fn rebuild_header(
    dev: &dyn Device,
    geo: &Geometry,
    at: u64,
    epoch: u64,
) -> Result<Option<CheckpointHeader>, JournalError> {
    let body_at = at + BLOCK_SIZE;
    let body = read_vec(dev, body_at, geo.slot_bytes() - BLOCK_SIZE)?;
    let mut r = Reader::new(&body, body_at, "checkpoint body");
    let mut n_records = 0u64;
    let mut body_len = 0u64;
    while r.remaining() > 0 {
        match parse_record(&mut r, epoch) {
            Ok(_) => {
                n_records += 1;
                body_len = body.len() as u64 - r.remaining() as u64;
            }
            Err(_) => break,
        }
    }
    Ok((n_records > 0).then_some(CheckpointHeader {
        epoch,
        body_len,
        n_records,
    }))
}

fn corrupt(what: String, device_offset: u64) -> JournalError {
    JournalError::Format(FormatError::Corrupted {
        what,
        device_offset,
    })
}

/// Load the newest valid checkpoint and the committed log after it.
///
/// A checkpoint header or log record that fails its checksum is a torn write
/// only where a crash can leave one (after the last completed fence); anything
/// else is damage: an error naming the structure and offset with
/// [`Recovery::Strict`], a reported work-around with [`Recovery::Salvage`].
pub fn load(dev: &dyn Device, geo: &Geometry, mode: Recovery) -> Result<Loaded, JournalError> {
    let slot_bytes = geo.slot_bytes();
    let region = geo.log_region();
    let mut best: Option<(u64, CheckpointHeader)> = None;
    let mut header_err: [Option<FormatError>; 2] = [None, None];
    for i in 0..2 {
        let at = geo.slot_offset(i);
        let buf = read_vec(dev, at, CKPT_HEADER_SIZE as u64)?;
        match decode_checkpoint_header(&buf, at, slot_bytes) {
            Ok(h) if best.is_none_or(|(_, b)| h.epoch > b.epoch) => best = Some((at, h)),
            Ok(_) => {}
            Err(e) => header_err[i as usize] = Some(e),
        }
    }
    let mut damage = Vec::new();
    let mut lost_unnamed = Vec::new();
    let mut scan = match best {
        Some((_, h)) => scan_log::<Op>(dev, &region, h.epoch)?,
        None => scan_log::<Op>(dev, &region, 0)?,
    };
    // The log names a newer checkpoint than the newest readable one: that
    // checkpoint's header was durable (its records come only after it), so
    // its failure now is damage, never a torn checkpoint write.
    if let Some((newer, rec_at)) = scan
        .newest
        .filter(|&(e, _)| best.is_none_or(|(_, b)| e > b.epoch))
    {
        let slot = geo.slot_offset(newer % 2);
        let why = header_err[(newer % 2) as usize]
            .as_ref()
            .map_or("it holds an older checkpoint".to_string(), |e| {
                e.to_string()
            });
        let what = format!(
            "checkpoint header of epoch {newer} at offset {slot} is damaged ({why}): the log \
             record at offset {rec_at} follows that checkpoint{}",
            best.map_or(String::new(), |(_, b)| format!(
                ", newer than the one readable (epoch {})",
                b.epoch
            ))
        );
        if mode == Recovery::Strict {
            return Err(corrupt(what, slot));
        }
        match rebuild_header(dev, geo, slot, newer)? {
            Some(h) => {
                damage.push(Damage {
                    what,
                    device_offset: slot,
                    salvage: format!(
                        "header rebuilt from the body: {} records, {} bytes verify for epoch {newer}",
                        h.n_records, h.body_len
                    ),
                });
                best = Some((slot, h));
                scan = scan_log::<Op>(dev, &region, newer)?;
            }
            None => {
                let lost = scan_log::<Op>(dev, &region, newer)?;
                let records = lost.records.len() + lost.beyond.len();
                damage.push(Damage {
                    what,
                    device_offset: slot,
                    salvage: match best {
                        Some((_, b)) => format!(
                            "its body does not verify either: rolled back to checkpoint epoch {} \
                             ({records} log records of epoch {newer} lost)",
                            b.epoch
                        ),
                        None => "its body does not verify either: nothing to recover".into(),
                    },
                });
                if let Some((_, b)) = best {
                    lost_unnamed.push(lost_checkpoint(newer, b.epoch));
                }
                scan = lost.rolled_back();
            }
        }
    }
    let Some((at, h)) = best else {
        let e = header_err.into_iter().flatten().next();
        return Err(e.unwrap_or(FormatError::Corrupted {
            what: "no valid checkpoint".into(),
            device_offset: geo.slot_offset(0),
        }))?;
    };
    let (mut at, mut h) = (at, h);
    let (inodes, bad, shared) = match read_body(dev, at, &h) {
        Ok(b) => b,
        Err(e) if mode == Recovery::Salvage => {
            // The newest checkpoint's body fails: fall back to the older
            // checkpoint, if the other slot holds one.
            let other = geo.slot_offset((h.epoch + 1) % 2);
            let buf = read_vec(dev, other, CKPT_HEADER_SIZE as u64)?;
            let older = decode_checkpoint_header(&buf, other, slot_bytes)
                .ok()
                .filter(|o| o.epoch < h.epoch);
            let Some(o) = older else {
                return Err(e);
            };
            let device_offset = match &e {
                JournalError::Format(FormatError::Corrupted { device_offset, .. }) => {
                    *device_offset
                }
                _ => at,
            };
            damage.push(Damage {
                what: e.to_string(),
                device_offset,
                salvage: format!(
                    "checkpoint epoch {} does not verify: rolled back to checkpoint epoch {} \
                     ({} log records of epoch {} lost)",
                    h.epoch,
                    o.epoch,
                    scan.records.len() + scan.beyond.len(),
                    h.epoch
                ),
            });
            lost_unnamed.push(lost_checkpoint(h.epoch, o.epoch));
            scan = scan.rolled_back();
            (at, h) = (other, o);
            read_body(dev, at, &h)?
        }
        Err(e) => return Err(e),
    };
    let rolled_back = !lost_unnamed.is_empty();
    let log = finish_log(
        dev,
        &region,
        h.epoch,
        scan,
        mode,
        rolled_back,
        damage,
        lost_unnamed,
    )?;
    Ok(Loaded {
        inodes,
        bad,
        shared,
        log,
    })
}

/// What every load does once it knows the epoch whose log applies (`epoch`)
/// and has walked it (`scan`): check what is at the log's start, what the
/// tail line vouches for, and whether the walk's stop is damage (a record a
/// later one vouches for), then say what the log holds. Damage is an error
/// ([`Recovery::Strict`]) or cuts the log there, with the loss reported.
/// `rolled_back`: a salvage already fell back past this epoch's checkpoint
/// (nothing of its log applies).
#[allow(clippy::too_many_arguments)]
fn finish_log<E: Entry>(
    dev: &dyn Device,
    region: &LogRegion,
    epoch: u64,
    mut scan: LogScan<E>,
    mode: Recovery,
    rolled_back: bool,
    mut damage: Vec<Damage>,
    mut lost_unnamed: Vec<String>,
) -> Result<LoadedLog<E>, JournalError> {
    let n = scan.records.len();
    let stop_at = region.log_offset() + scan.head;
    // The log of every checkpoint starts with its marker; a crash between
    // the checkpoint's header and its marker leaves the older checkpoint's
    // marker there (cache lines reach the media whole). Anything else at
    // the log's start is damage (a zeroed block, say, with every record in it).
    if n == 0 && !rolled_back && scan.vouched.is_none() {
        let first = verified_at::<E>(dev, region, 0)?;
        if first.is_none_or(|v| v.h.epoch >= epoch) {
            scan.vouched = Some(
                "the log of a checkpoint always starts with a record of it (or, after a \
                 crash while starting it, of the checkpoint before)"
                    .into(),
            );
        }
    }
    // The tail line is rewritten with every record: it vouches for the
    // records that were durable when the newest one was written, even where
    // damage erased them all, and it is never torn (one cache line).
    if !rolled_back {
        let tail_at = tail_offset(region);
        match &scan.tail {
            Ok(t) if t.epoch == epoch && t.durable_before > n as u64 => {
                scan.vouched.get_or_insert(format!(
                    "the log's tail line at offset {tail_at} says records 0..{} were durable",
                    t.durable_before
                ));
            }
            Ok(_) => {}
            Err(e) => {
                let what =
                    format!("{e}: the tail line is one cache line, written whole, never torn");
                if mode == Recovery::Strict {
                    return Err(corrupt(what, tail_at));
                }
                damage.push(Damage {
                    what,
                    device_offset: tail_at,
                    salvage: "ignored (the records it vouched for are not checked); rewritten by the repair".into(),
                });
            }
        }
    }
    if let Some(why) = scan.vouched.take() {
        let what = format!("log record {n} of epoch {epoch} at offset {stop_at} is damaged: {why}");
        if mode == Recovery::Strict {
            return Err(corrupt(what, stop_at));
        }
        lost_unnamed.push(format!(
            "log record {n} at offset {stop_at}: damaged, what it changed is unknown"
        ));
        damage.push(Damage {
            what,
            device_offset: stop_at,
            salvage: format!(
                "log cut at record {n}: it and the {} valid records after it are dropped",
                scan.beyond.len()
            ),
        });
    }
    let discarded = if damage.is_empty() {
        Vec::new()
    } else {
        std::mem::take(&mut scan.beyond)
    };
    Ok(LoadedLog {
        newest_epoch: scan.newest.map_or(epoch, |(e, _)| e.max(epoch)),
        epoch,
        next_seq: n as u64,
        records: scan.records,
        head: scan.head,
        torn_tail_at: scan.torn.then_some(stop_at),
        unacknowledged: scan.unacknowledged,
        damage,
        discarded,
        lost_unnamed,
    })
}

impl Journal {
    /// A journal continuing the log of `loaded` (after [`load`]).
    pub fn open(dev: Arc<dyn Device>, geo: Geometry, loaded: &Loaded) -> Journal {
        Journal::new(dev, geo.log_region(), Some(geo), &loaded.log)
    }

    fn new<E>(
        dev: Arc<dyn Device>,
        region: LogRegion,
        slots: Option<Geometry>,
        log: &LoadedLog<E>,
    ) -> Journal {
        let (epoch, newest, head, next_seq) = (log.epoch, log.newest_epoch, log.head, log.next_seq);
        let global_fence = dev.fence_is_global();
        let tail_each_commit = dev.info().persistence != PersistenceDomain::PageCache;
        Journal {
            dev,
            region,
            slots,
            log: Mutex::new(LogState {
                epoch,
                newest,
                head,
                next_seq,
                buf: Vec::new(),
            }),
            fence_lock: Mutex::new(()),
            appended: AtomicU64::new(next_seq),
            durable: AtomicU64::new(next_seq),
            reserved: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            fences: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            global_fence,
            tail_each_commit,
        }
    }

    /// Write the first checkpoint (epoch 1) of a new file system and clear the log.
    pub fn format(
        dev: &dyn Device,
        geo: &Geometry,
        body: &[u8],
        n_records: u64,
    ) -> Result<(), JournalError> {
        // An empty log: zero it so no record of an older file system can
        // follow (or, by its epoch, vouch for anything in this one).
        dev.zero(geo.log_offset(), geo.log_bytes())?;
        // Invalidate both slots first (a re-mkfs over an old file system).
        for i in 0..2 {
            dev.zero(geo.slot_offset(i), BLOCK_SIZE)?;
        }
        dev.flush(geo.log_offset(), geo.log_bytes());
        for i in 0..2 {
            dev.flush(geo.slot_offset(i), BLOCK_SIZE);
        }
        dev.fence()?;
        write_slot(dev, geo, 1, body, n_records)?;
        write_marker(dev, &geo.log_region(), 1)
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
        if want > record_space(&self.region) {
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
    pub fn commit<E: Entry>(&self, ops: &[E], ordered_data: bool) -> Result<u64, JournalError> {
        if ordered_data {
            self.dev.fence()?;
            self.fences.fetch_add(1, Ordering::Relaxed);
        }
        let seq = self.append(ops)?;
        self.make_durable(seq)?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(seq)
    }

    fn append<E: Entry>(&self, ops: &[E]) -> Result<u64, JournalError> {
        let mut log = self.log.lock();
        let at = self.region.log_offset() + log.head;
        // Records after the last one known durable may reach the media in
        // any order; this one says how many, so recovery can tell a record
        // that failed to verify from one it vouches for.
        let unfenced = log.next_seq - self.durable.load(Ordering::Acquire).min(log.next_seq);
        let rec = encode_log_record_into(
            std::mem::take(&mut log.buf),
            ops,
            log.epoch,
            log.next_seq,
            u32::try_from(unfenced).unwrap_or(u32::MAX),
            at,
        );
        let len = rec.len() as u64;
        let stored = if log.head + len > record_space(&self.region) {
            Err(JournalError::LogFull)
        } else {
            self.dev.write(at, &rec).map_err(JournalError::from)
        };
        log.buf = rec;
        stored?;
        self.dev.flush(at, len);
        write_tail(
            &*self.dev,
            &self.region,
            &LogTail {
                epoch: log.epoch,
                seq: log.next_seq,
                durable_before: log.next_seq - unfenced,
            },
            self.tail_each_commit,
        )?;
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
    pub fn next_checkpoint(&self) -> Result<(u64, u64, u64), JournalError> {
        let Some(g) = &self.slots else {
            return Err(JournalError::NoCheckpoints);
        };
        let epoch = {
            let log = self.log.lock();
            next_epoch(log.epoch, log.newest)
        };
        Ok((
            epoch,
            g.slot_offset(epoch % 2) + BLOCK_SIZE,
            g.slot_bytes() - BLOCK_SIZE,
        ))
    }

    /// Write a checkpoint body built for [`Journal::next_checkpoint`] and restart the
    /// log. The caller guarantees no commit runs concurrently.
    pub fn write_checkpoint(&self, body: &[u8], n_records: u64) -> Result<(), JournalError> {
        let mut log = self.log.lock();
        let epoch = next_epoch(log.epoch, log.newest);
        let Some(geo) = &self.slots else {
            return Err(JournalError::NoCheckpoints);
        };
        write_slot(&*self.dev, geo, epoch, body, n_records)?;
        self.restart(&mut log, epoch)
    }

    /// Start the log of `epoch` (its checkpoint, or the root block naming it,
    /// is durable): its marker, then empty watermarks. Under the log lock,
    /// with no commit running.
    fn restart(&self, log: &mut LogState, epoch: u64) -> Result<(), JournalError> {
        write_marker(&*self.dev, &self.region, epoch)?;
        log.epoch = epoch;
        log.newest = epoch;
        log.head = MARKER_BYTES;
        log.next_seq = 1;
        self.appended.store(1, Ordering::Release);
        self.durable.store(1, Ordering::Release);
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Give back the log's storage past its head, where the device can
    /// (`Device::discard`: a memory device punches a hole), so that the
    /// next mount's scan for records past the head (docs/format.md,
    /// "Telling a torn tail from damage") reads nothing there: called by a
    /// clean unmount, right after the log restarted (only the marker
    /// written), when everything past the head is older epochs' records,
    /// which recovery never applies (a crash in the middle leaves some of
    /// them, as before). The tail line is kept. Returns the bytes given
    /// back (0 where the device keeps them).
    pub fn discard_past_head(&self) -> Result<u64, JournalError> {
        let log = self.log.lock();
        let (from, to) = (log.head, record_space(&self.region));
        if from >= to {
            return Ok(0);
        }
        let at = self.region.log_offset() + from;
        Ok(if self.dev.discard(at, to - from)? {
            to - from
        } else {
            0
        })
    }

    /// Bytes of log in use (excluding reservations).
    #[cfg(test)]
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
            log_bytes: self.region.log_bytes(),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
        }
    }
}

/// The epoch of the checkpoint after `current`: past every epoch seen on the
/// device (`newest`), in the other slot than `current`'s.
fn next_epoch(current: u64, newest: u64) -> u64 {
    let e = newest.max(current) + 1;
    if e % 2 == current % 2 {
        e + 1
    } else {
        e
    }
}

/// Bytes of the empty record that starts each epoch's log.
const MARKER_BYTES: u64 = LOG_HEADER_SIZE as u64;

/// Start the log of checkpoint `epoch` (just made durable) with an empty
/// record of that epoch: from then on the log names the newest checkpoint,
/// so damage to that checkpoint's header is never taken for a torn write.
fn write_marker(dev: &dyn Device, geo: &LogRegion, epoch: u64) -> Result<(), JournalError> {
    let rec = encode_log_record::<Op>(&[], epoch, 0, 0, geo.log_offset());
    debug_assert_eq!(rec.len() as u64, MARKER_BYTES);
    dev.write(geo.log_offset(), &rec)?;
    dev.flush(geo.log_offset(), MARKER_BYTES);
    write_tail(
        dev,
        geo,
        &LogTail {
            epoch,
            seq: 0,
            durable_before: 0,
        },
        true,
    )?;
    dev.fence()?;
    Ok(())
}

/// Bytes of the log region that hold records: all but its tail line.
fn record_space(geo: &LogRegion) -> u64 {
    geo.log_bytes() - LOG_TAIL_SIZE as u64
}

fn tail_offset(geo: &LogRegion) -> u64 {
    geo.log_offset() + record_space(geo)
}

/// Rewrite the log's tail line (one cache line: it reaches the media whole)
/// and, with `flush`, flush it: the caller's next fence makes it durable with
/// the record. Any tail line that reaches the media is true whenever it does
/// (it vouches only for records fenced before it was written), so leaving it
/// to writeback only narrows what it vouches for.
fn write_tail(
    dev: &dyn Device,
    geo: &LogRegion,
    t: &LogTail,
    flush: bool,
) -> Result<(), JournalError> {
    let at = tail_offset(geo);
    dev.write(at, &encode_log_tail(t, at))?;
    if flush {
        dev.flush(at, LOG_TAIL_SIZE as u64);
    }
    Ok(())
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::device::{CrashDevice, RamDevice, Survivors};

    const SIZE: u64 = 4 << 20;

    fn fresh() -> (Arc<CrashDevice>, Geometry, Journal) {
        let dev = Arc::new(CrashDevice::new(SIZE));
        let geo = Geometry::for_device(SIZE / BLOCK_SIZE).unwrap();
        Journal::format(&*dev, &geo, &[], 0).unwrap();
        let loaded = load(&*dev, &geo, Recovery::Strict).unwrap();
        let j = Journal::open(dev.clone(), geo, &loaded);
        (dev, geo, j)
    }

    #[test]
    fn the_log_scan_finds_every_aligned_header_of_the_epoch_on_either_side_of_holes() {
        // A memory device: its log region is holes but where written.
        let dev = crate::device::open("memfd:8M", &Default::default()).unwrap();
        let region = LogRegion {
            offset: 1 << 20,
            bytes: 4 << 20,
            total_blocks: (8 << 20) / BLOCK_SIZE,
        };
        let header = |epoch: u64| {
            let mut h = LOG_MAGIC.to_le_bytes().to_vec();
            h.extend_from_slice(&[0u8; 4]);
            h.extend_from_slice(&epoch.to_le_bytes());
            h
        };
        // Log positions: at the start, 2 MiB further past a hole, one of an
        // older epoch, one not aligned, and one at a chunk's last 16 bytes.
        let (a, b, old, odd, edge) = (64, 2 << 20, 3 << 20, (3 << 20) + 4100, (1 << 20) - 16);
        for (at, e) in [(a, 7), (b, 7), (old, 6), (odd, 7), (edge, 8)] {
            dev.write(region.log_offset() + at, &header(e)).unwrap();
        }
        assert!(
            dev.data_within(region.log_offset(), region.log_bytes())
                .len()
                > 1,
            "the region has holes"
        );
        // (From 0: the scan reads 1 MiB at a time from there, and a header
        // cut by a read's end is kept unread; none is, here.)
        let found = candidate_positions(&*dev, &region, 0, 7).unwrap();
        assert_eq!(found, vec![a, edge, b]);
        // The same on a device that reports no holes.
        let ram = RamDevice::new(8 << 20);
        for (at, e) in [(a, 7), (b, 7), (old, 6), (odd, 7), (edge, 8)] {
            ram.write(region.log_offset() + at, &header(e)).unwrap();
        }
        assert_eq!(candidate_positions(&ram, &region, 0, 7).unwrap(), found);
    }

    /// A record a few cache lines long (a link with a long name).
    fn op(i: u8) -> Vec<Op> {
        vec![Op::Link {
            dir: 1,
            ino: 2,
            file_type: 8,
            name: vec![b'a' + i; 200],
            time_ns: 0,
        }]
    }

    #[test]
    fn f7_group_commit_a_later_record_without_an_earlier_one_is_a_torn_tail() {
        let (dev, geo, j) = fresh();
        j.commit(&op(0), false).unwrap();
        let a_at = geo.log_offset() + j.log_used();
        dev.start_recording();
        // Two records appended before the one fence that covers both.
        j.append(&op(1)).unwrap();
        let b = j.append(&op(2)).unwrap();
        j.make_durable(b).unwrap();
        // Crash before that fence: the first line of record a (its header)
        // is lost, everything else written survives.
        let pending = dev.pending_lines(0);
        let mask: Vec<bool> = (0..pending).map(|i| i != 0).collect();
        let img = dev.crash_image(0, &Survivors::Mask(mask));
        let l = load(&RamDevice::from_image(img), &geo, Recovery::Strict).unwrap();
        assert_eq!(l.log.records.len(), 2, "marker and the fenced record");
        assert_eq!(l.log.torn_tail_at, Some(a_at));
        assert_eq!(l.log.unacknowledged, 1, "record b was never acknowledged");
        assert!(l.log.damage.is_empty());
        // Once a record written after that fence exists, the same loss is
        // damage: it vouches for both.
        j.commit(&op(3), false).unwrap();
        let mut img = dev.crash_image(dev.crash_points(), &Survivors::None);
        img[a_at as usize + 4] ^= 1;
        let e = load(&RamDevice::from_image(img), &geo, Recovery::Strict).unwrap_err();
        assert!(e.to_string().contains("log record 2"), "{e}");
    }

    #[test]
    fn f7_every_crash_point_of_a_checkpoint_and_its_marker_loads_without_damage() {
        let (dev, geo, j) = fresh();
        for i in 0..3 {
            j.commit(&op(i), false).unwrap();
        }
        dev.start_recording();
        let (_, _, _) = j.next_checkpoint().unwrap();
        j.write_checkpoint(&[], 0).unwrap();
        j.commit(&op(5), false).unwrap();
        for p in 0..=dev.crash_points() {
            for s in [
                Survivors::None,
                Survivors::All,
                Survivors::Random { seed: p as u64 },
            ] {
                let img = dev.crash_image(p, &s);
                let l = load(&RamDevice::from_image(img), &geo, Recovery::Strict)
                    .unwrap_or_else(|e| panic!("crash point {p} {s:?}: {e}"));
                assert!(l.log.damage.is_empty());
                // The old epoch with its 3 records, or the new one.
                assert!(
                    (l.log.epoch == 1 && l.log.records.len() == 4)
                        || (l.log.epoch == 2 && l.log.records.len() <= 2),
                    "crash point {p} {s:?}: epoch {} with {} records",
                    l.log.epoch,
                    l.log.records.len()
                );
            }
        }
    }
}

/// Model checks: run with `RUSTFLAGS="--cfg loom" cargo test --release -p udax --lib loom_`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::device::{DeviceInfo, RamDevice};
    use crate::format::decode_log_header;
    use crate::sync::{thread, Mutex};

    /// Records which log records a completed fence covers, and checks at each
    /// record's write that every record it claims durable (`durable_before`)
    /// was covered by a fence that had completed.
    #[derive(Debug)]
    struct FenceModel {
        ram: RamDevice,
        log_at: u64,
        st: Mutex<St>,
    }

    #[derive(Debug, Default)]
    struct St {
        /// seq of each record written, in write order.
        written: Vec<u64>,
        /// How many of `written` a completed fence covers.
        durable: usize,
    }

    impl FenceModel {
        fn is_durable(&self, seq: u64) -> bool {
            let st = self.st.lock();
            st.written[..st.durable].contains(&seq)
        }
    }

    impl Device for FenceModel {
        fn info(&self) -> &DeviceInfo {
            self.ram.info()
        }
        fn bad_list(&self) -> &crate::device::BadList {
            self.ram.bad_list()
        }
        fn fence_is_global(&self) -> bool {
            true
        }
        fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
            self.ram.read(off, buf)
        }
        fn write(&self, off: u64, data: &[u8]) -> Result<(), DeviceError> {
            if off >= self.log_at && off < self.log_at + 4096 {
                if let Some(h) = decode_log_header(data) {
                    let st = &mut *self.st.lock();
                    for s in 0..h.durable_before() {
                        // Record 0 is the marker, durable before the journal opened.
                        assert!(
                            s == 0 || st.written[..st.durable].contains(&s),
                            "record {} claims record {s} durable before its fence",
                            h.seq
                        );
                    }
                    st.written.push(h.seq);
                }
            }
            self.ram.write(off, data)
        }
        fn zero(&self, off: u64, len: u64) -> Result<(), DeviceError> {
            self.ram.zero(off, len)
        }
        fn flush(&self, _off: u64, _len: u64) {}
        fn fence(&self) -> Result<(), DeviceError> {
            let st = &mut *self.st.lock();
            st.durable = st.written.len();
            Ok(())
        }
    }

    /// Group commit: two committers and the fences they share. A record never
    /// claims an earlier record durable before a fence covered it (what
    /// recovery relies on to tell damage from a tear), a commit returns only
    /// once a fence covered its record, and `durable <= appended` throughout.
    #[test]
    fn loom_group_commit_durable_claims_and_returns_follow_fences() {
        loom::model(|| {
            let geo = Geometry::for_device(1024).unwrap();
            let dev = Arc::new(FenceModel {
                ram: RamDevice::new(1024 * BLOCK_SIZE),
                log_at: geo.log_offset(),
                st: Mutex::new(St::default()),
            });
            let loaded = Loaded {
                inodes: Vec::new(),
                bad: Vec::new(),
                shared: Vec::new(),
                log: LoadedLog {
                    epoch: 1,
                    records: Vec::new(),
                    head: MARKER_BYTES,
                    next_seq: 1,
                    torn_tail_at: None,
                    unacknowledged: 0,
                    damage: Vec::new(),
                    discarded: Vec::new(),
                    newest_epoch: 1,
                    lost_unnamed: Vec::new(),
                },
            };
            let j = Arc::new(Journal::open(dev.clone(), geo, &loaded));
            let op = |i: u64| vec![Op::FreeInode { ino: i }];
            let hs: Vec<_> = (0..1)
                .map(|i| {
                    let (j, dev) = (j.clone(), dev.clone());
                    thread::spawn(move || {
                        let seq = j.commit(&op(i + 2), false).unwrap();
                        assert!(dev.is_durable(seq), "commit {seq} returned unfenced");
                        assert!(
                            j.durable.load(Ordering::Acquire) <= j.appended.load(Ordering::Acquire)
                        );
                    })
                })
                .collect();
            let seq = j.commit(&op(9), false).unwrap();
            assert!(dev.is_durable(seq));
            for h in hs {
                h.join().unwrap();
            }
            assert_eq!(j.durable.load(Ordering::Acquire), 3);
            assert_eq!(j.appended.load(Ordering::Acquire), 3);
        });
    }
}
