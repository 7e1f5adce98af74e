//! Permission checks for a caller other than this process (`Fs::as_caller`,
//! what the device's owner does for every client; docs/multiprocess.md,
//! "Security"): the kernel's answers for search, write, read, the sticky
//! bit, ownership, and set-group-ID directories.

mod common;

use std::sync::Arc;
use udax::device::{self, Device, OpenOptions as DevOpen};
use udax::fs::perm::Cred;
use udax::fs::{Fs, MkfsOptions, OpenOptions};

fn fresh() -> Fs {
    let dev: Arc<dyn Device> = device::open("memfd:64M", &DevOpen::default()).unwrap();
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    Fs::mount(dev).unwrap()
}

fn user(uid: u32, gid: u32, groups: &[u32]) -> Cred {
    Cred {
        uid,
        gid,
        groups: groups.to_vec(),
    }
}

fn errno<T: std::fmt::Debug>(r: udax::Result<T>) -> i32 {
    r.expect_err("allowed").errno()
}

/// Root's tree: /pub 0777, /priv 0700 with /priv/f, /ro 0644, /sticky 1777.
fn tree(fs: &Fs) {
    fs.mkdir("/pub", 0o777).unwrap();
    fs.set_permissions("/pub", 0o777).unwrap();
    fs.mkdir("/priv", 0o700).unwrap();
    drop(fs.create("/priv/f", 0o644).unwrap());
    drop(fs.create("/ro", 0o644).unwrap());
    fs.mkdir("/sticky", 0o777).unwrap();
    fs.set_permissions("/sticky", 0o1777).unwrap();
}

#[test]
fn mp_a_caller_needs_search_permission_on_every_directory_of_a_path() {
    let fs = fresh();
    tree(&fs);
    let u = fs.as_caller(user(1000, 1000, &[]));
    assert_eq!(errno(u.stat("/priv/f")), libc::EACCES);
    assert_eq!(errno(u.read_dir("/priv")), libc::EACCES);
    assert!(u.stat("/priv").is_ok(), "the directory itself is visible");
    assert_eq!(
        errno(u.open("/priv/f", &OpenOptions::read_only())),
        libc::EACCES
    );
    // Root passes (CAP_DAC_OVERRIDE).
    let r = fs.as_caller(user(0, 0, &[]));
    assert!(r.stat("/priv/f").is_ok());
}

#[test]
fn mp_creating_and_removing_needs_write_on_the_directory_and_new_files_are_the_callers() {
    let fs = fresh();
    tree(&fs);
    let u = fs.as_caller(user(1000, 1000, &[]));
    assert_eq!(errno(u.create("/mine", 0o644)), libc::EACCES);
    assert_eq!(errno(u.mkdir("/d", 0o755)), libc::EACCES);
    // An existing name is EEXIST before EACCES, as in the kernel.
    assert_eq!(errno(u.mkdir("/priv", 0o755)), libc::EEXIST);
    drop(u.create("/pub/mine", 0o640).unwrap());
    let st = fs.stat("/pub/mine").unwrap();
    assert_eq!((st.uid, st.gid, st.mode & 0o7777), (1000, 1000, 0o640));
    u.mkdir("/pub/d", 0o755).unwrap();
    assert_eq!(fs.stat("/pub/d").unwrap().uid, 1000);
    assert_eq!(errno(u.unlink("/ro")), libc::EACCES);
    assert_eq!(errno(u.rename("/pub/mine", "/mine")), libc::EACCES);
    assert_eq!(errno(u.rename("/ro", "/pub/ro")), libc::EACCES);
    // Another user may remove it from the world-writable (not sticky) /pub.
    let v = fs.as_caller(user(1001, 1001, &[]));
    v.rename("/pub/mine", "/pub/moved").unwrap();
    v.unlink("/pub/moved").unwrap();
    // Moving a directory to another parent needs write on it (its `..`).
    u.mkdir("/pub/d/e", 0o555).unwrap();
    u.set_permissions("/pub/d/e", 0o555).unwrap();
    assert_eq!(errno(u.rename("/pub/d/e", "/pub/e")), libc::EACCES);
    u.rename("/pub/d/e", "/pub/d/e2").unwrap();
}

