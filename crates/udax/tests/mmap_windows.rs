//! Windows (docs/dax.md): a read-only shared mapping of a shmem device that
//! shows a file up to its end gets a window past it, a device mapping
//! registered for minor faults, and pages appended later are shown with
//! `UFFDIO_CONTINUE` instead of a new mapping each. These tests check that
//! the window never shows what the file does not hold: past end of file
//! SIGBUS / EFAULT as before, holes read zeros, mispredicted blocks are never
//! shown, fork and mprotect keep their meaning. Its own binary: it installs a
//! SIGBUS handler. Needs userfaultfd (root).
#![allow(unsafe_code)]

mod common;

use common::{catch, caught, fresh, Watchdog};
use udax::fs::extent::Lookup;
use udax::fs::{File, Fs};
use udax::{MapFlags, Mapping, Prot};

const PAGE: usize = 4096;

fn map_ro(f: &File, len: usize) -> Mapping {
    f.mmap(0, len, Prot::Read, MapFlags::SHARED)
        .expect("mmap (the fault engine needs userfaultfd; run as root)")
}

/// The device block behind page `i` of the file.
fn blk(f: &File, i: usize) -> Option<u64> {
    match f.iomap(i as u64) {
        Lookup::Mapped { dev_blk, .. } => Some(dev_blk),
        Lookup::Hole { .. } => None,
    }
}

/// Byte `i` of the mapping, read by a user load.
fn at(m: &Mapping, i: usize) -> u8 {
    assert!(i < m.len());
    // SAFETY: inside the mapping, which the caller keeps alive.
    unsafe { m.as_ptr().add(i).read_volatile() }
}

/// Append page `i` (filled with `v`) and fsync, as a transaction of LMDB does.
fn append(f: &File, i: usize, v: u8) {
    f.write_at(&[v; PAGE], (i * PAGE) as u64).unwrap();
    f.fsync().unwrap();
}

/// The running kernel's (major, minor) version.
fn kernel_version() -> (u32, u32) {
    // SAFETY: uname fills the zeroed struct it is given.
    let u = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        assert_eq!(libc::uname(&mut u), 0);
        u
    };
    // SAFETY: `release` is a NUL-terminated string filled by uname.
    let r = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }.to_string_lossy();
    let mut it = r
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|x| x.parse().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Does the fault engine get minor faults on shmem (Linux 5.14+)? Without
/// them there are no windows (mappings work as before): on an older kernel
/// the tests say so and stop; on a newer one their absence is a failure.
fn windows_supported() -> bool {
    let eng = udax::engine_info().expect("fault engine (needs userfaultfd; run as root)");
    if eng.minor_faults_on_shmem {
        return true;
    }
    let v = kernel_version();
    assert!(
        v < (5, 14),
        "Linux {v:?} has UFFD_FEATURE_MINOR_SHMEM but the fault engine did not get it"
    );
    eprintln!("skipped: Linux {v:?} has no UFFD_FEATURE_MINOR_SHMEM, so no windows");
    false
}

/// A file of `n` pages (page i holds i+1), mapped read-only, read through
/// the mapping up to its end so that a window opens past it.
fn windowed(fs: &Fs, name: &str, n: usize) -> (File, Mapping) {
    let f = fs.create(name, 0o644).unwrap();
    let m = map_ro(&f, 64 << 20);
    for i in 0..n {
        append(&f, i, i as u8 + 1);
    }
    for i in 0..n {
        assert_eq!(at(&m, i * PAGE + 9), i as u8 + 1);
    }
    assert!(
        fs.dax_stats().windows >= 1,
        "a window opened past the end of the file"
    );
    (f, m)
}

/// One byte loaded by the kernel (`write(2)` into a pipe), or the errno.
fn kernel_load(src: *const u8) -> Result<u8, i32> {
    common::kernel_load(src, 1).map(|v| v[0])
}

