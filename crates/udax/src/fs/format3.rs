//! Format 3 (issue 20): mkfs, recovery, and the running file system's side
//! of the store (docs/architecture.md, "Metadata in place"). Recovery is
//! O(log): the superblock, the root block, the log's records stored in place
//! again, a truncation; then the bitmap gives the allocator its free runs
//! (one pass over 1 bit per block, whatever the file count) and the orphan
//! tree the inodes to free. A mount reads no inode: cells load on demand,
//! a directory's without its entries (`fs::dirs`); fsck reads every inode
//! and entry ([`load_all`]).

use super::cells::CellTable;
use super::extent::Lookup;
use super::materialize::apply_and_store;
use super::perm::X;
use super::refs::RefTable;
use super::state::{Effects, InodeData};
use super::{
    check, new_identity, read_superblock_with, root_attr, Cell, Error, Fs, Locked, Meta,
    MkfsOptions, MountOptions, Mounted, Result, Salvaged,
};
use crate::alloc::{AllocRequest, Allocator, BlockRange};
use crate::device::{Device, OverlayDevice};
use crate::format::v3::{
    AnySuperblock, Geometry3, Inline, InodeSlot, PhysOp, Superblock3, COUNT_PTR_LINES, ROOT_LINE,
};
use crate::format::{Extent, Op, MAX_OP_BYTES, SYMLINK_MAX, S_IFDIR, S_IFLNK, S_IFMT};
use crate::journal::{self, Damage, Journal, Recovery};
use crate::meta::{
    store_entries, BTree, BlockSource, MetaAlloc, MetaError, RangeTree, Store, StoreTx,
};
use crate::sync::{AtomicBool, AtomicUsize, Mutex, Ordering};
use crate::BLOCK_SIZE;
use std::collections::HashMap;
use std::sync::Arc;

/// Write a new, empty format-3 file system on `dev`.
pub(crate) fn mkfs(dev: &dyn Device, opts: &MkfsOptions) -> Result<Superblock3> {
    let geo = Geometry3::for_device(dev.len() / BLOCK_SIZE)?;
    let (uuid, label, t) = new_identity(opts)?;
    let sb = Superblock3 {
        compat: 0,
        ro_compat: 0,
        uuid,
        geometry: geo,
        mkfs_time_ns: t,
        label,
    };
    // No half-old file system may mount after a crash in here: the
    // superblocks go first and come back last.
    dev.zero(0, 2 * BLOCK_SIZE)?;
    dev.persist(0, 2 * BLOCK_SIZE)?;
    journal::clear_log(dev, &geo.log_region())?;
    let root = InodeSlot::new(root_attr(t));
    Store::format(dev, &geo, &root, fastrand::u64(..))?;
    journal::start_log(dev, &geo.log_region(), 1)?;
    for at in [0, BLOCK_SIZE] {
        dev.write(at, &sb.encode(at))?;
    }
    dev.persist(0, 2 * BLOCK_SIZE)?;
    Ok(sb)
}

/// A format-3 device recovered for a writing mount.
pub(crate) struct Opened {
    pub sb: Superblock3,
    /// A superblock copy that does not verify: `(offset, what)`.
    pub sb_damage: Option<(u64, String)>,
    pub store: Store,
    /// The journal, truncated after the replay (a new epoch: no record of
    /// the recovered log can apply again).
    pub journal: Journal,
    /// The epoch the recovered log had, and the records replayed from it.
    pub epoch: u64,
    pub replayed: usize,
    /// Where the log ended on a record that did not verify (a torn write),
    /// and the records after it never acknowledged (dropped).
    pub torn_tail_at: Option<u64>,
    pub unacknowledged: u64,
    /// Damage found ([`Recovery::Salvage`] only).
    pub damage: Vec<Damage>,
    /// What a salvage dropped: lines no record names, and the logical ops
    /// (the records' notes) of the records it discarded.
    pub lost_unnamed: Vec<String>,
    pub lost_ops: Vec<crate::format::Op>,
    /// The data area's free runs `(first block, count)`, for the allocator.
    pub free: Vec<(u64, u64)>,
    /// Inodes unlinked while open when the device was last used: to free.
    pub orphans: Vec<u64>,
}

/// Recover a format-3 device: replay its log in place and truncate it; or,
/// `read_only` (a read-only mount, fsck), replay it into an
/// [`OverlayDevice`] over the device, which is then never written (the
/// store and the journal of the result work on the overlay). A format-2
/// device is refused with a clear error.
pub(crate) fn open(dev: Arc<dyn Device>, mode: Recovery, read_only: bool) -> Result<Opened> {
    let dev: Arc<dyn Device> = if read_only {
        Arc::new(OverlayDevice::new(dev))
    } else {
        dev
    };
    let (sb, sb_damage) =
        read_superblock_with(&*dev, Superblock3::decode).map_err(|e| match e {
            Error::Format(crate::format::FormatError::UnsupportedVersion(2)) => Error::Corrupted {
                what: "this device holds udax format 2 (whole-image metadata): this udax \
                   mounts format 3 only; copy the files out with an older udax and back"
                    .into(),
                device_offset: 0,
            },
            other => other,
        })?;
    let geo = sb.geometry;
    let region = geo.log_region();
    let epoch = Store::read_epoch(&*dev, &geo);
    let mut loaded = journal::load_in_place(&*dev, &region, epoch, geo.root_at(), mode)?;
    // A record that would write outside the metadata refuses a strict open;
    // a salvage cuts the log before it, as before any damaged record.
    let bad = loaded
        .records
        .iter()
        .enumerate()
        .find_map(|(i, (at, es))| replayable(&geo, *at, es).err().map(|e| (i, *at, e)));
    if let Some((i, at, e)) = bad {
        if mode == Recovery::Strict {
            return Err(e);
        }
        let dropped = loaded.records.split_off(i);
        loaded.damage.push(Damage {
            what: e.to_string(),
            device_offset: at,
            salvage: format!(
                "the log is cut before it ({} records dropped)",
                dropped.len()
            ),
        });
        loaded.discarded.splice(0..0, dropped);
    }
    for (_, entries) in &loaded.records {
        store_entries(&*dev, geo.bitmap_at(), entries)?;
    }
    let journal = Journal::open_in_place(dev.clone(), region, &loaded);
    let store = Store::open(dev.clone(), geo)?;
    // The replayed stores become durable, and a new epoch starts (also
    // rewriting a damaged root header a salvage worked around). In the
    // overlay of a read-only open, this changes only memory. A clean log
    // (its marker alone) is continued: opening writes nothing.
    let clean = loaded.records.len() <= 1
        && loaded.damage.is_empty()
        && loaded.torn_tail_at.is_none()
        && loaded.unacknowledged == 0;
    if !clean {
        journal.truncate(&|e| store.write_epoch(e))?;
    }
    let free = store.free_runs()?;
    let orphans = store.orphans()?;
    Ok(Opened {
        sb,
        sb_damage,
        epoch: loaded.epoch,
        replayed: loaded.records.len(),
        torn_tail_at: loaded.torn_tail_at,
        unacknowledged: loaded.unacknowledged,
        lost_unnamed: loaded.lost_unnamed.clone(),
        lost_ops: loaded
            .discarded
            .iter()
            .flat_map(|(_, es)| es)
            .filter_map(|e| match e {
                crate::format::v3::PhysOp::Note(op) => Some(op.clone()),
                _ => None,
            })
            .collect(),
        damage: loaded.damage,
        store,
        journal,
        free,
        orphans,
    })
}

fn free_named(dir: u64, name: &[u8], ino: u64) -> Error {
    Error::Corrupted {
        what: format!(
            "directory {dir}: entry {:?} names inode {ino}, which is free",
            String::from_utf8_lossy(name)
        ),
        device_offset: 0,
    }
}

/// A record's writes may change only the root block's body, counts and
/// count table lines and the data area: one that verifies but would write
/// elsewhere (the superblocks, the log, the bitmap, the root header, the
/// size grant lines) is damage, refused before anything is replayed.
fn replayable(geo: &Geometry3, record_at: u64, entries: &[PhysOp]) -> Result<()> {
    let root = geo.root_at();
    let lines = root + ROOT_LINE as u64..geo.count_ptr_at(COUNT_PTR_LINES);
    let data = geo.data_start * BLOCK_SIZE..geo.total_blocks * BLOCK_SIZE;
    for e in entries {
        if let PhysOp::Write { at, bytes } = e {
            let end = at.saturating_add(bytes.len() as u64);
            let inside = |r: &std::ops::Range<u64>| *at >= r.start && end <= r.end;
            if !inside(&lines) && !inside(&data) {
                return Err(Error::Corrupted {
                    what: format!(
                        "log record: a write of {} bytes at device offset {at:#x}, outside \
                         the root block's lines and the data area",
                        bytes.len()
                    ),
                    device_offset: record_at,
                });
            }
        }
    }
    Ok(())
}

