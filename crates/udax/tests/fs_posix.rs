//! F1-F5, F9: namespace and file semantics on a RAM device.

use std::sync::Arc;
use udax::device::{Device, RamDevice};
use udax::fs::{falloc, Fs, MkfsOptions, OpenOptions, Rename};
use udax::Error;

fn fresh(mib: u64) -> Fs {
    let dev: Arc<dyn Device> = Arc::new(RamDevice::new(mib << 20));
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    Fs::mount(dev).unwrap()
}

/// A format-2 file system (its metadata image and accounting).
fn fresh_v2(mib: u64) -> Fs {
    let dev: Arc<dyn Device> = Arc::new(RamDevice::new(mib << 20));
    let v2 = MkfsOptions {
        format: 2,
        ..Default::default()
    };
    Fs::mkfs(&*dev, &v2).unwrap();
    Fs::mount(dev).unwrap()
}

fn remount(fs: Fs) -> Fs {
    let dev = fs.device().clone();
    drop(fs);
    Fs::mount(dev).unwrap()
}

fn read_all(fs: &Fs, path: &str) -> Vec<u8> {
    let f = fs.open(path, &OpenOptions::read_only()).unwrap();
    let mut v = vec![0u8; f.len() as usize];
    assert_eq!(f.read_at(&mut v, 0).unwrap(), v.len());
    v
}

#[test]
fn f1_create_write_read_survives_remount() {
    let fs = fresh(16);
    let f = fs.create("/hello.txt", 0o644).unwrap();
    assert_eq!(f.write_at(b"hello, dax", 0).unwrap(), 10);
    drop(f);
    let fs = remount(fs);
    assert_eq!(read_all(&fs, "/hello.txt"), b"hello, dax");
    let st = fs.stat("/hello.txt").unwrap();
    assert_eq!(st.size, 10);
    assert_eq!(st.nlink, 1);
    assert!(st.is_file());
    assert_eq!(st.blocks, 8);
}

#[test]
fn f1_mkdir_readdir_rmdir_and_deep_paths() {
    let fs = fresh(16);
    let mut path = String::new();
    for i in 0..40 {
        path.push_str(&format!("/d{i}"));
        fs.mkdir(&path, 0o755).unwrap();
    }
    fs.create(&format!("{path}/leaf"), 0o644).unwrap();
    let fs = remount(fs);
    assert!(fs.stat(&format!("{path}/leaf")).unwrap().is_file());
    assert_eq!(fs.stat("/").unwrap().nlink, 3);
    assert_eq!(fs.stat("/d0").unwrap().nlink, 3);
    assert!(matches!(fs.rmdir("/d0"), Err(Error::NotEmpty)));
    let names: Vec<String> = fs
        .read_dir(&path)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["leaf"]);
    fs.unlink(&format!("{path}/leaf")).unwrap();
    fs.rmdir(&path).unwrap();
    assert!(matches!(fs.stat(&path), Err(Error::NotFound)));
}

#[test]
fn f1_names_up_to_255_bytes() {
    let fs = fresh(16);
    let ok = "n".repeat(255);
    fs.create(&format!("/{ok}"), 0o644).unwrap();
    let long = "n".repeat(256);
    assert!(matches!(
        fs.create(&format!("/{long}"), 0o644),
        Err(Error::NameTooLong)
    ));
    let fs = remount(fs);
    assert_eq!(fs.read_dir("/").unwrap()[0].name, ok);
}

#[test]
fn f1_rename_over_existing_file_and_directories() {
    let fs = fresh(16);
    fs.create("/a", 0o644).unwrap().write_at(b"A", 0).unwrap();
    fs.create("/b", 0o644).unwrap().write_at(b"B", 0).unwrap();
    fs.rename("/a", "/b").unwrap();
    assert_eq!(read_all(&fs, "/b"), b"A");
    assert!(matches!(fs.stat("/a"), Err(Error::NotFound)));
    fs.mkdir("/x", 0o755).unwrap();
    fs.mkdir("/y", 0o755).unwrap();
    fs.mkdir("/x/sub", 0o755).unwrap();
    fs.rename("/x/sub", "/y/sub2").unwrap();
    assert!(matches!(
        fs.rename("/y", "/y/sub2/z"),
        Err(Error::Invalid(_))
    ));
    fs.mkdir("/empty", 0o755).unwrap();
    fs.rename("/y", "/empty").unwrap(); // over an empty dir
    assert!(matches!(fs.rename("/b", "/empty"), Err(Error::IsDir)));
    fs.mkdir("/full", 0o755).unwrap();
    fs.create("/full/f", 0o644).unwrap();
    assert!(matches!(fs.rename("/empty", "/full"), Err(Error::NotEmpty)));
    let fs = remount(fs);
    assert!(fs.stat("/empty/sub2").unwrap().is_dir());
    assert_eq!(fs.stat("/empty").unwrap().nlink, 3);
    assert_eq!(fs.stat("/x").unwrap().nlink, 2);
    let r = udax::fs::fsck(fs.device().clone()).unwrap();
    assert!(r.clean, "{:?}", r.problems);
}

#[test]
fn f1_a_directory_path_follows_renames_and_is_gone_after_rmdir() {
    let fs = fresh(16);
    fs.mkdir("/a", 0o755).unwrap();
    fs.mkdir("/a/b", 0o755).unwrap();
    let b = fs.dir_ref("/a/b").unwrap();
    assert_eq!(b.ino(), fs.stat("/a/b").unwrap().ino);
    assert_eq!(fs.dir_path(&b, "/a/b").unwrap(), "/a/b");
    assert_eq!(fs.dir_path(&b, "/wrong").unwrap(), "/a/b");
    let root = fs.dir_ref("/").unwrap();
    assert_eq!(fs.dir_path(&root, "/a").unwrap(), "/");
    assert!(matches!(fs.dir_ref("/a/f"), Err(Error::NotFound)));
    fs.create("/a/f", 0o644).unwrap();
    assert!(matches!(fs.dir_ref("/a/f"), Err(Error::NotDir)));
    let moves = fs.dir_moves();
    // File renames and creations leave directory paths as they were.
    fs.rename("/a/f", "/a/g").unwrap();
    fs.create("/a/h", 0o644).unwrap();
    assert_eq!(fs.dir_moves(), moves);
    // Renaming a directory above it moves it.
    fs.mkdir("/c", 0o755).unwrap();
    fs.rename("/a", "/c/a2").unwrap();
    assert!(fs.dir_moves() > moves);
    assert_eq!(fs.dir_path(&b, "/a/b").unwrap(), "/c/a2/b");
    let moves = fs.dir_moves();
    fs.rmdir("/c/a2/b").unwrap();
    assert!(fs.dir_moves() > moves);
    assert!(matches!(fs.dir_path(&b, "/c/a2/b"), Err(Error::NotFound)));
    // A new directory at the old path (which may reuse the inode number) is
    // another directory.
    fs.mkdir("/c/a2/b", 0o755).unwrap();
    assert!(matches!(fs.dir_path(&b, "/c/a2/b"), Err(Error::NotFound)));
    let b2 = fs.dir_ref("/c/a2/b").unwrap();
    assert_eq!(fs.dir_path(&b2, "/c/a2/b").unwrap(), "/c/a2/b");
}

