//! Symbolic links in the library (issue 18): creation, `readlink`/`lstat`,
//! resolution as the kernel's path walk (relative targets from the link's
//! directory, `..` after a link, 40 links at most), links that leave the
//! file system, and the calls that do not follow a link at the end.

mod common;

use common::fresh;
use std::sync::Arc;
use udax::device::{Device, RamDevice};
use udax::fs::{fsck, Fs, MkfsOptions, OpenOptions, MAX_SYMLINKS};
use udax::Error;

fn remount(fs: Fs) -> Fs {
    let dev = fs.device().clone();
    drop(fs);
    Fs::mount(dev).unwrap()
}

fn write(fs: &Fs, path: &str, data: &[u8]) {
    fs.open(path, &OpenOptions::create())
        .unwrap()
        .write_at(data, 0)
        .unwrap();
}

fn read(fs: &Fs, path: &str) -> Vec<u8> {
    let f = fs.open(path, &OpenOptions::read_only()).unwrap();
    let mut v = vec![0u8; f.len() as usize];
    f.read_at(&mut v, 0).unwrap();
    v
}

fn escape_path(e: Error) -> String {
    match e {
        Error::Escape { path } => path,
        e => panic!("expected an escape, got {e:?}"),
    }
}

#[test]
fn symlink_stores_its_target_and_lstat_shows_the_link_stat_follows_it() {
    let fs = fresh(32);
    fs.mkdir("/d", 0o755).unwrap();
    write(&fs, "/d/f", b"hello");
    fs.symlink(b"f", "/d/l").unwrap();
    assert_eq!(fs.readlink("/d/l").unwrap(), b"f");
    let l = fs.lstat("/d/l").unwrap();
    assert!(l.is_symlink());
    assert_eq!(l.mode, libc::S_IFLNK | 0o777);
    assert_eq!((l.size, l.nlink, l.blocks), (1, 1, 0));
    let s = fs.stat("/d/l").unwrap();
    assert!(s.is_file());
    assert_eq!(s.ino, fs.stat("/d/f").unwrap().ino);
    assert_eq!(read(&fs, "/d/l"), b"hello");
    let e = fs.read_dir("/d").unwrap();
    let lt = e.iter().find(|e| e.name == "l").unwrap().file_type;
    assert_eq!(lt, libc::DT_LNK);
    // readlink of anything else is EINVAL.
    assert_eq!(fs.readlink("/d/f").unwrap_err().errno(), libc::EINVAL);
    assert_eq!(fs.readlink("/d").unwrap_err().errno(), libc::EINVAL);
}

#[test]
fn fast_and_block_targets_of_every_length_survive_remount_and_fsck_is_clean() {
    let fs = fresh(32);
    let lens = [1usize, 100, 144, 145, 1000, 4095];
    for &n in &lens {
        let t: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
        fs.symlink(&t, &format!("/l{n}")).unwrap();
    }
    let fs = remount(fs);
    for &n in &lens {
        let t = fs.readlink(&format!("/l{n}")).unwrap();
        assert_eq!(t.len(), n);
        assert!(t
            .iter()
            .enumerate()
            .all(|(i, &b)| b == b'a' + (i % 26) as u8));
        let st = fs.lstat(&format!("/l{n}")).unwrap();
        assert_eq!(st.size, n as u64);
        // Past the slot's 144 bytes, the target has a block of its own.
        assert_eq!(st.blocks, if n > 144 { 8 } else { 0 }, "{n}");
    }
    let dev = fs.device().clone();
    drop(fs);
    let r = fsck(dev.clone()).unwrap();
    assert!(r.clean, "{:?}", r.problems);
    // Removing the links frees their blocks.
    let fs = Fs::mount(dev.clone()).unwrap();
    for &n in &lens {
        fs.unlink(&format!("/l{n}")).unwrap();
    }
    drop(fs);
    let after = fsck(dev).unwrap();
    assert!(after.clean, "{:?}", after.problems);
    assert_eq!(after.used_blocks, r.used_blocks - 3);
}

