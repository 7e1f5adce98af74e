//! fcntl, flock, lockf, ioctl, dup.
//!
//! POSIX record locks (F_SETLK/F_SETLKW/F_GETLK, lockf) belong to a process,
//! and a process's own locks never conflict with each other; a udax device has
//! one owner process (the device lock), so no other process can hold a lock
//! on a udax file. A request is therefore checked (lock type, whence, the
//! descriptor's access mode) and granted, and F_GETLK reports F_UNLCK, which is
//! exactly what the kernel answers a process that is alone with its file.
//! flock locks belong to open file descriptions and do conflict inside one
//! process: they are kept in [`crate::state::fds::flock`].

use crate::boundary::entry::{fwd, run, unsupported, Errno, R};
use crate::dispatch::fd_call;
use crate::state::fds::{self, Desc};
use libc::{c_int, c_ulong, off64_t};

/// Status flags F_SETFL may change (as the kernel's SETFL_MASK).
const SETFL: c_int =
    libc::O_APPEND | libc::O_NONBLOCK | libc::O_DIRECT | libc::O_NOATIME | libc::O_ASYNC;

fn posix_lock(d: &Desc, cmd: c_int, arg: c_ulong) -> R<c_int> {
    let p = arg as *mut libc::flock;
    if p.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: F_*LK's contract: `arg` points to a struct flock.
    let fl = unsafe { &mut *p };
    if !matches!(
        fl.l_whence as c_int,
        libc::SEEK_SET | libc::SEEK_CUR | libc::SEEK_END
    ) {
        return Err(Errno(libc::EINVAL));
    }
    match fl.l_type as c_int {
        libc::F_RDLCK | libc::F_WRLCK | libc::F_UNLCK => {}
        _ => return Err(Errno(libc::EINVAL)),
    }
    let getlk = matches!(cmd, libc::F_GETLK | libc::F_OFD_GETLK);
    if getlk && fl.l_type as c_int == libc::F_UNLCK {
        return Err(Errno(libc::EINVAL));
    }
    if !getlk {
        match fl.l_type as c_int {
            libc::F_RDLCK if !d.readable() => return Err(Errno(libc::EBADF)),
            libc::F_WRLCK if !d.writable() => return Err(Errno(libc::EBADF)),
            _ => {}
        }
    }
    let ofd = matches!(
        cmd,
        libc::F_OFD_GETLK | libc::F_OFD_SETLK | libc::F_OFD_SETLKW
    );
    if ofd && fl.l_pid != 0 {
        return Err(Errno(libc::EINVAL));
    }
    let udax::vfs::VFile::Remote(f) = d.file()? else {
        // Embedded: one process, whose own locks never conflict with each
        // other; nothing else can hold one.
        if ofd {
            return Err(unsupported(
                "fcntl",
                "open-file-description locks (F_OFD_*) on an embedded udax mount",
                libc::EOPNOTSUPP,
            ));
        }
        if getlk {
            fl.l_type = libc::F_UNLCK as _;
        }
        return Ok(0);
    };
    // Through the owner: the range as [start, end), `end` u64::MAX to EOF.
    let base: i128 = match fl.l_whence as c_int {
        libc::SEEK_SET => 0,
        libc::SEEK_CUR => d.offset()? as i128,
        _ => f.len()? as i128,
    };
    let at = base + fl.l_start as i128;
    let (start, end) = match fl.l_len as i128 {
        0 => (at, u64::MAX as i128),
        n if n > 0 => (at, at + n),
        n => (at + n, at),
    };
    if start < 0 {
        return Err(Errno(libc::EINVAL));
    }
    let (start, end) = (start as u64, end.min(u64::MAX as i128) as u64);
    use udax::fs::locks::LockKind;
    use udax::proto::LockScope;
    let scope = if ofd {
        LockScope::Ofd
    } else {
        LockScope::Posix
    };
    let kind = match fl.l_type as c_int {
        libc::F_RDLCK => Some(LockKind::Read),
        libc::F_WRLCK => Some(LockKind::Write),
        _ => None,
    };
    if getlk {
        let want = kind.expect("F_UNLCK refused above");
        match f.get_lock(scope, want, start, end)? {
            None => fl.l_type = libc::F_UNLCK as _,
            Some((k, s, e, pid)) => {
                fl.l_type = if k == LockKind::Read {
                    libc::F_RDLCK
                } else {
                    libc::F_WRLCK
                } as _;
                fl.l_whence = libc::SEEK_SET as _;
                fl.l_start = s as _;
                fl.l_len = if e == u64::MAX { 0 } else { (e - s) as _ };
                fl.l_pid = if ofd { -1 } else { pid };
            }
        }
        return Ok(0);
    }
    let wait = matches!(cmd, libc::F_SETLKW | libc::F_OFD_SETLKW);
    if !ofd && kind.is_some() {
        crate::state::inherit::took_posix_locks();
    }
    f.lock(scope, kind, start, end, wait)?;
    Ok(0)
}