#[test]
fn f1_rename_exchange_swaps_files_and_directories_atomically() {
    let fs = fresh(16);
    fs.create("/a", 0o644).unwrap().write_at(b"A", 0).unwrap();
    fs.create("/b", 0o644).unwrap().write_at(b"B", 0).unwrap();
    fs.rename2("/a", "/b", Rename::Exchange).unwrap();
    assert_eq!(read_all(&fs, "/a"), b"B");
    assert_eq!(read_all(&fs, "/b"), b"A");
    // A directory and a file in different directories: the parents' link
    // counts and the directory's parent follow.
    fs.mkdir("/d", 0o755).unwrap();
    fs.mkdir("/d/sub", 0o755).unwrap();
    fs.create("/d/sub/inner", 0o644).unwrap();
    fs.mkdir("/e", 0o755).unwrap();
    fs.create("/e/f", 0o644).unwrap().write_at(b"F", 0).unwrap();
    let moves = fs.dir_moves();
    fs.rename2("/d/sub", "/e/f", Rename::Exchange).unwrap();
    assert!(fs.dir_moves() > moves);
    assert_eq!(read_all(&fs, "/d/sub"), b"F");
    assert!(fs.stat("/e/f").unwrap().is_dir());
    assert!(fs.stat("/e/f/inner").is_ok());
    assert_eq!(fs.stat("/d").unwrap().nlink, 2);
    assert_eq!(fs.stat("/e").unwrap().nlink, 3);
    assert_eq!(fs.stat("/e/f/..").unwrap().ino, fs.stat("/e").unwrap().ino);
    // Both must exist; a directory cannot go below itself; the root is busy.
    assert!(matches!(
        fs.rename2("/a", "/nope", Rename::Exchange),
        Err(Error::NotFound)
    ));
    assert!(matches!(
        fs.rename2("/e", "/e/f/inner", Rename::Exchange),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        fs.rename2("/", "/a", Rename::Exchange),
        Err(Error::Busy(_))
    ));
    // One file under two names: nothing to do.
    fs.link("/a", "/a2").unwrap();
    fs.rename2("/a", "/a2", Rename::Exchange).unwrap();
    assert_eq!(fs.stat("/a").unwrap().nlink, 2);
    // NOREPLACE fails on an existing destination and renames otherwise.
    assert!(matches!(
        fs.rename2("/a", "/b", Rename::NoReplace),
        Err(Error::Exists)
    ));
    fs.rename2("/b", "/c", Rename::NoReplace).unwrap();
    assert_eq!(read_all(&fs, "/c"), b"A");
    let fs = remount(fs);
    assert_eq!(read_all(&fs, "/d/sub"), b"F");
    assert!(fs.stat("/e/f/inner").is_ok());
    assert_eq!(fs.stat("/e").unwrap().nlink, 3);
    let r = udax::fs::fsck(fs.device().clone()).unwrap();
    assert!(r.clean, "{:?}", r.problems);
}

#[test]
fn f1_unnamed_file_is_freed_at_close_or_kept_once_linked() {
    let fs = fresh(16);
    fs.mkdir("/d", 0o755).unwrap();
    let free = fs.statfs().free_blocks;
    // Never linked: gone at close, blocks back.
    let t = fs.create_unnamed("/d", 0o600, true).unwrap();
    t.write_at(&[7u8; 3 * 4096], 0).unwrap();
    assert_eq!(t.stat().unwrap().nlink, 0);
    assert!(fs.read_dir("/d").unwrap().is_empty());
    drop(t);
    assert_eq!(fs.statfs().free_blocks, free);
    // Linked: a normal file from then on.
    let t = fs.create_unnamed("/d", 0o640, true).unwrap();
    t.write_at(b"kept", 0).unwrap();
    t.link("/d/named").unwrap();
    assert!(matches!(t.link("/d/named"), Err(Error::Exists)));
    t.link("/d/second").unwrap();
    assert_eq!(t.stat().unwrap().nlink, 2);
    drop(t);
    // Not linkable (O_EXCL), or all names removed: no name again.
    let x = fs.create_unnamed("/d", 0o600, false).unwrap();
    assert!(matches!(x.link("/d/x"), Err(Error::NotFound)));
    let f = fs.open("/d/second", &OpenOptions::read_only()).unwrap();
    fs.unlink("/d/named").unwrap();
    fs.unlink("/d/second").unwrap();
    assert!(matches!(f.link("/d/again"), Err(Error::NotFound)));
    assert!(matches!(
        fs.create_unnamed("/d/nope", 0o600, true),
        Err(Error::NotFound)
    ));
    fs.create("/d/file", 0o644).unwrap();
    assert!(matches!(
        fs.create_unnamed("/d/file", 0o600, true),
        Err(Error::NotDir)
    ));
    drop((x, f));
    let t = fs.create_unnamed("/d", 0o644, true).unwrap();
    t.write_at(b"kept", 0).unwrap();
    t.link("/d/k").unwrap();
    drop(t);
    let fs = remount(fs);
    assert_eq!(read_all(&fs, "/d/k"), b"kept");
    assert_eq!(fs.stat("/d/k").unwrap().mode & 0o7777, 0o644);
    let r = udax::fs::fsck(fs.device().clone()).unwrap();
    assert!(r.clean, "{:?}", r.problems);
}