#[test]
fn m1_appends_to_a_read_only_mapping_are_shown_through_a_window_without_new_mappings() {
    if !windows_supported() {
        return;
    }
    let fs = fresh(64);
    let (f, m) = windowed(&fs, "/log", 4);
    let s0 = fs.dax_stats();
    for i in 4..300 {
        append(&f, i, (i % 251) as u8 + 1);
        assert_eq!(at(&m, i * PAGE + 100), (i % 251) as u8 + 1, "page {i}");
        assert_eq!(
            m.device_block_of(i * PAGE),
            blk(&f, i),
            "page {i} shows the file's own block"
        );
    }
    let s1 = fs.dax_stats();
    // One range shown per append, every one through the window (no mapping
    // changed). (An append's pages are shown at its fsync, or, when a REMAP
    // event of another mapping is pending then, by the reader's fault.)
    assert_eq!(s1.pte_maps - s0.pte_maps, 296, "{s0:?} {s1:?}");
    assert_eq!(
        s1.continued - s0.continued,
        296,
        "every append was shown through the window: {s0:?} {s1:?}"
    );
    assert_eq!(s1.windows, s0.windows, "the first window covers them all");
    // Reads needed no fault of the engine (the pages were shown at fsync).
    for i in 0..300 {
        assert_eq!(
            at(&m, i * PAGE),
            if i < 4 {
                i as u8 + 1
            } else {
                (i % 251) as u8 + 1
            }
        );
    }
    assert_eq!(fs.dax_stats().faults, s1.faults);
}

#[test]
fn m1_file_outgrowing_its_window_gets_a_larger_one() {
    if !windows_supported() {
        return;
    }
    let fs = fresh(128);
    let (f, m) = windowed(&fs, "/grow", 1);
    // A 16 MiB window first; a file of 20 MiB needs a second one.
    let chunk = 16 * PAGE;
    let pages = 20 * 256;
    let mut i = 1;
    while i < pages {
        let v = (i / 16 % 200) as u8 + 1;
        f.write_at(&vec![v; chunk], (i * PAGE) as u64).unwrap();
        f.fsync().unwrap();
        i += 16;
    }
    let mut i = 1;
    while i < pages {
        assert_eq!(at(&m, i * PAGE + 1), (i / 16 % 200) as u8 + 1, "page {i}");
        assert_eq!(
            at(&m, (i + 15) * PAGE),
            (i / 16 % 200) as u8 + 1,
            "page {i}"
        );
        i += 16;
    }
    let s = fs.dax_stats();
    assert!(s.windows >= 2, "{s:?}");
    assert!(s.continued > 0, "{s:?}");
}

#[test]
fn m5_past_end_of_file_in_a_window_raises_sigbus_and_efault() {
    if !windows_supported() {
        return;
    }
    catch(libc::SIGBUS);
    let fs = fresh(64);
    let (f, m) = windowed(&fs, "/eof", 3);
    let p = m.as_ptr();
    // A kernel load past end of file, inside the window: EFAULT.
    // SAFETY: inside the mapping.
    assert_eq!(
        kernel_load(unsafe { p.add(3 * PAGE + 5) }),
        Err(libc::EFAULT)
    );
    // The page appended then is shown (the marker the load left is replaced).
    append(&f, 3, 0x44);
    // SAFETY: inside the mapping.
    assert_eq!(kernel_load(unsafe { p.add(3 * PAGE + 5) }), Ok(0x44));
    assert_eq!(at(&m, 3 * PAGE), 0x44);
    // A user load past end of file, inside the window: SIGBUS, BUS_ADRERR.
    let got = caught(|| {
        let _ = at(&m, 5 * PAGE + 7);
    });
    assert_eq!(
        got,
        (libc::SIGBUS, libc::BUS_ADRERR, p as usize + 5 * PAGE + 7)
    );
}

#[test]
fn m3_holes_inside_a_window_read_zeros_and_then_show_a_later_write() {
    if !windows_supported() {
        return;
    }
    let fs = fresh(64);
    let (f, m) = windowed(&fs, "/holes", 2);
    // Grown with a hole of 3 pages (now inside the file, inside the window).
    f.set_len(5 * PAGE as u64).unwrap();
    for i in 2..5 {
        assert_eq!(at(&m, i * PAGE + 3), 0, "hole page {i} reads zeros");
    }
    assert!(
        m.device_block_of(2 * PAGE).is_none(),
        "a hole shows no block"
    );
    // Written later: the mapping shows the data, not the zero page.
    f.write_at(&[0x77; PAGE], 3 * PAGE as u64).unwrap();
    f.fsync().unwrap();
    assert_eq!(at(&m, 3 * PAGE + 3), 0x77);
    assert_eq!(at(&m, 2 * PAGE), 0);
    assert_eq!(at(&m, PAGE), 2);
    // A whole 2 MiB hole inside the window: one 2 MiB zero page, after the
    // window is closed there.
    f.set_len(4 << 20).unwrap();
    let z = fs.dax_stats().zero_maps;
    assert_eq!(at(&m, 600 * PAGE), 0);
    assert_eq!(at(&m, 1000 * PAGE + 5), 0);
    assert!(fs.dax_stats().zero_maps > z);
    f.write_at(&[0x78; PAGE], 700 * PAGE as u64).unwrap();
    f.fsync().unwrap();
    assert_eq!(at(&m, 700 * PAGE), 0x78);
    assert_eq!(at(&m, 699 * PAGE), 0);
}