/// Inode `ino` of `slot` as the running file system holds it: attributes
/// and every extent; a directory's entries only `with_entries` (fsck's
/// whole-state check), otherwise they stay in its tree on the device
/// (`InodeData::on_device`: the cell of a directory of any size costs the
/// same).
pub(crate) fn inode_data(
    store: &Store,
    ino: u64,
    slot: &InodeSlot,
    with_entries: bool,
) -> Result<InodeData> {
    inode_data_held(store, ino, slot, with_entries, &mut |_| Ok(()))
}

/// [`inode_data`], with `held` asked about every extent before the data
/// they map is read (a long symbolic link's target). Damage is Corrupted:
/// an extent outside the data area, or a count of tree items in the slot
/// that its tree does not hold (a tree root lost under a valid checksum
/// would otherwise read as a hole, or an empty directory).
pub(crate) fn inode_data_held(
    store: &Store,
    ino: u64,
    slot: &InodeSlot,
    with_entries: bool,
    held: &mut dyn FnMut(&Extent) -> Result<()>,
) -> Result<InodeData> {
    let mut d = InodeData::default();
    d.attr = slot.attr;
    d.tree_root = slot.tree_root;
    d.rdev = slot.rdev;
    let bad = |what: String| Error::Corrupted {
        what: format!("inode {ino}: {what}"),
        device_offset: slot.tree_root * BLOCK_SIZE,
    };
    let counted = |n: u64| {
        if n == slot.tree_count {
            return Ok(());
        }
        Err(bad(format!(
            "its slot counts {} items in its tree (root block {}), the tree holds {n}",
            slot.tree_count, slot.tree_root
        )))
    };
    if slot.attr.mode & S_IFMT == S_IFDIR && !with_entries {
        // The entries stay on the device; a count with no tree to hold it
        // is damage (a lost root would read as an empty directory).
        if slot.tree_root == 0 && slot.tree_count != 0 {
            counted(0)?;
        }
        d.on_device = true;
        d.entries = slot.tree_count;
    } else if slot.attr.mode & S_IFMT == S_IFDIR {
        let tree = BTree {
            root: slot.tree_root,
            owner: ino,
        };
        let entries = store.dir_range(tree, 0, usize::MAX)?;
        counted(entries.len() as u64)?;
        d.set_entries(
            entries
                .into_iter()
                .map(|(_, e)| (e.name, (e.ino, e.file_type)))
                .collect(),
        )
        .map_err(bad)?;
    } else {
        let extents = store.extents(ino, slot)?;
        let inline = match &slot.inline {
            Inline::Extents(e) => e.len(),
            _ => 0,
        };
        counted((extents.len() - inline) as u64)?;
        let g = store.geometry();
        for e in extents {
            if !g.holds_data(e.dev_blk, e.len) {
                return Err(bad(format!("extent {e:?} outside the data area")));
            }
            held(&e)?;
            d.map
                .insert(e.file_blk, e.dev_blk, e.len)
                .map_err(|m| bad(format!("extent {e:?}: {m}")))?;
        }
    }
    if slot.attr.mode & S_IFMT == S_IFLNK {
        d.target = link_target(store, &d, slot).map_err(bad)?;
    }
    Ok(d)
}

/// The target of symbolic link `d` (its slot `slot`): inline, or the
/// first `size` bytes of the data block it maps.
fn link_target(store: &Store, d: &InodeData, slot: &InodeSlot) -> Result<Vec<u8>, String> {
    let size = slot.attr.size as usize;
    let target = match &slot.inline {
        Inline::Target(t) => t.clone(),
        _ if size > SYMLINK_MAX => return Err(format!("symbolic link of {size} bytes")),
        _ => {
            let Lookup::Mapped { dev_blk, .. } = d.map.lookup(0) else {
                return Err("symbolic link without its target block".into());
            };
            let mut t = vec![0u8; size];
            store
                .device()
                .read(dev_blk * BLOCK_SIZE, &mut t)
                .map_err(|e| format!("reading the symbolic link's target: {e}"))?;
            t
        }
    };
    if target.is_empty() || target.contains(&0) {
        return Err("symbolic link with an empty target or a NUL in it".into());
    }
    Ok(target)
}

/// Inode `ino` read again from the store (`None`: not in use there), a
/// directory without its entries.
pub(crate) fn reload(store: &Store, ino: u64) -> Result<Option<InodeData>> {
    match store.inode(ino)? {
        Some(slot) => inode_data(store, ino, &slot, false).map(Some),
        None => Ok(None),
    }
}

/// The tables a format-3 mount keeps whole in memory: the reference counts
/// of shared blocks and the bad-block table (both small: they grow with
/// reflinked runs and media errors, not with files).
pub(crate) struct Tables {
    pub refs: RefTable,
    pub bad: rangemap::RangeSet<u64>,
}

/// Every inode of `store` as the file system holds it (fsck: O(file count)),
/// and the tables.
pub(crate) struct Loaded3 {
    pub inodes: HashMap<u64, InodeData>,
    pub tables: Tables,
}

/// Load everything from `store` (fsck). An inode whose trees do not read is
/// left out (the store's check reports it).
pub(crate) fn load_all(store: &Store) -> Result<Loaded3> {
    let mut inodes = HashMap::new();
    for (ino, slot) in store.all_inodes()? {
        if let Ok(d) = inode_data(store, ino, &slot, true) {
            inodes.insert(ino, d);
        }
    }
    Ok(Loaded3 {
        inodes,
        tables: load_tables(store)?,
    })
}

/// The reference counts and the bad-block table (at mount).
pub(crate) fn load_tables(store: &Store) -> Result<Tables> {
    let root_at = store.geometry().root_at();
    let shared: Vec<(u64, u64, u32)> = store
        .ranges(RangeTree::Refcounts)?
        .into_iter()
        .map(|(s, n, c)| (s, n, u32::try_from(c).unwrap_or(u32::MAX)))
        .collect();
    let refs = RefTable::from_ranges(&shared).map_err(|what| Error::Corrupted {
        what: format!("refcount tree: {what}"),
        device_offset: root_at,
    })?;
    let bad = store
        .ranges(RangeTree::Badblocks)?
        .into_iter()
        .map(|(s, n, _)| s..s + n)
        .collect();
    Ok(Tables { refs, bad })
}

/// Runs of a range tree as the store keeps them.
pub(crate) fn refs_runs(t: &RefTable) -> Vec<(u64, u64, u64)> {
    t.ranges()
        .into_iter()
        .map(|(s, n, c)| (s, n, u64::from(c)))
        .collect()
}

pub(crate) fn bad_runs(t: &rangemap::RangeSet<u64>) -> Vec<(u64, u64, u64)> {
    t.iter().map(|r| (r.start, r.end - r.start, 0)).collect()
}

/// Metadata blocks for one transaction, from the file system's allocator:
/// every block it hands out is remembered, so an abandoned transaction gives
/// them all back ([`TxAlloc::abandon`]).
pub(crate) struct TxAlloc<'a> {
    alloc: &'a Allocator,
    taken: Vec<(u64, u64)>,
}

impl<'a> TxAlloc<'a> {
    pub fn new(alloc: &'a Allocator) -> Self {
        TxAlloc {
            alloc,
            taken: Vec::new(),
        }
    }

    /// The transaction was not committed: its blocks go back.
    pub fn abandon(self) {
        for (start, len) in self.taken {
            if let Err(e) = self.alloc.free(BlockRange { start, len }) {
                tracing::error!("returning metadata blocks {start}+{len}: {e}");
            }
        }
    }
}

impl BlockSource for TxAlloc<'_> {
    fn alloc_block(&mut self) -> std::result::Result<u64, MetaError> {
        self.alloc_run(1)
    }
}

impl MetaAlloc for TxAlloc<'_> {
    fn alloc_run(&mut self, n: u64) -> std::result::Result<u64, MetaError> {
        let got = self
            .alloc
            .alloc(AllocRequest {
                len: n,
                goal: None,
                huge: false,
            })
            .map_err(|_| MetaError::NoSpace)?;
        if got.len() != 1 {
            for r in got {
                let _ = self.alloc.free(r);
            }
            return Err(MetaError::NoSpace);
        }
        self.taken.push((got[0].start, n));
        Ok(got[0].start)
    }
}

/// The state of a format-3 mount.
#[derive(Debug)]
pub(crate) struct V3 {
    pub store: Store,
    /// Metadata blocks freed since the last log truncation: a replay could
    /// still write them until the next one, so only then do they go back to
    /// the allocator.
    pub freed_meta: Mutex<Vec<u64>>,
    /// Cells in memory beyond which idle ones are dropped ([`Fs::cell`]
    /// loads them again from the device), and the inode numbers of the
    /// cells in the order they came in (a clock: the oldest is looked at
    /// first; a busy one goes to the back). Taken under the table's write
    /// lock.
    pub cache_limit: AtomicUsize,
    pub order: Mutex<std::collections::VecDeque<u64>>,
    /// Blocks of extents found marked free in the bitmap (damage): taken
    /// out of free space, and every file mapping them is Corrupted.
    pub damaged: Mutex<rangemap::RangeSet<u64>>,
    /// Size grant lines out (bit i: line i; `fs::grants`).
    pub grant_lines: Mutex<u64>,
    /// A committed change could not be stored in place, or a failed one
    /// could not be undone in memory: every later change is refused until
    /// the file system is mounted again (XFS's forced shutdown).
    pub shut_down: AtomicBool,
    /// Recent lookups in directories (their entries stay on the device).
    pub lookups: super::dirs::LookupCache,
}