#[test]
fn symlink_refuses_an_empty_an_overlong_or_an_existing_name() {
    let fs = fresh(16);
    fs.mkdir("/d", 0o755).unwrap();
    assert_eq!(fs.symlink(b"", "/a").unwrap_err().errno(), libc::ENOENT);
    let long = vec![b'x'; 4096];
    assert_eq!(
        fs.symlink(&long, "/a").unwrap_err().errno(),
        libc::ENAMETOOLONG
    );
    assert_eq!(fs.symlink(b"x", "/d").unwrap_err().errno(), libc::EEXIST);
    fs.symlink(b"nowhere", "/dangling").unwrap();
    assert_eq!(
        fs.symlink(b"x", "/dangling").unwrap_err().errno(),
        libc::EEXIST
    );
    assert_eq!(
        fs.symlink(b"x", "/missing/a").unwrap_err().errno(),
        libc::ENOENT
    );
    // mkdir and O_CREAT|O_EXCL on a dangling link: EEXIST, not through it.
    assert_eq!(
        fs.mkdir("/dangling", 0o755).unwrap_err().errno(),
        libc::EEXIST
    );
    let excl = OpenOptions {
        create_new: true,
        write: true,
        ..Default::default()
    };
    assert_eq!(
        fs.open("/dangling", &excl).unwrap_err().errno(),
        libc::EEXIST
    );
    assert_eq!(fs.stat("/dangling").unwrap_err().errno(), libc::ENOENT);
}

#[test]
fn a_format_2_file_system_refuses_symlinks() {
    let dev: Arc<dyn Device> = Arc::new(RamDevice::new(16 << 20));
    let v2 = MkfsOptions {
        format: 2,
        ..Default::default()
    };
    Fs::mkfs(&*dev, &v2).unwrap();
    let fs = Fs::mount(dev).unwrap();
    assert!(!fs.has_symlinks());
    assert_eq!(
        fs.symlink(b"x", "/l").unwrap_err().errno(),
        libc::EOPNOTSUPP
    );
}

#[test]
fn resolution_follows_links_in_the_middle_and_dotdot_goes_up_from_where_the_link_led() {
    let fs = fresh(16);
    fs.mkdir("/a", 0o755).unwrap();
    fs.mkdir("/b", 0o755).unwrap();
    fs.mkdir("/b/c", 0o755).unwrap();
    write(&fs, "/b/x", b"in b");
    write(&fs, "/a/x", b"in a");
    fs.symlink(b"../b/c", "/a/l").unwrap();
    // The kernel's `..` after a link: the parent of where it went (/b), not /a.
    assert_eq!(read(&fs, "/a/l/../x"), b"in b");
    write(&fs, "/a/l/new", b"through");
    assert_eq!(read(&fs, "/b/c/new"), b"through");
    // A chain of links, relative to each link's own directory.
    fs.symlink(b"a/l", "/chain").unwrap();
    assert_eq!(
        fs.stat("/chain/new").unwrap().ino,
        fs.stat("/b/c/new").unwrap().ino
    );
    // A link to a file used as a directory: ENOTDIR; a trailing slash too.
    fs.symlink(b"b/x", "/tofile").unwrap();
    assert_eq!(fs.stat("/tofile/y").unwrap_err().errno(), libc::ENOTDIR);
    assert_eq!(fs.stat("/tofile/").unwrap_err().errno(), libc::ENOTDIR);
    // A trailing slash follows even for lstat.
    assert!(fs.lstat("/a/l/").unwrap().is_dir());
    assert!(fs.lstat("/a/l").unwrap().is_symlink());
    // The canonical path of a directory reached through links.
    assert_eq!(fs.real_dir("/chain").unwrap(), "/b/c");
    assert_eq!(fs.real_dir("/a/l/..").unwrap(), "/b");
    assert_eq!(fs.real_dir("/b/c").unwrap(), "/b/c");
    assert_eq!(fs.real_dir("/b/x").unwrap_err().errno(), libc::ENOTDIR);
}