fn fcntl_udax(fd: c_int, d: &Desc, cmd: c_int, arg: c_ulong) -> R<c_int> {
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let min = c_int::try_from(arg).map_err(|_| Errno(libc::EINVAL))?;
            fds::dup_min(fd, min, cmd == libc::F_DUPFD_CLOEXEC)
        }
        libc::F_GETFD => Ok(if fds::cloexec(fd)? {
            libc::FD_CLOEXEC
        } else {
            0
        }),
        libc::F_SETFD => fds::set_cloexec(fd, arg as c_int & libc::FD_CLOEXEC != 0).map(|_| 0),
        libc::F_GETFL => Ok(d.status() | libc::O_LARGEFILE),
        libc::F_SETFL => {
            d.set_status(SETFL, arg as c_int);
            Ok(0)
        }
        libc::F_GETLK
        | libc::F_SETLK
        | libc::F_SETLKW
        | libc::F_OFD_GETLK
        | libc::F_OFD_SETLK
        | libc::F_OFD_SETLKW => posix_lock(d, cmd, arg),
        libc::F_GETOWN => Ok(0),
        libc::F_ADD_SEALS | libc::F_GET_SEALS => Err(Errno(libc::EINVAL)),
        // F_GET_FILE_RW_HINT, F_SET_FILE_RW_HINT: gone from Linux 5.18 on
        // (EINVAL on every file), so nothing udax lacks.
        1037 | 1038 => Err(Errno(libc::EINVAL)),
        _ => Err(unsupported(
            "fcntl",
            &format!("command {cmd} on a udax descriptor"),
            libc::EINVAL,
        )),
    }
}

macro_rules! fcntl_fn {
    ($name:ident) => {
        /// # Safety
        /// As fcntl(2); the third argument is read as the command defines it.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
            fd_call!(-1, fd, $name(fd, cmd, arg), |d| fcntl_udax(
                fd, &d, cmd, arg
            ))
        }
    };
}
fcntl_fn!(fcntl);
fcntl_fn!(fcntl64);

/// # Safety
/// As flock(2).
#[no_mangle]
pub unsafe extern "C" fn flock(fd: c_int, op: c_int) -> c_int {
    fd_call!(-1, fd, flock(fd, op), |d| fds::flock(&d, op).map(|_| 0))
}

macro_rules! lockf_fn {
    ($name:ident) => {
        /// lockf(3): POSIX locks (see the module docs).
        ///
        /// # Safety
        /// As lockf(3).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, cmd: c_int, len: off64_t) -> c_int {
            fd_call!(-1, fd, $name(fd, cmd, len), |d| match cmd {
                libc::F_LOCK | libc::F_TLOCK | libc::F_ULOCK if !d.writable() =>
                    Err(Errno(libc::EBADF)),
                libc::F_LOCK | libc::F_TLOCK | libc::F_ULOCK | libc::F_TEST => Ok(0),
                _ => Err(Errno(libc::EINVAL)),
            })
        }
    };
}
lockf_fn!(lockf);
lockf_fn!(lockf64);

/// FIGETBSZ (`_IO(0x00, 2)`): the file system's block size.
const FIGETBSZ: c_ulong = 2;

