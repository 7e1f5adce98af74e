//! The journal of a format-3 file system (issue 20: metadata used in place;
//! docs/architecture.md, "Metadata in place"). Its records carry physical
//! entries (byte writes and bit-range changes) that the file system stores in
//! place after the commit; recovery replays them (idempotent), and the log is
//! truncated in O(1) instead of checkpointed.
// Format 3 is used by its tests only until the file system switches to it
// (docs/architecture.md, "Steps").
#![allow(dead_code)]

use super::{
    corrupt, finish_log, scan_log, write_marker, Damage, Journal, JournalError, LoadedLog, Recovery,
};
use crate::device::{Device, DeviceError};
use crate::format::{v3::PhysOp, FormatError, LogRegion};
use std::sync::Arc;

/// Recover the log of a format-3 file system whose root block header names
/// epoch `root` (or fails to verify: `Err`, at device offset `root_at`).
///
/// The root header is rewritten (one cache line, whole) only at a log
/// truncation, after a fence made every stored change durable and before the
/// new epoch's first record: a header that fails, or names an epoch older
/// than a record that verifies, is damage, never a tear. A salvage then takes
/// the newest epoch the log names. The log itself is checked as format 2's
/// (docs/format.md, "Telling a torn tail from damage").
pub fn load_in_place(
    dev: &dyn Device,
    region: &LogRegion,
    root: Result<u64, FormatError>,
    root_at: u64,
    mode: Recovery,
) -> Result<LoadedLog<PhysOp>, JournalError> {
    let mut damage = Vec::new();
    let probe_epoch = root.as_ref().map_or(0, |&e| e);
    let probe = scan_log::<PhysOp>(dev, region, probe_epoch)?;
    let newest = probe.newest.map(|(e, _)| e);
    // Why the header cannot be taken, and the epoch the log names instead.
    let distrust = match (&root, newest) {
        (Ok(e), Some(n)) if n > *e => Some((
            format!(
                "root block header at offset {root_at} names epoch {e}, older than the log's \
                 epoch {n}: it was durable before that log began"
            ),
            n,
        )),
        (Err(err), Some(n)) => Some((
            format!("root block header: {err}: it is one cache line, never torn"),
            n,
        )),
        _ => None,
    };
    let epoch = match (root, distrust) {
        (_, Some((what, n))) => {
            if mode == Recovery::Strict {
                return Err(corrupt(what, root_at));
            }
            damage.push(Damage {
                what,
                device_offset: root_at,
                salvage: format!("epoch {n} taken from the log; the header is rewritten"),
            });
            n
        }
        (Ok(e), None) => e,
        (Err(err), None) => return Err(err.into()),
    };
    let scan = if epoch == probe_epoch {
        probe
    } else {
        scan_log::<PhysOp>(dev, region, epoch)?
    };
    finish_log(dev, region, epoch, scan, mode, false, damage, Vec::new())
}

/// Clear the log of a new format-3 file system (before its root block names
/// epoch 1; [`start_log`] follows).
pub fn clear_log(dev: &dyn Device, region: &LogRegion) -> Result<(), JournalError> {
    dev.zero(region.log_offset(), region.log_bytes())?;
    dev.flush(region.log_offset(), region.log_bytes());
    dev.fence()?;
    Ok(())
}

/// Start the log of `epoch` (the root block already names it durably).
pub fn start_log(dev: &dyn Device, region: &LogRegion, epoch: u64) -> Result<(), JournalError> {
    write_marker(dev, region, epoch)
}

impl Journal {
    /// A format-3 journal continuing the log of `loaded` (after
    /// [`load_in_place`] and the replay of its records).
    pub fn open_in_place(
        dev: Arc<dyn Device>,
        region: LogRegion,
        loaded: &LoadedLog<PhysOp>,
    ) -> Journal {
        Journal::new(dev, region, None, loaded)
    }

    /// No record was committed since the epoch began (its marker alone):
    /// a truncation would change nothing.
    pub fn epoch_is_empty(&self) -> bool {
        self.log.lock().next_seq <= 1
    }