#[test]
fn f1_hard_links_share_data_and_count() {
    let fs = fresh(16);
    fs.create("/f", 0o644)
        .unwrap()
        .write_at(b"data", 0)
        .unwrap();
    fs.link("/f", "/g").unwrap();
    assert_eq!(fs.stat("/f").unwrap().nlink, 2);
    fs.unlink("/f").unwrap();
    let fs = remount(fs);
    assert_eq!(read_all(&fs, "/g"), b"data");
    assert_eq!(fs.stat("/g").unwrap().nlink, 1);
    fs.mkdir("/d", 0o755).unwrap();
    assert!(matches!(fs.link("/d", "/d2"), Err(Error::NotPermitted(_))));
}

/// Found by tests/model.rs: `link` checked "a directory" before the new
/// name, and "the file has no name" before "the new name is taken"; linkat(2)
/// looks at the new name first (ENOENT / ENOTDIR / EEXIST), then at the file
/// (EPERM for a directory, ENOENT for an unlinked file).
#[test]
fn f9_link_reports_the_new_name_before_the_file_as_linkat() {
    let fs = fresh(16);
    fs.mkdir("/d", 0o755).unwrap();
    fs.create("/f", 0o644).unwrap();
    let errno = |r: udax::Result<()>| r.unwrap_err().errno();
    assert_eq!(errno(fs.link("/d", "/f")), libc::EEXIST);
    assert_eq!(errno(fs.link("/d", "/d")), libc::EEXIST);
    assert_eq!(errno(fs.link("/d", "/missing/x")), libc::ENOENT);
    assert_eq!(errno(fs.link("/d", "/f/x")), libc::ENOTDIR);
    assert_eq!(errno(fs.link("/d", "/d/x")), libc::EPERM);
    assert_eq!(errno(fs.link("/d", "/x")), libc::EPERM);
    let open = fs.open("/f", &OpenOptions::read_write()).unwrap();
    fs.unlink("/f").unwrap();
    fs.create("/g", 0o644).unwrap();
    assert_eq!(errno(open.link("/g")), libc::EEXIST);
    assert_eq!(errno(open.link("/h")), libc::ENOENT);
    assert!(fs.stat("/h").is_err() && fs.read_dir("/d").unwrap().is_empty());
}

/// Found by tests/model.rs: renaming a file onto a directory above it gave
/// EISDIR; the kernel refuses a target that is an ancestor of the source
/// first, with ENOTEMPTY (EINVAL for RENAME_EXCHANGE).
#[test]
fn f9_rename_onto_an_ancestor_directory_is_enotempty() {
    let fs = fresh(16);
    fs.mkdir("/a", 0o755).unwrap();
    fs.mkdir("/a/b", 0o755).unwrap();
    fs.create("/a/b/f", 0o644).unwrap();
    let errno = |r: udax::Result<()>| r.unwrap_err().errno();
    assert_eq!(errno(fs.rename("/a/b/f", "/a/b")), libc::ENOTEMPTY);
    assert_eq!(errno(fs.rename("/a/b/f", "/a")), libc::ENOTEMPTY);
    assert_eq!(errno(fs.rename("/a/b", "/a")), libc::ENOTEMPTY);
    assert_eq!(
        errno(fs.rename2("/a/b/f", "/a", Rename::Exchange)),
        libc::EINVAL
    );
    assert_eq!(errno(fs.rename("/a", "/a/b/x")), libc::EINVAL);
    assert!(fs.stat("/a/b/f").unwrap().is_file());
}

#[test]
fn f1_unlinked_open_file_lives_until_close() {
    let fs = fresh(16);
    let f = fs.create("/tmp", 0o644).unwrap();
    f.write_at(&[7u8; 100_000], 0).unwrap();
    // File data blocks as fsck counts them (metadata blocks aside: an
    // orphan entry or a directory leaf may come and go on format 3).
    let data_blocks = |fs: &Fs| udax::fs::fsck(fs.device().clone()).unwrap().used_blocks;
    let used_before = data_blocks(&fs);
    fs.unlink("/tmp").unwrap();
    let mut buf = [0u8; 10];
    f.read_at(&mut buf, 50_000).unwrap();
    assert_eq!(buf, [7u8; 10]);
    assert_eq!(data_blocks(&fs), used_before);
    drop(f);
    assert_eq!(data_blocks(&fs), used_before - 25);
}

#[test]
fn f1_orphan_reclaimed_at_mount_after_crash() {
    let dev: Arc<dyn Device> = Arc::new(RamDevice::new(16 << 20));
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone()).unwrap();
    let total = fs.statfs().free_blocks;
    let f = fs.create("/o", 0o644).unwrap();
    f.write_at(&[1u8; 8192], 0).unwrap();
    fs.unlink("/o").unwrap();
    // "Crash": the handle is never closed; the device is mounted again as is.
    std::mem::forget(f);
    let report = udax::fs::fsck(dev.clone()).unwrap();
    assert_eq!(report.orphans.len(), 1);
    let fs2 = Fs::mount(dev.clone()).unwrap();
    assert_eq!(fs2.statfs().free_blocks, total);
    assert!(udax::fs::fsck(dev.clone()).unwrap().orphans.is_empty());
}

