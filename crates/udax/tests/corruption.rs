//! F8: corrupted or truncated images never panic, hang or read out of bounds;
//! mount and fsck say what is wrong and where.

use proptest::prelude::*;
use std::sync::{Arc, OnceLock};
use udax::device::{Device, RamDevice};
use udax::fs::{fsck, Fs, MkfsOptions, OpenOptions};
use udax::layout::Geometry;
use udax::Error;

const SIZE: u64 = 4 << 20;

/// A small file system with files, directories and a non-empty log.
fn template() -> &'static (Vec<u8>, Geometry) {
    static T: OnceLock<(Vec<u8>, Geometry)> = OnceLock::new();
    T.get_or_init(|| {
        let dev = Arc::new(RamDevice::new(SIZE));
        Fs::mkfs(
            &*dev,
            &MkfsOptions {
                format: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let fs = Fs::mount(dev.clone()).unwrap();
        fs.mkdir("/a", 0o755).unwrap();
        for i in 0..10 {
            let f = fs
                .open(&format!("/a/f{i}"), &OpenOptions::create())
                .unwrap();
            f.write_at(&[i as u8; 5000], 0).unwrap();
        }
        // Shared blocks: a refcount record in the checkpoint, MapShared in the log.
        let src = fs.open("/a/f3", &OpenOptions::read_only()).unwrap();
        let dst = fs.open("/a/c3", &OpenOptions::create()).unwrap();
        fs.clone_file(&src, &dst).unwrap();
        fs.checkpoint().unwrap();
        let dst2 = fs.open("/a/c4", &OpenOptions::create()).unwrap();
        fs.clone_file(&src, &dst2).unwrap();
        drop((src, dst, dst2));
        fs.mkdir("/b", 0o755).unwrap();
        fs.rename("/a/f1", "/b/g").unwrap();
        fs.unlink("/a/f2").unwrap();
        let udax::layout::AnySuperblock::V2(sb) = fs.superblock() else {
            panic!("a format-2 file system");
        };
        let g = sb.geometry;
        (dev.image(), g)
    })
}

fn try_everything(img: Vec<u8>) {
    let dev: Arc<dyn Device> = Arc::new(RamDevice::from_image(img));
    match fsck(dev.clone()) {
        Ok(r) => {
            for p in &r.problems {
                assert!(!p.what.is_empty());
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    if let Ok(fs) = Fs::mount(dev) {
        // Whatever mounted must be usable.
        let _ = fs.read_dir("/");
        let _ = fs.create("/probe", 0o644);
    }
}

#[test]
fn f8_clean_template_checks_clean() {
    let (img, _) = template();
    let dev = Arc::new(RamDevice::from_image(img.clone()));
    let r = fsck(dev.clone()).unwrap();
    assert!(r.clean, "{:?}", r.problems);
    assert!(r.log_records_replayed > 0);
}

#[test]
fn f8_corrupt_checkpoint_record_is_reported_with_offset() {
    let (img, g) = template();
    let dev = Arc::new(RamDevice::from_image(img.clone()));
    let epoch = fsck(dev.clone()).unwrap().checkpoint_epoch;
    let body = g.slot_offset(epoch % 2) + 4096;
    let mut bad = img.clone();
    bad[body as usize + 40] ^= 0xff;
    let dev: Arc<dyn Device> = Arc::new(RamDevice::from_image(bad));
    // fsck reports the damaged record, and what a repair would fall back to.
    let r = fsck(dev.clone()).unwrap();
    assert_eq!(r.exit_code(), 4);
    assert_eq!(r.damage[0].device_offset, body, "{:?}", r.damage);
    assert!(r.damage[0].what.contains("checksum"), "{:?}", r.damage);
    match Fs::mount(dev.clone()) {
        Err(Error::Corrupted {
            device_offset,
            what,
        }) => assert_eq!(device_offset, body, "{what}"),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a damaged checkpoint body mounted"),
    }
    assert!(matches!(Fs::mount(dev), Err(Error::Corrupted { .. })));
}

#[test]
fn f8_bad_primary_superblock_falls_back_to_backup() {
    let (img, _) = template();
    let mut bad = img.clone();
    bad[100] ^= 1;
    let dev: Arc<dyn Device> = Arc::new(RamDevice::from_image(bad.clone()));
    assert!(Fs::mount(dev).is_ok());
    bad[4096 + 100] ^= 1;
    let dev: Arc<dyn Device> = Arc::new(RamDevice::from_image(bad));
    assert!(matches!(
        Fs::mount(dev),
        Err(Error::Corrupted {
            device_offset: 0,
            ..
        })
    ));
}

#[test]
fn f8_not_a_udax_device() {
    let dev: Arc<dyn Device> = Arc::new(RamDevice::new(SIZE));
    let e = Fs::mount(dev).unwrap_err();
    assert!(e.to_string().contains("not a udax"), "{e}");
}

#[test]
fn f8_torn_log_tail_is_discarded() {
    let (img, g) = template();
    // Garble the last bytes of the log in use: replay stops there, mount succeeds.
    let dev = Arc::new(RamDevice::from_image(img.clone()));
    let fs = Fs::mount(dev).unwrap();
    let used = fs.journal_stats().log_used;
    drop(fs);
    let mut bad = img.clone();
    let at = (g.log_offset() + used - 8) as usize;
    bad[at] ^= 0x55;
    let dev = Arc::new(RamDevice::from_image(bad));
    let r = fsck(dev.clone()).unwrap();
    assert!(r.clean, "{:?}", r.problems);
    assert!(r.torn_log_tail_at.is_some());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Random bit flips anywhere in the metadata regions.
    #[test]
    fn f8_bit_flips_in_metadata_never_panic(flips in proptest::collection::vec((any::<u64>(), 0u8..8), 1..16)) {
        let (img, g) = template();
        let meta_end = g.data_start * 4096;
        let mut bad = img.clone();
        for (pos, bit) in flips {
            let p = (pos % meta_end) as usize;
            bad[p] ^= 1 << bit;
        }
        try_everything(bad);
    }

    /// Flips concentrated on the blocks that matter most.
    #[test]
    fn f8_bit_flips_in_superblock_log_and_checkpoint(region in 0u8..4, off in 0u64..8192, bit in 0u8..8) {
        let (img, g) = template();
        let base = match region {
            0 => 0,
            1 => g.log_offset(),
            2 => g.slot_offset(0),
            _ => g.slot_offset(1),
        };
        let mut bad = img.clone();
        bad[(base + off) as usize] ^= 1 << bit;
        try_everything(bad);
    }

    /// Truncated images (a device smaller than the file system).
    #[test]
    fn f8_truncated_image_never_panics(len in 0usize..(4 << 20)) {
        let (img, _) = template();
        let len = len / 4096 * 4096;
        try_everything(img[..len].to_vec());
    }
}