    /// Truncate a format-3 log: its records' changes are stored in place, so
    /// one fence makes them all durable; then `write_root` stores the root
    /// block header naming the next epoch (and flushes it), a fence makes it
    /// durable, and the new epoch's marker starts the log. O(1): nothing is
    /// rewritten. The caller guarantees no commit runs concurrently and every
    /// committed record's changes were stored in place. Returns the new epoch.
    pub fn truncate(
        &self,
        write_root: &dyn Fn(u64) -> Result<(), DeviceError>,
    ) -> Result<u64, JournalError> {
        let mut log = self.log.lock();
        self.dev.fence()?;
        let epoch = log.newest.max(log.epoch) + 1;
        write_root(epoch)?;
        self.dev.fence()?;
        self.restart(&mut log, epoch)?;
        Ok(epoch)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::device::{CrashDevice, RamDevice, Survivors};
    use crate::format::v3::RootHeader;
    use crate::journal::MARKER_BYTES;
    use crate::meta::store_entries;
    use crate::BLOCK_SIZE;

    const SIZE: u64 = 2 << 20;
    const ROOT_AT: u64 = 100 * BLOCK_SIZE;
    const TABLE_AT: u64 = 200 * BLOCK_SIZE;
    const BITMAP_AT: u64 = 300 * BLOCK_SIZE;
    const REGION: LogRegion = LogRegion {
        offset: 2 * BLOCK_SIZE,
        bytes: 16 * BLOCK_SIZE,
        total_blocks: SIZE / BLOCK_SIZE,
    };

    fn write_root(dev: &dyn Device, epoch: u64) -> Result<(), DeviceError> {
        dev.write(ROOT_AT, &RootHeader { epoch }.encode(ROOT_AT))?;
        dev.flush(ROOT_AT, 64);
        Ok(())
    }

    /// A new "file system": cleared log, root naming epoch 1, its marker.
    fn fresh() -> (Arc<CrashDevice>, Journal) {
        let dev = Arc::new(CrashDevice::new(SIZE));
        clear_log(&*dev, &REGION).unwrap();
        write_root(&*dev, 1).unwrap();
        dev.fence().unwrap();
        start_log(&*dev, &REGION, 1).unwrap();
        let l = recover(&*dev, Recovery::Strict).unwrap();
        let j = Journal::open_in_place(dev.clone(), REGION, &l);
        (dev, j)
    }

    /// What a mount does: read the root header, load the log, replay it.
    fn recover(dev: &dyn Device, mode: Recovery) -> Result<LoadedLog<PhysOp>, JournalError> {
        let mut h = [0u8; 64];
        dev.read(ROOT_AT, &mut h)?;
        let root = RootHeader::decode(&h, ROOT_AT).map(|r| r.epoch);
        let l = load_in_place(dev, &REGION, root, ROOT_AT, mode)?;
        for (_, entries) in &l.records {
            store_entries(dev, BITMAP_AT, entries)?;
        }
        Ok(l)
    }

    /// The structure the tests change: 64 u64 slots spread over two blocks
    /// (so one transaction's writes straddle lines and blocks), and 64 bits.
    fn state(dev: &dyn Device) -> (Vec<u64>, u64) {
        let mut v = Vec::new();
        for k in 0..64u64 {
            let mut b = [0u8; 8];
            dev.read(TABLE_AT + k * 120, &mut b).unwrap();
            v.push(u64::from_le_bytes(b));
        }
        let mut bits = [0u8; 8];
        dev.read(BITMAP_AT, &mut bits).unwrap();
        (v, u64::from_le_bytes(bits))
    }

    /// Transaction `i`: three slots take values derived from `i`, and a bit
    /// is set or cleared.
    fn tx(i: u64) -> Vec<PhysOp> {
        let mut e: Vec<PhysOp> = (0..3)
            .map(|n| PhysOp::Write {
                at: TABLE_AT + ((i * 7 + n * 13) % 64) * 120,
                bytes: (i * 1000 + n).to_le_bytes().to_vec(),
            })
            .collect();
        e.push(if i % 3 == 2 {
            PhysOp::ClearBits {
                first: i % 64,
                count: 1,
            }
        } else {
            PhysOp::SetBits {
                first: i % 64,
                count: 2.min(64 - i % 64),
            }
        });
        e
    }

    #[test]
    fn f7_in_place_every_crash_point_recovers_a_prefix_holding_every_acknowledged_transaction() {
        let (dev, j) = fresh();
        let mut states = vec![state(&*dev)];
        let mut acked_at = Vec::new();
        dev.start_recording();
        for i in 0..12u64 {
            let e = tx(i);
            j.commit(&e, false).unwrap();
            acked_at.push(dev.crash_points());
            store_entries(&*dev, BITMAP_AT, &e).unwrap();
            states.push(state(&*dev));
            if i == 5 {
                let d = dev.clone();
                j.truncate(&move |epoch| write_root(&*d, epoch)).unwrap();
            }
        }
        every_crash_point(&dev, &acked_at, &states, |img, at| {
            let l = recover(img, Recovery::Strict).unwrap_or_else(|e| panic!("{at}: {e}"));
            assert!(l.damage.is_empty(), "{at}: {:?}", l.damage);
            let got = state(img);
            // Replaying again (a crash during recovery) changes nothing.
            let again = recover(img, Recovery::Strict).unwrap();
            assert_eq!(again.epoch, l.epoch);
            assert_eq!(state(img), got);
            got
        });
    }

    /// At every crash point since `dev`'s recording mark, with no, all and
    /// random unfenced lines surviving, `recover` the image (given a label
    /// for messages): the state it finds must be one of `states` (the state
    /// after each prefix of the transactions) and hold every transaction
    /// acknowledged by then (transaction `i` was from crash point `acked[i]` on).
    pub(super) fn every_crash_point<S: PartialEq + std::fmt::Debug>(
        dev: &CrashDevice,
        acked: &[usize],
        states: &[S],
        recover: impl Fn(&RamDevice, &str) -> S,
    ) {
        for p in 0..=dev.crash_points() {
            let must = acked.iter().filter(|&&a| a <= p).count();
            for s in [
                Survivors::None,
                Survivors::All,
                Survivors::Random { seed: p as u64 },
            ] {
                let at = format!("crash point {p} {s:?}");
                let img = RamDevice::from_image(dev.crash_image(p, &s));
                let got = recover(&img, &at);
                let k = states
                    .iter()
                    .position(|st| *st == got)
                    .unwrap_or_else(|| panic!("{at}: no prefix gives {got:?}"));
                assert!(k >= must, "{at}: {k} transactions, {must} acknowledged");
            }
        }
    }

    #[test]
    fn f7_in_place_a_torn_store_after_the_commit_is_repaired_by_the_replay() {
        let (dev, j) = fresh();
        let e = tx(1);
        j.commit(&e, false).unwrap();
        // The stores in place: only the first reaches the device.
        store_entries(&*dev, BITMAP_AT, &e[..1]).unwrap();
        let img = RamDevice::from_image(dev.crash_now(&Survivors::All));
        recover(&img, Recovery::Strict).unwrap();
        store_entries(&*dev, BITMAP_AT, &e).unwrap();
        assert_eq!(state(&img), state(&*dev));
    }

    #[test]
    fn f8_in_place_a_root_header_older_than_the_log_is_damage_and_salvage_takes_the_log_epoch() {
        let (dev, j) = fresh();
        j.commit(&tx(0), false).unwrap();
        let mut old = [0u8; 64];
        dev.read(ROOT_AT, &mut old).unwrap();
        let d = dev.clone();
        j.truncate(&move |epoch| write_root(&*d, epoch)).unwrap();
        j.commit(&tx(1), false).unwrap();
        // The header line rolled back to epoch 1 (a stray write of old bytes).
        let mut img = dev.crash_now(&Survivors::None);
        img[ROOT_AT as usize..ROOT_AT as usize + 64].copy_from_slice(&old);
        let e = recover(&RamDevice::from_image(img.clone()), Recovery::Strict).unwrap_err();
        assert!(e.to_string().contains("root block header"), "{e}");
        let l = recover(&RamDevice::from_image(img.clone()), Recovery::Salvage).unwrap();
        assert_eq!(
            (l.epoch, l.records.len()),
            (2, 2),
            "marker and record of epoch 2"
        );
        assert_eq!(l.damage.len(), 1);
        // Zeroed instead: the same.
        img[ROOT_AT as usize..ROOT_AT as usize + 64].fill(0);
        let e = recover(&RamDevice::from_image(img.clone()), Recovery::Strict).unwrap_err();
        assert!(e.to_string().contains("root block header"), "{e}");
        assert_eq!(
            recover(&RamDevice::from_image(img), Recovery::Salvage)
                .unwrap()
                .epoch,
            2
        );
    }

    #[test]
    fn f8_in_place_a_damaged_record_that_a_later_one_vouches_for_is_damage() {
        let (dev, j) = fresh();
        for i in 0..3 {
            j.commit(&tx(i), false).unwrap();
        }
        let second = REGION.offset + MARKER_BYTES;
        let mut img = dev.crash_now(&Survivors::None);
        img[second as usize + 40] ^= 0x10;
        let e = recover(&RamDevice::from_image(img.clone()), Recovery::Strict).unwrap_err();
        assert!(e.to_string().contains("log record 1"), "{e}");
        let l = recover(&RamDevice::from_image(img), Recovery::Salvage).unwrap();
        assert_eq!(l.records.len(), 1, "only the marker is kept");
        assert_eq!(l.discarded.len(), 2);
    }
}

/// The format-3 store and this journal together, as the file system will
/// use them: every crash point of creates, removals and an inode chunk
/// added, across a log truncation.
#[cfg(all(test, not(loom)))]
mod store_tests {
    use super::*;
    use crate::device::{CrashDevice, RamDevice};
    use crate::format::v3::{DirEntry3, Geometry3, InodeSlot};
    use crate::format::{S_IFDIR, S_IFREG};
    use crate::meta::store_tests::{slot, TestAlloc};
    use crate::meta::{store_entries, BTree, Store, Tx};
    use crate::BLOCK_SIZE;
    use std::collections::BTreeSet;