#[test]
fn f2_sparse_file_holes_read_zero_and_use_no_blocks() {
    let fs = fresh(16);
    let f = fs.create("/sparse", 0o644).unwrap();
    f.write_at(b"end", 10 << 20).unwrap();
    let st = f.stat().unwrap();
    assert_eq!(st.size, (10 << 20) + 3);
    assert_eq!(st.blocks, 8, "only the last block is allocated");
    let mut buf = vec![1u8; 8192];
    f.read_at(&mut buf, 4 << 20).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
fn f3_short_read_at_eof_and_write_past_eof_leaves_hole() {
    let fs = fresh(16);
    let f = fs.create("/f", 0o644).unwrap();
    f.write_at(b"0123456789", 0).unwrap();
    let mut buf = [0u8; 32];
    assert_eq!(f.read_at(&mut buf, 4).unwrap(), 6);
    assert_eq!(f.read_at(&mut buf, 10).unwrap(), 0);
    assert_eq!(f.read_at(&mut buf, 1000).unwrap(), 0);
    f.write_at(b"X", 20_000).unwrap();
    assert_eq!(f.len(), 20_001);
    let mut mid = vec![9u8; 9990];
    assert_eq!(f.read_at(&mut mid, 10).unwrap(), 9990);
    assert!(mid.iter().all(|&b| b == 0));
    assert_eq!(f.stat().unwrap().blocks, 16, "block 1..3 stay holes");
}

#[test]
fn f4_truncate_shrink_frees_and_zeroes_tail_then_grow_is_hole() {
    let fs = fresh(16);
    let f = fs.create("/t", 0o644).unwrap();
    f.write_at(&[0xabu8; 5 * 4096], 0).unwrap();
    let free = fs.statfs().free_blocks;
    f.set_len(4096 + 100).unwrap();
    assert_eq!(fs.statfs().free_blocks, free + 3);
    f.set_len(3 * 4096).unwrap();
    let mut buf = vec![1u8; 3 * 4096];
    f.read_at(&mut buf, 0).unwrap();
    assert!(buf[..4196].iter().all(|&b| b == 0xab));
    assert!(
        buf[4196..].iter().all(|&b| b == 0),
        "tail zeroed, grown part a hole"
    );
    assert_eq!(f.stat().unwrap().blocks, 16);
    let fs = remount(fs);
    assert_eq!(fs.stat("/t").unwrap().size, 3 * 4096);
}

#[test]
fn f5_fallocate_modes() {
    let fs = fresh(32);
    let f = fs.create("/fa", 0o644).unwrap();
    // Default: allocates and grows.
    f.fallocate(0, 0, 1 << 20).unwrap();
    assert_eq!(f.len(), 1 << 20);
    assert_eq!(f.stat().unwrap().blocks, 2048);
    // KEEP_SIZE: allocates beyond EOF, size unchanged.
    f.fallocate(falloc::KEEP_SIZE, 1 << 20, 1 << 20).unwrap();
    assert_eq!(f.len(), 1 << 20);
    assert_eq!(f.stat().unwrap().blocks, 4096);
    // Punch: needs KEEP_SIZE.
    assert!(matches!(
        f.fallocate(falloc::PUNCH_HOLE, 0, 4096),
        Err(Error::NotSupported(_))
    ));
    f.write_at(&[5u8; 3 * 4096], 0).unwrap();
    f.fallocate(falloc::PUNCH_HOLE | falloc::KEEP_SIZE, 100, 2 * 4096)
        .unwrap();
    let mut b = vec![0u8; 3 * 4096];
    f.read_at(&mut b, 0).unwrap();
    assert!(b[..100].iter().all(|&x| x == 5));
    assert!(b[100..100 + 8192].iter().all(|&x| x == 0));
    assert!(b[8292..].iter().all(|&x| x == 5));
    assert_eq!(
        f.stat().unwrap().blocks,
        4096 - 8,
        "one whole block punched"
    );
    // Zero range.
    f.write_at(&[6u8; 4096], 8192).unwrap();
    f.fallocate(falloc::ZERO_RANGE, 8192 + 10, 20).unwrap();
    f.read_at(&mut b[..4096], 8192).unwrap();
    assert!(b[..10].iter().all(|&x| x == 6) && b[10..30].iter().all(|&x| x == 0));
    // Collapse: aligned only, not to EOF.
    assert!(matches!(
        f.fallocate(falloc::COLLAPSE_RANGE, 100, 4096),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        f.fallocate(falloc::COLLAPSE_RANGE, 0, 1 << 20),
        Err(Error::Invalid(_))
    ));
    f.write_at(b"marker", 16384).unwrap();
    f.fallocate(falloc::COLLAPSE_RANGE, 4096, 8192).unwrap();
    assert_eq!(f.len(), (1 << 20) - 8192);
    let mut m = [0u8; 6];
    f.read_at(&mut m, 8192).unwrap();
    assert_eq!(&m, b"marker");
    // Insert.
    f.fallocate(falloc::INSERT_RANGE, 4096, 4096).unwrap();
    f.read_at(&mut m, 12288).unwrap();
    assert_eq!(&m, b"marker");
    assert!(matches!(
        f.fallocate(falloc::INSERT_RANGE, 1 << 30, 4096),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        f.fallocate(falloc::INSERT_RANGE | falloc::KEEP_SIZE, 0, 4096),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        f.fallocate(0x100, 0, 4096),
        Err(Error::NotSupported(_))
    ));
    assert!(matches!(f.fallocate(0, 0, 0), Err(Error::Invalid(_))));
    let fs = remount(fs);
    let f = fs.open("/fa", &OpenOptions::read_only()).unwrap();
    f.read_at(&mut m, 12288).unwrap();
    assert_eq!(&m, b"marker");
    let r = udax::fs::fsck(fs.device().clone()).unwrap();
    assert!(r.clean, "{:?}", r.problems);
}

#[test]
fn f9_errors_are_typed_and_leave_fs_unchanged() {
    let fs = fresh(16);
    assert!(matches!(fs.stat("/nope"), Err(Error::NotFound)));
    fs.create("/f", 0o644).unwrap();
    assert!(matches!(fs.create("/f", 0o644), Err(Error::Exists)));
    assert!(matches!(fs.mkdir("/f/x", 0o755), Err(Error::NotDir)));
    fs.mkdir("/d", 0o755).unwrap();
    assert!(matches!(fs.unlink("/d"), Err(Error::IsDir)));
    assert!(matches!(
        fs.open("/d", &OpenOptions::read_only()),
        Err(Error::IsDir)
    ));
    let ro = fs.open("/f", &OpenOptions::read_only()).unwrap();
    assert!(matches!(ro.write_at(b"x", 0), Err(Error::BadFd)));
    assert_eq!(Error::NotFound.errno(), libc::ENOENT);
    assert_eq!(Error::NoSpace.errno(), libc::ENOSPC);
    // ENOSPC: a write larger than the device fails whole (nothing allocated).
    let free = fs.statfs().free_blocks;
    let big = fs.create("/big", 0o644).unwrap();
    let r = big.write_at(&vec![1u8; ((free + 10) * 4096) as usize], 0);
    assert!(matches!(r, Err(Error::NoSpace)), "{r:?}");
    assert_eq!(fs.statfs().free_blocks, free);
    assert_eq!(big.len(), 0);
}

/// A path call of the namespace, run both on udax and on the host kernel.
#[derive(Clone, Copy, Debug)]
enum Call {
    Stat,
    ReadDir,
    OpenRead,
    /// O_CREAT | O_WRONLY
    OpenCreate,
    /// O_CREAT | O_EXCL | O_WRONLY
    OpenCreateNew,
    Mkdir,
    Unlink,
    Rmdir,
    Chmod,
    Link,
    Rename,
    Exchange,
}

/// The tree both sides start from: file f ("x"), directory d holding file
/// g, empty directory e.
fn path_rules_tree(fs: &Fs, host: &std::path::Path) {
    fs.create("/f", 0o644).unwrap().write_at(b"x", 0).unwrap();
    fs.mkdir("/d", 0o755).unwrap();
    fs.create("/d/g", 0o644).unwrap();
    fs.mkdir("/e", 0o755).unwrap();
    std::fs::write(host.join("f"), b"x").unwrap();
    std::fs::create_dir(host.join("d")).unwrap();
    std::fs::write(host.join("d/g"), b"").unwrap();
    std::fs::create_dir(host.join("e")).unwrap();
}

/// errno of `call` on udax (0: success).
fn udax_errno(fs: &Fs, call: Call, a: &str, b: &str) -> i32 {
    let (a, b) = (format!("/{a}"), format!("/{b}"));
    let write = |o: OpenOptions| OpenOptions { write: true, ..o };
    let r = match call {
        Call::Stat => fs.stat(&a).map(drop),
        Call::ReadDir => fs.read_dir(&a).map(drop),
        Call::OpenRead => fs.open(&a, &OpenOptions::read_only()).map(drop),
        Call::OpenCreate => fs.open(&a, &write(OpenOptions::create())).map(drop),
        Call::OpenCreateNew => fs
            .open(
                &a,
                &write(OpenOptions {
                    create_new: true,
                    ..OpenOptions::create()
                }),
            )
            .map(drop),
        Call::Mkdir => fs.mkdir(&a, 0o755),
        Call::Unlink => fs.unlink(&a),
        Call::Rmdir => fs.rmdir(&a),
        Call::Chmod => fs.set_permissions(&a, 0o600),
        Call::Link => fs.link(&a, &b),
        Call::Rename => fs.rename(&a, &b),
        Call::Exchange => fs.rename2(&a, &b, Rename::Exchange),
    };
    r.map_or_else(|e| e.errno(), |()| 0)
}

/// errno of `call` on the host kernel, in directory `host` (0: success).
fn host_errno(host: &std::path::Path, call: Call, a: &str, b: &str) -> i32 {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // Joined as strings: Path::join would drop a trailing slash or `.`.
    let (a, b) = (
        format!("{}/{a}", host.display()),
        format!("{}/{b}", host.display()),
    );
    let create = |excl: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).custom_flags(libc::O_CREAT);
        if excl {
            o.custom_flags(libc::O_CREAT | libc::O_EXCL);
        }
        o.open(&a).map(drop)
    };
    let r = match call {
        Call::Stat => std::fs::metadata(&a).map(drop),
        Call::ReadDir => std::fs::read_dir(&a).map(drop),
        Call::OpenRead => std::fs::File::open(&a).map(drop),
        Call::OpenCreate => create(false),
        Call::OpenCreateNew => create(true),
        Call::Mkdir => std::fs::create_dir(&a),
        Call::Unlink => std::fs::remove_file(&a),
        Call::Rmdir => std::fs::remove_dir(&a),
        Call::Chmod => std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o600)),
        Call::Link => std::fs::hard_link(&a, &b),
        Call::Rename => std::fs::rename(&a, &b),
        Call::Exchange => {
            let (ca, cb) = (
                std::ffi::CString::new(a).unwrap(),
                std::ffi::CString::new(b).unwrap(),
            );
            // SAFETY: two NUL-terminated paths, absolute (the dirfds are unused).
            let rc = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    ca.as_ptr(),
                    libc::AT_FDCWD,
                    cb.as_ptr(),
                    libc::RENAME_EXCHANGE,
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
    };
    r.map_or_else(|e| e.raw_os_error().unwrap_or(-1), |()| 0)
}