/// The int an ioctl's argument points to.
fn read_int(arg: c_ulong) -> R<c_int> {
    let p = arg as *const c_int;
    if p.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: the request's contract: `arg` points to an int (read unaligned:
    // C callers may pass any address).
    Ok(unsafe { p.read_unaligned() })
}

/// FICLONE, FICLONERANGE (`_IOW(0x94, 9, int)`, `_IOW(0x94, 13, struct file_clone_range)`).
const FICLONE: c_ulong = 0x4004_9409;
const FICLONERANGE: c_ulong = 0x4020_940d;
/// FIDEDUPERANGE (`_IOWR(0x94, 54, struct file_dedupe_range)`).
const FIDEDUPERANGE: c_ulong = 0xc018_9436;

/// `struct file_clone_range` (linux/fs.h).
#[repr(C)]
struct FileCloneRange {
    src_fd: i64,
    src_offset: u64,
    src_length: u64,
    dest_offset: u64,
}

/// `struct file_dedupe_range` (linux/fs.h), followed by `dest_count` infos.
#[repr(C)]
struct FileDedupeRange {
    src_offset: u64,
    src_length: u64,
    dest_count: u16,
    reserved1: u16,
    reserved2: u32,
}

/// `struct file_dedupe_range_info`.
#[repr(C)]
struct FileDedupeRangeInfo {
    dest_fd: i64,
    dest_offset: u64,
    bytes_deduped: u64,
    status: i32,
    reserved: u32,
}

/// FS_IOC_FIEMAP (`_IOWR('f', 11, struct fiemap)`).
const FS_IOC_FIEMAP: c_ulong = 0xc020_660b;
const FIEMAP_FLAG_SYNC: u32 = 1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
const FIEMAP_EXTENT_SHARED: u32 = 0x2000;

/// `struct fiemap` (linux/fiemap.h), followed by `fm_extent_count` extents.
#[repr(C)]
struct Fiemap {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
}

/// `struct fiemap_extent`.
#[repr(C)]
#[derive(Default)]
struct FiemapExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

/// FS_IOC_FIEMAP on a udax file: its extents with device byte offsets (as
/// `filefrag -v` shows them), `FIEMAP_EXTENT_SHARED` where reflinked.
fn fiemap_ioctl(d: &Desc, arg: c_ulong) -> R<c_int> {
    let p = arg as *mut Fiemap;
    if p.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: FS_IOC_FIEMAP's contract: `arg` points to a struct fiemap
    // followed by `fm_extent_count` writable extents.
    let mut h = unsafe { p.read_unaligned() };
    if h.fm_flags & !FIEMAP_FLAG_SYNC != 0 {
        // As the kernel: report the flags it does not support, EBADR.
        h.fm_flags &= !FIEMAP_FLAG_SYNC;
        // SAFETY: as above.
        unsafe { p.write_unaligned(h) };
        return Err(Errno(libc::EBADR));
    }
    let f = d.file()?;
    let bs = udax::BLOCK_SIZE;
    let end = h.fm_start.saturating_add(h.fm_length);
    let all = f.extents()?;
    let last_blk = all.last().map(|e| e.0);
    let hits: Vec<_> = all
        .into_iter()
        .filter(|&(fb, _, n, _)| fb * bs < end && (fb + n) * bs > h.fm_start)
        .collect();
    if h.fm_extent_count == 0 {
        h.fm_mapped_extents = hits.len().min(u32::MAX as usize) as u32;
        // SAFETY: as above.
        unsafe { p.write_unaligned(h) };
        return Ok(0);
    }
    // SAFETY: the extents follow the header (the same contract).
    let out = unsafe { p.add(1).cast::<FiemapExtent>() };
    let n = hits.len().min(h.fm_extent_count as usize);
    for (i, &(file_blk, dev_blk, len, shared)) in hits.iter().take(n).enumerate() {
        let mut flags = if shared { FIEMAP_EXTENT_SHARED } else { 0 };
        if Some(file_blk) == last_blk {
            flags |= FIEMAP_EXTENT_LAST;
        }
        let x = FiemapExtent {
            fe_logical: file_blk * bs,
            fe_physical: dev_blk * bs,
            fe_length: len * bs,
            fe_flags: flags,
            ..Default::default()
        };
        // SAFETY: `i < fm_extent_count` (the same contract).
        unsafe { out.add(i).write_unaligned(x) };
    }
    h.fm_mapped_extents = n as u32;
    // SAFETY: as above.
    unsafe { p.write_unaligned(h) };
    Ok(0)
}

