//! The file system: namespace, inodes, extent maps, read/write, truncate, fallocate.
//!
//! State lives in memory (one [`InodeData`] per inode behind its own lock) and
//! every change is a transaction of [`Op`]s: committed to the journal, then applied
//! to memory with [`state::apply`], the same function log replay uses.
//!
//! Lock order (outermost first; see `docs/locking.md`):
//! 1. `cp` — read by every metadata operation, write by a checkpoint;
//! 2. `ns` — the namespace mutex, held by create/link/unlink/rename/mkdir/rmdir;
//! 3. inode locks, several in ascending inode number;
//! 4. `table` (inode number -> cell), `inos`;
//! 5. the allocator's and the journal's internal locks; the device's.
//!
//! Data reads and overwrites of mapped blocks take only the inode's read lock.
//!
//! ORDERING: the atomics of [`Cell`] and [`Inner`] (their uses in the other
//! files of `fs` point here).
//! * `Cell::open` is raised under the inode lock (read; `File::dup` raises a
//!   count already above 0) and checked under it (write) by unlink, rename
//!   and `free_orphan`; the last close lowers it before taking that lock. The inode lock orders every decision on the
//!   count, so its AcqRel/Acquire are stronger than needed.
//! * `Cell::mtime_pending` is a time value; nothing is published through it
//!   (Relaxed). The paths that log it swap it out under the inode write lock;
//!   a store racing one stays pending for the next (AcqRel there: not needed).
//! * `Cell::times_seen` and `PRECISE_FLOOR`: see `change_time_ns`.
//! * `Cell::linkable` is set before the unnamed file's handle is handed out
//!   and read and cleared under the namespace and inode locks; that handoff
//!   and those locks order it (Release/Acquire add nothing needed).
//! * `any_shared` and `bad_count` say whether the shared-block and bad-block
//!   tables are empty: stored (Release) under the table's write lock, loaded
//!   (Acquire) by fast paths that skip the table at 0; a nonzero reader reads
//!   the table under its lock. A reflink stores `any_shared` holding both
//!   files' inode and invalidate locks after breaking their layouts, so a
//!   reader holding either lock of a file (or faulting after the break) sees
//!   the sharing of that file's blocks. A racing new media error may be missed
//!   by a `bad_count` reader, as it would be had the reader run just before.
//! * `image_bytes` is a size estimate for the metadata-full check and
//!   `metadata_full_logged` a warn-once flag: nothing is published through
//!   them (Relaxed); the checkpoint resets `image_bytes` with no transaction
//!   running (it holds `cp` for writing).
//! * `dir_moves`: see `Fs::dir_moves`.

mod cells;
mod check;
mod dirs;
mod error;
pub mod extent;
mod file;
mod format3;
mod grants;
mod iomap;
pub mod locks;
mod materialize;
mod mmap;
mod namespace;
pub mod perm;
mod poison;
mod quarantine;
mod reflink;
pub(crate) mod refs;
pub(crate) mod state;
pub mod trace;
mod types;

/// Counters of the allocator and the journal ([`Fs::alloc_stats`],
/// [`Fs::journal_stats`]).
pub use crate::alloc::AllocStats;
pub use crate::journal::JournalStats;
pub use check::{fsck, fsck_repair, BadBlock, FsckReport, Problem};
pub use dirs::{DirPage, COOKIE_DOT, COOKIE_DOTDOT};
pub use error::{Error, Result};
pub use file::File;
pub use grants::Grant;
pub use mmap::Mapping;
pub(crate) use namespace::child_path;
pub use namespace::{DirRef, Rename, MAX_PATH, MAX_SYMLINKS, TIME_NOW};
pub use poison::{Owner, PoisonReport};
pub use reflink::Dedupe;
use refs::RefTable;
pub use types::{falloc, DirEntry, MkfsOptions, MountOptions, OpenOptions, Stat, StatFs};

use crate::alloc::{Allocator, BlockRange};
use crate::device::Device;
use crate::format::codec::Writer;
use crate::format::v3::AnySuperblock;
use crate::format::{
    encode_badblocks_record, encode_inode_record, encode_refcount_record, Attr, Geometry,
    InodeImage, Op, Superblock, BADBLOCK_RANGE_BYTES, FORMAT_VERSION, MAX_OP_BYTES,
    RANGES_RECORD_BYTES, REFCOUNT_RANGE_BYTES, ROOT_INO, SUPERBLOCK_SIZE, S_IFDIR,
};
pub use crate::journal::Damage;
use crate::journal::{self, Journal, Recovery};
use crate::sync::{AtomicBool, AtomicU32, AtomicU64, Mutex, Ordering, RwLock, RwLockReadGuard};
use crate::BLOCK_SIZE;
use state::{apply, Effects, InodeData, Inodes};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Most ops in one transaction (bounds the log space an operation reserves).
pub(crate) const MAX_TX_OPS: usize = 64;

/// One inode in memory.
#[derive(Debug)]
pub(crate) struct Cell {
    pub ino: u64,
    pub data: RwLock<InodeData>,
    /// Open handles.
    pub open: AtomicU32,
    /// mtime of data overwrites not yet logged (lazytime); 0 = none.
    pub mtime_pending: AtomicU64,
    /// The file's times were read (stat) since its data last changed: the
    /// next change takes a precise time (`change_time_ns`).
    pub times_seen: AtomicBool,
    /// Made without a name (`O_TMPFILE` without `O_EXCL`) and not linked
    /// since: [`File::link`] may give it one although its link count is 0.
    pub linkable: AtomicBool,
    /// Used since the cache's clock last passed it (format 3: a used cell
    /// gets a second chance before it is dropped).
    pub recent: AtomicBool,
    /// Mappings, entries and the invalidate lock of the DAX core.
    pub dax: crate::dax::DaxFile,
}

