//! F8 on format 3: corrupted or truncated images never panic, hang or read
//! out of bounds; mount and fsck say what is wrong, or what mounts is usable.
//! The flips land where format 3's metadata lives: the superblocks, the root
//! block, the log (holding records not yet stored in place), the bitmap,
//! and the inode chunk and tree nodes at the start of the data area.

use proptest::prelude::*;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;
use udax::device::{Device, RamDevice};
use udax::fs::{fsck, Fs, MkfsOptions, OpenOptions};
use udax::layout::{AnySuperblock, Geometry3};

const SIZE: u64 = 8 << 20;

/// Blocks of the data area past its start that hold metadata in the
/// template (inode chunk 0 and the tree nodes allocated after it).
const META_SPAN: u64 = 80;

/// A format-3 file system with directories, files of one extent and of many
/// (an extent tree), a reflink (the refcount tree), a bad block (the
/// bad-block tree), an unlinked file still open (an orphan), a truncation,
/// then a log of records not yet truncated: the image a crash leaves.
fn template() -> &'static (Vec<u8>, Geometry3) {
    static T: OnceLock<(Vec<u8>, Geometry3)> = OnceLock::new();
    T.get_or_init(|| {
        let dev = Arc::new(RamDevice::new(SIZE));
        Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev.clone()).unwrap();
        let AnySuperblock::V3(sb) = fs.superblock().clone() else {
            panic!("format 3 is the default");
        };
        fs.mkdir("/a", 0o755).unwrap();
        for i in 0..10 {
            let f = fs
                .open(&format!("/a/f{i}"), &OpenOptions::create())
                .unwrap();
            f.write_at(&[i as u8 + 1; 5000], 0).unwrap();
        }
        let sparse = fs.create("/a/sparse", 0o644).unwrap();
        for b in 0..20u64 {
            sparse.write_at(&[7; 4096], b * 2 * 4096).unwrap();
        }
        let src = fs.open("/a/f3", &OpenOptions::read_only()).unwrap();
        let dst = fs.create("/a/c3", 0o644).unwrap();
        fs.clone_file(&src, &dst).unwrap();
        fs.inject_poison((sb.geometry.total_blocks - 1) * 4096, 4096)
            .unwrap();
        fs.checkpoint().unwrap();
        // The live log.
        fs.mkdir("/b", 0o755).unwrap();
        fs.rename("/a/f1", "/b/g").unwrap();
        fs.unlink("/a/f2").unwrap();
        let open = fs.open("/a/f4", &OpenOptions::read_write()).unwrap();
        fs.unlink("/a/f4").unwrap();
        open.set_len(100).unwrap();
        let img = dev.image();
        drop((src, dst, sparse, open));
        std::mem::forget(fs);
        (img, sb.geometry)
    })
}

/// fsck, mount, and use of whatever mounted, in a thread that must finish:
/// a hang is a failure, as a panic is.
fn try_everything(img: Vec<u8>) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let dev: Arc<dyn Device> = Arc::new(RamDevice::from_image(img));
        match fsck(dev.clone()) {
            Ok(r) => r.problems.iter().for_each(|p| assert!(!p.what.is_empty())),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        if let Ok(fs) = Fs::mount(dev) {
            // Whatever mounted must be usable: errors, never panics.
            for d in ["/", "/a", "/b"] {
                if let Ok(list) = fs.read_dir(d) {
                    for e in list {
                        let p = format!("{}/{}", d.trim_end_matches('/'), e.name);
                        if let Ok(f) = fs.open(&p, &OpenOptions::read_only()) {
                            let mut b = vec![0u8; 8192];
                            let _ = f.read_at(&mut b, 0);
                        }
                    }
                }
            }
            if let Ok(f) = fs.create("/probe", 0o644) {
                let _ = f.write_at(b"probe", 0);
            }
            let _ = fs.unlink("/a/f0");
            let _ = fs.checkpoint();
        }
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(()) => t.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The thread panicked: re-raise its panic here.
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("fsck or mount hung on a corrupted image"),
    }
}