fn shut_down_error() -> Error {
    Error::Corrupted {
        what: "the file system was shut down after a metadata update failed; unmount and \
               mount it again (the log recovers every acknowledged change)"
            .into(),
        device_offset: 0,
    }
}

/// Log bytes an operation of at most `max_ops` ops reserves on format 3:
/// each op's note and the bytes it changes in place (a slot, a few tree
/// entries and their node headers, the root lines), and one inode chunk
/// added for it. A node split logs a fresh block whole, more than this
/// allows for one op; the reservations of all operations in flight are
/// summed, so one such record only uses room that others reserved and did
/// not use (if the log is truly full, the commit fails and is undone).
pub(crate) fn reserve_bytes(max_ops: usize) -> u64 {
    Journal::record_bytes(max_ops * (MAX_OP_BYTES + 1536))
        + Journal::record_bytes(2 * BLOCK_SIZE as usize + 1024)
}

/// Cells kept in memory before idle ones are dropped (a cell costs a few
/// hundred bytes plus its extents or entries).
const CACHE_LIMIT: usize = 16384;

/// What a transaction staged beyond its store writes.
struct Staged {
    fx: Effects,
    /// Device runs no extent references any more.
    freed: Vec<(u64, u64)>,
    /// The reference counts after it (`None`: unchanged).
    refs: Option<RefTable>,
}

impl Fs {
    /// Mount a format-3 device (`Fs::mount_with` chose it by the superblock).
    pub(super) fn mount_v3(dev: Arc<dyn Device>, opts: &MountOptions) -> Result<Fs> {
        let mode = if opts.salvage {
            Recovery::Salvage
        } else {
            Recovery::Strict
        };
        let o = open(dev.clone(), mode, opts.read_only)?;
        // O(1) in the file count: inodes are read when first used
        // (`Fs::cell`); the bitmap gives the free space, the two small
        // tables are read whole.
        let t = load_tables(&o.store)?;
        let sb = AnySuperblock::V3(o.sb.clone());
        let g = o.sb.geometry;
        let alloc = Allocator::new(g.data_start, g.total_blocks - g.data_start);
        let mut at = g.data_start;
        for &(s, n) in o.free.iter().chain([(g.total_blocks, 0)].iter()) {
            if s > at {
                alloc
                    .mark_used(BlockRange {
                        start: at,
                        len: s - at,
                    })
                    .map_err(|e| Error::Corrupted {
                        what: format!("free-space bitmap: blocks {at}+{}: {e}", s - at),
                        device_offset: g.bitmap_at(),
                    })?;
            }
            at = s + n;
        }
        for b in t.bad.iter() {
            super::poison::quarantine(&alloc, b.clone());
        }
        let salvaged = Salvaged {
            damage: o.damage.clone(),
            lost: check::lost_changes(&HashMap::new(), &o.lost_unnamed, o.lost_ops.iter()),
            superblock: o.sb_damage.clone(),
        };
        let orphans = o.orphans.clone();
        for &ino in &orphans {
            if o.store.inode(ino)?.is_none() {
                return Err(Error::Corrupted {
                    what: format!("orphan tree: inode {ino}, which is free"),
                    device_offset: o.store.root().orphans * BLOCK_SIZE,
                });
            }
        }
        let meta = Meta::V3(Box::new(V3 {
            store: o.store,
            freed_meta: Mutex::new(Vec::new()),
            cache_limit: AtomicUsize::new(CACHE_LIMIT),
            order: Mutex::new(std::collections::VecDeque::new()),
            damaged: Mutex::new(rangemap::RangeSet::new()),
            shut_down: AtomicBool::new(false),
            lookups: super::dirs::LookupCache::new(),
            grant_lines: Mutex::new(0),
        }));
        let fs = Fs::assemble(Mounted {
            dev,
            sb,
            journal: o.journal,
            alloc,
            table: HashMap::new(),
            meta,
            bad: t.bad,
            refs: t.refs,
            read_only: opts.read_only,
            salvaged,
        });
        if opts.read_only {
            return Ok(fs);
        }
        // Before the orphans go: a grant on an unlinked file still open
        // names a live inode until then.
        fs.recover_grants(opts.salvage)?;
        for ino in orphans {
            tracing::info!("reclaiming orphan inode {ino}");
            fs.free_orphan(ino)?;
        }
        fs.merge_device_badblocks()?;
        fs.repair_superblocks()?;
        Ok(fs)
    }

    /// Inode `ino`'s cell, read from the device (it was not in memory).
    pub(super) fn load_cell(&self, v3: &V3, ino: u64) -> Result<Arc<Cell>> {
        let inner = &*self.inner;
        // No transaction runs on an inode that is not in memory (one needs
        // its cell), so its slot and trees are at rest while read here; a
        // create inserts its cell right after storing it.
        let slot = v3.store.inode(ino)?.ok_or(Error::NotFound)?;
        // Blocks a file holds must be in use: the allocator would hand out
        // blocks the bitmap marks free. Those found are taken out of free
        // space and remembered, so the file stays an error (and its blocks
        // nobody's) until fsck.
        let d = inode_data_held(&v3.store, ino, &slot, false, &mut |e| {
            let r = BlockRange {
                start: e.dev_blk,
                len: e.len,
            };
            let free = inner.alloc.free_within(r);
            let mut damaged = v3.damaged.lock();
            if free.is_empty() && !damaged.overlaps(&(r.start..r.end())) {
                return Ok(());
            }
            for f in free {
                // Taken meanwhile by an allocation: in use anyway.
                let _ = inner.alloc.mark_used(f);
            }
            damaged.insert(r.start..r.end());
            Err(Error::Corrupted {
                what: format!(
                    "inode {ino}: extent {e:?} is marked free in the free-space bitmap \
                     (its blocks are kept out of use; run `udax fsck`)"
                ),
                device_offset: v3.store.geometry().bitmap_at(),
            })
        })?;
        let c = cache_cell(v3, &inner.table, ino, d);
        sweep(v3, &inner.table);
        Ok(c)
    }

    /// `stat` of inode `ino` from its slot alone, when its cell is not in
    /// memory: no cell is made, so a `stat` of many files neither reads
    /// their extents nor churns the cache. Under the table's read lock the
    /// slot is at rest (as in `load_cell`). `None`: the cell is in memory,
    /// the slot is free (the cell path says what that means), or a regular
    /// file's extents go on in a tree (its block count needs the tree); the
    /// caller uses the cell.
    pub(super) fn stat_at_rest(&self, ino: u64) -> Option<Result<super::Stat>> {
        let Meta::V3(v3) = &self.inner.meta else {
            return None;
        };
        let held = self.inner.table.hold(ino);
        if held.has_cell() {
            return None;
        }
        let slot = match v3.store.inode(ino) {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => return Some(Err(e.into())),
        };
        drop(held);
        let blocks = match &slot.inline {
            _ if slot.tree_root != 0 && slot.attr.mode & S_IFMT != S_IFDIR => return None,
            Inline::Extents(v) => v.iter().map(|e| e.len).sum::<u64>(),
            Inline::Target(_) | Inline::None => 0,
        };
        Some(Ok(super::stat_from(ino, &slot.attr, blocks, slot.rdev, 0)))
    }

    /// Entry `name` of directory `dir` (its inode number and type), read
    /// from the directory's tree on the device when its cell is not in
    /// memory: one path of the tree, where loading the cell would read
    /// every entry. `None`: the directory is in memory (or this is format
    /// 2): the caller looks in its cell.
    pub(super) fn lookup_at_rest(&self, dir: u64, name: &[u8]) -> Option<Result<(u64, u8)>> {
        let Meta::V3(v3) = &self.inner.meta else {
            return None;
        };
        // The table's read lock through the walk: the directory cannot come
        // into memory meanwhile, and a transaction on it needs its cell, so
        // its slot and tree are at rest (as in `load_cell`).
        let held = self.inner.table.hold(dir);
        if held.has_cell() {
            return None;
        }
        let found = || -> Result<(u64, u8)> {
            let slot = v3.store.inode(dir)?.ok_or(Error::NotFound)?;
            if slot.attr.mode & S_IFMT != S_IFDIR {
                return Err(Error::NotDir);
            }
            self.permit(
                &slot.attr,
                X,
                "search permission on a directory of the path",
            )?;
            if name == b".." {
                return Ok((slot.attr.parent, crate::format::DT_DIR));
            }
            // One path of the tree is read, not all of it to count: but a
            // lost root under a count of entries is seen without.
            if slot.tree_root == 0 && slot.tree_count != 0 {
                return Err(Error::Corrupted {
                    what: format!(
                        "inode {dir}: its slot counts {} entries and names no tree",
                        slot.tree_count
                    ),
                    device_offset: 0,
                });
            }
            let tree = BTree {
                root: slot.tree_root,
                owner: dir,
            };
            let e = v3.store.dir_lookup(tree, name)?.ok_or(Error::NotFound)?;
            // At rest, the inode an entry names is in use (its cell would
            // be in memory while a transaction frees it): a free slot is
            // damage, not a file that vanished.
            if !self.inner.table.contains_nested(&held, e.ino) && v3.store.inode(e.ino)?.is_none() {
                return Err(free_named(dir, name, e.ino));
            }
            // Under the table's read lock: no transaction on `dir` can
            // forget this before it is put (`dirs::LookupCache`).
            v3.lookups.put(dir, name, (e.ino, e.file_type));
            Ok((e.ino, e.file_type))
        };
        Some(found())
    }