impl Cell {
    fn new(ino: u64, data: InodeData) -> Arc<Cell> {
        Arc::new(Cell {
            ino,
            data: RwLock::new(data),
            open: AtomicU32::new(0),
            mtime_pending: AtomicU64::new(0),
            times_seen: AtomicBool::new(false),
            linkable: AtomicBool::new(false),
            recent: AtomicBool::new(false),
            dax: crate::dax::DaxFile::new(ino),
        })
    }
}

#[derive(Debug, Default)]
pub(crate) struct InoPool {
    next: u64,
    free: BTreeSet<u64>,
}

impl InoPool {
    fn take(&mut self) -> u64 {
        if let Some(i) = self.free.pop_first() {
            return i;
        }
        self.next += 1;
        self.next - 1
    }
}

/// The on-device format a mount runs, with the state only it has.
#[derive(Debug)]
pub(crate) enum Meta {
    /// Format 2: every inode in memory, the whole image checkpointed into
    /// a slot when the log fills.
    V2 {
        inos: Mutex<InoPool>,
        /// Checkpoint image bytes: exact for inode records (added and
        /// subtracted as they change), an upper bound for refcount and
        /// bad-block ranges (added per new range, measured again by each
        /// checkpoint).
        image_bytes: AtomicU64,
        /// The "metadata area full" warning was logged (once until space is freed).
        metadata_full_logged: AtomicBool,
    },
    /// Format 3: metadata used in place (`format3`).
    V3(Box<format3::V3>),
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub dev: Arc<dyn Device>,
    pub sb: AnySuperblock,
    pub journal: Journal,
    pub alloc: Allocator,
    cp: RwLock<()>,
    pub ns: Mutex<()>,
    table: cells::CellTable,
    pub(crate) meta: Meta,
    /// Mounted read-only: nothing is written to the device.
    read_only: bool,
    /// Damage this mount found and worked around ([`MountOptions::salvage`]).
    salvaged: Salvaged,
    /// The bad-block table (device blocks with media errors), and its number
    /// of ranges (0 = the fast paths skip every check).
    bad: RwLock<rangemap::RangeSet<u64>>,
    bad_count: AtomicU64,
    /// Reference counts of shared blocks (reflink), and whether any exist
    /// (0 = no block is shared: the write and fault paths skip every check).
    refs: RwLock<RefTable>,
    any_shared: AtomicU64,
    /// Directory renames and removals since mount (see `Fs::dir_moves`).
    dir_moves: AtomicU64,
    /// Freed blocks not in the allocator yet: still mapped or pinned in
    /// this process (zombies), or held for other processes that may still
    /// reach them (`quarantine`).
    freed: Mutex<quarantine::Freed>,
    pub uid: u32,
    pub gid: u32,
    /// The DAX state of the device (entry-lock wait queues, fault counters,
    /// references on device pages), which the fault engine owns.
    pub dax: crate::dax::DaxDevice,
}

/// A mounted file system. Cheap to clone; `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Fs {
    pub(crate) inner: Arc<Inner>,
    /// The caller whose permissions every namespace call checks (an owner
    /// serving another process: [`Fs::as_caller`]; the calling thread:
    /// [`Fs::as_thread_caller`]); `None`: this process, unchecked.
    pub(crate) cred: Option<perm::Caller>,
}

/// Held by a metadata operation: its log reservation and the checkpoint read lock.
pub(crate) struct OpGuard<'a> {
    fs: &'a Inner,
    bytes: u64,
    _cp: RwLockReadGuard<'a, ()>,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        self.fs.journal.release(self.bytes);
    }
}

/// The running fs's view for [`apply`]: the inodes the operation has locked, plus
/// the inodes it creates (inserted into the table after the transaction).
pub(crate) struct Locked<'a, 'b> {
    pub held: &'b mut [(u64, &'a mut InodeData)],
    pub created: Vec<(u64, InodeData)>,
    /// Format 3: a directory created here keeps its entries on the device
    /// only (`InodeData::on_device`).
    pub entries_on_device: bool,
}

impl Inodes for Locked<'_, '_> {
    fn get(&mut self, ino: u64) -> Option<&mut InodeData> {
        if let Some(i) = self.held.iter().position(|(i, _)| *i == ino) {
            return Some(&mut *self.held[i].1);
        }
        self.created
            .iter_mut()
            .find(|(i, _)| *i == ino)
            .map(|(_, d)| d)
    }
    fn create(&mut self, ino: u64, mut data: InodeData) -> std::result::Result<(), String> {
        if self.entries_on_device && data.is_dir() {
            if !data.dir.is_empty() {
                return Err(format!("new directory {ino} with entries"));
            }
            data.on_device = true;
        }
        self.created.push((ino, data));
        Ok(())
    }
    fn delete(&mut self, ino: u64) -> Option<InodeData> {
        let d = self.get(ino)?;
        let taken = std::mem::take(d);
        d.freed = true;
        Some(taken)
    }
}

pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The time of the clock's last tick (CLOCK_REALTIME_COARSE: a few ns to read
/// where a precise read costs ~30 ns on a VM).
fn coarse_now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

