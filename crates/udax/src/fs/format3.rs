//! Format 3 (issue 20): mkfs, and the recovery a writing mount makes, the two
//! ends the switch connects to [`Fs`](super::Fs) (docs/architecture.md,
//! "Metadata in place", "Steps"). Recovery is O(log): the superblock, the
//! root block, the log's records stored in place again, a truncation; then
//! the bitmap gives the allocator its free runs (one pass over 1 bit per
//! block, whatever the file count) and the orphan tree the inodes to free.

// Wired in by the switch to format 3.
#![allow(dead_code)]

use super::{new_identity, read_superblock_with, root_attr, Error, MkfsOptions, Result};
use crate::device::{Device, OverlayDevice};
use crate::format::v3::{Geometry3, InodeSlot, Superblock3};
use crate::journal::{self, Damage, Journal, Recovery};
use crate::meta::{store_entries, Store};
use crate::BLOCK_SIZE;
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
    /// Records replayed, and damage found ([`Recovery::Salvage`] only).
    pub replayed: usize,
    pub damage: Vec<Damage>,
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
    let loaded = journal::load_in_place(&*dev, &region, epoch, geo.root_at(), mode)?;
    for (_, entries) in &loaded.records {
        store_entries(&*dev, geo.bitmap_at(), entries)?;
    }
    let journal = Journal::open_in_place(dev.clone(), region, &loaded);
    let store = Store::open(dev.clone(), geo)?;
    // The replayed stores become durable, and a new epoch starts (also
    // rewriting a damaged root header a salvage worked around). In the
    // overlay of a read-only open, this changes only memory.
    journal.truncate(&|e| store.write_epoch(e))?;
    let free = store.free_runs()?;
    let orphans = store.orphans()?;
    Ok(Opened {
        sb,
        sb_damage,
        replayed: loaded.records.len(),
        damage: loaded.damage,
        store,
        journal,
        free,
        orphans,
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
    fn f1_a_format_2_device_is_refused_with_a_clear_error() {
        let dev = Arc::new(RamDevice::new(32 << 20));
        super::super::Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
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
        let (entries, ordered) = tx.entries();
        o.journal.commit(&entries, ordered).unwrap();
        (dev.crash_now(&Survivors::None), ino)
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
}