/// The other file of a reflink ioctl: a udax descriptor, or EXDEV.
fn reflink_peer(fd: i64) -> R<std::sync::Arc<Desc>> {
    let fd = c_int::try_from(fd).map_err(|_| Errno(libc::EBADF))?;
    match crate::dispatch::lookup(fd) {
        Some(d) => d,
        None => Err(unsupported(
            "ioctl",
            "reflink between a udax file and a host file (across the mount boundary)",
            libc::EXDEV,
        )),
    }
}

/// FICLONE / FICLONERANGE on udax descriptor `d` (the destination).
fn clone_ioctl(d: &Desc, req: c_ulong, arg: c_ulong) -> R<c_int> {
    let fs = crate::state::mount::fs()?;
    let (src, so, len, dof) = if req == FICLONE {
        (arg as c_int as i64, 0, 0, 0)
    } else {
        let p = arg as *const FileCloneRange;
        if p.is_null() {
            return Err(Errno(libc::EFAULT));
        }
        // SAFETY: FICLONERANGE's contract: `arg` points to a struct
        // file_clone_range (read unaligned: C callers may pack it anywhere).
        let r = unsafe { p.read_unaligned() };
        (r.src_fd, r.src_offset, r.src_length, r.dest_offset)
    };
    let s = reflink_peer(src)?;
    fs.clone_range(s.file()?, so, d.file()?, dof, len)?;
    Ok(0)
}

/// FIDEDUPERANGE on udax descriptor `d` (the source): each destination gets
/// its own status, as the kernel reports them.
fn dedupe_ioctl(d: &Desc, arg: c_ulong) -> R<c_int> {
    let fs = crate::state::mount::fs()?;
    let p = arg as *mut FileDedupeRange;
    if p.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: FIDEDUPERANGE's contract: `arg` points to a struct
    // file_dedupe_range followed by `dest_count` infos, all writable.
    let h = unsafe { p.read_unaligned() };
    if h.reserved1 != 0 || h.reserved2 != 0 {
        return Err(Errno(libc::EINVAL));
    }
    let src = d.file()?;
    // SAFETY: the infos follow the header (the same contract).
    let infos = unsafe { p.add(1).cast::<FileDedupeRangeInfo>() };
    for i in 0..h.dest_count as usize {
        // SAFETY: `i < dest_count` (the same contract).
        let ip = unsafe { infos.add(i) };
        // SAFETY: as above.
        let mut info = unsafe { ip.read_unaligned() };
        let r = if info.reserved != 0 {
            Err(Errno(libc::EINVAL))
        } else {
            reflink_peer(info.dest_fd).and_then(|t| {
                let dst = t.file()?;
                Ok(fs.dedupe_range(src, h.src_offset, dst, info.dest_offset, h.src_length)?)
            })
        };
        match r {
            Ok(x) => {
                info.bytes_deduped = x.0;
                info.status = i32::from(x.1); // SAME 0, DIFFERS 1
            }
            Err(Errno(e)) => {
                info.bytes_deduped = 0;
                info.status = -e;
            }
        }
        // SAFETY: as above; the info is the caller's writable memory.
        unsafe { ip.write_unaligned(info) };
    }
    Ok(0)
}