#[test]
fn m12_blocks_other_than_the_predicted_ones_are_mapped_never_the_window_s() {
    if !windows_supported() {
        return;
    }
    let fs = fresh(64);
    let (f, m) = windowed(&fs, "/a", 2);
    // Another file takes the blocks the window predicted for /a.
    let g = fs.create("/b", 0o644).unwrap();
    g.write_at(&[0xbb; 8 * PAGE], 0).unwrap();
    assert_eq!(
        blk(&g, 0),
        blk(&f, 1).map(|b| b + 1),
        "the predicted blocks"
    );
    let s0 = fs.dax_stats();
    append(&f, 2, 0xaa);
    assert_eq!(at(&m, 2 * PAGE), 0xaa, "never /b's block behind the window");
    assert_eq!(m.device_block_of(2 * PAGE), blk(&f, 2));
    let s1 = fs.dax_stats();
    assert_eq!(s1.continued, s0.continued, "mapped, not through the window");
    assert_eq!(
        s1.windows,
        s0.windows + 1,
        "a window for the new prediction"
    );
    // The next append lands where the new window predicts.
    append(&f, 3, 0xab);
    assert_eq!(at(&m, 3 * PAGE), 0xab);
    assert_eq!(m.device_block_of(3 * PAGE), blk(&f, 3));
    assert_eq!(fs.dax_stats().continued, s1.continued + 1);
    let mut b = [0u8; 1];
    g.read_at(&mut b, 0).unwrap();
    assert_eq!(b[0], 0xbb);
}

#[test]
fn m12_truncate_and_regrow_never_shows_blocks_the_file_let_go() {
    if !windows_supported() {
        return;
    }
    let fs = fresh(64);
    let (f, m) = windowed(&fs, "/t", 2);
    for i in 2..8 {
        append(&f, i, 0x30 + i as u8);
    }
    assert_eq!(at(&m, 7 * PAGE), 0x37);
    let gone = blk(&f, 5).unwrap();
    f.set_len(4 * PAGE as u64).unwrap();
    // Another file gets the freed blocks; /t grows again elsewhere.
    let g = fs.create("/other", 0o644).unwrap();
    g.write_at(&[0xee; 16 * PAGE], 0).unwrap();
    for i in 4..8 {
        append(&f, i, 0x50 + i as u8);
    }
    for i in 4..8 {
        assert_eq!(at(&m, i * PAGE + 1), 0x50 + i as u8, "page {i}");
        assert_eq!(m.device_block_of(i * PAGE), blk(&f, i));
    }
    assert_ne!(m.device_block_of(5 * PAGE), Some(gone));
    assert_eq!(at(&m, 3 * PAGE), 0x33);
}

#[test]
fn m1_fork_child_sees_pages_shown_through_a_window() {
    if !windows_supported() {
        return;
    }
    let fs = fresh(64);
    let (f, m) = windowed(&fs, "/fork", 2);
    for i in 2..6 {
        append(&f, i, 0x60 + i as u8);
    }
    assert_eq!(at(&m, 5 * PAGE), 0x65);
    let p = m.as_ptr();
    // SAFETY: the child only reads memory and calls _exit (async-signal-safe).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: the child's copy of the mapping.
        unsafe {
            for i in 2..6 {
                if p.add(i * PAGE).read_volatile() != 0x60 + i as u8 {
                    libc::_exit(1);
                }
            }
            // Past end of file the child has no fault handler: SIGSEGV,
            // never the device bytes behind the window.
            let _ = p.add(7 * PAGE).read_volatile();
            libc::_exit(2);
        }
    }
    assert!(pid > 0);
    let mut st = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
    assert!(
        libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSEGV,
        "child status {st:#x}: exit 1 = an appended page was not inherited, \
         exit 2 = a page past end of file was readable"
    );
    // The parent is unaffected and goes on appending through its window.
    let c = fs.dax_stats().continued;
    append(&f, 6, 0x66);
    assert_eq!(at(&m, 6 * PAGE), 0x66);
    assert_eq!(fs.dax_stats().continued, c + 1);
}

