//! `udax::migrate` (issue 20, target 6): a format-2 image copied onto a
//! new format-3 file system keeps everything a user can see but inode
//! numbers and change times.

use std::sync::Arc;
use udax::device::{Device, RamDevice};
use udax::fs::{falloc, fsck, File, Fs, MkfsOptions, OpenOptions, Stat};
use udax::migrate::{copy_all, totals, Progress};
use udax::BLOCK_SIZE;

fn fs_of(format: u32, size: u64) -> Fs {
    let dev: Arc<dyn Device> = Arc::new(RamDevice::new(size));
    Fs::mkfs(
        &*dev,
        &MkfsOptions {
            label: "old".into(),
            format,
        },
    )
    .unwrap();
    Fs::mount(dev).unwrap()
}

fn write(fs: &Fs, path: &str, data: &[u8], off: u64) -> File {
    let f = fs
        .open(
            path,
            &OpenOptions {
                write: true,
                create: true,
                mode: 0o644,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(f.write_at(data, off).unwrap(), data.len());
    f
}

fn pattern(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

/// Every path under `/` with its `lstat`, sorted.
fn tree(fs: &Fs) -> Vec<(String, Stat)> {
    let mut out = vec![("/".to_string(), fs.lstat("/").unwrap())];
    let mut todo = vec!["/".to_string()];
    while let Some(d) = todo.pop() {
        for e in fs.read_dir(&d).unwrap() {
            let p = if d == "/" {
                format!("/{}", e.name)
            } else {
                format!("{d}/{}", e.name)
            };
            let st = fs.lstat(&p).unwrap();
            if st.is_dir() {
                todo.push(p.clone());
            }
            out.push((p, st));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn contents(fs: &Fs, path: &str) -> Vec<u8> {
    let f = fs.open(path, &OpenOptions::default()).unwrap();
    let mut b = vec![0u8; f.stat().unwrap().size as usize];
    assert_eq!(f.read_at(&mut b, 0).unwrap(), b.len());
    b
}

/// A file's allocated ranges (file block, blocks) and whether each is
/// shared, merged where they touch.
fn layout(fs: &Fs, path: &str) -> Vec<(u64, u64, bool)> {
    let f = fs.open(path, &OpenOptions::default()).unwrap();
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    for (e, shared) in f.extents_shared() {
        match out.last_mut() {
            Some((s, n, sh)) if *s + *n == e.file_blk && *sh == shared => *n += e.len,
            _ => out.push((e.file_blk, e.len, shared)),
        }
    }
    out
}

#[test]
fn a_format_2_file_system_migrates_to_format_3_with_its_tree_bytes_holes_links_sharing_modes_owners_and_times(
) {
    let old = fs_of(2, 64 << 20);
    old.mkdir("/a", 0o750).unwrap();
    old.mkdir("/a/b", 0o755).unwrap();
    old.set_permissions("/a/b", 0o2775).unwrap();
    old.mkdir("/t", 0o755).unwrap();
    old.set_permissions("/t", 0o1777).unwrap();
    old.set_owner("/a", Some(1000), Some(100)).unwrap();
    drop(write(&old, "/a/small", b"hello", 0));
    old.set_owner("/a/small", Some(1000), Some(1000)).unwrap();
    old.set_permissions("/a/small", 0o640).unwrap();
    let big = pattern(3 * 1024 * 1024 + 123, 7);
    drop(write(&old, "/a/b/big", &big, 0));
    // Holes: blocks 1..256 and 257..768 of a 3 MiB file.
    let sparse = write(&old, "/sparse", &pattern(4096, 1), 0);
    sparse.write_at(&pattern(4096, 2), 1 << 20).unwrap();
    sparse.set_len(3 << 20).unwrap();
    drop(sparse);
    drop(write(&old, "/empty", b"", 0));
    // Ten bytes, and 64 KiB reserved past the end.
    let pre = write(&old, "/prealloc", b"0123456789", 0);
    pre.fallocate(falloc::KEEP_SIZE, 0, 64 << 10).unwrap();
    drop(pre);
    drop(write(&old, "/a/hard", b"two names", 0));
    old.link("/a/hard", "/t/hard2").unwrap();
    // A reflink copy of the big file, then one block of it rewritten.
    let src = old.open("/a/b/big", &OpenOptions::default()).unwrap();
    let clone = write(&old, "/clone", b"", 0);
    old.clone_range(&src, 0, &clone, 0, 0).unwrap();
    clone.write_at(&pattern(4096, 9), 8 * BLOCK_SIZE).unwrap();
    drop((src, clone));
    drop(write(&old, "/exec", b"#!/bin/sh\n", 0));
    old.set_permissions("/exec", 0o4755).unwrap();
    for (i, (p, _)) in tree(&old).iter().enumerate() {
        let t = 1_600_000_000_000_000_000 + i as u64 * 1_000_000_007;
        old.set_times(p, Some(t), Some(t + 500)).unwrap();
    }
    assert!(old.shared_blocks().iter().any(|&(_, _, refs)| refs == 2));

    let new = fs_of(3, 64 << 20);
    let want = totals(&old);
    let mut last = Progress::default();
    let report = copy_all(&old, &new, &mut |p| last = p).unwrap();

    assert_eq!(new.superblock().version(), 3);
    assert!(report.left_out.is_empty(), "{:?}", report.left_out);
    assert_eq!(
        (report.dirs, report.files, report.hard_links),
        (3, 8, 1),
        "{report:?}"
    );
    // The clone shares all but its rewritten block and its partial last one.
    let whole = big.len() as u64 / BLOCK_SIZE;
    assert_eq!(report.bytes_shared, (whole - 1) * BLOCK_SIZE, "{report:?}");
    assert_eq!(last.bytes, report.bytes_copied + report.bytes_shared);
    assert_eq!(last.names, report.dirs + report.files + report.hard_links);
    assert_eq!(want.inodes, 12, "{want:?}");

    let (a, b) = (tree(&old), tree(&new));
    assert_eq!(
        a.iter().map(|x| &x.0).collect::<Vec<_>>(),
        b.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    for ((path, s), (_, d)) in a.iter().zip(&b) {
        let seen = |s: &Stat| {
            (
                s.mode, s.uid, s.gid, s.size, s.nlink, s.atime_ns, s.mtime_ns, s.blocks,
            )
        };
        assert_eq!(seen(s), seen(d), "{path}");
        if s.is_file() {
            assert_eq!(contents(&old, path), contents(&new, path), "{path}");
            let mut want = layout(&old, path);
            if path == "/a/b/big" || path == "/clone" {
                // A shared partial last block is copied (not shared).
                want = vec![(0, 8, true), (8, 1, false), (9, 759, true), (768, 1, false)];
            }
            assert_eq!(layout(&new, path), want, "{path}");
        }
    }
    assert_eq!(
        new.stat("/a/hard").unwrap().ino,
        new.stat("/t/hard2").unwrap().ino
    );
    assert_eq!(
        layout(&new, "/sparse"),
        vec![(0, 1, false), (256, 1, false)]
    );
    assert_eq!(layout(&new, "/prealloc"), vec![(0, 16, false)]);
    assert_eq!(new.stat("/a/b").unwrap().mode & 0o7777, 0o2775);
    assert_eq!(new.stat("/exec").unwrap().mode & 0o7777, 0o4755);
    let dev = new.device().clone();
    new.unmount().unwrap();
    let r = fsck(dev).unwrap();
    assert_eq!(r.exit_code(), 0, "{r:?}");
}

#[test]
fn a_file_under_a_media_error_is_left_out_of_a_migration_with_its_other_names_and_the_rest_is_copied(
) {
    let old = fs_of(2, 32 << 20);
    drop(write(&old, "/good", &pattern(20_000, 3), 0));
    let bad = write(&old, "/bad", &pattern(3 * 4096, 4), 0);
    old.link("/bad", "/bad2").unwrap();
    let dev_blk = bad.extents_shared()[0].0.dev_blk + 1;
    drop(bad);
    old.inject_poison(dev_blk * BLOCK_SIZE, BLOCK_SIZE).unwrap();

    let new = fs_of(3, 32 << 20);
    let report = copy_all(&old, &new, &mut |_| {}).unwrap();
    let mut out: Vec<&str> = report.left_out.iter().map(|(p, _)| p.as_str()).collect();
    out.sort();
    assert_eq!(out, ["/bad", "/bad2"], "{report:?}");
    assert_eq!(report.files, 1);
    assert_eq!(contents(&new, "/good"), pattern(20_000, 3));
    assert_eq!(new.stat("/bad").unwrap_err().errno(), libc::ENOENT);
    assert_eq!(new.stat("/bad2").unwrap_err().errno(), libc::ENOENT);
    let dev = new.device().clone();
    new.unmount().unwrap();
    assert_eq!(fsck(dev).unwrap().exit_code(), 0);
}

#[test]
fn a_migration_onto_a_target_too_small_for_the_data_refuses_before_copying() {
    let old = fs_of(2, 64 << 20);
    drop(write(&old, "/f", &pattern(24 << 20, 5), 0));
    let new = fs_of(3, 16 << 20);
    let e = copy_all(&old, &new, &mut |_| {}).unwrap_err();
    assert_eq!(e.errno(), libc::ENOSPC, "{e}");
    assert!(e.to_string().contains("MiB free"), "{e}");
    assert!(new.read_dir("/").unwrap().is_empty());
}

#[test]
fn entries_whose_inodes_are_damaged_are_left_out_of_a_migration_named_and_the_rest_is_copied() {
    use udax::layout::AnySuperblock;
    let dev = Arc::new(RamDevice::new(32 << 20));
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone()).unwrap();
    drop(write(&fs, "/ok", b"fine", 0));
    drop(write(&fs, "/bad", b"damaged slot", 0));
    fs.mkdir("/dir", 0o755).unwrap();
    drop(write(&fs, "/dir/inner", b"under a damaged directory", 0));
    let AnySuperblock::V3(sb) = fs.superblock().clone() else {
        panic!("format 3 is the default");
    };
    let slot = |ino: u64| (sb.geometry.data_start * BLOCK_SIZE + (ino - 1) * 256) as usize;
    let (bad, dir) = (fs.stat("/bad").unwrap().ino, fs.stat("/dir").unwrap().ino);
    fs.unmount().unwrap();
    let mut img = dev.image();
    img[slot(bad) + 30] ^= 0xff;
    img[slot(dir) + 30] ^= 0xff;
    let old = Fs::mount(Arc::new(RamDevice::from_image(img))).unwrap();
    assert_eq!(old.lstat("/bad").unwrap_err().errno(), libc::EUCLEAN);

    let new = fs_of(3, 32 << 20);
    let report = copy_all(&old, &new, &mut |_| {}).unwrap();
    let mut out: Vec<&str> = report.left_out.iter().map(|(p, _)| p.as_str()).collect();
    out.sort();
    assert_eq!(out, ["/bad", "/dir"], "{report:?}");
    assert!(
        report
            .left_out
            .iter()
            .all(|(_, why)| why.contains("checksum")
                || why.contains("corrupt")
                || why.contains("damaged")),
        "{report:?}"
    );
    assert_eq!(contents(&new, "/ok"), b"fine");
    assert_eq!(new.stat("/bad").unwrap_err().errno(), libc::ENOENT);
    assert_eq!(new.stat("/dir").unwrap_err().errno(), libc::ENOENT);
    let dev = new.device().clone();
    new.unmount().unwrap();
    assert_eq!(fsck(dev).unwrap().exit_code(), 0);
}