/// What is left of the tree: every name (recursively) and each file's bytes.
fn udax_tree(fs: &Fs, dir: &str) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for e in fs.read_dir(dir).unwrap() {
        let p = format!("{}/{}", dir.trim_end_matches('/'), e.name);
        if fs.stat(&p).unwrap().is_dir() {
            v.push((p.clone(), Vec::new()));
            v.extend(udax_tree(fs, &p));
        } else {
            v.push((p.clone(), read_all(fs, &p)));
        }
    }
    v
}

fn host_tree(root: &std::path::Path, dir: &str) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = std::fs::read_dir(format!("{}{dir}", root.display()))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut v = Vec::new();
    for n in names {
        let p = format!("{}/{n}", dir.trim_end_matches('/'));
        let host = format!("{}{p}", root.display());
        if std::fs::metadata(&host).unwrap().is_dir() {
            v.push((p.clone(), Vec::new()));
            v.extend(host_tree(root, &p));
        } else {
            v.push((p, std::fs::read(&host).unwrap()));
        }
    }
    v
}

/// Run each call on a fresh tree on udax and on the host: the same errno
/// and the same tree after it.
fn agree_with_the_kernel(cases: &[(Call, &str, &str)]) {
    for &(call, a, b) in cases {
        let fs = fresh(16);
        let host = tempfile::tempdir_in("/dev/shm").unwrap();
        path_rules_tree(&fs, host.path());
        let want = host_errno(host.path(), call, a, b);
        let got = udax_errno(&fs, call, a, b);
        assert_eq!(
            got, want,
            "{call:?} {a:?} {b:?}: udax errno {got}, the kernel's {want}"
        );
        assert_eq!(
            udax_tree(&fs, "/"),
            host_tree(host.path(), "/"),
            "{call:?} {a:?} {b:?}: the trees differ"
        );
    }
}

