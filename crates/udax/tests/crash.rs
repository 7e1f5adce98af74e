//! F7: crash at every fence of every metadata operation, with every subset (where
//! small) or seeded random subsets of the not-yet-durable cache lines surviving.
//! After each simulated crash: fsck is clean, mount succeeds, the file system is
//! exactly the state before or after the operation (after, once it returned), and
//! free space accounts for every block.

use std::collections::BTreeMap;
use std::sync::Arc;
use udax::device::{CrashDevice, Device, RamDevice, Survivors};
use udax::fs::{falloc, fsck, Fs, MkfsOptions, OpenOptions};

/// path -> (is_dir, size, nlink, crc32c of the content)
type Snapshot = BTreeMap<String, (bool, u64, u32, u32)>;

fn snapshot(fs: &Fs) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut stack = vec!["/".to_string()];
    while let Some(dir) = stack.pop() {
        for e in fs.read_dir(&dir).unwrap() {
            let p = format!("{}{}", dir, e.name);
            let st = fs.stat(&p).unwrap();
            if st.is_dir() {
                out.insert(p.clone(), (true, 0, st.nlink, 0));
                stack.push(format!("{p}/"));
            } else {
                let f = fs.open(&p, &OpenOptions::read_only()).unwrap();
                let mut v = vec![0u8; st.size as usize];
                f.read_at(&mut v, 0).unwrap();
                out.insert(p, (false, st.size, st.nlink, crc32c::crc32c(&v)));
            }
        }
    }
    out
}

fn check_image(img: Vec<u8>, before: &Snapshot, after: &Snapshot, done: bool, what: &str) {
    let dev: Arc<dyn Device> = Arc::new(RamDevice::from_image(img));
    let report = fsck(&*dev).unwrap_or_else(|e| panic!("{what}: fsck failed: {e}"));
    assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
    let fs = Fs::mount(dev.clone()).unwrap_or_else(|e| panic!("{what}: mount failed: {e}"));
    let s = snapshot(&fs);
    if done {
        assert_eq!(&s, after, "{what}: completed operation lost");
    } else {
        assert!(
            &s == before || &s == after,
            "{what}: neither old nor new state: {s:?}"
        );
    }
    // No block both free and used: free space == data area - blocks owned.
    let st = fs.statfs();
    let report = fsck(&*dev).unwrap();
    assert!(report.clean, "{what}: after mount: {:?}", report.problems);
    assert_eq!(
        st.free_blocks,
        st.data_blocks - report.used_blocks,
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
            check_image(dev.crash_image(p, &s), &before, &after, done, &what);
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
