//! F7: crash at every fence of every metadata operation, with every subset (where
//! small) or seeded random subsets of the not-yet-durable cache lines surviving.
//! After each simulated crash: fsck is clean, mount succeeds, the file system is
//! exactly the state before or after the operation (after, once it returned), and
//! free space accounts for every block.

mod common;

use common::{snapshot, Snapshot};
use std::sync::Arc;
use udax::device::{CrashDevice, Device, RamDevice, Survivors};
use udax::fs::{falloc, fsck, Fs, MkfsOptions, OpenOptions, Rename};

fn check_image(
    img: Vec<u8>,
    before: &Snapshot,
    after: &Snapshot,
    also: &dyn Fn(&Snapshot, &Snapshot) -> bool,
    done: bool,
    what: &str,
) {
    let dev: Arc<dyn Device> = Arc::new(RamDevice::from_image(img));
    let report = fsck(dev.clone()).unwrap_or_else(|e| panic!("{what}: fsck failed: {e}"));
    assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
    let fs = Fs::mount(dev.clone()).unwrap_or_else(|e| panic!("{what}: mount failed: {e}"));
    let s = snapshot(&fs);
    if done {
        assert_eq!(&s, after, "{what}: completed operation lost");
    } else {
        assert!(
            &s == after || &s == before || also(&s, before),
            "{what}: neither old nor new state: {s:?}"
        );
    }
    // No block both free and used: free space == data area - blocks owned.
    let st = fs.statfs();
    let report = fsck(dev.clone()).unwrap();
    assert!(report.clean, "{what}: after mount: {:?}", report.problems);
    assert_eq!(
        st.free_blocks,
        st.data_blocks - report.used_blocks - report.metadata_blocks,
        "{what}"
    );
    // The recovered fs keeps working.
    fs.create("/__probe", 0o644)
        .unwrap()
        .write_at(b"ok", 0)
        .unwrap();
}

/// Run `op` on a fresh fs prepared by `setup`, then crash it at every fence.
fn crash_test(name: &str, setup: impl Fn(&Fs), op: impl Fn(&Fs)) {
    crash_test_or(name, setup, op, |_, _| false);
}

/// [`crash_test`] that also accepts, before the operation returned, states
/// for which `also(state, before)` holds (an operation that is two steps by
/// design, like a truncate that zeroes the partial last block in place before
/// it logs the size).
fn crash_test_or(
    name: &str,
    setup: impl Fn(&Fs),
    op: impl Fn(&Fs),
    also: impl Fn(&Snapshot, &Snapshot) -> bool,
) {
    let dev = Arc::new(CrashDevice::new(8 << 20));
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone()).unwrap();
    setup(&fs);
    fs.sync().unwrap();
    let before = snapshot(&fs);
    dev.start_recording();
    op(&fs);
    let after = snapshot(&fs);
    let points = dev.crash_points();
    assert!(points > 0, "{name}: the operation fenced nothing");
    let mut images = 0;
    for p in 0..=points {
        let done = p == points;
        let pending = dev.pending_lines(p);
        let mut cases: Vec<Survivors> = vec![Survivors::None, Survivors::All];
        if pending <= 8 {
            for m in 0..(1u32 << pending) {
                cases.push(Survivors::Mask(
                    (0..pending).map(|i| m >> i & 1 == 1).collect(),
                ));
            }
        } else {
            cases.extend((0..6).map(|seed| Survivors::Random { seed }));
        }
        for s in cases {
            let what = format!("{name}: crash point {p}/{points}, {pending} pending lines, {s:?}");
            check_image(dev.crash_image(p, &s), &before, &after, &also, done, &what);
            images += 1;
        }
    }
    eprintln!("{name}: {points} crash points, {images} images checked");
}

fn file(fs: &Fs, path: &str, data: &[u8]) {
    let f = fs.open(path, &OpenOptions::create()).unwrap();
    f.write_at(data, 0).unwrap();
}

fn rw(fs: &Fs, path: &str) -> udax::fs::File {
    fs.open(path, &OpenOptions::read_write()).unwrap()
}