/// A trailing slash asks for a directory: on a file it is ENOTDIR, and an
/// O_CREAT of "name/" is EISDIR (nothing is created), as in the kernel.
#[test]
fn f9_trailing_slash_on_a_file_is_enotdir_as_in_the_kernel() {
    use Call::*;
    agree_with_the_kernel(&[
        (Stat, "f/", ""),
        (Stat, "f/.", ""),
        (Stat, "f//", ""),
        (Stat, "d/", ""),
        (Stat, "d/g/", ""),
        (Stat, "new/", ""),
        (ReadDir, "f/", ""),
        (OpenRead, "f/", ""),
        (OpenRead, "new/", ""),
        (OpenCreate, "f/", ""),
        (OpenCreate, "new/", ""),
        (OpenCreate, "d/new/", ""),
        (OpenCreate, "nowhere/new/", ""),
        (OpenCreate, "f/.", ""),
        (OpenCreateNew, "new/", ""),
        (OpenCreateNew, "f/", ""),
        (Mkdir, "new/", ""),
        (Mkdir, "f/", ""),
        (Unlink, "f/", ""),
        (Unlink, "f/.", ""),
        (Unlink, "d/g/", ""),
        (Unlink, "e/", ""),
        (Unlink, "new/", ""),
        (Rmdir, "f/", ""),
        (Rmdir, "e/", ""),
        (Chmod, "f/", ""),
        (Link, "f/", "h"),
        (Link, "f", "h/"),
        (Link, "f", "e/"),
        (Rename, "f/", "h"),
        (Rename, "f", "h/"),
        (Rename, "f", "d/g/"),
        (Rename, "e", "h/"),
        (Rename, "e/", "h"),
        (Exchange, "f/", "e"),
        (Exchange, "e/", "d/"),
    ]);
}

/// A path whose last component is `.` or `..` (or the root) names a
/// directory but no entry: nothing can remove, create or rename it there;
/// each call fails as the kernel's does and leaves the tree alone.
#[test]
fn f9_dot_and_dotdot_as_last_component_remove_nothing() {
    use Call::*;
    let mut cases = Vec::new();
    for p in [
        "e/.", "e/..", "d/.", "d/..", "d/./", "d/../", "f/.", "new/.", ".",
    ] {
        cases.extend([
            (Unlink, p, ""),
            (Rmdir, p, ""),
            (Mkdir, p, ""),
            (OpenCreate, p, ""),
            (Rename, p, "x"),
            (Rename, "f", p),
            (Link, "f", p),
        ]);
    }
    agree_with_the_kernel(&cases);
    // The root: as the kernel's, without a host tree to compare with.
    let fs = fresh(16);
    assert!(matches!(fs.rmdir("/"), Err(Error::Busy(_))));
    assert!(matches!(fs.unlink("/"), Err(Error::IsDir)));
    assert!(matches!(fs.unlink("//"), Err(Error::IsDir)));
    assert!(matches!(fs.mkdir("/", 0o755), Err(Error::Exists)));
    assert!(matches!(fs.rename("/", "/x"), Err(Error::Busy(_))));
}

#[test]
fn f6_large_file_gets_2mib_aligned_extents() {
    let fs = fresh(64);
    let f = fs.create("/big", 0o644).unwrap();
    f.write_at(&vec![3u8; 16 << 20], 0).unwrap();
    for chunk in 0..8u64 {
        match f.iomap(chunk * 512) {
            udax::fs::extent::Lookup::Mapped { dev_blk, len } => {
                assert_eq!(dev_blk % 512, 0, "chunk {chunk} aligned");
                assert!(len >= 512);
            }
            other => panic!("chunk {chunk}: {other:?}"),
        }
    }
}

#[test]
fn f7_many_operations_force_checkpoints_and_remount() {
    let fs = fresh(8);
    let last = 99;
    for round in 0..=last {
        for i in 0..50 {
            let f = fs.open(&format!("/f{i}"), &OpenOptions::create()).unwrap();
            f.write_at(&[round as u8; 100], 0).unwrap();
        }
        for i in (0..50).step_by(3) {
            fs.unlink(&format!("/f{i}")).unwrap();
        }
    }
    assert!(
        fs.journal_stats().checkpoints > 0,
        "log wrapped through checkpoints"
    );
    let fs = remount(fs);
    assert_eq!(read_all(&fs, "/f1"), vec![last as u8; 100]);
    assert!(matches!(fs.stat("/f0"), Err(Error::NotFound)));
}

#[test]
fn f1_concurrent_writers_on_different_and_same_files() {
    let fs = fresh(64);
    let shared = Arc::new(fs.create("/shared", 0o644).unwrap());
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let fs = fs.clone();
            let shared = shared.clone();
            s.spawn(move || {
                let f = fs.create(&format!("/own{t}"), 0o644).unwrap();
                for i in 0..200u64 {
                    f.write_at(&[t; 1000], i * 1000).unwrap();
                    shared
                        .write_at(&[t; 512], (i * 4 + t as u64) * 512)
                        .unwrap();
                }
            });
        }
    });
    for t in 0..4u8 {
        assert_eq!(read_all(&fs, &format!("/own{t}")), vec![t; 200_000]);
    }
    let data = read_all(&fs, "/shared");
    for (i, c) in data.chunks(512).enumerate() {
        assert!(c.iter().all(|&b| b == (i % 4) as u8));
    }
    let fs = remount(fs);
    assert!(udax::fs::fsck(fs.device().clone()).unwrap().clean);
}

#[test]
fn f3_append_handle_writes_at_end_of_file() {
    let fs = fresh(16);
    fs.create("/log", 0o644)
        .unwrap()
        .write_at(b"abc", 0)
        .unwrap();
    let f = fs
        .open(
            "/log",
            &OpenOptions {
                append: true,
                ..OpenOptions::read_write()
            },
        )
        .unwrap();
    f.write_at(b"def", 0).unwrap();
    assert_eq!(read_all(&fs, "/log"), b"abcdef");
}