    /// Entry `name` of directory `dir`, in memory, names inode `ino`: that
    /// inode must be in use. The caller holds the directory's cell, so no
    /// transaction frees the inode meanwhile (it would remove the entry
    /// first), and a create's cell is in the table before its directory is
    /// let go: a free slot and no cell is damage.
    pub(super) fn named_in_use(&self, dir: u64, name: &[u8], ino: u64) -> Result<()> {
        let Meta::V3(v3) = &self.inner.meta else {
            return Ok(());
        };
        if self.inner.table.contains(ino) || v3.store.inode(ino)?.is_some() {
            return Ok(());
        }
        Err(free_named(dir, name, ino))
    }

    /// A free inode number (a new inode chunk first when every chunk is full).
    pub(super) fn take_ino_v3(&self, v3: &V3) -> Result<u64> {
        loop {
            if let Some(i) = v3.store.reserve_ino()? {
                return Ok(i);
            }
            let mut ma = TxAlloc::new(&self.inner.alloc);
            let mut tx = v3.store.begin();
            let done = tx.add_chunk(&mut ma).map_err(Error::from).and_then(|()| {
                let (entries, ordered) = tx.entries()?;
                self.inner.journal.commit(&entries, ordered)?;
                Ok(entries)
            });
            match done {
                Ok(entries) => {
                    if let Err(e) = tx.stored(&entries) {
                        self.shut_down(v3);
                        return Err(e.into());
                    }
                }
                Err(e) => {
                    drop(tx);
                    ma.abandon();
                    return Err(e);
                }
            }
        }
    }

    fn shut_down(&self, v3: &V3) {
        tracing::error!("shutting the file system down: a metadata update failed half-way");
        // ORDERING: a flag raised once; nothing is published through it.
        v3.shut_down.store(true, Ordering::Relaxed);
    }

    /// [`Fs::run_tx`] on format 3: apply the ops to the locked inodes and
    /// write their on-device form into a transaction, commit it, store it
    /// in place. A failure before the commit is durable undoes the change
    /// in memory (the inodes are read again from the device, which the
    /// transaction never touched).
    pub(super) fn run_tx_v3(
        &self,
        v3: &V3,
        held: &mut [(u64, &mut InodeData)],
        ops: &[Op],
    ) -> Result<()> {
        let inner = &*self.inner;
        // ORDERING: see `shut_down`.
        if v3.shut_down.load(Ordering::Relaxed) {
            return Err(shut_down_error());
        }
        // The names this changes leave the lookup cache now, under their
        // directories' write locks: no lookup can put them back before the
        // change is stored (the linked ones are put after it, below) and
        // the locks are let go.
        for op in ops {
            if let Op::Link { dir, name, .. } | Op::Unlink { dir, name, .. } = op {
                v3.lookups.forget(*dir, name);
            }
        }
        let mut locked = Locked {
            held,
            created: Vec::new(),
            entries_on_device: true,
        };
        let mut ma = TxAlloc::new(&inner.alloc);
        let mut tx = v3.store.begin();
        let staged = self.stage_v3(&mut tx, &mut ma, &mut locked, ops);
        let committed = staged.and_then(|st| {
            let (entries, ordered) = tx.entries()?;
            inner
                .journal
                .commit(&entries, ordered || ordered_ops(ops))?;
            Ok((st, entries))
        });
        let (st, entries) = match committed {
            Ok(x) => x,
            Err(e) => {
                drop(tx);
                ma.abandon();
                self.undo_v3(v3, &mut locked);
                return Err(e);
            }
        };
        // Durable. The in-memory tables follow before the shared structures
        // are let go (a later transaction settles from them).
        if let Some(t) = st.refs {
            let mut r = inner.refs.write();
            *r = t;
            // ORDERING: under the table's write lock, as in `Fs::run_tx`.
            inner
                .any_shared
                .store(u64::from(!r.is_empty()), Ordering::Release);
        }
        self.apply_bad(&st.fx.bad);
        let freed_meta = tx.blocks().0.to_vec();
        if let Err(e) = tx.stored(&entries) {
            self.shut_down(v3);
            return Err(e.into());
        }
        v3.freed_meta.lock().extend(freed_meta);
        // Stored, the directories still write-locked: the names this
        // linked go into the lookup cache (a stat after a create finds its
        // file without a tree walk), in op order, so a name linked and
        // unlinked again is left out.
        for op in ops {
            match op {
                Op::Link {
                    dir,
                    ino,
                    file_type,
                    name,
                    ..
                } => v3.lookups.put(*dir, name, (*ino, *file_type)),
                Op::Unlink { dir, name, .. } => v3.lookups.forget(*dir, name),
                _ => {}
            }
        }
        if !locked.created.is_empty() || !st.fx.deleted.is_empty() {
            for (ino, d) in locked.created.drain(..) {
                // A reader may have loaded the stored inode already.
                cache_cell(v3, &inner.table, ino, d);
            }
            for ino in &st.fx.deleted {
                inner.table.remove(*ino);
            }
            sweep(v3, &inner.table);
        }
        self.free_blocks(self.without_bad(st.freed));
        Ok(())
    }

    /// Apply and store `ops`, settle the reference counts and the bad-block
    /// table, and clear the bits of the blocks that became free.
    fn stage_v3(
        &self,
        tx: &mut StoreTx<'_>,
        ma: &mut TxAlloc<'_>,
        locked: &mut Locked<'_, '_>,
        ops: &[Op],
    ) -> Result<Staged> {
        let inner = &*self.inner;
        let mut fx = apply_and_store(tx, ma, locked, ops)?;
        let mut refs = None;
        // ORDERING: see `any_shared` in fs/mod.rs.
        let freed = if fx.shared.is_empty() && inner.any_shared.load(Ordering::Acquire) == 0 {
            std::mem::take(&mut fx.freed)
        } else {
            // The shared structures' lock first: it orders the settlements
            // as their stores are ordered.
            tx.lock_shared()?;
            let before = inner.refs.read().clone();
            let mut after = before.clone();
            let f = after.settle(&fx.shared, &fx.freed);
            tx.set_ranges(
                ma,
                RangeTree::Refcounts,
                &refs_runs(&before),
                &refs_runs(&after),
            )?;
            refs = Some(after);
            f
        };
        if !fx.bad.is_empty() {
            tx.lock_shared()?;
            let before = inner.bad.read().clone();
            let mut after = before.clone();
            for &(s, l, poisoned) in &fx.bad {
                if poisoned {
                    after.insert(s..s + l);
                } else {
                    after.remove(s..s + l);
                }
            }
            tx.set_ranges(
                ma,
                RangeTree::Badblocks,
                &bad_runs(&before),
                &bad_runs(&after),
            )?;
        }
        let data_start = self.inner.sb.data_start();
        for &(s, l) in &freed {
            // Blocks before the data area (a bad superblock copy) have no bit.
            if s >= data_start {
                tx.bits(s, l, false)?;
            }
        }
        Ok(Staged { fx, freed, refs })
    }

    /// Undo a transaction that failed before its commit was durable: the
    /// locked inodes are read again from the device.
    fn undo_v3(&self, v3: &V3, locked: &mut Locked<'_, '_>) {
        locked.created.clear();
        for (ino, d) in locked.held.iter_mut() {
            match reload(&v3.store, *ino) {
                Ok(Some(back)) => **d = back,
                Ok(None) => {
                    tracing::error!("undoing a failed update: inode {ino} is gone from the device");
                    self.shut_down(v3);
                }
                Err(e) => {
                    tracing::error!("undoing a failed update: reading inode {ino}: {e}");
                    self.shut_down(v3);
                }
            }
        }
    }

    /// Truncate the log (format 3's checkpoint: O(1), nothing rewritten),
    /// then give the metadata blocks freed before it to the allocator.
    pub(super) fn truncate_v3(&self, v3: &V3) -> Result<()> {
        let inner = &*self.inner;
        let _cp = inner.cp.write();
        if inner.journal.epoch_is_empty() {
            return Ok(());
        }
        inner.journal.truncate(&|e| v3.store.write_epoch(e))?;
        let freed = std::mem::take(&mut *v3.freed_meta.lock());
        for b in freed {
            if let Err(e) = inner.alloc.free(BlockRange { start: b, len: 1 }) {
                tracing::error!("returning metadata block {b}: {e}");
            }
        }
        Ok(())
    }
}