#[test]
fn forty_links_resolve_and_the_forty_first_is_eloop() {
    let fs = fresh(16);
    write(&fs, "/f", b"end");
    // l1 -> f, l2 -> l1, ... l40 -> l39: 40 links to follow from l40.
    fs.symlink(b"f", "/l1").unwrap();
    for i in 2..=MAX_SYMLINKS + 1 {
        fs.symlink(format!("l{}", i - 1).as_bytes(), &format!("/l{i}"))
            .unwrap();
    }
    assert_eq!(read(&fs, &format!("/l{MAX_SYMLINKS}")), b"end");
    let over = format!("/l{}", MAX_SYMLINKS + 1);
    assert_eq!(fs.stat(&over).unwrap_err().errno(), libc::ELOOP);
    // lstat of it does not follow; a loop is ELOOP too.
    assert!(fs.lstat(&over).unwrap().is_symlink());
    fs.symlink(b"loop", "/loop").unwrap();
    assert_eq!(fs.stat("/loop").unwrap_err().errno(), libc::ELOOP);
    assert_eq!(fs.stat("/loop/x").unwrap_err().errno(), libc::ELOOP);
}

#[test]
fn a_link_that_leaves_the_file_system_reports_where_resolution_goes_on() {
    let fs = fresh(16);
    fs.mkdir("/d", 0o755).unwrap();
    fs.symlink(b"/etc", "/d/abs").unwrap();
    fs.symlink(b"../../outside", "/d/up").unwrap();
    assert_eq!(
        escape_path(fs.stat("/d/abs/hostname").unwrap_err()),
        "/etc/hostname"
    );
    assert_eq!(escape_path(fs.stat("/d/abs").unwrap_err()), "/etc");
    // `..` past the root: relative to the mount point.
    assert_eq!(escape_path(fs.stat("/d/up/x").unwrap_err()), "../outside/x");
    assert_eq!(escape_path(fs.stat("/../y").unwrap_err()), "../y");
    // Creating through such a link: the new name goes with the path.
    assert_eq!(
        escape_path(fs.mkdir("/d/abs/new", 0o755).unwrap_err()),
        "/etc/new"
    );
    assert_eq!(fs.stat("/d/abs/x").unwrap_err().errno(), libc::EXDEV);
    // A call that does not follow the last link stays inside.
    assert!(fs.lstat("/d/abs").unwrap().is_symlink());
    fs.unlink("/d/abs").unwrap();
}

#[test]
fn open_nofollow_is_eloop_and_o_creat_through_a_dangling_link_creates_its_target() {
    let fs = fresh(16);
    fs.mkdir("/d", 0o755).unwrap();
    write(&fs, "/d/f", b"x");
    fs.symlink(b"f", "/d/l").unwrap();
    let nofollow = OpenOptions {
        nofollow: true,
        ..OpenOptions::read_only()
    };
    assert_eq!(fs.open("/d/l", &nofollow).unwrap_err().errno(), libc::ELOOP);
    assert!(fs.open("/d/f", &nofollow).is_ok());
    // O_CREAT (without O_EXCL) on a link to nothing creates the target.
    fs.symlink(b"made", "/d/dangling").unwrap();
    let creat = OpenOptions {
        write: true,
        create: true,
        ..Default::default()
    };
    fs.open("/d/dangling", &creat)
        .unwrap()
        .write_at(b"via link", 0)
        .unwrap();
    assert_eq!(read(&fs, "/d/made"), b"via link");
    assert!(fs.lstat("/d/dangling").unwrap().is_symlink());
    // ... but not with O_NOFOLLOW.
    fs.symlink(b"other", "/d/dangling2").unwrap();
    let creat_nofollow = OpenOptions {
        nofollow: true,
        ..creat
    };
    assert_eq!(
        fs.open("/d/dangling2", &creat_nofollow)
            .unwrap_err()
            .errno(),
        libc::ELOOP
    );
    assert_eq!(fs.stat("/d/other").unwrap_err().errno(), libc::ENOENT);
}