#[test]
fn m8_mapping_made_writable_closes_its_windows_and_keeps_stores() {
    if !windows_supported() {
        return;
    }
    let fs = fresh(64);
    let (f, m) = windowed(&fs, "/rw", 2);
    append(&f, 2, 0x12);
    assert_eq!(at(&m, 2 * PAGE), 0x12);
    m.protect(Prot::ReadWrite).unwrap();
    // SAFETY: inside the mapping, now writable; page 2 is in the file.
    unsafe { m.as_ptr().add(2 * PAGE + 1).write_volatile(0x99) };
    m.msync(0, m.len()).unwrap();
    let mut b = [0u8; 2];
    f.read_at(&mut b, 2 * PAGE as u64).unwrap();
    assert_eq!(b, [0x12, 0x99]);
    // Appends after that are mapped, never through a window.
    let c = fs.dax_stats();
    append(&f, 3, 0x13);
    // SAFETY: as above; page 3 is in the file now.
    unsafe { m.as_ptr().add(3 * PAGE + 2).write_volatile(0x98) };
    m.msync(0, m.len()).unwrap();
    f.read_at(&mut b, 3 * PAGE as u64 + 1).unwrap();
    assert_eq!(b, [0x13, 0x98]);
    let d = fs.dax_stats();
    assert_eq!((d.windows, d.continued), (c.windows, c.continued));
}

#[test]
fn e3_media_error_on_a_page_shown_through_a_window_faults() {
    if !windows_supported() {
        return;
    }
    let fs = fresh(64);
    let (f, m) = windowed(&fs, "/bad", 2);
    append(&f, 2, 0x21);
    assert_eq!(at(&m, 2 * PAGE), 0x21);
    let blk = blk(&f, 2).unwrap();
    fs.inject_poison(blk * PAGE as u64, PAGE as u64).unwrap();
    // SAFETY: inside the mapping.
    assert_eq!(
        kernel_load(unsafe { m.as_ptr().add(2 * PAGE) }),
        Err(libc::EFAULT)
    );
    assert_eq!(at(&m, PAGE), 2, "the other pages are unaffected");
    append(&f, 3, 0x22);
    assert_eq!(at(&m, 3 * PAGE), 0x22);
}

#[test]
fn m12_appends_truncates_and_reads_through_windows_never_show_other_data_stress() {
    if !windows_supported() {
        return;
    }
    // An appender (write + fsync, page i always holds i % 251 + 1), a
    // truncater cutting the file back now and then, another file reusing
    // the freed blocks (0xee), and a reader loading pages through a
    // read-only mapping with windows (kernel loads: EFAULT past end of
    // file). A read must give the page's own byte or EFAULT: never 0xee (a
    // freed block still shown), never zero (a stale window page).
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let fs = fresh(256);
    let f = fs.create("/race", 0o644).unwrap();
    let other = fs.create("/other", 0o644).unwrap();
    let m = map_ro(&f, 64 << 20);
    let base = m.as_ptr() as usize;
    let size = AtomicUsize::new(0); // pages written so far (an upper bound)
    let stop = AtomicBool::new(false);
    let watchdog = Watchdog::start(60, "appends/truncates/reads through windows");
    let byte = |i: usize| (i % 251) as u8 + 1;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = 7u64;
            for round in 0..300 {
                let mut n = size.load(Ordering::Acquire);
                for _ in 0..64 {
                    f.write_at(&[byte(n); PAGE], (n * PAGE) as u64).unwrap();
                    n += 1;
                    size.store(n, Ordering::Release);
                    if n.is_multiple_of(3) {
                        f.fsync().unwrap();
                    }
                }
                if round % 4 == 3 {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let keep = (rng >> 33) as usize % n;
                    f.set_len((keep * PAGE) as u64).unwrap();
                    size.store(keep, Ordering::Release);
                    other.set_len(0).unwrap();
                    other.write_at(&vec![0xee; 64 * PAGE], 0).unwrap();
                }
            }
            stop.store(true, Ordering::Release);
        });
        s.spawn(|| {
            let mut i = 0usize;
            while !stop.load(Ordering::Acquire) {
                let n = size.load(Ordering::Acquire).max(1);
                let p = i % (n + 2);
                i = i.wrapping_add(7919);
                match kernel_load((base + p * PAGE + 17) as *const u8) {
                    Ok(v) => assert_eq!(v, byte(p), "page {p} showed {v:#x}"),
                    Err(e) => assert_eq!(e, libc::EFAULT),
                }
            }
        });
    });
    drop(watchdog);
    let n = size.load(Ordering::Acquire);
    for p in 0..n {
        assert_eq!(at(&m, p * PAGE + 17), byte(p), "page {p} at the end");
    }
    let st = fs.dax_stats();
    assert!(
        st.windows >= 2 && st.continued > 0 && st.invalidations > 0,
        "{st:?}"
    );
}
