//! Special files in the library (issue 18): mknod of FIFOs, sockets and
//! device nodes; `stat` shows their type and device number; they do not
//! open as files (a device node: EACCES, udax is nodev; a socket: ENXIO).

mod common;

use common::fresh;
use std::sync::Arc;
use udax::device::{Device, RamDevice};
use udax::fs::{fsck, Fs, MkfsOptions, OpenOptions};

fn remount(fs: Fs) -> Fs {
    let dev = fs.device().clone();
    drop(fs);
    Fs::mount(dev).unwrap()
}

#[test]
fn mknod_makes_fifos_sockets_and_devices_with_their_rdev_and_they_survive_remount() {
    let fs = fresh(16);
    let chr = libc::makedev(1, 3);
    let blk = libc::makedev(8, 17);
    fs.mknod("/fifo", libc::S_IFIFO | 0o640, 0).unwrap();
    fs.mknod("/sock", libc::S_IFSOCK | 0o600, 0).unwrap();
    fs.mknod("/null", libc::S_IFCHR | 0o666, chr).unwrap();
    fs.mknod("/sdb1", libc::S_IFBLK | 0o660, blk).unwrap();
    fs.mknod("/plain", 0o644, 0).unwrap();
    let fs = remount(fs);
    let types: Vec<(String, u8)> = fs
        .read_dir("/")
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.file_type))
        .collect();
    assert_eq!(
        types,
        [
            ("fifo".to_string(), libc::DT_FIFO),
            ("null".to_string(), libc::DT_CHR),
            ("plain".to_string(), libc::DT_REG),
            ("sdb1".to_string(), libc::DT_BLK),
            ("sock".to_string(), libc::DT_SOCK),
        ]
    );
    let st = |p: &str| fs.stat(p).unwrap();
    assert_eq!(st("/fifo").mode, libc::S_IFIFO | 0o640);
    assert_eq!((st("/fifo").rdev, st("/fifo").size), (0, 0));
    assert_eq!(st("/sock").mode, libc::S_IFSOCK | 0o600);
    assert_eq!(
        (st("/null").mode, st("/null").rdev),
        (libc::S_IFCHR | 0o666, chr)
    );
    assert_eq!(
        (st("/sdb1").mode, st("/sdb1").rdev),
        (libc::S_IFBLK | 0o660, blk)
    );
    assert!(st("/plain").is_file());
    // They are names like any: rename, link, unlink.
    fs.rename("/fifo", "/fifo2").unwrap();
    fs.link("/null", "/null2").unwrap();
    assert_eq!(st("/null").nlink, 2);
    fs.unlink("/sock").unwrap();
    let dev = fs.device().clone();
    drop(fs);
    let r = fsck(dev).unwrap();
    assert!(r.clean, "{:?}", r.problems);
}

#[test]
fn special_files_do_not_open_as_files_device_nodes_eacces_sockets_enxio() {
    let fs = fresh(16);
    fs.mknod("/null", libc::S_IFCHR | 0o666, libc::makedev(1, 3))
        .unwrap();
    fs.mknod("/sock", libc::S_IFSOCK | 0o666, 0).unwrap();
    fs.mknod("/fifo", libc::S_IFIFO | 0o666, 0).unwrap();
    let ro = OpenOptions::read_only();
    assert_eq!(fs.open("/null", &ro).unwrap_err().errno(), libc::EACCES);
    assert_eq!(fs.open("/sock", &ro).unwrap_err().errno(), libc::ENXIO);
    // A FIFO's pipe is the shim's or the FUSE mount's, not the library's.
    assert_eq!(fs.open("/fifo", &ro).unwrap_err().errno(), libc::EOPNOTSUPP);
    // mknod on a taken name: EEXIST; of a directory: EPERM; of a bad type: EINVAL.
    assert_eq!(
        fs.mknod("/fifo", libc::S_IFIFO | 0o666, 0)
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    assert_eq!(
        fs.mknod("/d", libc::S_IFDIR | 0o755, 0)
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
    assert_eq!(
        fs.mknod("/l", libc::S_IFLNK | 0o777, 0)
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
}

#[test]
fn a_format_2_file_system_refuses_special_files_but_mknod_makes_regular_ones() {
    let dev: Arc<dyn Device> = Arc::new(RamDevice::new(16 << 20));
    let v2 = MkfsOptions {
        format: 2,
        ..Default::default()
    };
    Fs::mkfs(&*dev, &v2).unwrap();
    let fs = Fs::mount(dev).unwrap();
    assert_eq!(
        fs.mknod("/p", libc::S_IFIFO | 0o644, 0)
            .unwrap_err()
            .errno(),
        libc::EOPNOTSUPP
    );
    fs.mknod("/f", libc::S_IFREG | 0o644, 0).unwrap();
    assert!(fs.stat("/f").unwrap().is_file());
}