/// Cells [`sweep`] looks at per call: a bounded step (dropping a cell frees
/// its extents or entries), so no operation pays for a whole sweep.
const SWEEP_STEP: usize = 8;

/// Inode `ino`'s cell: the one in memory, else a new one of `d`, put in
/// the table and on the cache's clock (after its shard is let go: the
/// clock's lock is never taken under a shard's).
fn cache_cell(v3: &V3, t: &CellTable, ino: u64, d: InodeData) -> Arc<Cell> {
    let (c, new) = t.get_or_insert(ino, || Cell::new(ino, d));
    if new {
        v3.order.lock().push_back(ino);
    }
    c
}

/// Past the cache limit, drop up to [`SWEEP_STEP`] idle cells, oldest first
/// (called after each insertion, holding no shard of the table: the clock's
/// lock is taken before a shard's, never after).
fn sweep(v3: &V3, t: &CellTable) {
    // ORDERING: a limit; nothing is published through it.
    let limit = v3.cache_limit.load(Ordering::Relaxed);
    let looked: Vec<u64> = {
        let mut q = v3.order.lock();
        // Deleted inodes leave their numbers behind: rebuild the clock from
        // the table when they outnumber it (rare: amortised over the
        // inserts), also while the table is under the limit. An insertion
        // meanwhile adds its number after the rebuild or is in it.
        if q.len() > 4 * limit.max(t.len()) {
            *q = t.inos().into();
        }
        if t.len() <= limit {
            return;
        }
        let n = SWEEP_STEP.min(q.len());
        q.drain(..n).collect()
    };
    let (mut again, mut unlooked) = (Vec::new(), Vec::new());
    for ino in looked {
        if t.len() <= limit {
            unlooked.push(ino);
            continue;
        }
        let dropped = t.remove_if(ino, |c| {
            // ORDERING: see `Fs::cell`.
            !c.recent.swap(false, Ordering::Relaxed) && idle(c)
        });
        if dropped == Some(false) {
            again.push(ino);
        }
    }
    let mut q = v3.order.lock();
    for ino in unlooked.into_iter().rev() {
        q.push_front(ino);
    }
    q.extend(again);
}

/// A cell nothing refers to but the table, with nothing pending in memory:
/// the device holds all of it, so it can be dropped and read again.
fn idle(c: &Arc<Cell>) -> bool {
    // ORDERING: checked under the table's write lock, which every holder of
    // the cell went through to get it: a count of 1 means no other holder,
    // and none can appear while the lock is held. The open count and the
    // pending mtime are only raised by holders.
    Arc::strong_count(c) == 1
        && c.open.load(Ordering::Relaxed) == 0
        && c.mtime_pending.load(Ordering::Relaxed) == 0
        && !c.dax.ever_mapped()
}