fn base(fs: &Fs) {
    fs.mkdir("/d", 0o755).unwrap();
    fs.mkdir("/e", 0o755).unwrap();
    file(fs, "/d/a", &[1u8; 5000]);
    file(fs, "/d/b", &[2u8; 3 * 4096]);
}

#[test]
fn f7_crash_during_create() {
    crash_test("create", base, |fs| {
        fs.create("/d/new", 0o644).unwrap();
    });
}

#[test]
fn f7_crash_during_mkdir_and_rmdir() {
    crash_test("mkdir", base, |fs| fs.mkdir("/d/sub", 0o755).unwrap());
    crash_test("rmdir", base, |fs| fs.rmdir("/e").unwrap());
}

#[test]
fn f7_crash_during_write_extend() {
    crash_test("write-extend", base, |fs| {
        // Appends only: overwrites of existing bytes are in place and not atomic
        // (as with ext4/xfs), so the before/after check covers new blocks.
        rw(fs, "/d/a").write_at(&[9u8; 20000], 5000).unwrap();
    });
}

#[test]
fn f7_crash_during_truncate() {
    crash_test("truncate-shrink", base, |fs| {
        rw(fs, "/d/b").set_len(4096).unwrap()
    });
    crash_test("truncate-grow", base, |fs| {
        rw(fs, "/d/b").set_len(1 << 20).unwrap()
    });
}

#[test]
fn f7_crash_during_rename() {
    crash_test("rename-over", base, |fs| fs.rename("/d/a", "/d/b").unwrap());
    crash_test("rename-dir", base, |fs| {
        fs.rename("/d", "/e/moved").unwrap()
    });
    crash_test("rename-noreplace", base, |fs| {
        fs.rename2("/d/a", "/d/new", Rename::NoReplace).unwrap()
    });
    crash_test("rename-exchange-files", base, |fs| {
        fs.rename2("/d/a", "/d/b", Rename::Exchange).unwrap()
    });
    // A directory and a file in different directories: two entries, two
    // link counts and a parent change in one transaction.
    let with_x = |fs: &Fs| {
        base(fs);
        file(fs, "/e/x", &[3u8; 100]);
    };
    crash_test("rename-exchange-dir-and-file", with_x, |fs| {
        fs.rename2("/d", "/e/x", Rename::Exchange).unwrap()
    });
}

#[test]
fn f7_crash_during_unnamed_file_create_write_and_link() {
    // Linked: before, or the named file with its data.
    crash_test("tmpfile-linked", base, |fs| {
        let t = fs.create_unnamed("/d", 0o644, true).unwrap();
        t.write_at(&[5u8; 6000], 0).unwrap();
        t.fsync().unwrap();
        t.link("/e/t").unwrap();
    });
    // Never linked: no trace at any point, its blocks free after recovery.
    crash_test("tmpfile-dropped", base, |fs| {
        let t = fs.create_unnamed("/d", 0o644, true).unwrap();
        t.write_at(&[6u8; 9000], 0).unwrap();
        t.fsync().unwrap();
    });
}

#[test]
fn f7_crash_during_unlink_and_link() {
    crash_test("unlink", base, |fs| fs.unlink("/d/b").unwrap());
    crash_test("link", base, |fs| fs.link("/d/a", "/e/a2").unwrap());
}

#[test]
fn f7_crash_during_fallocate_modes() {
    crash_test("fallocate", base, |fs| {
        rw(fs, "/d/a").fallocate(0, 0, 64 << 10).unwrap()
    });
    crash_test("fallocate-keep-size", base, |fs| {
        rw(fs, "/d/a")
            .fallocate(falloc::KEEP_SIZE, 0, 64 << 10)
            .unwrap()
    });
    crash_test("punch-hole", base, |fs| {
        rw(fs, "/d/b")
            .fallocate(falloc::PUNCH_HOLE | falloc::KEEP_SIZE, 4096, 4096)
            .unwrap()
    });
    crash_test("collapse-range", base, |fs| {
        rw(fs, "/d/b")
            .fallocate(falloc::COLLAPSE_RANGE, 0, 4096)
            .unwrap()
    });
    crash_test("insert-range", base, |fs| {
        rw(fs, "/d/b")
            .fallocate(falloc::INSERT_RANGE, 4096, 8192)
            .unwrap()
    });
}