/// # Safety
/// As ioctl(2); the third argument is read as the request defines it.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: c_ulong) -> c_int {
    fd_call!(-1, fd, ioctl(fd, req, arg), |d| match req {
        // An O_PATH descriptor takes no ioctl (the kernel: EBADF).
        _ if d.status() & libc::O_PATH != 0 => Err(Errno(libc::EBADF)),
        // The requests the kernel answers for every open file (fs/ioctl.c).
        libc::FIOCLEX | libc::FIONCLEX => fds::set_cloexec(fd, req == libc::FIOCLEX).map(|_| 0),
        libc::FIONBIO => {
            let on = read_int(arg)? != 0;
            d.set_status(libc::O_NONBLOCK, if on { libc::O_NONBLOCK } else { 0 });
            Ok(0)
        }
        // A regular file has no fasync method: turning O_ASYNC on or off is
        // ENOTTY, leaving it as it is succeeds.
        libc::FIOASYNC => {
            let on = read_int(arg)? != 0;
            if on == (d.status() & libc::O_ASYNC != 0) {
                Ok(0)
            } else {
                Err(Errno(libc::ENOTTY))
            }
        }
        // The bytes the file occupies (the kernel's inode_get_bytes), not its size.
        libc::FIOQSIZE => {
            let p = arg as *mut i64;
            if p.is_null() {
                return Err(Errno(libc::EFAULT));
            }
            let bytes = d.stat()?.blocks * 512;
            // SAFETY: FIOQSIZE's contract: `arg` points to a loff_t.
            unsafe { p.write_unaligned(bytes as i64) };
            Ok(0)
        }
        FIGETBSZ => {
            let p = arg as *mut c_int;
            if p.is_null() {
                return Err(Errno(libc::EFAULT));
            }
            // SAFETY: FIGETBSZ's contract: `arg` points to an int.
            unsafe { p.write_unaligned(udax::BLOCK_SIZE as c_int) };
            Ok(0)
        }
        libc::FIONREAD => {
            let p = arg as *mut c_int;
            if p.is_null() {
                return Err(Errno(libc::EFAULT));
            }
            let f = d.file()?;
            let pos = d.offset()?;
            let n = f.len()?.saturating_sub(pos).min(c_int::MAX as u64) as c_int;
            // SAFETY: FIONREAD's contract: `arg` points to an int.
            unsafe { p.write(n) };
            Ok(0)
        }
        // Reflink (SPEC R1): `cp --reflink` shares the blocks.
        FICLONE | FICLONERANGE => clone_ioctl(&d, req, arg),
        FIDEDUPERANGE => dedupe_ioctl(&d, arg),
        FS_IOC_FIEMAP => fiemap_ioctl(&d, arg),
        libc::TCGETS | libc::TIOCGWINSZ => Err(Errno(libc::ENOTTY)), // not a terminal
        _ => Err(unsupported(
            "ioctl",
            &format!("request {req:#x} on a udax descriptor"),
            libc::ENOTTY,
        )),
    })
}

/// # Safety
/// As dup(2).
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    fd_call!(-1, fd, dup(fd), |_d| fds::dup_min(fd, 0, false))
}

fn dup_onto(old: c_int, new: c_int, flags: c_int, dup2: bool) -> R<c_int> {
    match crate::dispatch::lookup(old) {
        Some(d) => {
            d?;
            if old == new {
                return if dup2 {
                    Ok(new)
                } else {
                    Err(Errno(libc::EINVAL))
                };
            }
            if flags & !libc::O_CLOEXEC != 0 {
                return Err(Errno(libc::EINVAL));
            }
            fds::dup_to(old, new, flags & libc::O_CLOEXEC != 0)
        }
        None => {
            // A host fd onto `new`: the kernel replaces `new`; if that was a
            // udax descriptor, it is closed now.
            let was_udax = fds::is_udax(new);
            if was_udax {
                crate::calls::stdio::before_std_change(new);
            }
            let r = if dup2 {
                fwd!(dup2(old, new))
            } else {
                fwd!(dup3(old, new, flags))
            };
            if r >= 0 && old != new && was_udax {
                fds::forget(new);
            }
            Ok(r)
        }
    }
}

/// # Safety
/// As dup2(2).
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    run(-1, || fwd!(dup2(old, new)), || dup_onto(old, new, 0, true))
}

/// # Safety
/// As dup3(2).
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    run(
        -1,
        || fwd!(dup3(old, new, flags)),
        || dup_onto(old, new, flags, false),
    )
}