/// Ops that follow data stores (new blocks' data and zeroing, tail zeroing):
/// their record waits for those stores to be durable.
pub(super) fn ordered_ops(ops: &[Op]) -> bool {
    ops.iter().any(|o| {
        matches!(
            o,
            Op::Map { .. }
                | Op::MapShared { .. }
                | Op::SetSize { .. }
                | Op::Unmap { .. }
                | Op::Unpoison { .. }
        )
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::device::{CrashDevice, RamDevice, Survivors};
    use crate::format::v3::DirEntry3;
    use crate::format::S_IFREG;
    use crate::format::{ROOT_INO, S_IFDIR};
    use crate::meta::store_tests::{slot, TestAlloc};
    use crate::meta::BTree;

    #[test]
    fn f1_a_new_format_3_file_system_opens_with_its_root_and_the_data_area_free() {
        let dev = Arc::new(RamDevice::new(32 << 20));
        let sb = mkfs(&*dev, &MkfsOptions::default()).unwrap();
        let o = open(dev.clone(), Recovery::Strict, false).unwrap();
        assert_eq!(o.sb, sb);
        let root = o.store.inode(ROOT_INO).unwrap().unwrap();
        assert_eq!((root.attr.mode, root.attr.nlink), (S_IFDIR | 0o755, 2));
        let g = sb.geometry;
        let free: u64 = o.free.iter().map(|r| r.1).sum();
        assert!(free > g.total_blocks - g.data_start - 80, "{free}");
        assert!(o.orphans.is_empty());
        assert!(o.store.check().unwrap().problems.is_empty());
    }

    #[test]
    fn f1_a_clean_unmount_gives_back_the_old_log_and_the_next_mount_reads_none_of_it() {
        use crate::fs::{Fs, OpenOptions};
        let dev = crate::device::open("memfd:64M", &Default::default()).unwrap();
        let sb = Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
        let AnySuperblock::V3(sb3) = &sb else {
            panic!("format 3 is the default")
        };
        let region = sb3.geometry.log_region();
        let log_pages = |d: &Arc<dyn Device>| -> u64 {
            d.data_within(region.log_offset(), region.log_bytes())
                .iter()
                .map(|(_, n)| n.div_ceil(BLOCK_SIZE))
                .sum()
        };
        // Fill the log well past its first pages, then truncate it (the
        // records' pages stay, an older epoch's), and log a little more.
        let fs = Fs::mount(dev.clone()).unwrap();
        for i in 0..400 {
            fs.create(&format!("/f{i}"), 0o644)
                .unwrap()
                .write_at(b"x", 0)
                .unwrap();
        }
        fs.checkpoint().unwrap();
        fs.create("/last", 0o644).unwrap();
        let used = log_pages(&dev);
        assert!(used > 8, "the log holds {used} pages");
        fs.unmount().unwrap();
        // The marker's page and the tail line's are left.
        assert!(log_pages(&dev) <= 2, "{} log pages kept", log_pages(&dev));
        // A new mount finds every file, and its scan of the log allocates
        // no page (reading a hole through a shared mapping of a memory
        // file would).
        let d2 = dev.clone();
        let fs = Fs::mount(d2.clone()).unwrap();
        assert!(log_pages(&d2) <= 2, "the mount read the discarded log");
        for i in [0, 199, 399] {
            let f = fs
                .open(&format!("/f{i}"), &OpenOptions::read_only())
                .unwrap();
            let mut b = [0u8; 1];
            f.read_at(&mut b, 0).unwrap();
            assert_eq!(&b, b"x");
        }
        fs.stat("/last").unwrap();
        // It logs on after the marker as before.
        fs.create("/after", 0o644).unwrap();
        drop(fs);
        let fs = Fs::mount(d2).unwrap();
        fs.stat("/after").unwrap();
    }

    #[test]
    fn f1_a_format_2_device_is_refused_with_a_clear_error() {
        let dev = Arc::new(RamDevice::new(32 << 20));
        let v2 = MkfsOptions {
            format: 2,
            ..Default::default()
        };
        super::super::Fs::mkfs(&*dev, &v2).unwrap();
        let e = open(dev, Recovery::Strict, false).err().expect("refused");
        assert!(e.to_string().contains("format 2"), "{e}");
    }

    /// A new file system on a crash device where a file "kept" was created
    /// in the root directory: its record committed through the opened
    /// journal, none of its stores in place. Returns the image a crash right
    /// then leaves, and the file's inode number.
    fn committed_never_stored() -> (Vec<u8>, u64) {
        let dev = Arc::new(CrashDevice::new(32 << 20));
        mkfs(&*dev, &MkfsOptions::default()).unwrap();
        let o = open(dev.clone(), Recovery::Strict, false).unwrap();
        let mut alloc = TestAlloc::new(&o.sb.geometry);
        let ino = o.store.reserve_ino().unwrap().unwrap();
        let mut root = o.store.inode(ROOT_INO).unwrap().unwrap();
        let mut dir = BTree::new(ROOT_INO);
        let mut tx = o.store.begin();
        tx.put_inode(&mut alloc, ino, &slot(S_IFREG | 0o600, ROOT_INO), true)
            .unwrap();
        tx.dir_insert(
            &mut alloc,
            &mut dir,
            DirEntry3 {
                ino,
                file_type: 8,
                name: b"kept".to_vec(),
            },
        )
        .unwrap();
        root.tree_root = dir.root;
        root.tree_count = 1;
        tx.put_inode(&mut alloc, ROOT_INO, &root, false).unwrap();
        let (entries, ordered) = tx.entries().unwrap();
        o.journal.commit(&entries, ordered).unwrap();
        (dev.crash_now(&Survivors::None), ino)
    }

    /// A committed record whose write lies outside the root block's lines
    /// and the data area (damage under a valid checksum: a record verifies
    /// as a whole) is refused before anything is replayed: it would
    /// overwrite a superblock, the log, the bitmap or the root header.
    #[test]
    fn f8_a_replayed_log_write_outside_the_root_lines_and_the_data_area_is_corrupted() {
        let probe = RamDevice::new(32 << 20);
        let g = mkfs(&probe, &MkfsOptions::default()).unwrap().geometry;
        let targets = [
            ("superblock", 64),
            ("backup superblock", BLOCK_SIZE + 64),
            ("root header", g.root_at() + 8),
            ("log", g.log_start * BLOCK_SIZE + 2 * BLOCK_SIZE),
            ("bitmap", g.bitmap_at() + 8),
            ("past the root lines", g.count_ptr_at(COUNT_PTR_LINES)),
            ("a size grant line", g.grant_line_at(1) + 8),
        ];
        for (what, at) in targets {
            let dev = Arc::new(CrashDevice::new(32 << 20));
            mkfs(&*dev, &MkfsOptions::default()).unwrap();
            let o = open(dev.clone(), Recovery::Strict, false).unwrap();
            let w = PhysOp::Write {
                at,
                bytes: vec![0xa5; 8],
            };
            o.journal.commit(&[w], false).unwrap();
            let img = dev.crash_now(&Survivors::None);
            let before = img.clone();
            let ram = Arc::new(RamDevice::from_image(img.clone()));
            match open(ram.clone(), Recovery::Strict, false) {
                Err(Error::Corrupted { what: w, .. }) => {
                    assert!(w.contains("outside the root block"), "{what}: {w}")
                }
                Err(e) => panic!("{what}: {e}"),
                Ok(_) => panic!("{what}: a write at {at:#x} was replayed"),
            }
            // A read-only salvage (fsck) cuts the log before the record
            // and says so.
            let o = open(ram.clone(), Recovery::Salvage, true).unwrap();
            assert_eq!(o.replayed, 1, "{what}: the marker alone");
            assert!(
                o.damage
                    .iter()
                    .any(|d| d.what.contains("outside the root block")),
                "{what}: {:?}",
                o.damage
            );
            let mut now = vec![0u8; img.len()];
            ram.read(0, &mut now).unwrap();
            assert!(now == before, "{what}: the device was written");
            // A writing salvage stores nothing of it either.
            let o = open(ram.clone(), Recovery::Salvage, false).unwrap();
            assert!(o.store.check().unwrap().problems.is_empty(), "{what}");
            ram.read(0, &mut now).unwrap();
            let untouched =
                |n: &[u8]| n[at as usize..at as usize + 8] == before[at as usize..at as usize + 8];
            // (The truncation rewrites the root header and starts the log.)
            let rewritten = matches!(what, "log" | "root header");
            assert!(untouched(&now) || rewritten, "{what}: the write was stored");
        }
    }

    /// Format 3 reads no inode at mount, loads cells as they are used and
    /// drops idle ones past the cache limit; what was dropped reads back
    /// the same from the device.
    #[test]
    fn f1_cells_load_on_demand_and_idle_ones_are_dropped() {
        use crate::fs::{Fs, OpenOptions};
        let dev: Arc<dyn Device> = Arc::new(RamDevice::new(64 << 20));
        super::super::Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev.clone()).unwrap();
        let limit = 64;
        let v3 = |fs: &Fs| match &fs.inner.meta {
            Meta::V3(v) => {
                v.cache_limit.store(limit, Ordering::Relaxed);
            }
            Meta::V2 { .. } => panic!("format 3 expected"),
        };
        v3(&fs);
        for d in 0..10 {
            fs.mkdir(&format!("/d{d}"), 0o755).unwrap();
            for f in 0..50 {
                let file = fs.create(&format!("/d{d}/f{f}"), 0o644).unwrap();
                file.write_at(format!("{d}/{f}").as_bytes(), 0).unwrap();
            }
        }
        let cached = fs.inner.table.len();
        assert!(cached <= 2 * limit + 2, "{cached} cells in memory");
        let check = |fs: &Fs| {
            for d in 0..10 {
                for f in 0..50 {
                    let file = fs
                        .open(&format!("/d{d}/f{f}"), &OpenOptions::read_only())
                        .unwrap();
                    let mut b = vec![0u8; 16];
                    let n = file.read_at(&mut b, 0).unwrap();
                    assert_eq!(&b[..n], format!("{d}/{f}").as_bytes());
                }
            }
        };
        check(&fs);
        assert_eq!(fs.statfs().inodes, 1 + 10 + 500);
        fs.unmount().unwrap();
        let fs = Fs::mount(dev.clone()).unwrap();
        assert_eq!(fs.inner.table.len(), 0, "mount read inodes");
        v3(&fs);
        check(&fs);
        assert!(fs.inner.table.len() <= 2 * limit + 2);
        drop(fs);
        let r = crate::fs::fsck(dev).unwrap();
        assert!(r.clean, "{:?}", r.problems);
        assert_eq!(r.inodes, 511);
    }

    /// `opened` holds "kept" as inode `ino`.
    fn holds_kept(opened: &Opened, ino: u64) {
        let r = opened.store.inode(ROOT_INO).unwrap().unwrap();
        let e = opened
            .store
            .dir_lookup(
                BTree {
                    root: r.tree_root,
                    owner: ROOT_INO,
                },
                b"kept",
            )
            .unwrap()
            .expect("the acknowledged entry");
        assert_eq!(e.ino, ino);
        assert!(opened.store.inode(ino).unwrap().is_some());
    }

    /// The create survives the crash, and the next open replays it and
    /// starts a new epoch.
    #[test]
    fn f7_an_acknowledged_create_survives_a_crash_before_its_stores_and_reopening_twice() {
        let (img, ino) = committed_never_stored();
        let dev: Arc<dyn Device> = Arc::new(RamDevice::from_image(img));
        for round in 0..2 {
            let o = open(dev.clone(), Recovery::Strict, false).unwrap();
            assert_eq!(
                o.replayed,
                if round == 0 { 2 } else { 1 },
                "marker + record"
            );
            holds_kept(&o, ino);
        }
    }

    #[test]
    fn f7_a_read_only_open_sees_the_replayed_log_and_writes_nothing() {
        let (img, ino) = committed_never_stored();
        let ram = Arc::new(RamDevice::from_image(img.clone()));
        let ro = open(ram.clone(), Recovery::Strict, true).unwrap();
        holds_kept(&ro, ino);
        let mut now = vec![0u8; img.len()];
        ram.read(0, &mut now).unwrap();
        assert!(now == img, "the device was written");
        // A writing open afterwards still finds the record to replay.
        let rw = open(ram, Recovery::Strict, false).unwrap();
        assert_eq!(rw.replayed, 2);
        holds_kept(&rw, ino);
    }

    /// A mounted file system of `format` (2 or 3) on a RAM device.
    fn mounted(format: u32) -> (Arc<dyn Device>, crate::fs::Fs) {
        let dev: Arc<dyn Device> = Arc::new(RamDevice::new(128 << 20));
        let opts = MkfsOptions {
            format,
            ..Default::default()
        };
        super::super::Fs::mkfs(&*dev, &opts).unwrap();
        let fs = crate::fs::Fs::mount(dev.clone()).unwrap();
        (dev, fs)
    }

    /// Directory `path`'s cell as it is in memory now: (entries in the
    /// cell's map, entries kept on the device, the count).
    fn dir_cell(fs: &crate::fs::Fs, path: &str) -> (usize, bool, u64) {
        let c = fs.cell(fs.resolve(path).unwrap()).unwrap();
        let d = c.data.read();
        (d.dir.len(), d.on_device, d.entry_count())
    }

    /// Every page of `dir`'s listing, `max` cookies at a time (at most
    /// 10^5 pages).
    fn all_pages(fs: &crate::fs::Fs, dir: &str, max: usize) -> Vec<(u64, crate::fs::DirEntry)> {
        let mut out = Vec::new();
        let mut from = 0;
        for _ in 0..100_000 {
            let p = fs.read_dir_page(dir, from, max).unwrap();
            out.extend(p.entries);
            match p.next {
                Some(n) => {
                    assert!(n > from, "the listing went back: {n} after {from}");
                    from = n;
                }
                None => return out,
            }
        }
        panic!("the listing never ended");
    }

    #[test]
    fn f8_stat_of_an_inode_not_in_memory_answers_as_its_cell_would_without_loading_it() {
        let dev = Arc::new(RamDevice::new(64 << 20));
        Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev.clone()).unwrap();
        fs.mkdir("/d", 0o750).unwrap();
        fs.create("/d/empty", 0o600).unwrap();
        fs.create("/d/small", 0o644)
            .unwrap()
            .write_at(&[7u8; 10_000], 0)
            .unwrap();
        // More extents than the slot holds: the rest in a tree.
        let many = fs.create("/d/many", 0o644).unwrap();
        for i in 0..12u64 {
            many.write_at(b"x", i * 2 * BLOCK_SIZE).unwrap();
        }
        drop(many);
        fs.symlink(b"short", "/d/link").unwrap();
        fs.symlink(&[b'a'; 300], "/d/longlink").unwrap();
        fs.mknod("/d/fifo", 0o010644, 0).unwrap();
        fs.mknod("/d/chr", 0o020600, 0x0103).unwrap();
        fs.unmount().unwrap();
        let names = [
            "/d",
            "/d/empty",
            "/d/small",
            "/d/many",
            "/d/link",
            "/d/longlink",
            "/d/fifo",
            "/d/chr",
        ];
        let fs = Fs::mount(dev.clone()).unwrap();
        let cold: Vec<_> = names.iter().map(|p| fs.lstat(p).unwrap()).collect();
        let loaded = |p: &str| fs.inner.table.contains(fs.lstat(p).unwrap().ino);
        assert!(!loaded("/d/small"), "a stat loads no cell");
        assert!(
            loaded("/d/many"),
            "an inode with an extent tree takes the cell path"
        );
        // Load every cell (a lookup under each name), then stat again.
        for p in &names[1..] {
            let ino = fs.lstat(p).unwrap().ino;
            fs.cell(ino).unwrap();
        }
        fs.cell(cold[0].ino).unwrap();
        for (p, c) in names.iter().zip(&cold) {
            assert_eq!(fs.lstat(p).unwrap(), *c, "{p}");
        }
        fs.unmount().unwrap();
    }

    #[test]
    fn f8_a_big_directory_s_cell_holds_no_entries_before_or_after_changes_and_a_remount() {
        let (dev, fs) = mounted(3);
        fs.mkdir("/big", 0o755).unwrap();
        for i in 0..3000 {
            fs.create(&format!("/big/f{i}"), 0o644).unwrap();
        }
        fs.mkdir("/big/sub", 0o755).unwrap();
        assert_eq!(dir_cell(&fs, "/big"), (0, true, 3001));
        let st = fs.stat("/big").unwrap();
        assert_eq!((st.nlink, st.size), (3, 0));
        fs.unmount().unwrap();
        let fs = crate::fs::Fs::mount(dev).unwrap();
        assert_eq!(fs.stat("/big/f2999").unwrap().nlink, 1);
        // Loaded for a change: still no entries in memory.
        fs.unlink("/big/f7").unwrap();
        fs.create("/big/new", 0o644).unwrap();
        assert_eq!(dir_cell(&fs, "/big"), (0, true, 3001));
        assert_eq!(dir_cell(&fs, "/"), (0, true, 1));
        let st = fs.stat("/big").unwrap();
        assert_eq!((st.nlink, st.size), (3, 0));
        assert_eq!(fs.read_dir("/big").unwrap().len(), 3001);
        drop(fs);
    }

    /// Creates and unlinks that leave few cells in memory (under the cache
    /// limit, so nothing is swept) still keep the cache's clock bounded:
    /// the numbers of deleted inodes are dropped when they outnumber the
    /// table.
    #[test]
    fn the_cache_clock_stays_bounded_under_creates_and_unlinks_below_the_limit() {
        let (_dev, fs) = mounted(3);
        let Meta::V3(v3) = &fs.inner.meta else {
            unreachable!()
        };
        v3.cache_limit.store(64, Ordering::Relaxed);
        fs.mkdir("/d", 0o755).unwrap();
        for i in 0..2000 {
            let p = format!("/d/x{i}");
            fs.create(&p, 0o644).unwrap();
            fs.unlink(&p).unwrap();
        }
        assert!(fs.inner.table.len() < 64);
        let clock = v3.order.lock().len();
        assert!(clock <= 4 * 64 + 1, "{clock} numbers in the clock");
    }

    /// Threads create, look up, stat, rename and unlink while at most 8
    /// cells stay in memory: cells leave the sharded table and come back
    /// under every operation (the sweep, loads at rest and transactions
    /// taking the shards' locks), and no operation waits for ever, answers
    /// wrongly or leaves the file system unclean.
    #[test]
    fn cells_leave_and_come_back_while_threads_create_stat_rename_and_unlink_with_8_kept() {
        use crate::fs::Error;
        let (dev, fs) = mounted(3);
        let Meta::V3(v3) = &fs.inner.meta else {
            unreachable!()
        };
        v3.cache_limit.store(8, Ordering::Relaxed);
        const THREADS: u64 = 4;
        const FILES: u64 = 300;
        fs.mkdir("/shared", 0o755).unwrap();
        let work = {
            let fs = fs.clone();
            move || {
                std::thread::scope(|s| {
                    for t in 0..THREADS {
                        let fs = fs.clone();
                        s.spawn(move || {
                            let dir = format!("/t{t}");
                            fs.mkdir(&dir, 0o755).unwrap();
                            let mut open = std::collections::VecDeque::new();
                            for i in 0..FILES {
                                let p = format!("{dir}/f{i}");
                                let f = fs.create(&p, 0o644).unwrap();
                                let ino = f.ino();
                                assert_eq!(fs.stat(&p).unwrap().ino, ino);
                                // Another thread's file: there or not, never
                                // an error of another kind.
                                let other = format!("/t{}/f{i}", (t + 1) % THREADS);
                                match fs.stat(&other) {
                                    Ok(_) | Err(Error::NotFound) => {}
                                    Err(e) => panic!("stat {other}: {e}"),
                                }
                                // An open file's cell stays the table's
                                // through the others' sweeps.
                                open.push_back(f);
                                if open.len() > 4 {
                                    open.pop_front();
                                }
                                for f in &open {
                                    let kept =
                                        fs.inner.table.get(f.ino()).expect("an open file's cell");
                                    assert!(Arc::ptr_eq(&kept, f.cell()), "inode {ino}: two cells");
                                }
                                match i % 3 {
                                    0 => {
                                        let to = format!("/shared/t{t}-{i}");
                                        fs.rename(&p, &to).unwrap();
                                        assert_eq!(fs.lstat(&to).unwrap().ino, ino);
                                        assert!(matches!(fs.stat(&p), Err(Error::NotFound)));
                                    }
                                    1 => {
                                        fs.unlink(&p).unwrap();
                                        assert!(matches!(fs.stat(&p), Err(Error::NotFound)));
                                    }
                                    _ => {}
                                }
                            }
                        });
                    }
                });
            }
        };
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            work();
            let _ = done.send(());
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("a thread panicked or an operation did not finish in time");
        let kept = FILES / 3 + u64::from(FILES % 3 == 2);
        for t in 0..THREADS {
            assert_eq!(fs.read_dir(&format!("/t{t}")).unwrap().len() as u64, kept);
        }
        assert_eq!(
            fs.read_dir("/shared").unwrap().len() as u64,
            THREADS * FILES.div_ceil(3)
        );
        // As `f1_cells_load_on_demand_and_idle_ones_are_dropped`'s bound, and a cell
        // each thread may have put in as another swept.
        let cached = fs.inner.table.len();
        assert!(cached <= 2 * 8 + 2 + THREADS as usize, "{cached} cells");
        fs.unmount().unwrap();
        let r = crate::fs::fsck(dev).unwrap();
        assert!(r.clean, "{:?}", r.problems);
    }

    #[test]
    fn f8_create_lookup_link_unlink_rename_and_rmdir_of_a_non_empty_directory_behave_as_before() {
        use crate::fs::Error;
        let (dev, fs) = mounted(3);
        let v3 = match &fs.inner.meta {
            Meta::V3(v) => v,
            Meta::V2 { .. } => unreachable!(),
        };
        // Few cells: directories fall out of memory and come back.
        v3.cache_limit.store(4, Ordering::Relaxed);
        fs.mkdir("/d", 0o755).unwrap();
        let a = fs.create("/d/a", 0o644).unwrap().ino();
        assert!(matches!(fs.create("/d/a", 0o644), Err(Error::Exists)));
        assert!(matches!(fs.mkdir("/d/a", 0o755), Err(Error::Exists)));
        assert_eq!(fs.stat("/d/a").unwrap().ino, a);
        fs.link("/d/a", "/d/b").unwrap();
        assert!(matches!(fs.link("/d/a", "/d/b"), Err(Error::Exists)));
        assert_eq!(fs.stat("/d/b").unwrap().nlink, 2);
        fs.unlink("/d/a").unwrap();
        assert!(matches!(fs.stat("/d/a"), Err(Error::NotFound)));
        assert!(matches!(fs.unlink("/d/a"), Err(Error::NotFound)));
        fs.rename("/d/b", "/d/c").unwrap();
        assert_eq!(fs.stat("/d/c").unwrap().ino, a);
        assert!(matches!(fs.stat("/d/b"), Err(Error::NotFound)));
        let other = fs.create("/d/other", 0o644).unwrap().ino();
        fs.rename("/d/other", "/d/c").unwrap();
        assert_eq!(fs.stat("/d/c").unwrap().ino, other);
        fs.mkdir("/e", 0o755).unwrap();
        fs.create("/e/x", 0o644).unwrap();
        assert!(matches!(fs.rmdir("/e"), Err(Error::NotEmpty)));
        fs.mkdir("/f", 0o755).unwrap();
        assert!(matches!(fs.rename("/f", "/e"), Err(Error::NotEmpty)));
        fs.rename("/e", "/d/e").unwrap();
        assert_eq!(fs.real_dir("/d/e").unwrap(), "/d/e");
        let moved = fs.dir_ref("/d/e").unwrap();
        fs.rename("/d", "/g").unwrap();
        assert_eq!(fs.dir_path(&moved, "/d/e").unwrap(), "/g/e");
        fs.rename2("/g/c", "/g/e/x", crate::fs::Rename::Exchange)
            .unwrap();
        assert_eq!(fs.stat("/g/e/x").unwrap().ino, other);
        fs.unlink("/g/e/x").unwrap();
        fs.unlink("/g/c").unwrap();
        fs.rename("/f", "/g/e").unwrap();
        assert!(matches!(fs.stat("/f"), Err(Error::NotFound)));
        fs.rmdir("/g/e").unwrap();
        let names: Vec<String> = fs
            .read_dir("/g")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(names.is_empty(), "{names:?}");
        assert_eq!(fs.stat("/g").unwrap().nlink, 2);
        assert_eq!(fs.stat("/").unwrap().nlink, 3);
        for d in ["/", "/g"] {
            let (map, on_device, _) = dir_cell(&fs, d);
            assert_eq!((map, on_device), (0, true), "{d}");
        }
        fs.rmdir("/g").unwrap();
        drop(fs);
        let r = crate::fs::fsck(dev).unwrap();
        assert!(r.clean, "{:?}", r.problems);
    }

    #[test]
    fn f8_a_created_name_is_cached_and_forgotten_when_it_is_unlinked_replaced_or_renamed() {
        use crate::fs::Error;
        let (_dev, fs) = mounted(3);
        fs.mkdir("/d", 0o755).unwrap();
        let f = fs.create("/d/f", 0o644).unwrap().ino();
        let d = fs.resolve("/d").unwrap();
        assert_eq!(
            fs.lookups().unwrap().get(d, b"f"),
            Some((f, crate::format::dtype_of(S_IFREG))),
            "a create puts its name in the cache"
        );
        assert_eq!(fs.stat("/d/f").unwrap().ino, f);
        fs.unlink("/d/f").unwrap();
        assert!(matches!(fs.stat("/d/f"), Err(Error::NotFound)));
        let f2 = fs.create("/d/f", 0o644).unwrap().ino();
        assert_eq!(fs.stat("/d/f").unwrap().ino, f2);
        let g = fs.create("/d/g", 0o644).unwrap().ino();
        assert_eq!(fs.stat("/d/g").unwrap().ino, g);
        fs.rename("/d/g", "/d/f").unwrap();
        assert_eq!(fs.stat("/d/f").unwrap().ino, g);
        assert!(matches!(fs.stat("/d/g"), Err(Error::NotFound)));
        fs.rename("/d", "/e").unwrap();
        assert!(matches!(fs.stat("/d/f"), Err(Error::NotFound)));
        assert_eq!(fs.stat("/e/f").unwrap().ino, g);
    }

    /// Pages of a listing taken while another thread adds and removes
    /// names: every name present throughout comes exactly once, no name
    /// twice. On both formats.
    fn pages_under_churn(format: u32) {
        let (_dev, fs) = mounted(format);
        fs.mkdir("/d", 0o755).unwrap();
        for i in 0..1500 {
            fs.create(&format!("/d/stay{i}"), 0o644).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(crate::sync::AtomicU64::new(0));
        let churn = {
            let (fs, stop, changes) = (fs.clone(), stop.clone(), changes.clone());
            std::thread::spawn(move || {
                // ORDERING: a stop flag and a progress count; nothing is
                // published through them.
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..50 {
                        fs.create(&format!("/d/churn{i}"), 0o644).unwrap();
                        changes.fetch_add(1, Ordering::Relaxed);
                    }
                    for i in 0..50 {
                        fs.unlink(&format!("/d/churn{i}")).unwrap();
                        changes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let lister = {
            let (fs, changes) = (fs.clone(), changes.clone());
            std::thread::spawn(move || {
                // ORDERING: see above.
                while changes.load(Ordering::Relaxed) == 0 {
                    std::thread::yield_now();
                }
                let first = changes.load(Ordering::Relaxed);
                let mut listings = Vec::new();
                for max in [1, 7, 64, 500] {
                    listings.push(all_pages(&fs, "/d", max));
                }
                // Until the other thread has changed the directory a good
                // deal while these listings ran.
                while changes.load(Ordering::Relaxed) < first + 200 {
                    listings.push(all_pages(&fs, "/d", 64));
                }
                let _ = tx.send(listings);
            })
        };
        let listings = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the listings never finished");
        lister.join().unwrap();
        // ORDERING: see above.
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
        for l in listings {
            let mut seen = std::collections::HashMap::new();
            for (cookie, e) in &l {
                assert!(*cookie >= 2, "cookie {cookie} of {}", e.name);
                assert!(
                    seen.insert(e.name.clone(), *cookie).is_none(),
                    "{} listed twice",
                    e.name
                );
            }
            for i in 0..1500 {
                assert!(seen.contains_key(&format!("stay{i}")), "stay{i} missing");
            }
            assert!(
                l.windows(2).all(|w| w[0].0 <= w[1].0),
                "not in cookie order"
            );
        }
    }

    #[test]
    fn f8_readdir_pages_under_concurrent_inserts_and_removals_return_every_entry_that_stayed_once()
    {
        pages_under_churn(3);
    }

    #[test]
    fn f8_format_2_readdir_pages_under_concurrent_inserts_and_removals_return_each_stayer_once() {
        pages_under_churn(2);
    }

    /// Names that hash alike share a tree key: lookup, remove and the
    /// listing see each of them.
    fn collisions(format: u32) {
        use crate::format::v3::COLLIDE_PREFIX;
        use crate::fs::Error;
        let (_dev, fs) = mounted(format);
        let name = |s: &str| {
            let mut n = COLLIDE_PREFIX.to_vec();
            n.extend_from_slice(s.as_bytes());
            String::from_utf8(n).unwrap()
        };
        fs.mkdir("/d", 0o755).unwrap();
        let mut inos = Vec::new();
        for s in ["Aone", "Atwo", "Athree"] {
            inos.push(fs.create(&format!("/d/{}", name(s)), 0o644).unwrap().ino());
        }
        fs.create("/d/plain", 0o644).unwrap();
        fs.create(&format!("/d/{}", name("Bother")), 0o644).unwrap();
        for (s, ino) in ["Aone", "Atwo", "Athree"].iter().zip(&inos) {
            assert_eq!(fs.stat(&format!("/d/{}", name(s))).unwrap().ino, *ino);
        }
        assert!(matches!(
            fs.create(&format!("/d/{}", name("Atwo")), 0o644),
            Err(Error::Exists)
        ));
        assert!(matches!(
            fs.stat(&format!("/d/{}", name("Afour"))),
            Err(Error::NotFound)
        ));
        // One cookie per page: the three colliding names come together.
        let mut page = None;
        let mut from = 0;
        for _ in 0..100 {
            let p = fs.read_dir_page("/d", from, 1).unwrap();
            if p.entries.iter().any(|(_, e)| e.name == name("Aone")) {
                page = Some(p.entries.clone());
            }
            match p.next {
                Some(n) => from = n,
                None => break,
            }
        }
        let page = page.expect("the colliding names were listed");
        assert_eq!(page.len(), 3, "{page:?}");
        assert!(page.iter().all(|(c, _)| *c == page[0].0));
        assert_eq!(all_pages(&fs, "/d", 2).len(), 5);
        fs.unlink(&format!("/d/{}", name("Atwo"))).unwrap();
        assert!(matches!(
            fs.stat(&format!("/d/{}", name("Atwo"))),
            Err(Error::NotFound)
        ));
        assert_eq!(
            fs.stat(&format!("/d/{}", name("Aone"))).unwrap().ino,
            inos[0]
        );
        assert_eq!(
            fs.stat(&format!("/d/{}", name("Athree"))).unwrap().ino,
            inos[2]
        );
        fs.rename(
            &format!("/d/{}", name("Aone")),
            &format!("/d/{}", name("Atwo")),
        )
        .unwrap();
        let mut names: Vec<String> = all_pages(&fs, "/d", 1)
            .into_iter()
            .map(|(_, e)| e.name)
            .collect();
        names.sort();
        let mut want = vec![
            name("Athree"),
            name("Atwo"),
            name("Bother"),
            "plain".to_string(),
        ];
        want.sort();
        assert_eq!(names, want);
        let by_name: Vec<String> = fs
            .read_dir("/d")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(by_name, want, "read_dir is sorted by name");
    }

    #[test]
    fn f8_a_forced_hash_collision_is_handled_by_lookup_remove_and_readdir() {
        collisions(3);
    }

    #[test]
    fn f8_format_2_a_forced_hash_collision_is_handled_by_lookup_remove_and_readdir() {
        collisions(2);
    }
}