    const SIZE: u64 = 8 << 20;

    /// Commit a transaction's entries and store them, as `Fs::run_tx` will.
    fn commit(j: &Journal, mut tx: crate::meta::StoreTx<'_>) {
        let (entries, ordered) = tx.entries().unwrap();
        j.commit(&entries, ordered).unwrap();
        tx.stored(&entries).unwrap();
    }

    /// Create a file named `name` in the root directory.
    fn create(store: &Store, j: &Journal, alloc: &mut TestAlloc, name: &str) -> u64 {
        let ino = match store.reserve_ino().unwrap() {
            Some(i) => i,
            None => {
                let mut tx = store.begin();
                tx.add_chunk(alloc).unwrap();
                commit(j, tx);
                store.reserve_ino().unwrap().unwrap()
            }
        };
        let mut root = store.inode(1).unwrap().unwrap();
        let mut dir = BTree {
            root: root.tree_root,
            owner: 1,
        };
        let mut tx = store.begin();
        tx.put_inode(alloc, ino, &slot(S_IFREG | 0o644, 1), true)
            .unwrap();
        tx.dir_insert(
            alloc,
            &mut dir,
            DirEntry3 {
                ino,
                file_type: 8,
                name: name.as_bytes().to_vec(),
            },
        )
        .unwrap();
        root.tree_root = dir.root;
        root.tree_count += 1;
        tx.put_inode(alloc, 1, &root, false).unwrap();
        commit(j, tx);
        ino
    }