/// The latest precise change time handed out (`change_time_ns`). A clock
/// floor, no protocol to model: a std atomic even under loom.
static PRECISE_FLOOR: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The mtime/ctime for a change of `cell`'s data (a write): Linux's
/// multigrain timestamps (6.13). The coarse clock (the last tick), unless the
/// file's times were read since its last change: then the precise clock, so
/// that a change after a `stat` always moves mtime, as one a tick later does.
/// A coarse time is never earlier than the latest precise one handed out, so
/// changes stay in order across files.
pub(crate) fn change_time_ns(cell: &Cell) -> u64 {
    // ORDERING: `times_seen` is a hint between a stat and a later write of one
    // caller, which its program order (or the synchronisation that made the
    // write follow the stat) already orders; the floor is a max over values
    // whose order does not depend on other memory.
    if cell.times_seen.load(Ordering::Relaxed) && cell.times_seen.swap(false, Ordering::Relaxed) {
        let t = now_ns();
        PRECISE_FLOOR.fetch_max(t, std::sync::atomic::Ordering::Relaxed);
        t
    } else {
        coarse_now_ns().max(PRECISE_FLOOR.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// A new file system's uuid (v4), label (from `opts`) and creation time.
pub(crate) fn new_identity(opts: &MkfsOptions) -> Result<([u8; 16], [u8; 32], u64)> {
    let mut label = [0u8; 32];
    let l = opts.label.as_bytes();
    if l.len() > 32 {
        return Err(Error::Invalid("label longer than 32 bytes"));
    }
    label[..l.len()].copy_from_slice(l);
    let mut uuid = [0u8; 16];
    uuid.iter_mut().for_each(|b| *b = fastrand::u8(..));
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    Ok((uuid, label, now_ns()))
}

/// The attributes of a new file system's root directory, made at `t` by
/// the caller.
pub(crate) fn root_attr(t: u64) -> Attr {
    Attr {
        mode: S_IFDIR | 0o755,
        nlink: 2,
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        atime_ns: t,
        mtime_ns: t,
        ctime_ns: t,
        btime_ns: t,
        parent: ROOT_INO,
        ..Default::default()
    }
}

/// Read the superblock: the primary, or the backup if the primary fails.
/// Also says which copy (if any) is damaged: `(its offset, what is wrong)`.
fn read_superblock(dev: &dyn Device) -> Result<(Superblock, Option<(u64, String)>)> {
    read_superblock_with(dev, Superblock::decode)
}

/// [`read_superblock`] with the decoder of a format version.
pub(crate) fn read_superblock_with<S>(
    dev: &dyn Device,
    decode: impl Fn(&[u8], u64, u64) -> std::result::Result<S, crate::format::FormatError>,
) -> Result<(S, Option<(u64, String)>)> {
    let blocks = dev.len() / BLOCK_SIZE;
    let mut buf = vec![0u8; SUPERBLOCK_SIZE];
    dev.read(0, &mut buf)?;
    let primary = decode(&buf, 0, blocks);
    if dev.len() < 2 * BLOCK_SIZE {
        return Ok((primary?, None));
    }
    dev.read(BLOCK_SIZE, &mut buf)?;
    let backup = decode(&buf, BLOCK_SIZE, blocks);
    match (primary, backup) {
        (Ok(sb), Ok(_)) => Ok((sb, None)),
        (Ok(sb), Err(e)) => Ok((sb, Some((BLOCK_SIZE, format!("backup superblock: {e}"))))),
        (Err(e), Ok(sb)) => Ok((sb, Some((0, format!("primary superblock: {e}"))))),
        (Err(e), Err(_)) => Err(e.into()),
    }
}

/// The metadata state rebuilt from the device: checkpoint + replayed log.
pub(crate) struct Recovered {
    pub sb: Superblock,
    /// A superblock copy that does not verify: `(offset, what)`.
    pub sb_damage: Option<(u64, String)>,
    pub loaded_epoch: u64,
    pub inodes: HashMap<u64, InodeData>,
    pub replayed: usize,
    pub loaded: journal::Loaded,
    /// The bad-block table (checkpoint + log).
    pub bad: rangemap::RangeSet<u64>,
    /// Shared-block reference counts (checkpoint + log).
    pub refs: RefTable,
}

/// Damage a mount found and what it did about it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Salvaged {
    /// Checkpoint and log damage, each with what the salvage did.
    pub damage: Vec<Damage>,
    /// What the dropped log records changed, by path where the path is known
    /// ("/a/b: unlinked", "inode 12: size set", ...).
    pub lost: Vec<String>,
    /// A superblock copy that does not verify: `(offset, what)`; a writing
    /// mount rewrites it from the good copy.
    pub superblock: Option<(u64, String)>,
}

/// Bytes of metadata image a file system admits: a checkpoint slot's body,
/// less the frames of the bad-block and refcount records (their ranges are
/// counted as they come).
fn metadata_capacity(g: &Geometry) -> u64 {
    g.slot_bytes() - BLOCK_SIZE - 2 * RANGES_RECORD_BYTES
}

/// Checkpoint bytes of a bad-block or refcount record of `n` ranges (none when empty).
fn ranges_record_bytes(n: usize, per_range: u64) -> u64 {
    if n == 0 {
        0
    } else {
        RANGES_RECORD_BYTES + per_range * n as u64
    }
}

/// Load the superblock, the newest checkpoint and the log, and replay it.
pub(crate) fn recover(dev: &dyn Device, mode: Recovery) -> Result<Recovered> {
    let (sb, sb_damage) = read_superblock(dev)?;
    let geo = sb.geometry;
    let mut loaded = journal::load(dev, &geo, mode)?;
    let mut inodes = HashMap::with_capacity(loaded.inodes.len());
    let slot_at = geo.slot_offset(loaded.log.epoch % 2);
    for img in &loaded.inodes {
        let d = InodeData::from_image(img).map_err(|what| Error::Corrupted {
            what,
            device_offset: slot_at,
        })?;
        if inodes.insert(img.ino, d).is_some() || img.ino == 0 {
            return Err(Error::Corrupted {
                what: format!("checkpoint: inode {} twice or zero", img.ino),
                device_offset: slot_at,
            });
        }
    }
    let mut bad = rangemap::RangeSet::new();
    for &(s, l) in &loaded.bad {
        match s.checked_add(l) {
            Some(e) if l > 0 && e <= geo.total_blocks => bad.insert(s..e),
            _ => {
                return Err(Error::Corrupted {
                    what: format!("checkpoint: bad-block range {s}+{l} outside the device"),
                    device_offset: slot_at,
                })
            }
        }
    }
    let mut refs = RefTable::from_ranges(&loaded.shared).map_err(|m| Error::Corrupted {
        what: format!("checkpoint: {m}"),
        device_offset: slot_at,
    })?;
    let records = std::mem::take(&mut loaded.log.records);
    let replayed = records.len();
    for (at, ops) in &records {
        let mut fx = Effects::default();
        for op in ops {
            apply(&mut inodes, op, &mut fx).map_err(|m| Error::Corrupted {
                what: format!("log record: {m}"),
                device_offset: *at,
            })?;
        }
        refs.settle(&fx.shared, &fx.freed);
        for (s, l, poisoned) in fx.bad {
            if s + l > geo.total_blocks {
                return Err(Error::Corrupted {
                    what: format!("log record: bad-block range {s}+{l} outside the device"),
                    device_offset: *at,
                });
            }
            if poisoned {
                bad.insert(s..s + l);
            } else {
                bad.remove(s..s + l);
            }
        }
    }
    Ok(Recovered {
        sb,
        sb_damage,
        loaded_epoch: loaded.log.epoch,
        inodes,
        replayed,
        loaded,
        bad,
        refs,
    })
}

/// What a mount of either format recovered, for [`Fs::assemble`].
pub(crate) struct Mounted {
    pub dev: Arc<dyn Device>,
    pub sb: AnySuperblock,
    pub journal: Journal,
    pub alloc: Allocator,
    pub table: HashMap<u64, Arc<Cell>>,
    pub meta: Meta,
    pub bad: rangemap::RangeSet<u64>,
    pub refs: RefTable,
    pub read_only: bool,
    pub salvaged: Salvaged,
}

impl Fs {
    /// The mounted file system of `m`; the state every mount starts empty
    /// (locks, counters, the DAX state) and the tables' fast-path flags are
    /// made here.
    pub(crate) fn assemble(m: Mounted) -> Fs {
        Fs {
            cred: None,
            inner: Arc::new(Inner {
                dax: crate::dax::DaxDevice::new(m.dev.clone()),
                dev: m.dev,
                sb: m.sb,
                journal: m.journal,
                alloc: m.alloc,
                cp: RwLock::new(()),
                ns: Mutex::new(()),
                table: cells::CellTable::from_map(m.table),
                meta: m.meta,
                bad_count: AtomicU64::new(m.bad.iter().count() as u64),
                bad: RwLock::new(m.bad),
                any_shared: AtomicU64::new(u64::from(!m.refs.is_empty())),
                refs: RwLock::new(m.refs),
                dir_moves: AtomicU64::new(0),
                freed: Mutex::new(quarantine::Freed::default()),
                uid: rustix::process::geteuid().as_raw(),
                gid: rustix::process::getegid().as_raw(),
                read_only: m.read_only,
                salvaged: m.salvaged,
            }),
        }
    }

    /// Write a new, empty file system on `dev` (everything on it is lost),
    /// in the format `opts` asks for (format 3 by default).
    pub fn mkfs(dev: &dyn Device, opts: &MkfsOptions) -> Result<AnySuperblock> {
        match opts.format {
            0 | 3 => format3::mkfs(dev, opts).map(AnySuperblock::V3),
            2 => Self::mkfs_v2(dev, opts).map(AnySuperblock::V2),
            _ => Err(Error::Invalid(
                "unknown format (udax writes formats 2 and 3)",
            )),
        }
    }

    fn mkfs_v2(dev: &dyn Device, opts: &MkfsOptions) -> Result<Superblock> {
        let geo = Geometry::for_device(dev.len() / BLOCK_SIZE)?;
        let (uuid, label, t) = new_identity(opts)?;
        let sb = Superblock {
            version: FORMAT_VERSION,
            incompat: 0,
            compat: 0,
            ro_compat: 0,
            uuid,
            geometry: geo,
            mkfs_time_ns: t,
            label,
        };
        // Invalidate any old superblock first, so a crash during mkfs leaves no
        // half-old file system that mounts.
        dev.zero(0, 2 * BLOCK_SIZE)?;
        dev.persist(0, 2 * BLOCK_SIZE)?;
        let root = InodeImage {
            ino: ROOT_INO,
            attr: root_attr(t),
            extents: vec![],
            dirents: vec![],
        };
        let mut w = Writer::new();
        encode_inode_record(&mut w, &root, 1, geo.slot_offset(1) + BLOCK_SIZE);
        Journal::format(dev, &geo, &w.buf, 1)?;
        for at in [0, BLOCK_SIZE] {
            dev.write(at, &sb.encode(at))?;
        }
        dev.persist(0, 2 * BLOCK_SIZE)?;
        Ok(sb)
    }

    /// The superblock of the udax file system on `dev` (the primary, or the
    /// backup if the primary is bad), or an error if it holds none. Reads
    /// only: no recovery, nothing written (mkfs asks before it overwrites).
    pub fn read_superblock(dev: &dyn Device) -> Result<AnySuperblock> {
        read_superblock_with(dev, AnySuperblock::decode).map(|(sb, _)| sb)
    }

    /// Mount: recover the metadata, rebuild free space, reclaim orphans.
    /// Damaged metadata is an error naming the structure and its offset.
    pub fn mount(dev: Arc<dyn Device>) -> Result<Fs> {
        Self::mount_with(dev, &MountOptions::default())
    }

    /// [`Fs::mount`] with options: read-only, salvage.
    pub fn mount_with(dev: Arc<dyn Device>, opts: &MountOptions) -> Result<Fs> {
        match read_superblock_with(&*dev, AnySuperblock::decode)?.0 {
            AnySuperblock::V3(_) => Self::mount_v3(dev, opts),
            AnySuperblock::V2(_) => Self::mount_v2(dev, opts),
        }
    }

    fn mount_v2(dev: Arc<dyn Device>, opts: &MountOptions) -> Result<Fs> {
        let mode = if opts.salvage {
            Recovery::Salvage
        } else {
            Recovery::Strict
        };
        let rec = recover(&*dev, mode)?;
        let sb = AnySuperblock::V2(rec.sb.clone());
        let report = check::check_state(&sb, &rec.inodes, &rec.refs);
        if let Some(p) = report.first() {
            return Err(Error::Corrupted {
                what: format!("{} (run `udax fsck` for the full report)", p.what),
                device_offset: p.device_offset.unwrap_or(0),
            });
        }
        let geo = rec.sb.geometry;
        let alloc = Allocator::new(geo.data_start, geo.data_blocks());
        let mut image_bytes = 0u64;
        let mut max_ino = ROOT_INO;
        // Every referenced block once (check_state verified that blocks
        // referenced several times are exactly the shared ones).
        let cov = refs::coverage_of(rec.inodes.values());
        for (r, _) in &cov {
            alloc
                .mark_used(BlockRange {
                    start: r.start,
                    len: r.end - r.start,
                })
                .map_err(|_| Error::Corrupted {
                    what: format!("device blocks {r:?} overlap another use"),
                    device_offset: r.start * BLOCK_SIZE,
                })?;
        }
        for (&ino, d) in &rec.inodes {
            image_bytes += d.image_bytes();
            max_ino = max_ino.max(ino);
        }
        image_bytes += ranges_record_bytes(rec.refs.ranges().len(), REFCOUNT_RANGE_BYTES)
            + ranges_record_bytes(rec.bad.iter().count(), BADBLOCK_RANGE_BYTES);
        let mut pool = InoPool {
            next: max_ino + 1,
            free: BTreeSet::new(),
        };
        for i in ROOT_INO + 1..max_ino {
            if !rec.inodes.contains_key(&i) {
                pool.free.insert(i);
            }
        }
        for b in rec.bad.iter() {
            poison::quarantine(&alloc, b.clone());
        }
        let orphans: Vec<u64> = rec
            .inodes
            .iter()
            .filter(|(_, d)| !d.is_dir() && d.attr.nlink == 0)
            .map(|(&i, _)| i)
            .collect();
        let salvaged = Salvaged {
            damage: rec.loaded.log.damage.clone(),
            lost: check::lost_changes(
                &rec.inodes,
                &rec.loaded.log.lost_unnamed,
                rec.loaded.log.discarded.iter().flat_map(|(_, ops)| ops),
            ),
            superblock: rec.sb_damage.clone(),
        };
        // A torn tail (or unacknowledged records past it), or anything a
        // salvage worked around, is left behind by a new checkpoint before
        // the first commit: the new log must never share an epoch with
        // records no later record vouches for.
        let fresh_epoch = rec.loaded.log.torn_tail_at.is_some() || !salvaged.damage.is_empty();
        let journal = Journal::open(dev.clone(), geo, &rec.loaded);
        let table = rec
            .inodes
            .into_iter()
            .map(|(i, d)| (i, Cell::new(i, d)))
            .collect();
        let meta = Meta::V2 {
            inos: Mutex::new(pool),
            image_bytes: AtomicU64::new(image_bytes),
            metadata_full_logged: AtomicBool::new(false),
        };
        let fs = Fs::assemble(Mounted {
            dev,
            sb,
            journal,
            alloc,
            table,
            meta,
            bad: rec.bad,
            refs: rec.refs,
            read_only: opts.read_only,
            salvaged,
        });
        if opts.read_only {
            return Ok(fs);
        }
        if fresh_epoch {
            fs.checkpoint()?;
        }
        for ino in orphans {
            tracing::info!("reclaiming orphan inode {ino}");
            fs.free_orphan(ino)?;
        }
        fs.merge_device_badblocks()?;
        fs.repair_superblocks()?;
        Ok(fs)
    }

    /// What a salvage mount worked around (empty for a mount without damage).
    pub fn salvaged(&self) -> &Salvaged {
        &self.inner.salvaged
    }

    /// `true` if mounted read-only.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// The format stores symbolic links (format 3; format 2 has none).
    pub fn has_symlinks(&self) -> bool {
        matches!(self.inner.meta, Meta::V3(_))
    }

    /// Wait until no page is mapped or pinned (SPEC M13), checkpoint, and
    /// release this handle. After [`crate::dax::PIN_TIMEOUT`] it gives up and
    /// names what is still busy instead of hanging.
    pub fn unmount(self) -> Result<()> {
        self.unmount_timeout(crate::dax::PIN_TIMEOUT)
    }

    /// [`Fs::unmount`] with an explicit wait.
    pub fn unmount_timeout(self, timeout: std::time::Duration) -> Result<()> {
        let total = self.inner.dev.len() / BLOCK_SIZE;
        if let Err((blk, refs)) = self.inner.dax.page_refs.wait_idle(0, total, timeout) {
            let mapped: Vec<String> = self
                .inner
                .table
                .cells()
                .iter()
                .filter_map(|c| {
                    let n = c.dax.regions().len();
                    (n > 0).then(|| format!("inode {} ({n} mappings)", c.ino))
                })
                .collect();
            return Err(Error::Busy(format!(
                "after {timeout:?}: device block {blk} still has {refs} references (mapped or pinned); \
                 still mapped: {}",
                if mapped.is_empty() {
                    "nothing (a pin leaked)".to_string()
                } else {
                    mapped.join(", ")
                }
            )));
        }
        if self.inner.read_only {
            return Ok(());
        }
        if let Meta::V3(_) = self.inner.meta {
            // Format 3's truncation rewrites no inode: log the lazy mtimes.
            self.sync()?;
        }
        self.checkpoint()?;
        // The log past its marker holds only older epochs' records now:
        // a memory device gives their pages back, and the next mount's
        // scan of the log reads none of them.
        let freed = self.inner.journal.discard_past_head()?;
        tracing::debug!("unmount: {freed} bytes of old log records given back");
        Ok(())
    }

    pub fn superblock(&self) -> &AnySuperblock {
        &self.inner.sb
    }

    pub fn device(&self) -> &Arc<dyn Device> {
        &self.inner.dev
    }

    pub fn journal_stats(&self) -> JournalStats {
        self.inner.journal.stats()
    }

    pub fn alloc_stats(&self) -> crate::alloc::AllocStats {
        self.inner.alloc.stats()
    }

    pub fn statfs(&self) -> StatFs {
        let sb = &self.inner.sb;
        // Format 3's metadata blocks freed since the last log truncation
        // are free (the allocator takes them back at the next one).
        let pending_meta = match &self.inner.meta {
            Meta::V3(v) => v.freed_meta.lock().len() as u64,
            Meta::V2 { .. } => 0,
        };
        let (metadata_bytes, metadata_capacity) = match (&self.inner.meta, sb) {
            (Meta::V2 { image_bytes, .. }, AnySuperblock::V2(sb)) => (
                image_bytes.load(Ordering::Relaxed),
                metadata_capacity(&sb.geometry),
            ),
            // Format 3: the data-area blocks metadata holds (inode chunks,
            // tree nodes), and no fixed bound (it grows into the data area).
            (Meta::V3(v), _) => (v.store.meta_blocks() * BLOCK_SIZE, 0),
            _ => (0, 0),
        };
        StatFs {
            block_size: BLOCK_SIZE,
            total_blocks: sb.total_blocks(),
            data_blocks: sb.data_blocks(),
            free_blocks: self.inner.alloc.free_blocks() + pending_meta,
            inodes: match &self.inner.meta {
                Meta::V2 { .. } => self.inner.table.len() as u64,
                Meta::V3(v) => v.store.root().inodes,
            },
            metadata_bytes,
            metadata_capacity,
        }
    }

    /// Make everything durable: pending timestamps, then a fence.
    pub fn sync(&self) -> Result<()> {
        if self.inner.read_only {
            return Ok(());
        }
        let cells = self.inner.table.cells();
        for c in cells {
            self.flush_times(&c)?;
        }
        self.inner.journal.fence()?;
        Ok(())
    }

    /// Restart the log: format 2 writes the whole metadata image as a new
    /// checkpoint; format 3 truncates the log (its changes are in place).
    pub fn checkpoint(&self) -> Result<()> {
        let inner = &*self.inner;
        if inner.read_only {
            return Err(Error::ReadOnly);
        }
        let image_bytes = match &inner.meta {
            Meta::V2 { image_bytes, .. } => image_bytes,
            Meta::V3(v) => return self.truncate_v3(v),
        };
        let _cp = inner.cp.write();
        let (epoch, body_at, cap) = inner.journal.next_checkpoint()?;
        // Transactions are kept out (`cp`): the table holds still.
        let mut cells = inner.table.cells();
        cells.sort_unstable_by_key(|c| c.ino);
        let mut w = Writer::with_capacity(image_bytes.load(Ordering::Relaxed).min(cap) as usize);
        for cell in &cells {
            let d = cell.data.read();
            let mut img = d.to_image(cell.ino);
            let pending = cell.mtime_pending.load(Ordering::Relaxed);
            img.attr.mtime_ns = img.attr.mtime_ns.max(pending);
            img.attr.ctime_ns = img.attr.ctime_ns.max(pending);
            encode_inode_record(&mut w, &img, epoch, body_at);
            if w.len() as u64 > cap {
                return Err(Error::NoSpace);
            }
        }
        let mut n_records = cells.len() as u64;
        let shared = inner.refs.read().ranges();
        if !shared.is_empty() {
            encode_refcount_record(&mut w, &shared, epoch, body_at);
            n_records += 1;
            if w.len() as u64 > cap {
                return Err(Error::NoSpace);
            }
        }
        let bad = self.bad_blocks();
        if !bad.is_empty() {
            encode_badblocks_record(&mut w, &bad, epoch, body_at);
            n_records += 1;
            if w.len() as u64 > cap {
                return Err(Error::NoSpace);
            }
        }
        inner.journal.write_checkpoint(&w.buf, n_records)?;
        image_bytes.store(w.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Counters of the mappings of this file system (PMD vs PTE mappings, zero
    /// pages, allocations by fault, ...).
    pub fn dax_stats(&self) -> crate::dax::VmStats {
        self.inner.dax.stats()
    }

    /// The reverse map (SPEC: "device block -> every mapping that maps it"):
    /// `(inode, address)` of each mapping in this process that maps device
    /// block `dev_blk` right now.
    pub fn mappings_of_block(&self, dev_blk: u64) -> Vec<(u64, usize)> {
        let cells = self.inner.table.cells();
        let mut out = Vec::new();
        for c in cells {
            out.extend(c.dax.addresses_of(dev_blk).into_iter().map(|a| (c.ino, a)));
        }
        out
    }

    /// Begin a metadata operation of at most `max_ops` ops.
    pub(crate) fn begin(&self, max_ops: usize) -> Result<OpGuard<'_>> {
        let inner = &*self.inner;
        if inner.read_only {
            return Err(Error::ReadOnly);
        }
        // Format 2 truncates the log by a checkpoint of everything: a
        // transaction may take a quarter of it; format 3's truncation is
        // O(1), so half.
        let (bytes, share) = match inner.meta {
            Meta::V2 { .. } => (Journal::record_bytes(max_ops * MAX_OP_BYTES), 4),
            Meta::V3(_) => (format3::reserve_bytes(max_ops), 2),
        };
        if bytes * share > inner.sb.log_bytes() {
            return Err(Error::Invalid("transaction larger than the log"));
        }
        // A full log is truncated (a checkpoint); what stays full is other
        // operations' reservations: wait for them, for a bounded time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !inner.journal.try_reserve(bytes) {
            self.checkpoint()?;
            if inner.journal.try_reserve(bytes) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Busy("metadata log stays full".into()));
            }
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        Ok(OpGuard {
            fs: inner,
            bytes,
            _cp: inner.cp.read(),
        })
    }

    /// Inode `ino`'s cell if it is in memory.
    pub(crate) fn cell_in_memory(&self, ino: u64) -> Option<Arc<Cell>> {
        let c = self.inner.table.get(ino)?;
        // ORDERING: a hint for the cache's clock; nothing is published
        // through it (loaded first so a hot cell's line is not written).
        if !c.recent.load(Ordering::Relaxed) {
            c.recent.store(true, Ordering::Relaxed);
        }
        Some(c)
    }

    /// Inode `ino`'s cell: in memory (format 2 holds every inode there), or
    /// read from the device on format 3.
    pub(crate) fn cell(&self, ino: u64) -> Result<Arc<Cell>> {
        if let Some(c) = self.cell_in_memory(ino) {
            return Ok(c);
        }
        match &self.inner.meta {
            Meta::V2 { .. } => Err(Error::NotFound),
            Meta::V3(v) => self.load_cell(v, ino),
        }
    }

    /// A free inode number for a create (given back by [`Fs::return_ino`]
    /// if the create fails).
    pub(crate) fn take_ino(&self) -> Result<u64> {
        match &self.inner.meta {
            Meta::V2 { inos, .. } => Ok(inos.lock().take()),
            Meta::V3(v) => self.take_ino_v3(v),
        }
    }

    pub(crate) fn return_ino(&self, ino: u64) {
        match &self.inner.meta {
            Meta::V2 { inos, .. } => {
                inos.lock().free.insert(ino);
            }
            Meta::V3(v) => v.store.unreserve_ino(ino),
        }
    }

    /// Commit `ops` and apply them to the locked inodes. Caller holds an [`OpGuard`]
    /// and the write locks of every inode the ops touch. Freed blocks go back to
    /// the allocator only after the commit is durable.
    pub(crate) fn run_tx(&self, held: &mut [(u64, &mut InodeData)], ops: &[Op]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        trace::changing(held.iter().map(|(ino, _)| *ino), ops);
        debug_assert!(ops.len() <= MAX_TX_OPS);
        let inner = &*self.inner;
        let (image_bytes, metadata_full_logged) = match &inner.meta {
            Meta::V2 {
                image_bytes,
                metadata_full_logged,
                ..
            } => (image_bytes, metadata_full_logged),
            Meta::V3(v) => return self.run_tx_v3(v, held, ops),
        };
        let geometry = match &inner.sb {
            AnySuperblock::V2(sb) => sb.geometry,
            AnySuperblock::V3(_) => unreachable!("a format-2 mount has a format-2 superblock"),
        };
        // Metadata room: the image must still fit a checkpoint slot afterwards.
        // `image_bytes` is exact for inode records and an upper bound for the
        // refcount and bad-block ranges; room for those two records' frames is
        // kept aside, so a checkpoint always fits what was admitted.
        let grow: u64 = ops.len() as u64 * 2 * MAX_OP_BYTES as u64;
        let cap = metadata_capacity(&geometry);
        let creates = ops.iter().any(|o| {
            matches!(
                o,
                Op::NewInode { .. }
                    | Op::Link { .. }
                    | Op::Map { .. }
                    | Op::MapShared { .. }
                    | Op::Shift { .. }
            )
        });
        let used = image_bytes.load(Ordering::Relaxed);
        if creates && used + grow > cap {
            if !metadata_full_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "metadata area full: the image needs {used} of the {cap} bytes a checkpoint \
                     slot holds (1/64 of the device); creates and block mappings get ENOSPC \
                     until files are removed"
                );
            }
            return Err(Error::NoSpace);
        }
        // Ops that follow data stores (new blocks' data and zeroing, tail zeroing)
        // need those stores durable before the record.
        inner.journal.commit(ops, format3::ordered_ops(ops))?;
        let mut locked = Locked {
            held,
            created: Vec::new(),
            entries_on_device: false,
        };
        let mut fx = Effects::default();
        for op in ops {
            if let Err(m) = apply(&mut locked, op, &mut fx) {
                // The record is durable but does not apply: a bug. Refuse to go on
                // silently; the log replays the same way and fsck will show it.
                tracing::error!("applying a committed op failed: {m}: {op:?}");
                return Err(Error::Corrupted {
                    what: format!("internal: committed op did not apply: {m}"),
                    device_offset: 0,
                });
            }
        }
        let delta = fx.image_delta;
        if delta >= 0 {
            image_bytes.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            // Only inode records shrink it, by their exact size, which is part
            // of the total: never below zero.
            let before = image_bytes.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
            debug_assert!(before >= delta.unsigned_abs(), "metadata size underflow");
            metadata_full_logged.store(false, Ordering::Relaxed);
        }
        if !locked.created.is_empty() || !fx.deleted.is_empty() {
            for (ino, d) in locked.created.drain(..) {
                inner.table.insert(ino, Cell::new(ino, d));
            }
            for ino in &fx.deleted {
                inner.table.remove(*ino);
            }
        }
        for ino in &fx.deleted {
            self.return_ino(*ino);
        }
        self.apply_bad(&fx.bad);
        let freed = if fx.shared.is_empty() && inner.any_shared.load(Ordering::Acquire) == 0 {
            fx.freed
        } else {
            let mut t = inner.refs.write();
            let f = t.settle(&fx.shared, &fx.freed);
            inner
                .any_shared
                .store(u64::from(!t.is_empty()), Ordering::Release);
            f
        };
        self.free_blocks(self.without_bad(freed));
        Ok(())
    }

    /// Give blocks no extent references back to the allocator (the one
    /// place freed file blocks go back): those a live cut-off client of an
    /// owner may still reach are held (`quarantine`), those still mapped or
    /// pinned somewhere wait (as zombies) until they are idle.
    fn free_blocks(&self, ranges: Vec<(u64, u64)>) {
        self.give_freed(ranges, true);
    }

    /// Is any device block shared at all?
    pub(crate) fn has_shared(&self) -> bool {
        self.inner.any_shared.load(Ordering::Acquire) != 0
    }

    /// Does any device block of `[s, s+l)` have more than one owner?
    pub(crate) fn shared_in(&self, s: u64, l: u64) -> Vec<std::ops::Range<u64>> {
        if self.inner.any_shared.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        self.inner.refs.read().shared_in(s, l)
    }

    /// Is any block behind file blocks `[a, b)` of `d` shared?
    pub(crate) fn range_shared(&self, d: &InodeData, a: u64, b: u64) -> bool {
        if self.inner.any_shared.load(Ordering::Acquire) == 0 {
            return false;
        }
        let t = self.inner.refs.read();
        d.device_runs(a, b)
            .any(|(s, n)| !t.shared_in(s, n).is_empty())
    }

    /// Extents referencing device block `b` (1 for an unshared block in use).
    pub fn block_refs(&self, b: u64) -> u32 {
        self.inner.refs.read().count(b)
    }

    /// The shared-block table: `(start, len, refs)` ranges.
    pub fn shared_blocks(&self) -> Vec<(u64, u64, u32)> {
        self.inner.refs.read().ranges()
    }

    /// Delete an inode whose link count is 0 and that has no open handle.
    pub(crate) fn free_orphan(&self, ino: u64) -> Result<()> {
        let _g = self.begin(1)?;
        let cell = self.cell(ino)?;
        let mut d = cell.data.write();
        if d.freed || d.attr.nlink != 0 || cell.open.load(Ordering::Acquire) != 0 {
            return Ok(());
        }
        self.run_tx(&mut [(ino, &mut *d)], &[Op::FreeInode { ino }])
    }

    /// Log pending lazy mtime of `cell`, if any.
    pub(crate) fn flush_times(&self, cell: &Cell) -> Result<()> {
        if cell.mtime_pending.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let _g = self.begin(1)?;
        let mut d = cell.data.write();
        let t = cell.mtime_pending.swap(0, Ordering::AcqRel);
        if t == 0 || d.freed {
            return Ok(());
        }
        let a = d.attr;
        let op = Op::Times {
            ino: cell.ino,
            atime_ns: a.atime_ns,
            mtime_ns: a.mtime_ns.max(t),
            ctime_ns: a.ctime_ns.max(t),
        };
        self.run_tx(&mut [(cell.ino, &mut *d)], &[op])
    }
}

/// Build a [`Stat`] from an inode.
pub(crate) fn stat_of(ino: u64, d: &InodeData, pending_mtime: u64) -> Stat {
    stat_from(ino, &d.attr, d.map.blocks(), d.rdev, pending_mtime)
}

/// A [`Stat`] of inode `ino` with attributes `a`, `blocks` device blocks
/// and device number `rdev` (an inode in memory, or a slot at rest).
pub(crate) fn stat_from(
    ino: u64,
    a: &crate::format::Attr,
    blocks: u64,
    rdev: u64,
    pending_mtime: u64,
) -> Stat {
    Stat {
        ino,
        mode: a.mode,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        blocks: blocks * (BLOCK_SIZE / 512),
        blksize: BLOCK_SIZE as u32,
        atime_ns: a.atime_ns,
        mtime_ns: a.mtime_ns.max(pending_mtime),
        ctime_ns: a.ctime_ns.max(pending_mtime),
        btime_ns: a.btime_ns,
        rdev,
    }
}