#[test]
fn f8_format_3_clean_template_checks_clean_and_replays() {
    let (img, _) = template();
    let dev = Arc::new(RamDevice::from_image(img.clone()));
    let r = fsck(dev.clone()).unwrap();
    assert!(r.clean, "{:?}", r.problems);
    assert!(r.log_records_replayed > 1, "records to replay");
    assert_eq!(r.orphans.len(), 1, "the unlinked open file");
    assert_eq!(r.bad_blocks.len(), 1);
    assert!(r.shared_blocks > 0);
    let fs = Fs::mount(dev).unwrap();
    assert!(fs.stat("/b/g").unwrap().is_file());
    assert!(fs.stat("/a/f4").is_err());
}

#[test]
fn f8_format_3_damaged_root_body_is_an_error_naming_it() {
    let (img, g) = template();
    // After a clean unmount (the log truncated): no record rewrites the
    // body line, as a replay of the template's log would.
    let dev: Arc<dyn Device> = Arc::new(RamDevice::from_image(img.clone()));
    Fs::mount(dev.clone()).unwrap().unmount().unwrap();
    let mut bad = dev_image(&dev);
    let at = g.root_blk * 4096 + 64 + 8;
    bad[at as usize] ^= 0x10;
    let dev: Arc<dyn Device> = Arc::new(RamDevice::from_image(bad));
    let e = Fs::mount(dev.clone()).expect_err("a damaged root body mounted");
    assert!(e.to_string().contains("root block body"), "{e}");
    try_everything(dev_image(&dev));
}

fn dev_image(dev: &Arc<dyn Device>) -> Vec<u8> {
    let mut v = vec![0u8; dev.len() as usize];
    dev.read(0, &mut v).unwrap();
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Random bit flips anywhere in the metadata before the data area, and
    /// in the inode chunk and tree nodes at its start.
    #[test]
    fn f8_format_3_bit_flips_in_metadata_never_panic_or_hang(
        flips in proptest::collection::vec((any::<u64>(), 0u8..8), 1..16),
    ) {
        let (img, g) = template();
        let head = g.data_start * 4096;
        let span = head + META_SPAN * 4096;
        let mut bad = img.clone();
        for (pos, bit) in flips {
            let p = (pos % span) as usize;
            bad[p] ^= 1 << bit;
        }
        try_everything(bad);
    }

    /// One flip in the structures that matter most: superblock, root block,
    /// log records, bitmap, inode chunk 0, the tree nodes after it.
    #[test]
    fn f8_format_3_one_flip_in_each_structure(region in 0u8..6, off in 0u64..16384, bit in 0u8..8) {
        let (img, g) = template();
        let (base, len) = match region {
            0 => (0, 2 * 4096),
            1 => (g.root_blk * 4096, 192),
            2 => (g.log_start * 4096, 16384),
            3 => (g.bitmap_start * 4096, g.bitmap_blocks * 4096),
            4 => (g.data_start * 4096, 64 * 4096),
            _ => ((g.data_start + 64) * 4096, (META_SPAN - 64) * 4096),
        };
        let mut bad = img.clone();
        bad[(base + off % len) as usize] ^= 1 << bit;
        try_everything(bad);
    }

    /// Whole blocks of metadata zeroed (a lost write, a wiped line).
    #[test]
    fn f8_format_3_zeroed_metadata_blocks_never_panic(blk in 0u64..1024) {
        let (img, g) = template();
        let span = g.data_start + META_SPAN;
        let b = blk % span;
        let mut bad = img.clone();
        bad[(b * 4096) as usize..((b + 1) * 4096) as usize].fill(0);
        try_everything(bad);
    }

    /// Truncated images (a device smaller than the file system).
    #[test]
    fn f8_format_3_truncated_image_never_panics(len in 0usize..(SIZE as usize)) {
        let (img, _) = template();
        let len = len / 4096 * 4096;
        try_everything(img[..len].to_vec());
    }
}