#[test]
fn mp_open_checks_read_and_write_bits_of_an_existing_file() {
    let fs = fresh();
    tree(&fs);
    let u = fs.as_caller(user(1000, 1000, &[]));
    let ro = OpenOptions::read_only();
    drop(u.open("/ro", &ro).unwrap());
    let rw = OpenOptions {
        write: true,
        ..Default::default()
    };
    assert_eq!(errno(u.open("/ro", &rw)), libc::EACCES);
    // O_CREAT of an existing file checks it too; of a new one, the
    // directory (and the new file opens whatever its mode).
    let creat = OpenOptions {
        write: true,
        create: true,
        mode: 0o400,
        ..Default::default()
    };
    assert_eq!(errno(u.open("/ro", &creat)), libc::EACCES);
    drop(u.open("/pub/new", &creat).unwrap());
    assert_eq!(errno(u.open("/pub/new", &rw)), libc::EACCES, "0400 now");
    // Group bits through a supplementary group.
    let g = fs.as_caller(user(0, 77, &[]));
    drop(g.create("/pub/grp", 0o660).unwrap());
    let member = fs.as_caller(user(1002, 1002, &[77]));
    drop(member.open("/pub/grp", &rw).unwrap());
    assert_eq!(errno(u.open("/pub/grp", &ro)), libc::EACCES);
}

#[test]
fn mp_the_sticky_bit_keeps_others_from_removing_a_name() {
    let fs = fresh();
    tree(&fs);
    drop(fs.create("/sticky/roots", 0o666).unwrap());
    let u = fs.as_caller(user(1000, 1000, &[]));
    let v = fs.as_caller(user(1001, 1001, &[]));
    drop(u.create("/sticky/us", 0o666).unwrap());
    assert_eq!(errno(u.unlink("/sticky/roots")), libc::EPERM);
    assert_eq!(errno(v.unlink("/sticky/us")), libc::EPERM);
    assert_eq!(errno(v.rename("/sticky/us", "/sticky/x")), libc::EPERM);
    u.rename("/sticky/us", "/sticky/ours").unwrap();
    u.unlink("/sticky/ours").unwrap();
    fs.unlink("/sticky/roots").unwrap();
}

#[test]
fn mp_chmod_and_utimes_belong_to_the_owner_and_setgid_directories_pass_their_group() {
    let fs = fresh();
    tree(&fs);
    let u = fs.as_caller(user(1000, 1000, &[]));
    assert_eq!(errno(u.set_permissions("/ro", 0o666)), libc::EPERM);
    assert_eq!(errno(u.set_times("/ro", Some(1), Some(1))), libc::EPERM);
    // futimens through a handle: the owner's too, even for a writer.
    drop(fs.create("/pub/shared", 0o666).unwrap());
    let rw = OpenOptions {
        write: true,
        ..Default::default()
    };
    let h = u.open("/pub/shared", &rw).unwrap();
    assert_eq!(errno(h.set_times(None, Some(3))), libc::EPERM);
    assert_eq!(errno(h.set_permissions(0o600)), libc::EPERM);
    drop(u.create("/pub/f", 0o644).unwrap());
    u.set_permissions("/pub/f", 0o600).unwrap();
    u.set_times("/pub/f", Some(5), Some(6)).unwrap();
    // In its own group the owner may set the set-group-ID bit.
    u.set_permissions("/pub/f", 0o2755).unwrap();
    assert_eq!(fs.stat("/pub/f").unwrap().mode & 0o7777, 0o2755);
    fs.as_caller(user(0, 50, &[])).mkdir("/sg", 0o777).unwrap();
    fs.set_permissions("/sg", 0o2777).unwrap();
    drop(u.create("/sg/f", 0o644).unwrap());
    u.mkdir("/sg/d", 0o755).unwrap();
    let f = fs.stat("/sg/f").unwrap();
    let d = fs.stat("/sg/d").unwrap();
    assert_eq!((f.uid, f.gid), (1000, 50), "the directory's group");
    assert_eq!(f.mode & 0o2000, 0);
    assert_eq!(
        (d.gid, d.mode & 0o2000),
        (50, 0o2000),
        "inherited set-group-ID"
    );
    // Outside the file's group (50) the bit is cleared, not refused.
    u.set_permissions("/sg/f", 0o2644).unwrap();
    assert_eq!(fs.stat("/sg/f").unwrap().mode & 0o7777, 0o644);
}