#[test]
fn f7_crash_during_zero_range_of_hole() {
    crash_test("zero-range", base, |fs| {
        rw(fs, "/d/b")
            .fallocate(falloc::ZERO_RANGE, 3 * 4096, 8192)
            .unwrap()
    });
}

#[test]
fn f7_crash_during_checkpoint() {
    crash_test(
        "checkpoint",
        |fs| {
            base(fs);
            for i in 0..20 {
                file(fs, &format!("/e/f{i}"), &[i as u8; 100]);
            }
        },
        |fs| fs.checkpoint().unwrap(),
    );
}

#[test]
fn f7_crash_during_orphan_close() {
    let handle = std::sync::Mutex::new(None);
    crash_test(
        "orphan-close",
        |fs| {
            base(fs);
            let f = rw(fs, "/d/b");
            *handle.lock().unwrap() = Some(f);
            fs.unlink("/d/b").unwrap();
        },
        |_fs| drop(handle.lock().unwrap().take()),
    );
}

/// `base` plus /e/c, a clone of /d/b sharing its blocks (reflink, SPEC R1).
fn cloned(fs: &Fs) {
    base(fs);
    let b = fs.open("/d/b", &OpenOptions::read_only()).unwrap();
    let c = fs.open("/e/c", &OpenOptions::create()).unwrap();
    fs.clone_file(&b, &c).unwrap();
}

#[test]
fn r1_crash_during_clone() {
    crash_test(
        "clone-range-new-file",
        |fs| {
            base(fs);
            fs.create("/e/c", 0o644).unwrap();
        },
        |fs| {
            let b = fs.open("/d/b", &OpenOptions::read_only()).unwrap();
            fs.clone_range(&b, 0, &rw(fs, "/e/c"), 0, 0).unwrap();
        },
    );
    crash_test(
        "clone-range-over-blocks",
        |fs| {
            base(fs);
            file(fs, "/e/c", &[7u8; 3 * 4096]);
        },
        |fs| {
            let b = fs.open("/d/b", &OpenOptions::read_only()).unwrap();
            fs.clone_range(&b, 4096, &rw(fs, "/e/c"), 0, 2 * 4096)
                .unwrap();
        },
    );
    crash_test(
        "clone-partial-tail",
        |fs| {
            base(fs);
            fs.create("/e/c", 0o644).unwrap();
        },
        |fs| {
            let a = fs.open("/d/a", &OpenOptions::read_only()).unwrap();
            fs.clone_range(&a, 0, &rw(fs, "/e/c"), 4096, 0).unwrap();
        },
    );
}

#[test]
fn r1_crash_during_dedupe() {
    crash_test(
        "dedupe",
        |fs| {
            base(fs);
            file(fs, "/e/c", &[2u8; 3 * 4096]);
        },
        |fs| {
            let b = fs.open("/d/b", &OpenOptions::read_only()).unwrap();
            let r = fs
                .dedupe_range(&b, 0, &rw(fs, "/e/c"), 0, 3 * 4096)
                .unwrap();
            assert_eq!(r.bytes_deduped, 3 * 4096);
        },
    );
}

#[test]
fn r1_crash_during_copy_on_write() {
    // A write into shared blocks goes to new blocks, swapped in one
    // transaction: unlike an in-place overwrite it is atomic.
    crash_test("cow-write", cloned, |fs| {
        rw(fs, "/e/c").write_at(&[5u8; 5000], 1000).unwrap();
    });
    // As for any truncate into a block, its tail is zeroed before the size is
    // logged; here the block is copied first.
    // Zeroing part of a block is in place (not atomic, as with ext4/xfs):
    // after a crash before the op returned, the changed file may hold any mix
    // of old bytes and zeros, but the other file is never touched.
    let only = |path: &'static str| {
        move |s: &Snapshot, before: &Snapshot| {
            s.iter().all(|(k, v)| k == path || before.get(k) == Some(v))
                && s[path].1 == before[path].1
        }
    };
    crash_test_or(
        "cow-truncate-partial",
        cloned,
        |fs| rw(fs, "/e/c").set_len(4096 + 10).unwrap(),
        only("/e/c"),
    );
    crash_test_or(
        "cow-punch",
        cloned,
        |fs| {
            rw(fs, "/d/b")
                .fallocate(falloc::PUNCH_HOLE | falloc::KEEP_SIZE, 100, 4096)
                .unwrap();
        },
        only("/d/b"),
    );
    crash_test_or(
        "cow-zero-range",
        cloned,
        |fs| {
            rw(fs, "/e/c")
                .fallocate(falloc::ZERO_RANGE, 4096 + 7, 2 * 4096)
                .unwrap();
        },
        only("/e/c"),
    );
    crash_test("unlink-shared", cloned, |fs| fs.unlink("/d/b").unwrap());
    crash_test("checkpoint-shared", cloned, |fs| fs.checkpoint().unwrap());
}