    fn remove(store: &Store, j: &Journal, alloc: &mut TestAlloc, name: &str) {
        let mut root = store.inode(1).unwrap().unwrap();
        let mut dir = BTree {
            root: root.tree_root,
            owner: 1,
        };
        let mut tx = store.begin();
        let e = tx
            .dir_remove(alloc, &mut dir, name.as_bytes())
            .unwrap()
            .unwrap();
        tx.free_inode(alloc, e.ino, 0).unwrap();
        root.tree_root = dir.root;
        root.tree_count -= 1;
        tx.put_inode(alloc, 1, &root, false).unwrap();
        commit(j, tx);
    }

    /// Mount: the root header, the log, its replay, the store; then every
    /// name in the root directory, with the trees and slots checked.
    fn mount(dev: &dyn Device, geo: &Geometry3) -> BTreeSet<String> {
        let root = Store::read_epoch(dev, geo);
        let l = load_in_place(
            dev,
            &geo.log_region(),
            root,
            geo.root_at(),
            Recovery::Strict,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(l.damage.is_empty(), "{:?}", l.damage);
        for (_, e) in &l.records {
            store_entries(dev, geo.bitmap_at(), e).unwrap();
        }
        let img = RamDevice::from_image({
            let mut v = vec![0u8; dev.len() as usize];
            dev.read(0, &mut v).unwrap();
            v
        });
        let store = Store::open(Arc::new(img), *geo).unwrap();
        let r: InodeSlot = store.inode(1).unwrap().unwrap();
        let dir = BTree {
            root: r.tree_root,
            owner: 1,
        };
        let tx = Tx::new(dev);
        let st = dir.check(&tx).unwrap();
        assert_eq!(st.entries, r.tree_count, "the count in the slot");
        let mut names = BTreeSet::new();
        for (_, e) in store.dir_range(dir, 0, usize::MAX).unwrap() {
            assert!(store.inode(e.ino).unwrap().is_some(), "inode {}", e.ino);
            names.insert(String::from_utf8(e.name).unwrap());
        }
        assert_eq!(store.root().inodes, names.len() as u64 + 1);
        names
    }

    #[test]
    fn f7_in_place_every_crash_point_of_creates_removals_and_a_new_chunk_recovers_a_prefix() {
        let dev = Arc::new(CrashDevice::new(SIZE));
        let geo = Geometry3::for_device(SIZE / BLOCK_SIZE).unwrap();
        let region = geo.log_region();
        clear_log(&*dev, &region).unwrap();
        Store::format(&*dev, &geo, &slot(S_IFDIR | 0o755, 1), 99).unwrap();
        start_log(&*dev, &region, 1).unwrap();
        let l = load_in_place(&*dev, &region, Ok(1), geo.root_at(), Recovery::Strict).unwrap();
        let j = Journal::open_in_place(dev.clone(), region, &l);
        let store = Store::open(dev.clone(), geo).unwrap();
        let mut alloc = TestAlloc::new(&geo);
        // Fill chunk 0 but for a few slots (no crash checks there).
        let mut model = BTreeSet::new();
        for i in 0..1018 {
            create(&store, &j, &mut alloc, &format!("pre{i}"));
            model.insert(format!("pre{i}"));
        }
        let mut states = vec![model.clone()];
        let mut acked = Vec::new();
        dev.start_recording();
        for i in 0..14 {
            if i % 4 == 3 {
                let victim = format!("pre{}", i * 7);
                remove(&store, &j, &mut alloc, &victim);
                model.remove(&victim);
            } else {
                create(&store, &j, &mut alloc, &format!("new{i}"));
                model.insert(format!("new{i}"));
            }
            acked.push(dev.crash_points());
            states.push(model.clone());
            if i == 6 {
                let s = &store;
                j.truncate(&|e| s.write_epoch(e)).unwrap();
            }
        }
        assert!(store.root().n_chunks == 2, "a chunk was added");
        super::tests::every_crash_point(&dev, &acked, &states, |img, _| mount(img, &geo));
    }
}