#[test]
fn unlink_rename_and_link_act_on_the_link_itself() {
    let fs = fresh(16);
    fs.mkdir("/d", 0o755).unwrap();
    write(&fs, "/d/f", b"data");
    fs.symlink(b"f", "/d/l").unwrap();
    // link(2) makes a second name for the link, not for its target.
    fs.link("/d/l", "/d/l2").unwrap();
    assert!(fs.lstat("/d/l2").unwrap().is_symlink());
    assert_eq!(fs.lstat("/d/l").unwrap().nlink, 2);
    // AT_SYMLINK_FOLLOW links the target.
    fs.link_following("/d/l", "/d/f2").unwrap();
    assert_eq!(fs.stat("/d/f").unwrap().nlink, 2);
    assert!(fs.lstat("/d/f2").unwrap().is_file());
    fs.rename("/d/l", "/d/moved").unwrap();
    assert_eq!(fs.readlink("/d/moved").unwrap(), b"f");
    let e = fs.read_dir("/d").unwrap();
    assert_eq!(
        e.iter().find(|e| e.name == "moved").unwrap().file_type,
        libc::DT_LNK
    );
    fs.unlink("/d/moved").unwrap();
    fs.unlink("/d/l2").unwrap();
    assert_eq!(read(&fs, "/d/f"), b"data");
    // rmdir of a link to a directory: ENOTDIR; unlink removes the link.
    fs.mkdir("/d/sub", 0o755).unwrap();
    fs.symlink(b"sub", "/d/ls").unwrap();
    assert_eq!(fs.rmdir("/d/ls").unwrap_err().errno(), libc::ENOTDIR);
    fs.unlink("/d/ls").unwrap();
    assert!(fs.stat("/d/sub").unwrap().is_dir());
    let dev = fs.device().clone();
    drop(fs);
    assert!(fsck(dev).unwrap().clean);
}

#[test]
fn lchown_and_utimensat_nofollow_change_the_link_not_its_target() {
    let fs = fresh(16);
    write(&fs, "/f", b"x");
    fs.symlink(b"f", "/l").unwrap();
    let f0 = fs.stat("/f").unwrap();
    fs.set_owner_nofollow("/l", Some(1234), Some(5678)).unwrap();
    let l = fs.lstat("/l").unwrap();
    assert_eq!((l.uid, l.gid), (1234, 5678));
    assert_eq!(
        (fs.stat("/f").unwrap().uid, fs.stat("/f").unwrap().gid),
        (f0.uid, f0.gid)
    );
    fs.set_times_nofollow("/l", Some(7_000_000_000), Some(9_000_000_000))
        .unwrap();
    let l = fs.lstat("/l").unwrap();
    assert_eq!((l.atime_ns, l.mtime_ns), (7_000_000_000, 9_000_000_000));
    assert_eq!(fs.stat("/f").unwrap().mtime_ns, f0.mtime_ns);
    // chown and utimes follow.
    fs.set_owner("/l", Some(42), None).unwrap();
    assert_eq!(fs.stat("/f").unwrap().uid, 42);
    assert_eq!(fs.lstat("/l").unwrap().uid, 1234);
    // A link's mode cannot change (Linux: EOPNOTSUPP); chmod follows.
    assert_eq!(
        fs.set_permissions_nofollow("/l", 0o600)
            .unwrap_err()
            .errno(),
        libc::EOPNOTSUPP
    );
    fs.set_permissions("/l", 0o600).unwrap();
    assert_eq!(fs.stat("/f").unwrap().mode & 0o7777, 0o600);
    assert_eq!(fs.lstat("/l").unwrap().mode & 0o7777, 0o777);
    // All of it survives a remount.
    let fs = remount(fs);
    assert_eq!(fs.lstat("/l").unwrap().uid, 1234);
}