/// A crash at every fence while a fault moves a 2 MiB chunk to an aligned
/// extent (a device mapped in 2 MiB pages, like hugetlbfs): after recovery the
/// file reads the same either way, fsck is clean and every block is owned or
/// free. (The mapped crash device keeps the durable state after each fence;
/// lines flushed but not yet fenced count as lost.)
#[test]
fn m7_crash_during_hugetlbfs_chunk_relocation() {
    use udax::device::MappedCrashDevice;
    use udax::{MapFlags, Prot};
    let dev = Arc::new(MappedCrashDevice::with_page_size(32 << 20, 2 << 20).unwrap());
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone()).unwrap();
    let data: Vec<u8> = (0..4usize << 20).map(|i| (i / 4096 % 251) as u8).collect();
    file(&fs, "/h", &data);
    let f = rw(&fs, "/h");
    // A block of the second chunk punched, taken by another file, and
    // written again elsewhere: the chunk is no longer one aligned extent.
    let at = (2usize << 20) + 8192;
    f.fallocate(falloc::PUNCH_HOLE | falloc::KEEP_SIZE, at as u64, 4096)
        .unwrap();
    file(&fs, "/other", &[1u8; 4096]);
    f.write_at(&data[at..at + 4096], at as u64).unwrap();
    assert!(f.extents().len() > 2, "fragmented: {:?}", f.extents());
    fs.sync().unwrap();
    let before = snapshot(&fs);
    dev.record_fences(true);
    let m = f.mmap(0, 4 << 20, Prot::Read, MapFlags::SHARED).unwrap();
    // SAFETY: inside the 4 MiB mapping, which lives until the end of the test.
    let byte = unsafe { m.as_ptr().add(at + 5).read_volatile() };
    assert_eq!(byte, data[at + 5]);
    let moved = m.device_block_of(2 << 20).expect("chunk mapped");
    assert_eq!(moved % 512, 0, "the chunk was moved to an aligned extent");
    let images = dev.record_fences(false);
    let after = snapshot(&fs);
    assert_eq!(before, after, "moving changes no content");
    assert!(!images.is_empty(), "the move fenced nothing");
    let n = images.len();
    for (i, img) in images.into_iter().enumerate() {
        let what = format!("relocate: crash after fence {}/{n}", i + 1);
        check_image(img, &before, &after, &|_, _| false, false, &what);
    }
    eprintln!("relocate: {n} crash points checked");
    drop(m);
}

/// Group commit: threads append records that one fence makes durable, so a
/// crash can keep a later record and lose an earlier one. Recovery must read
/// every such state as a torn tail (each record says how many before it were
/// not yet durable), never as damage; files whose create returned are there.
#[test]
fn f7_crash_during_concurrent_commits_is_a_torn_tail_never_damage() {
    let dev = Arc::new(CrashDevice::new(8 << 20));
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone()).unwrap();
    fs.mkdir("/t", 0o755).unwrap();
    fs.sync().unwrap();
    dev.start_recording();
    std::thread::scope(|s| {
        for t in 0..4 {
            let fs = &fs;
            s.spawn(move || {
                for i in 0..12 {
                    fs.create(&format!("/t/{t}-{i}"), 0o644).unwrap();
                }
            });
        }
    });
    let points = dev.crash_points();
    let (mut images, mut torn) = (0, 0);
    for p in 0..=points {
        for s in [Survivors::None, Survivors::All]
            .into_iter()
            .chain((0..4).map(|seed| Survivors::Random { seed }))
        {
            let what = format!("crash point {p}/{points}, {s:?}");
            let img: Arc<dyn Device> = Arc::new(RamDevice::from_image(dev.crash_image(p, &s)));
            let r = fsck(img.clone()).unwrap_or_else(|e| panic!("{what}: fsck: {e}"));
            assert!(r.damage.is_empty(), "{what}: {:?}", r.damage);
            assert!(r.problems.is_empty(), "{what}: {:?}", r.problems);
            torn += usize::from(r.torn_log_tail_at.is_some());
            let fs = Fs::mount(img).unwrap_or_else(|e| panic!("{what}: mount: {e}"));
            let n = fs.read_dir("/t").unwrap().len();
            if p == points {
                assert_eq!(n, 48, "{what}");
            }
            images += 1;
        }
    }
    eprintln!("concurrent commits: {points} crash points, {images} images, {torn} torn tails");
}

