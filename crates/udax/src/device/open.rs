//! Opening a device from a spec: `memfd:SIZE`, `memfd-huge:SIZE`, or a path whose
//! backend is detected (tmpfs, hugetlbfs, device-dax, or a regular file).

use super::lock;
use super::mapped::MappedDevice;
use super::persist::detect_flush_instr;
use super::{Device, DeviceError, DeviceInfo, DeviceKind, FlushInstr, PersistenceDomain};
use crate::{BLOCK_SIZE, HUGE_SIZE};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

const TMPFS_MAGIC: i64 = 0x0102_1994;
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// How to open a device.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Create the file (or grow it) to this many bytes (mkfs of a file device).
    pub create_size: Option<u64>,
}

/// Parse a size like `4096`, `64K`, `512M`, `1G`, `2T` (binary units).
pub fn parse_size(s: &str) -> Result<u64, DeviceError> {
    let bad = |reason: &str| DeviceError::BadSpec {
        spec: s.to_string(),
        reason: reason.to_string(),
    };
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let unit = t[i..].trim_end_matches(['i', 'B', 'b']);
            let m = match unit.to_ascii_uppercase().as_str() {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(bad("unknown unit (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
    };
    let n: u64 = num.parse().map_err(|_| bad("not a number"))?;
    n.checked_mul(mult).ok_or_else(|| bad("too large"))
}

/// Backend of a path, from its file-system magic and, for character devices, the
/// sysfs subsystem name (`/sys/dev/char/MAJ:MIN/subsystem`).
pub fn classify(
    fs_magic: i64,
    is_char: bool,
    subsystem: Option<&str>,
) -> Result<DeviceKind, String> {
    if is_char {
        return match subsystem {
            Some(s) if s.ends_with("dax") => Ok(DeviceKind::DevDax),
            Some(s) => Err(format!(
                "character device of subsystem {s:?} is not a dax device"
            )),
            None => Err("character device without a sysfs subsystem: not a dax device".into()),
        };
    }
    Ok(match fs_magic {
        TMPFS_MAGIC => DeviceKind::Shm,
        HUGETLBFS_MAGIC => DeviceKind::Hugetlbfs,
        _ => DeviceKind::File,
    })
}

/// Persistence domain of a backend.
pub fn persistence_of(kind: DeviceKind) -> PersistenceDomain {
    match kind {
        DeviceKind::Memfd | DeviceKind::Shm | DeviceKind::Hugetlbfs | DeviceKind::Ram => {
            PersistenceDomain::None
        }
        DeviceKind::File => PersistenceDomain::PageCache,
        DeviceKind::DevDax | DeviceKind::Crash => PersistenceDomain::CpuCache,
    }
}

fn io_err(path: &str, e: impl Into<std::io::Error>) -> DeviceError {
    DeviceError::Open {
        path: path.into(),
        source: e.into(),
    }
}

pub(super) fn info(kind: DeviceKind, path: &str, len: u64) -> DeviceInfo {
    let persistence = persistence_of(kind);
    DeviceInfo {
        kind,
        path: path.to_string(),
        len,
        persistence,
        flush: if persistence == PersistenceDomain::CpuCache {
            detect_flush_instr()
        } else {
            FlushInstr::None
        },
        page_size: if kind == DeviceKind::Hugetlbfs {
            HUGE_SIZE
        } else {
            BLOCK_SIZE
        },
    }
}

/// Open a device. See the module docs for the spec syntax.
pub fn open(spec: &str, opts: &OpenOptions) -> Result<Arc<dyn Device>, DeviceError> {
    if let Some(size) = spec.strip_prefix("memfd:") {
        return open_memfd(spec, parse_size(size)?, false, false);
    }
    if let Some(size) = spec.strip_prefix("memfd-huge:") {
        return open_memfd(spec, parse_size(size)?, true, false);
    }
    if let Some(size) = spec.strip_prefix("pmem-emul:") {
        return open_memfd(spec, parse_size(size)?, false, true);
    }
    open_path(spec, opts)
}

/// A memfd; with `pmem`, treated as persistent memory (cache-line flushes and
/// fences really run), to measure what durability costs on pmem.
fn open_memfd(
    spec: &str,
    size: u64,
    huge: bool,
    pmem: bool,
) -> Result<Arc<dyn Device>, DeviceError> {
    let unit = if huge { HUGE_SIZE } else { BLOCK_SIZE };
    if size == 0 || !size.is_multiple_of(unit) {
        return Err(DeviceError::BadSpec {
            spec: spec.into(),
            reason: format!("size must be a non-zero multiple of {unit}"),
        });
    }
    use rustix::fs::MemfdFlags;
    let mut flags = MemfdFlags::CLOEXEC;
    if huge {
        flags |= MemfdFlags::HUGETLB | MemfdFlags::HUGE_2MB;
    }
    let fd = rustix::fs::memfd_create("udax", flags).map_err(|e| io_err(spec, e))?;
    let fd = crate::fdnum::raise(fd);
    rustix::fs::ftruncate(&fd, size).map_err(|e| io_err(spec, e))?;
    let kind = if huge {
        DeviceKind::Hugetlbfs
    } else {
        DeviceKind::Memfd
    };
    if huge {
        // Reserve the pages now so a shortage is an open error, not a SIGBUS later.
        rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, size).map_err(|e| DeviceError::Open {
            path: spec.into(),
            source: std::io::Error::other(format!(
                "cannot reserve {} huge pages ({e}); reserve them with `echo N > /proc/sys/vm/nr_hugepages`",
                size / HUGE_SIZE
            )),
        })?;
    }
    let mut inf = info(kind, spec, size);
    if pmem {
        inf.persistence = PersistenceDomain::CpuCache;
        inf.flush = detect_flush_instr();
    }
    let d = MappedDevice::map(inf, fd, None)?;
    Ok(Arc::new(d))
}

fn read_sysfs(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Grow a device file from `len` to `want` bytes. On tmpfs and disk file
/// systems the new range is allocated (`fallocate`), as a memory device's
/// memory all exists: a sparse device file could run out of space under a
/// store (SIGBUS in the middle of a write). On tmpfs the pages are also
/// zeroed now (tmpfs zeroes a fallocated page at its first use, which would
/// make the first store to every block of a new device pay a page fault and a
/// page clear). hugetlbfs reserves its pages when the device is mapped. A file
/// system without `fallocate` gets a sparse file.
fn grow(fd: &OwnedFd, kind: DeviceKind, len: u64, want: u64) -> rustix::io::Result<()> {
    if kind == DeviceKind::Hugetlbfs {
        return rustix::fs::ftruncate(fd, want);
    }
    match rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::empty(), len, want - len) {
        Ok(()) => {}
        Err(rustix::io::Errno::OPNOTSUPP) => return rustix::fs::ftruncate(fd, want),
        Err(e) => return Err(e),
    }
    if kind == DeviceKind::Shm {
        let zeros = vec![0u8; 1 << 20];
        let mut at = len;
        while at < want {
            let n = (want - at).min(zeros.len() as u64) as usize;
            let done = rustix::io::pwrite(fd, &zeros[..n], at)?;
            if done == 0 {
                return Err(rustix::io::Errno::NOSPC);
            }
            at += done as u64;
        }
    }
    Ok(())
}

fn open_path(path: &str, opts: &OpenOptions) -> Result<Arc<dyn Device>, DeviceError> {
    let mut oo = std::fs::OpenOptions::new();
    oo.read(true).write(true);
    if opts.create_size.is_some() {
        oo.create(true);
    }
    let file = oo.open(path).map_err(|e| io_err(path, e))?;
    let fd = crate::fdnum::raise(file.into());
    let st = rustix::fs::fstat(&fd).map_err(|e| io_err(path, e))?;
    let is_char =
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::CharacterDevice;
    let sys = format!(
        "/sys/dev/char/{}:{}",
        rustix::fs::major(st.st_rdev),
        rustix::fs::minor(st.st_rdev)
    );
    let subsystem = if is_char {
        std::fs::read_link(format!("{sys}/subsystem"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    } else {
        None
    };
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between platforms
    let magic = rustix::fs::fstatfs(&fd)
        .map_err(|e| io_err(path, e))?
        .f_type as i64;
    let kind =
        classify(magic, is_char, subsystem.as_deref()).map_err(|reason| DeviceError::BadSpec {
            spec: path.into(),
            reason,
        })?;
    let lock = lock::lock(fd.as_fd())?;
    let len = match kind {
        DeviceKind::DevDax => read_sysfs(Path::new(&format!("{sys}/size")))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                io_err(
                    path,
                    std::io::Error::other("cannot read the dax device size from sysfs"),
                )
            })?,
        _ => {
            let mut len = st.st_size as u64;
            if let Some(want) = opts.create_size {
                let want = if kind == DeviceKind::Hugetlbfs {
                    want.next_multiple_of(HUGE_SIZE)
                } else {
                    want
                };
                if len < want {
                    grow(&fd, kind, len, want).map_err(|e| io_err(path, e))?;
                    len = want;
                }
            }
            len
        }
    };
    let unit = if kind == DeviceKind::Hugetlbfs {
        HUGE_SIZE
    } else {
        BLOCK_SIZE
    };
    let len = len / unit * unit;
    let d = MappedDevice::map(info(kind, path, len), fd, Some(lock))?;
    if kind == DeviceKind::DevDax {
        // The kernel's bad-block list of the region (SPEC E1); the file system
        // merges it into its own table at mount.
        match super::badblocks::devdax_badblocks(Path::new(&sys), len) {
            Ok(bad) => bad.into_iter().for_each(|r| d.bad_list().insert(r)),
            Err(e) => tracing::warn!("{path}: cannot read the bad-block list: {e}"),
        }
    }
    Ok(Arc::new(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn d1_memfd_device_reads_back_writes() {
        let d = open("memfd:8M", &OpenOptions::default()).unwrap();
        assert_eq!(d.info().kind, DeviceKind::Memfd);
        assert_eq!(d.info().persistence, PersistenceDomain::None);
        d.write(4096, b"abc").unwrap();
        let mut b = [0u8; 3];
        d.read(4096, &mut b).unwrap();
        assert_eq!(&b, b"abc");
        assert!(d.read(8 << 20, &mut b).is_err());
        assert!(open("memfd:100", &OpenOptions::default()).is_err());
    }

    #[test]
    fn d1_shm_file_is_detected_as_shm() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let p = dir.path().join("dev");
        let d = open(
            p.to_str().unwrap(),
            &OpenOptions {
                create_size: Some(4 << 20),
            },
        )
        .unwrap();
        assert_eq!(d.info().kind, DeviceKind::Shm);
        assert_eq!(d.len(), 4 << 20);
    }

    #[test]
    fn d1_new_shm_device_file_is_allocated_whole() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let p = dir.path().join("dev");
        let _d = open(
            p.to_str().unwrap(),
            &OpenOptions {
                create_size: Some(4 << 20),
            },
        )
        .unwrap();
        let st = rustix::fs::stat(&p).unwrap();
        assert_eq!(st.st_blocks as u64 * 512, 4 << 20, "every byte allocated");
    }

    #[test]
    fn d1_device_file_larger_than_its_tmpfs_is_refused_at_creation() {
        // A small tmpfs of our own (needs root, as CI runs).
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "size=4m",
                "udax-test",
                mnt.to_str().unwrap(),
            ])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a small tmpfs (not root?)");
            return;
        }
        let p = mnt.join("dev");
        let r = open(
            p.to_str().unwrap(),
            &OpenOptions {
                create_size: Some(16 << 20),
            },
        );
        let _ = std::process::Command::new("umount").arg(mnt).status();
        let Err(e) = r else {
            panic!("a 16 MiB device on a 4 MiB tmpfs must be refused")
        };
        assert!(e.to_string().contains("No space left"), "{e}");
    }

    #[test]
    fn d1_regular_file_is_file_with_pagecache_domain() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let p = dir.path().join("dev.img");
        let d = open(
            p.to_str().unwrap(),
            &OpenOptions {
                create_size: Some(4 << 20),
            },
        )
        .unwrap();
        // The target dir may itself be on tmpfs on some machines.
        if d.info().kind == DeviceKind::File {
            assert_eq!(d.info().persistence, PersistenceDomain::PageCache);
            d.write(0, b"durable").unwrap();
            d.persist(0, 7).unwrap();
        } else {
            eprintln!("SKIPPED part: {} is on tmpfs", p.display());
        }
    }

    #[test]
    fn d1_devdax_detection_with_fake_sysfs() {
        assert_eq!(classify(0, true, Some("dax")).unwrap(), DeviceKind::DevDax);
        assert!(classify(0, true, Some("tty")).is_err());
        assert!(classify(0, true, None).is_err());
        assert_eq!(
            persistence_of(DeviceKind::DevDax),
            PersistenceDomain::CpuCache
        );
        assert_eq!(classify(TMPFS_MAGIC, false, None).unwrap(), DeviceKind::Shm);
        assert_eq!(
            classify(HUGETLBFS_MAGIC, false, None).unwrap(),
            DeviceKind::Hugetlbfs
        );
        assert_eq!(classify(0xEF53, false, None).unwrap(), DeviceKind::File);
        // A real character device that is not dax is refused with a reason.
        let e = open("/dev/null", &OpenOptions::default()).expect_err("refused");
        assert!(e.to_string().contains("not a dax device"), "{e}");
    }

    #[test]
    fn d3_second_opener_gets_device_busy_with_pid() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let p = dir.path().join("dev");
        let p = p.to_str().unwrap();
        let d = open(
            p,
            &OpenOptions {
                create_size: Some(4 << 20),
            },
        )
        .unwrap();
        match open(p, &OpenOptions::default()) {
            Err(DeviceError::Busy { pid }) => assert_eq!(pid, std::process::id() as i32),
            other => panic!("expected busy, got {other:?}"),
        }
        assert!(open(p, &OpenOptions::default())
            .err()
            .unwrap()
            .to_string()
            .contains("device busy (held by pid"));
        drop(d);
        // Free again. A child that another test of this process forks at
        // the wrong moment shares the descriptor (and its flock) until it
        // execs (close-on-exec): retry for that brief window.
        let t = std::time::Instant::now();
        loop {
            match open(p, &OpenOptions::default()) {
                Ok(_) => break,
                Err(DeviceError::Busy { .. })
                    if t.elapsed() < std::time::Duration::from_secs(2) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("the device is still held after close: {e}"),
            }
        }
    }

    #[test]
    fn d3_stale_lock_from_dead_process_is_taken_over() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let p = dir.path().join("dev");
        let ps = p.to_str().unwrap().to_string();
        std::fs::File::create(&p).unwrap().set_len(4 << 20).unwrap();
        // A child process takes the device and is killed while holding it.
        let mut child = std::process::Command::new("flock")
            .args(["-x", "--no-fork", &ps, "sleep", "30"])
            .spawn();
        let Ok(ref mut c) = child else {
            panic!("the flock(1) utility is needed for this test");
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        // The error names the holder (from /proc/locks).
        match open(&ps, &OpenOptions::default()) {
            Err(DeviceError::Busy { pid }) => assert_eq!(pid, c.id() as i32),
            other => panic!("expected busy, got {other:?}"),
        }
        c.kill().unwrap();
        c.wait().unwrap();
        let mut ok = false;
        for _ in 0..50 {
            if open(&ps, &OpenOptions::default()).is_ok() {
                ok = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(ok, "lock of the dead process was not taken over");
    }

    #[test]
    fn d1_hugetlbfs_file_uses_2mib_pages() {
        let require = std::env::var("UDAX_REQUIRE_HUGEPAGES").is_ok_and(|v| v == "1");
        let mnt = std::env::var("UDAX_HUGETLBFS").unwrap_or_else(|_| "/mnt/udax-huge".into());
        #[allow(clippy::unnecessary_cast)] // f_type's type differs between platforms
        let is_huge =
            rustix::fs::statfs(mnt.as_str()).is_ok_and(|s| s.f_type as i64 == HUGETLBFS_MAGIC);
        let pages: u64 = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if !is_huge || pages < 4 {
            let why =
                format!("no hugetlbfs at {mnt} or fewer than 4 huge pages reserved ({pages})");
            assert!(!require, "UDAX_REQUIRE_HUGEPAGES=1 but {why}");
            eprintln!("SKIPPED d1_hugetlbfs_file_uses_2mib_pages: {why}");
            return;
        }
        let p = format!("{mnt}/udax-test-{}", std::process::id());
        let d = open(
            &p,
            &OpenOptions {
                create_size: Some(4 << 20),
            },
        )
        .unwrap();
        assert_eq!(d.info().kind, DeviceKind::Hugetlbfs);
        assert_eq!(d.info().page_size, 2 << 20);
        d.write(3 << 20, b"huge").unwrap();
        drop(d);
        std::fs::remove_file(&p).unwrap();
    }
}