#[test]
fn f4_set_times_like_utimensat_survives_remount() {
    let fs = fresh(16);
    let f = fs.create("/t", 0o644).unwrap();
    f.write_at(b"abc", 0).unwrap();
    let before = f.stat().unwrap();
    fs.set_times("/t", Some(1_000_000_000_123), Some(2_000_000_000_456))
        .unwrap();
    let st = fs.stat("/t").unwrap();
    assert_eq!(
        (st.atime_ns, st.mtime_ns),
        (1_000_000_000_123, 2_000_000_000_456)
    );
    assert!(st.ctime_ns >= before.ctime_ns, "ctime moves to now");
    // None leaves a time as it is (UTIME_OMIT).
    f.set_times(None, Some(3_000_000_000_000)).unwrap();
    let st = f.stat().unwrap();
    assert_eq!(
        (st.atime_ns, st.mtime_ns),
        (1_000_000_000_123, 3_000_000_000_000)
    );
    drop(f);
    let fs = remount(fs);
    let st = fs.stat("/t").unwrap();
    assert_eq!(
        (st.atime_ns, st.mtime_ns),
        (1_000_000_000_123, 3_000_000_000_000)
    );
    assert!(matches!(
        fs.set_times("/missing", None, None),
        Err(Error::NotFound)
    ));
}

#[test]
fn f4_a_write_after_a_stat_moves_mtime_even_within_one_clock_tick() {
    // Multigrain timestamps (Linux 6.13): writes nobody looked at in between
    // may share the clock's last tick, but one after a stat is always later.
    let fs = fresh(16);
    let f = fs.create("/t", 0o644).unwrap();
    for i in 0..200u64 {
        // Overwrites (no size change) and appends (a size change) alike.
        let off = if i % 2 == 0 { 0 } else { f.len() };
        f.write_at(b"x", off).unwrap();
        let a = f.stat().unwrap();
        f.write_at(b"y", off).unwrap();
        let b = f.stat().unwrap();
        assert!(
            b.mtime_ns > a.mtime_ns,
            "round {i}: {} then {}",
            a.mtime_ns,
            b.mtime_ns
        );
        assert!(b.ctime_ns > a.ctime_ns, "round {i}: ctime");
    }
}

#[test]
fn f4_mtime_never_goes_back_across_writes_and_files() {
    // A precise stamp (a write after a stat) is later than the coarse clock;
    // the writes that follow, to this file or another, are not earlier.
    let fs = fresh(16);
    let (f, g) = (
        fs.create("/f", 0o644).unwrap(),
        fs.create("/g", 0o644).unwrap(),
    );
    let mut last = 0;
    for i in 0..500u64 {
        f.write_at(b"a", i).unwrap();
        let seen = f.stat().unwrap().mtime_ns; // the next write of f is precise
        f.write_at(b"b", i).unwrap();
        let precise = f.stat().unwrap().mtime_ns;
        f.write_at(b"c", i + 1).unwrap();
        g.write_at(b"d", i).unwrap();
        let (ft, gt) = (
            fs.stat("/f").unwrap().mtime_ns,
            fs.stat("/g").unwrap().mtime_ns,
        );
        assert!(seen >= last && precise > seen, "round {i}");
        assert!(
            ft >= precise && gt >= precise,
            "round {i}: {precise} then f {ft}, g {gt}"
        );
        last = ft.max(gt);
    }
}

#[test]
fn f4_a_write_after_a_future_mtime_sets_the_present() {
    // As the kernel: a change stamps the current time, even over an explicit
    // mtime in the future (touch -d 2100).
    let fs = fresh(16);
    let f = fs.create("/t", 0o644).unwrap();
    let future = 4_102_444_800_000_000_000; // 2100-01-01
    f.set_times(None, Some(future)).unwrap();
    f.write_at(b"x", 0).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let t = f.stat().unwrap().mtime_ns;
    assert!(
        t <= now && now - t < 5_000_000_000,
        "append: mtime {t}, now {now}"
    );
    // An overwrite (no size change, no metadata otherwise), and after a remount.
    f.set_times(None, Some(future)).unwrap();
    f.write_at(b"y", 0).unwrap();
    let t = f.stat().unwrap().mtime_ns;
    assert!(
        t <= now + 5_000_000_000 && t + 5_000_000_000 > now,
        "overwrite: mtime {t}"
    );
    drop(f);
    let fs = remount(fs);
    let t2 = fs.stat("/t").unwrap().mtime_ns;
    assert_eq!(t2, t, "the present mtime survives a remount");
}

/// The metadata bytes a fresh checkpoint measures (the accounting's ground truth).
fn measured_metadata_bytes(fs: &Fs) -> u64 {
    fs.checkpoint().unwrap();
    fs.statfs().metadata_bytes
}

#[test]
fn f9_create_and_delete_churn_never_runs_out_of_metadata_space() {
    // The churn bug: files created before a checkpoint and deleted after it
    // drove the metadata count below zero: ENOSPC on an empty file system,
    // then a panic in the next checkpoint (format 2's image accounting).
    let fs = fresh_v2(64);
    let empty = measured_metadata_bytes(&fs);
    for round in 0..4 {
        for i in 0..1500 {
            let f = fs.create(&format!("/f{i}"), 0o644).unwrap();
            if i % 2 == 0 {
                f.write_at(&[round as u8; 5000], 0).unwrap();
            }
        }
        fs.checkpoint().unwrap();
        for i in 0..1500 {
            fs.unlink(&format!("/f{i}")).unwrap();
        }
        // The running count is the measured one, not an estimate that drifts.
        let st = fs.statfs();
        assert_eq!(st.metadata_bytes, empty, "round {round}");
        fs.create("/after", 0o644).unwrap();
        fs.unlink("/after").unwrap();
    }
    assert_eq!(measured_metadata_bytes(&fs), empty);
    let fs = remount(fs);
    assert_eq!(fs.statfs().metadata_bytes, empty);
    assert!(fs.read_dir("/").unwrap().is_empty());
}

#[test]
fn f9_metadata_count_matches_each_checkpoint_across_operations() {
    let fs = fresh_v2(16);
    fs.mkdir("/d", 0o755).unwrap();
    for i in 0..40 {
        let f = fs
            .create(&format!("/d/file-with-a-long-name-{i}"), 0o644)
            .unwrap();
        f.write_at(&vec![1u8; 4096 * (i % 5 + 1)], 4096 * 3 * i as u64)
            .unwrap();
    }
    let src = fs
        .open("/d/file-with-a-long-name-3", &OpenOptions::read_write())
        .unwrap();
    let dst = fs.create("/d/clone", 0o644).unwrap();
    fs.clone_file(&src, &dst).unwrap();
    fs.rename("/d/file-with-a-long-name-4", "/x").unwrap();
    fs.link("/x", "/d/x2").unwrap();
    src.set_len(100).unwrap();
    let counted = fs.statfs().metadata_bytes;
    let measured = measured_metadata_bytes(&fs);
    assert!(counted >= measured, "{counted} < {measured}");
    // Inode records are exact; only shared-block ranges are an upper bound.
    assert!(counted - measured <= 64, "{counted} vs {measured}");
    for i in 0..40 {
        let _ = fs.unlink(&format!("/d/file-with-a-long-name-{i}"));
    }
    // The deletes unshared the clone's blocks: the refcount record went, which
    // the count learns only from the next checkpoint.
    let counted = fs.statfs().metadata_bytes;
    let measured = measured_metadata_bytes(&fs);
    assert!(
        counted >= measured && counted - measured <= 64,
        "{counted} vs {measured}"
    );
    assert_eq!(fs.statfs().metadata_bytes, measured);
}