#[test]
fn mp_chown_only_root_gives_files_away_and_owners_pick_among_their_groups() {
    let fs = fresh();
    tree(&fs);
    let u = fs.as_caller(user(1000, 1000, &[50]));
    drop(u.create("/pub/f", 0o644).unwrap());
    // Another owner: EPERM for a user, even to the same group.
    assert_eq!(errno(u.set_owner("/pub/f", Some(1001), None)), libc::EPERM);
    // The owner may pick one of their groups, and no other.
    u.set_owner("/pub/f", None, Some(50)).unwrap();
    assert_eq!(fs.stat("/pub/f").unwrap().gid, 50);
    assert_eq!(errno(u.set_owner("/pub/f", None, Some(60))), libc::EPERM);
    // -1/-1 and "no change" are allowed to the owner, not to others.
    u.set_owner("/pub/f", Some(1000), None).unwrap();
    u.set_owner("/pub/f", None, None).unwrap();
    let v = fs.as_caller(user(1001, 50, &[]));
    assert_eq!(errno(v.set_owner("/pub/f", None, Some(50))), libc::EPERM);
    // Root gives it away; the change time moves.
    let before = fs.stat("/pub/f").unwrap().ctime_ns;
    let r = fs.as_caller(user(0, 0, &[]));
    r.set_owner("/pub/f", Some(1001), Some(1001)).unwrap();
    let st = fs.stat("/pub/f").unwrap();
    assert_eq!((st.uid, st.gid), (1001, 1001));
    assert!(st.ctime_ns >= before);
    // Through an open file, the same rules (fchown).
    let f = v
        .open("/pub/f", &OpenOptions::read_write())
        .expect("1001 owns it now");
    f.set_owner(None, Some(50)).unwrap();
    assert_eq!(errno(f.set_owner(Some(0), None)), libc::EPERM);
}

#[test]
fn mp_chown_of_a_file_clears_setuid_and_group_executable_setgid_even_by_root() {
    let fs = fresh();
    tree(&fs);
    drop(fs.create("/s", 0o644).unwrap());
    fs.set_permissions("/s", 0o6755).unwrap();
    fs.as_caller(user(0, 0, &[]))
        .set_owner("/s", Some(7), None)
        .unwrap();
    assert_eq!(fs.stat("/s").unwrap().mode & 0o7777, 0o755);
    // Set-group-ID without group execution is mandatory locking, kept.
    fs.set_permissions("/s", 0o6745).unwrap();
    fs.set_owner("/s", None, Some(8)).unwrap();
    assert_eq!(fs.stat("/s").unwrap().mode & 0o7777, 0o2745);
    // A directory keeps both.
    fs.mkdir("/sd", 0o755).unwrap();
    fs.set_permissions("/sd", 0o2755).unwrap();
    fs.set_owner("/sd", Some(9), Some(9)).unwrap();
    assert_eq!(fs.stat("/sd").unwrap().mode & 0o7777, 0o2755);
}

#[test]
fn mp_mkdir_drops_setuid_and_setgid_from_the_mode_as_the_kernel() {
    let fs = fresh();
    fs.mkdir("/d", 0o7755).unwrap();
    assert_eq!(fs.stat("/d").unwrap().mode & 0o7777, 0o1755);
}

#[test]
fn mp_a_write_truncate_or_fallocate_by_a_user_clears_setuid_and_root_keeps_it() {
    let fs = fresh();
    tree(&fs);
    drop(fs.create("/pub/s", 0o666).unwrap());
    let u = fs.as_caller(user(1000, 1000, &[]));
    let mode = |fs: &Fs| fs.stat("/pub/s").unwrap().mode & 0o7777;
    // Root writes: kept (CAP_FSETID).
    fs.set_permissions("/pub/s", 0o6777).unwrap();
    let r = fs.as_caller(user(0, 0, &[]));
    r.open("/pub/s", &OpenOptions::read_write())
        .unwrap()
        .write_at(b"x", 0)
        .unwrap();
    assert_eq!(mode(&fs), 0o6777);
    // A user's write: both go (group execution is on).
    u.open("/pub/s", &OpenOptions::read_write())
        .unwrap()
        .write_at(b"y", 0)
        .unwrap();
    assert_eq!(mode(&fs), 0o777);
    // Without group execution set-group-ID stays (mandatory locking).
    fs.set_permissions("/pub/s", 0o6766).unwrap();
    u.open("/pub/s", &OpenOptions::read_write())
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_eq!(mode(&fs), 0o2766);
    fs.set_permissions("/pub/s", 0o4777).unwrap();
    u.open("/pub/s", &OpenOptions::read_write())
        .unwrap()
        .fallocate(0, 0, 4096)
        .unwrap();
    assert_eq!(mode(&fs), 0o777);
    // chown(-1, -1) by root clears them too.
    fs.set_permissions("/pub/s", 0o6777).unwrap();
    r.set_owner("/pub/s", None, None).unwrap();
    assert_eq!(mode(&fs), 0o777);
}