/// Found by tests/model.rs: an append stores into the partial last block (and
/// into blocks allocated past the end with KEEP_SIZE) before it logs the new
/// size, so a crash between the two leaves those bytes past the end of file;
/// a later growth (truncate up, a write past the end, fallocate, a clone past
/// the end) showed them instead of zeros.
#[test]
fn f7_crash_during_append_then_growth_reads_zeros_past_the_old_end() {
    for prealloc in [false, true] {
        let dev = Arc::new(CrashDevice::new(8 << 20));
        Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev.clone()).unwrap();
        file(&fs, "/f", &[1u8; 5000]);
        file(&fs, "/s", &[2u8; 4096]);
        if prealloc {
            rw(&fs, "/f")
                .fallocate(falloc::KEEP_SIZE, 5000, 60_000)
                .unwrap();
        }
        fs.sync().unwrap();
        dev.start_recording();
        rw(&fs, "/f").write_at(&[9u8; 20000], 5000).unwrap();
        let points = dev.crash_points();
        let mut lost = 0;
        for p in 0..points {
            let img = dev.crash_image(p, &Survivors::All);
            for grow in 0..4 {
                let fs = Fs::mount(Arc::new(RamDevice::from_image(img.clone()))).unwrap();
                let f = rw(&fs, "/f");
                if f.len() != 5000 {
                    continue; // the append is there whole
                }
                lost += 1;
                // Growth to 12000 bytes (the clone: data from 8192 on).
                let zeros = match grow {
                    0 => f.set_len(12000).map(|_| 7000),
                    1 => f.write_at(b"x", 11999).map(|_| 6999),
                    2 => f.fallocate(0, 0, 12000).map(|_| 7000),
                    _ => {
                        let s = fs.open("/s", &OpenOptions::read_only()).unwrap();
                        fs.clone_range(&s, 0, &f, 8192, 4096).map(|_| 8192 - 5000)
                    }
                }
                .unwrap();
                let mut v = vec![7u8; zeros];
                assert_eq!(f.read_at(&mut v, 5000).unwrap(), v.len());
                assert!(
                    v.iter().all(|&b| b == 0),
                    "prealloc {prealloc}, crash point {p}/{points}, growth {grow}: \
                     old bytes past the old end"
                );
            }
        }
        assert!(lost > 0, "no crash point lost the size change");
    }
}

#[test]
fn f7_crash_during_symlink_with_inline_and_block_targets() {
    crash_test("symlink inline", base, |fs| {
        fs.symlink(b"../d/a", "/e/short").unwrap();
    });
    // 300 bytes: more than the slot holds; the target goes to a data block.
    let long = format!("/{}", "x/".repeat(150));
    crash_test("symlink in a block", base, |fs| {
        fs.symlink(long.as_bytes(), "/e/long").unwrap();
    });
    let setup = |fs: &Fs| {
        base(fs);
        fs.symlink(long.as_bytes(), "/e/long").unwrap();
    };
    crash_test("unlink of a symlink in a block", setup, |fs| {
        fs.unlink("/e/long").unwrap();
    });
}

#[test]
fn f7_crash_during_mknod_of_a_device_node() {
    crash_test("mknod", base, |fs| {
        fs.mknod("/e/null", libc::S_IFCHR | 0o666, libc::makedev(1, 3))
            .unwrap();
    });
}