#[test]
fn f9_a_full_metadata_area_gives_enospc_and_recovers_after_deletes() {
    // Format 2 on 4 MiB: the checkpoint slot (256 KiB) is the limit, long
    // before data.
    let fs = fresh_v2(4);
    let cap = fs.statfs().metadata_capacity;
    let mut n = 0;
    let err = loop {
        match fs.create(&format!("/{n:0>200}"), 0o644) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
        assert!(n < 100_000, "metadata never filled");
    };
    assert!(matches!(err, Error::NoSpace), "{err:?}");
    assert!(n > 100, "only {n} files fit");
    let st = fs.statfs();
    assert!(st.metadata_bytes <= cap);
    assert!(st.free_blocks > 0, "data space is not what ran out");
    // A full slot still checkpoints (no panic, nothing lost) and remounts.
    fs.checkpoint().unwrap();
    let fs = remount(fs);
    assert_eq!(fs.read_dir("/").unwrap().len(), n);
    assert!(matches!(fs.create("/one-more", 0o644), Err(Error::NoSpace)));
    // Deleting makes room again.
    for i in 0..10 {
        fs.unlink(&format!("/{i:0>200}")).unwrap();
    }
    fs.create("/one-more", 0o644).unwrap();
}

#[test]
fn f9_format_3_small_files_fill_the_data_area_then_enospc_and_deletes_make_room() {
    // Format 3's inodes and directories grow into the data area: creates
    // stop only when the device is full, not at a fixed metadata share.
    let fs = fresh(16);
    let (mut n, mut files) = (0u64, 0u64);
    let err = loop {
        let r = fs.create(&format!("/{n:0>40}"), 0o644).and_then(|f| {
            files += 1;
            f.write_at(&[n as u8; 4096], 0).map(|_| ())
        });
        match r {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
        assert!(n < 100_000, "never filled");
    };
    assert!(matches!(err, Error::NoSpace), "{err:?}");
    let st = fs.statfs();
    assert!(
        st.free_blocks < 100,
        "{} blocks still free after {n} files",
        st.free_blocks
    );
    // More files than format 2's 1/64 slot would hold for this size.
    assert!(n > 2000, "only {n} files of 4 KiB on 16 MiB");
    let fs = remount(fs);
    assert_eq!(fs.read_dir("/").unwrap().len() as u64, files);
    let probe = fs.create("/probe", 0o644);
    assert!(probe.and_then(|f| f.write_at(&[1; 4096], 0)).is_err());
    let _ = fs.unlink("/probe");
    for i in 0..50 {
        fs.unlink(&format!("/{i:0>40}")).unwrap();
    }
    // The blocks come back (metadata ones at the next log truncation).
    fs.checkpoint().unwrap();
    let f = fs.create("/one-more", 0o644).unwrap();
    f.write_at(&[9; 4096 * 8], 0).unwrap();
    drop(f);
    let r = udax::fs::fsck(fs.device().clone()).unwrap();
    assert!(r.clean, "{:?}", r.problems);
}

#[test]
fn f8_a_read_only_mount_of_format_3_replays_into_memory_and_writes_nothing() {
    let dev = Arc::new(RamDevice::new(16 << 20));
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone()).unwrap();
    fs.mkdir("/d", 0o755).unwrap();
    fs.create("/d/f", 0o644)
        .unwrap()
        .write_at(b"kept", 0)
        .unwrap();
    // Left with its log unreplayed in place (no unmount): a crash image.
    let img = dev.image();
    drop(fs);
    let dev = Arc::new(RamDevice::from_image(img.clone()));
    let ro = udax::fs::MountOptions {
        read_only: true,
        salvage: false,
    };
    let fs = Fs::mount_with(dev.clone(), &ro).unwrap();
    assert_eq!(read_all(&fs, "/d/f"), b"kept");
    assert!(matches!(fs.create("/x", 0o644), Err(Error::ReadOnly)));
    assert!(matches!(fs.checkpoint(), Err(Error::ReadOnly)));
    fs.sync().unwrap();
    fs.unmount().unwrap();
    assert!(dev.image() == img, "a read-only mount wrote");
}

#[test]
fn f9_a_path_longer_than_the_file_system_resolves_is_enametoolong() {
    // The kernel limits the string one call passes to PATH_MAX (the shim
    // checks the caller's own string, probe row `stat_path_max`); the file
    // system resolves paths of up to `fs::MAX_PATH` bytes, which a path
    // relative to a deep directory may need once joined to it.
    let fs = fresh(16);
    fs.mkdir("/d", 0o755).unwrap();
    // "/d" + "/./" repeated: a valid path of any length naming /d.
    let pad = |n: usize| format!("/d{}", "/.".repeat((n - 2) / 2));
    let ok = pad(udax::fs::MAX_PATH - 1);
    assert!(ok.len() <= udax::fs::MAX_PATH && ok.len() > 4096);
    fs.stat(&ok).unwrap();
    let long = pad(udax::fs::MAX_PATH + 2);
    assert!(long.len() > udax::fs::MAX_PATH);
    assert!(matches!(fs.stat(&long), Err(Error::NameTooLong)));
    assert!(matches!(
        fs.create(&format!("{long}/f"), 0o644),
        Err(Error::NameTooLong)
    ));
    // The same on the host kernel.
    let host = tempfile::tempdir().unwrap();
    let base = host.path().to_str().unwrap().to_string();
    let hlong = format!("{base}{}", "/.".repeat((4096 - base.len()) / 2 + 1));
    let e = std::fs::metadata(&hlong).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG));
}