/// The shim's embedded mount (`Fs::as_thread_caller`) checks each call
/// with the calling thread's credentials at that moment, as the kernel: a
/// thread that drops to another uid, gid and groups is denied a write to
/// root's 0644 file and allowed one where its new group may write, `fchmod`
/// of a file it opened as root is refused, its new files are its own; root
/// again, it may write; the file-system uid alone decides.
#[test]
fn mp_a_thread_checked_view_checks_each_call_as_the_thread_is_at_that_moment() {
    if !common::root() {
        eprintln!("skipped: needs root to act as another user (CI runs as root)");
        return;
    }
    let fs = fresh();
    tree(&fs);
    drop(fs.create("/group", 0o664).unwrap());
    fs.set_permissions("/group", 0o664).unwrap();
    fs.set_owner("/group", None, Some(2000)).unwrap();
    let t = fs.as_thread_caller();
    std::thread::spawn(move || {
        let write = OpenOptions {
            write: true,
            ..OpenOptions::read_only()
        };
        let mine = t.open("/ro", &write).expect("root writes");
        common::as_thread(1000, 1000, &[2000]);
        assert_eq!(errno(t.open("/ro", &write)), libc::EACCES);
        assert!(t.open("/group", &write).is_ok(), "its new group may write");
        assert_eq!(errno(t.stat("/priv/f")), libc::EACCES);
        assert_eq!(errno(mine.set_permissions(0o666)), libc::EPERM);
        drop(t.create("/pub/new", 0o644).unwrap());
        let st = t.stat("/pub/new").unwrap();
        assert_eq!((st.uid, st.gid), (1000, 1000));
        common::as_thread(0, 0, &[]);
        assert!(t.open("/ro", &write).is_ok(), "root again");
        mine.set_permissions(0o644).unwrap();
        common::thread_fsuid(1000);
        assert_eq!(errno(t.open("/ro", &write)), libc::EACCES, "fs uid 1000");
        common::thread_fsuid(0);
        assert!(t.open("/ro", &write).is_ok());
    })
    .join()
    .unwrap();
    // A plain mount still checks nothing.
    assert!(fs.stat("/priv/f").is_ok());
}

#[test]
fn mp_a_writer_who_is_not_the_owner_may_set_both_times_to_now_but_no_explicit_time() {
    use udax::fs::TIME_NOW;
    let fs = fresh();
    drop(fs.create("/shared", 0o666).unwrap());
    drop(fs.create("/ro", 0o644).unwrap());
    let u = fs.as_caller(user(1000, 1000, &[]));
    let before = fs.stat("/shared").unwrap().mtime_ns;
    // `touch f` (utimensat with UTIME_NOW, or a null times): write permission suffices.
    u.set_times("/shared", Some(TIME_NOW), Some(TIME_NOW))
        .unwrap();
    let after = fs.stat("/shared").unwrap();
    assert!(after.mtime_ns >= before && after.mtime_ns != TIME_NOW);
    // An explicit time, or one of the two now: the owner's only.
    assert_eq!(errno(u.set_times("/shared", Some(1), Some(2))), libc::EPERM);
    assert_eq!(
        errno(u.set_times("/shared", None, Some(TIME_NOW))),
        libc::EPERM
    );
    // Without write permission, not even now.
    assert_eq!(
        errno(u.set_times("/ro", Some(TIME_NOW), Some(TIME_NOW))),
        libc::EACCES
    );
    // Through an open descriptor (futimens) the same.
    let f = u.open("/shared", &OpenOptions::read_write()).unwrap();
    f.set_times(Some(TIME_NOW), Some(TIME_NOW)).unwrap();
    assert_eq!(errno(f.set_times(Some(5), Some(5))), libc::EPERM);
}
