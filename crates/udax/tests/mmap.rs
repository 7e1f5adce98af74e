//! M1-M7, M12, M14: the DAX mmap core through real page faults (userfaultfd).
//! Needs userfaultfd for kernel-context faults: run as root (CI does).

mod common;

use common::{fresh, kernel_load, pipe, Watchdog};
use std::sync::Arc;
use udax::device::{self, Device, OpenOptions as DevOpen};
use udax::fs::{falloc, File, Fs, MkfsOptions};
use udax::{MapFlags, Mapping, Prot};

const MB: u64 = 1 << 20;

fn map(f: &File, off: u64, len: usize, prot: Prot, flags: MapFlags) -> Mapping {
    f.mmap(off, len, prot, flags)
        .expect("mmap (the fault engine needs userfaultfd; run as root)")
}

fn slice(m: &Mapping) -> &'static mut [u8] {
    // SAFETY: the mapping outlives every use in these tests (dropped at the end
    // of each test after the last access); the bytes are plain memory.
    unsafe { std::slice::from_raw_parts_mut(m.as_ptr(), m.len()) }
}

/// `read(2)` from a pipe holding `data` into `dst`: the kernel stores into the
/// mapping inside the system call.
fn kernel_store(dst: *mut u8, data: &[u8]) -> Result<usize, i32> {
    let (r, w) = pipe();
    // SAFETY: writes from a valid slice; reads into `dst`, which the test owns
    // (a udax mapping) for `data.len()` bytes; both fds are ours and closed.
    unsafe {
        assert_eq!(
            libc::write(w, data.as_ptr().cast(), data.len()),
            data.len() as isize
        );
        let n = libc::read(r, dst.cast(), data.len());
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        libc::close(r);
        libc::close(w);
        if n < 0 {
            Err(e)
        } else {
            Ok(n as usize)
        }
    }
}

/// The smaps field lines (`Rss: ...`, `KernelPageSize: ...`) of the VMAs that
/// start inside a mapping; with `device_only`, only VMAs mapping the device
/// (a memfd named "udax"), not the anonymous hole placeholders.
fn smaps_fields(m: &Mapping, device_only: bool) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let (base, end) = (m.as_ptr() as usize, m.as_ptr() as usize + m.len());
    let mut ours = false;
    let mut out = Vec::new();
    for line in smaps.lines() {
        let start = line
            .split_once(' ')
            .and_then(|(range, _)| range.split_once('-'))
            .and_then(|(a, _)| usize::from_str_radix(a, 16).ok());
        match start {
            Some(a) => ours = a >= base && a < end && (!device_only || line.contains("udax")),
            None if ours => out.push(line.to_string()),
            None => {}
        }
    }
    out
}

/// Resident memory (smaps `Rss`) of the VMAs inside a mapping, in KiB. The
/// shared zero page is not counted, device pages are.
fn rss_kb(m: &Mapping) -> u64 {
    smaps_fields(m, false)
        .iter()
        .filter_map(|l| l.strip_prefix("Rss:"))
        .map(|v| {
            v.trim()
                .trim_end_matches(" kB")
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

#[test]
fn m1_stores_loads_write_at_read_at_and_two_mappings_are_coherent() {
    let fs = fresh(64);
    let f = fs.create("/a", 0o644).unwrap();
    f.write_at(&vec![7u8; 3 * 4096], 0).unwrap();
    let m1 = map(&f, 0, 3 * 4096, Prot::ReadWrite, MapFlags::SHARED);
    let m2 = map(&f, 0, 3 * 4096, Prot::ReadWrite, MapFlags::SHARED);
    let (a, b) = (slice(&m1), slice(&m2));
    assert!(a.iter().all(|&x| x == 7));
    a[5000] = 42;
    assert_eq!(b[5000], 42, "second mapping sees the store at once");
    let mut buf = [0u8; 1];
    f.read_at(&mut buf, 5000).unwrap();
    assert_eq!(buf[0], 42, "read_at sees the store");
    f.write_at(b"xyz", 9000).unwrap();
    assert_eq!(&a[9000..9003], b"xyz", "mapping sees write_at");
    assert_eq!(&b[9000..9003], b"xyz");
    // Both mappings show the same device block: no copy anywhere.
    assert_eq!(m1.device_block_of(4096), m2.device_block_of(4096));
    let blk = m1.device_block_of(4096).unwrap();
    // The reverse map finds both mappings of that block.
    let mut owners = fs.mappings_of_block(blk);
    owners.sort();
    let mut want = vec![
        (f.ino(), m1.as_ptr() as usize + 4096),
        (f.ino(), m2.as_ptr() as usize + 4096),
    ];
    want.sort();
    assert_eq!(owners, want);
}

#[test]
fn m2_read_fault_on_hole_maps_zero_page_and_allocates_nothing() {
    let fs = fresh(64);
    let f = fs.create("/hole", 0o644).unwrap();
    f.set_len(8 * MB).unwrap();
    let before = fs.dax_stats();
    let m = map(&f, 0, 8 << 20, Prot::ReadWrite, MapFlags::SHARED);
    let s = slice(&m);
    let sum: u64 = s.iter().step_by(4096).map(|&x| x as u64).sum();
    assert_eq!(sum, 0);
    assert_eq!(f.stat().unwrap().blocks, 0, "no block allocated by reads");
    assert_eq!(rss_kb(&m), 0, "zero pages use no memory per page");
    let after = fs.dax_stats();
    assert!(after.zero_maps > before.zero_maps);
    assert_eq!(m.device_block_of(0), None);
    // The write-protected zero page is not an anonymous page that swallows
    // stores: a store now allocates and lands on the device.
    s[4096 * 3 + 1] = 9;
    let mut b = [0u8; 1];
    f.read_at(&mut b, 4096 * 3 + 1).unwrap();
    assert_eq!(b[0], 9);
    assert!(f.stat().unwrap().blocks > 0);
}

#[test]
fn m3_generic_428_store_to_hole_replaces_zero_page_in_every_mapping() {
    let fs = fresh(64);
    let f = fs.create("/z", 0o644).unwrap();
    f.set_len(4 * MB).unwrap();
    // Unaligned second mapping: 4 KiB entries there, 2 MiB in the first.
    let m1 = map(&f, 0, 4 << 20, Prot::ReadWrite, MapFlags::SHARED);
    let m2 = map(
        &f,
        4096,
        (4 << 20) - 4096,
        Prot::ReadWrite,
        MapFlags::SHARED,
    );
    let (a, b) = (slice(&m1), slice(&m2));
    assert_eq!(a[8192], 0);
    assert_eq!(b[8192 - 4096], 0);
    assert_eq!(a[3 << 20], 0);
    // Store through the first mapping.
    a[8192] = 0x5a;
    assert_eq!(
        b[8192 - 4096],
        0x5a,
        "no stale zero page in the other mapping"
    );
    // The kernel stores through the second mapping (read(2) into it).
    assert_eq!(
        kernel_store(b[(3 << 20) - 4096..].as_mut_ptr(), b"kernel").unwrap(),
        6
    );
    assert_eq!(&a[3 << 20..(3 << 20) + 6], b"kernel");
    let mut buf = [0u8; 6];
    f.read_at(&mut buf, 3 << 20).unwrap();
    assert_eq!(&buf, b"kernel");
    // write_at into a hole shown as zeros in both mappings.
    assert_eq!(a[(1 << 20) + 5], 0);
    f.write_at(b"W", (1 << 20) + 5).unwrap();
    assert_eq!(a[(1 << 20) + 5], b'W');
    assert_eq!(b[(1 << 20) + 5 - 4096], b'W');
}

#[test]
fn m3_kernel_write_into_unpopulated_mapped_page_allocates() {
    let fs = fresh(64);
    let f = fs.create("/k", 0o644).unwrap();
    f.set_len(64 * 1024).unwrap();
    let m = map(&f, 0, 64 * 1024, Prot::ReadWrite, MapFlags::SHARED);
    let data: Vec<u8> = (0..20000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(kernel_store(m.as_ptr(), &data).unwrap(), data.len());
    let mut back = vec![0u8; data.len()];
    f.read_at(&mut back, 0).unwrap();
    assert_eq!(back, data);
    // The kernel loads from the mapping too.
    assert_eq!(kernel_load(m.as_ptr(), data.len()).unwrap(), data);
}

#[test]
fn m7_kernel_context_faults_are_counted_apart_from_user_faults() {
    let fs = fresh(64);
    let f = fs.create("/kc", 0o644).unwrap();
    f.set_len(4 << 20).unwrap();
    let m = map(&f, 0, 4 << 20, Prot::ReadWrite, MapFlags::SHARED);
    let s0 = fs.dax_stats();
    slice(&m)[5] = 1; // a user store: a fault, not a kernel one
    let s1 = fs.dax_stats();
    assert!(s1.faults > s0.faults);
    assert_eq!(s1.kernel_faults, s0.kernel_faults, "{s1:?}");
    // read(2) into the other (unpopulated) 2 MiB chunk: the kernel faults.
    // SAFETY: inside the 4 MiB mapping.
    let dst = unsafe { m.as_ptr().add((2 << 20) + 100) };
    assert_eq!(kernel_store(dst, b"from the kernel").unwrap(), 15);
    let s2 = fs.dax_stats();
    assert_eq!(s2.kernel_faults, s1.kernel_faults + 1, "{s2:?}");
    assert!(udax::stats().kernel_faults >= 1);
    // Resolved: a user load of that page faults no more.
    assert_eq!(
        &slice(&m)[(2 << 20) + 100..(2 << 20) + 115],
        b"from the kernel"
    );
    assert_eq!(fs.dax_stats().faults, s2.faults);
}

#[test]
fn m4_concurrent_faults_on_one_page_allocate_once() {
    let fs = fresh(64);
    let f = fs.create("/race", 0o644).unwrap();
    f.set_len(16 * 4096).unwrap();
    let free0 = fs.statfs().free_blocks;
    let maps: Vec<Mapping> = (0..4)
        .map(|i| {
            map(
                &f,
                0,
                16 * 4096,
                Prot::ReadWrite,
                if i == 3 {
                    MapFlags::SHARED.sync()
                } else {
                    MapFlags::SHARED
                },
            )
        })
        .collect();
    let addrs: Vec<usize> = maps.iter().map(|m| m.as_ptr() as usize).collect();
    std::thread::scope(|s| {
        for t in 0..8usize {
            let addrs = &addrs;
            s.spawn(move || {
                for page in 0..16usize {
                    let p = (addrs[t % 4] + page * 4096 + t * 8) as *mut u8;
                    // SAFETY: inside a live mapping of 16 pages.
                    unsafe {
                        if t % 2 == 0 {
                            p.write_volatile(t as u8 + 1)
                        } else {
                            let _ = p.read_volatile();
                            p.write_volatile(t as u8 + 1)
                        }
                    }
                }
            });
        }
    });
    for page in 0..16u64 {
        let mut b = [0u8; 64];
        f.read_at(&mut b, page * 4096).unwrap();
        for t in 0..8usize {
            assert_eq!(
                b[t * 8],
                t as u8 + 1,
                "store of thread {t} to page {page} lost"
            );
        }
        let blk = maps[0].device_block_of(page as usize * 4096);
        for m in &maps[1..] {
            assert_eq!(m.device_block_of(page as usize * 4096), blk);
        }
    }
    assert_eq!(
        f.stat().unwrap().blocks,
        16 * 8,
        "exactly one block per page"
    );
    assert_eq!(free0 - fs.statfs().free_blocks, 16);
}

#[test]
fn m5_kernel_access_beyond_eof_gets_efault() {
    let fs = fresh(64);
    let f = fs.create("/eof", 0o644).unwrap();
    f.write_at(&[1u8; 5000], 0).unwrap(); // two pages (EOF rounded up)
    let m = map(&f, 0, 4 * 4096, Prot::ReadWrite, MapFlags::SHARED);
    let s = slice(&m);
    assert_eq!(s[4999], 1);
    assert_eq!(s[5000], 0, "the tail of the last page reads zeros");
    assert_eq!(
        kernel_store(s[2 * 4096..].as_mut_ptr(), b"x"),
        Err(libc::EFAULT)
    );
    assert_eq!(kernel_load(s[3 * 4096..].as_ptr(), 1), Err(libc::EFAULT));
    // Growing the file makes the pages accessible again.
    f.set_len(4 * 4096).unwrap();
    assert_eq!(kernel_store(s[2 * 4096..].as_mut_ptr(), b"y"), Ok(1));
    assert_eq!(s[2 * 4096], b'y');
}

#[test]
fn m5_truncate_unmaps_cut_range_from_every_mapping() {
    let fs = fresh(64);
    let f = fs.create("/t", 0o644).unwrap();
    f.write_at(&vec![3u8; 4 << 20], 0).unwrap();
    let m1 = map(&f, 0, 4 << 20, Prot::ReadWrite, MapFlags::SHARED);
    let m2 = map(&f, 4096, (4 << 20) - 4096, Prot::Read, MapFlags::SHARED);
    let (a, b) = (slice(&m1), slice(&m2));
    assert_eq!(a[3 << 20], 3);
    assert_eq!(b[(3 << 20) - 4096], 3);
    let blk_before = m1.device_block_of(3 << 20).unwrap();
    f.set_len(10000).unwrap();
    assert_eq!(m1.device_block_of(3 << 20), None, "cut range unmapped");
    assert_eq!(m2.device_block_of((3 << 20) - 4096), None);
    assert_eq!(kernel_load(a[3 << 20..].as_ptr(), 1), Err(libc::EFAULT));
    assert_eq!(kernel_load(b[(1 << 20)..].as_ptr(), 1), Err(libc::EFAULT));
    assert_eq!(a[9999], 3, "kept part still mapped");
    assert_eq!(a[10000], 0, "tail of the last page zeroed");
    // The freed block may be reused by another file; the old mappings never see it.
    let g = fs.create("/other", 0o644).unwrap();
    g.write_at(&vec![0xEEu8; 4 << 20], 0).unwrap();
    assert_eq!(kernel_load(a[3 << 20..].as_ptr(), 1), Err(libc::EFAULT));
    assert!(
        fs.mappings_of_block(blk_before)
            .iter()
            .all(|(ino, _)| *ino != f.ino()),
        "no mapping of the truncated file still shows its freed block"
    );
    // Extend again: the range is a hole now, reads zeros.
    f.set_len(4 << 20).unwrap();
    assert_eq!(a[3 << 20], 0);
    assert_eq!(b[(3 << 20) - 4096], 0);
}

#[test]
fn m6_private_mapping_copies_on_write_and_sees_later_file_changes() {
    let fs = fresh(64);
    let f = fs.create("/p", 0o644).unwrap();
    f.write_at(&vec![1u8; 4 * 4096], 0).unwrap();
    f.set_len(6 * 4096).unwrap(); // pages 4-5: a hole
    let p = map(&f, 0, 6 * 4096, Prot::ReadWrite, MapFlags::PRIVATE);
    let s = slice(&p);
    assert_eq!(s[0], 1);
    s[0] = 99; // copy of page 0
    let mut b = [0u8; 1];
    f.read_at(&mut b, 0).unwrap();
    assert_eq!(b[0], 1, "the file is unchanged by a private store");
    // Page 1 is not copied yet: it follows the file.
    assert_eq!(s[4096], 1);
    f.write_at(&[2], 4096).unwrap();
    assert_eq!(
        s[4096], 2,
        "a not-yet-copied private page sees file changes"
    );
    f.write_at(&[3], 0).unwrap();
    assert_eq!(s[0], 99, "a copied page keeps its private data");
    // Holes: zero page, a private store copies it without allocating.
    let blocks = f.stat().unwrap().blocks;
    assert_eq!(s[4 * 4096], 0);
    s[4 * 4096] = 5;
    assert_eq!(
        f.stat().unwrap().blocks,
        blocks,
        "private store allocates nothing"
    );
    f.read_at(&mut b, 4 * 4096).unwrap();
    assert_eq!(b[0], 0);
    // A hole read privately then allocated in the file shows the file's data.
    assert_eq!(s[5 * 4096], 0);
    f.write_at(&[8], 5 * 4096).unwrap();
    assert_eq!(s[5 * 4096], 8);
    assert_eq!(s[4 * 4096], 5);
    // Fault-around never maps over a private copy: page 3 was copied, then a
    // fault on page 2 maps the rest of the extent.
    let q = map(&f, 0, 4 * 4096, Prot::ReadWrite, MapFlags::PRIVATE);
    let qs = slice(&q);
    qs[3 * 4096] = 33; // fault on page 3 maps 3.., then the store copies page 3
    assert_eq!(qs[2 * 4096], 1); // fault on page 2: window stops at page 3
    assert_eq!(qs[3 * 4096], 33, "private copy kept");
    // Shared mappings never see private stores.
    let sh = map(&f, 0, 6 * 4096, Prot::Read, MapFlags::SHARED);
    assert_eq!(slice(&sh)[0], 3);
}

#[test]
fn m7_aligned_allocated_range_maps_2m_at_once_unaligned_falls_back_to_4k() {
    let fs = fresh(64);
    let f = fs.create("/huge", 0o644).unwrap();
    f.fallocate(0, 0, 8 * MB).unwrap();
    let s0 = fs.dax_stats();
    let m = map(&f, 0, 8 << 20, Prot::ReadWrite, MapFlags::SHARED);
    let s = slice(&m);
    for i in (0..s.len()).step_by(4096) {
        s[i] = 1;
    }
    let s1 = fs.dax_stats();
    assert_eq!(
        s1.pmd_maps - s0.pmd_maps,
        4,
        "four 2 MiB mappings for 8 MiB"
    );
    // A mapping at an offset not 2 MiB aligned relative to the device: 4 KiB entries.
    let u = map(&f, 4096, 2 << 20, Prot::Read, MapFlags::SHARED);
    let us = slice(&u);
    let sum: u64 = us.iter().step_by(4096).map(|&x| x as u64).sum();
    assert_eq!(sum, 512);
    let s2 = fs.dax_stats();
    assert_eq!(s2.pmd_maps, s1.pmd_maps, "no 2 MiB mapping when unaligned");
    assert!(s2.pte_maps > s1.pte_maps);
    // Writing one page of a 2 MiB zero entry splits it (only via a 4 KiB fault).
    let g = fs.create("/split", 0o644).unwrap();
    g.set_len(4 * MB).unwrap();
    let big = map(&g, 0, 4 << 20, Prot::ReadWrite, MapFlags::SHARED);
    let small = map(&g, 4096, 8192, Prot::ReadWrite, MapFlags::SHARED);
    assert_eq!(slice(&big)[100], 0); // 2 MiB zero entry
    slice(&small)[0] = 7; // 4 KiB write fault inside it
    assert_eq!(
        slice(&big)[4096],
        7,
        "big mapping sees the block after the split"
    );
    assert_eq!(g.stat().unwrap().blocks, 8, "one 4 KiB block allocated");
}

#[test]
fn m12_punch_zero_collapse_insert_unmap_before_changing_extents() {
    let fs = fresh(64);
    let f = fs.create("/b", 0o644).unwrap();
    let data: Vec<u8> = (0..16 * 4096u32).map(|i| (i / 4096) as u8 + 1).collect();
    f.write_at(&data, 0).unwrap();
    let m = map(&f, 0, 16 * 4096, Prot::ReadWrite, MapFlags::SHARED);
    let s = slice(&m);
    assert_eq!(s[2 * 4096], 3);
    f.fallocate(falloc::PUNCH_HOLE | falloc::KEEP_SIZE, 2 * 4096, 2 * 4096)
        .unwrap();
    assert_eq!(
        s[2 * 4096],
        0,
        "punched range reads zeros through the mapping"
    );
    assert_eq!(s[3 * 4096 + 7], 0);
    s[2 * 4096] = 77; // refault allocates again
    let mut b = [0u8; 1];
    f.read_at(&mut b, 2 * 4096).unwrap();
    assert_eq!(b[0], 77);
    f.fallocate(falloc::ZERO_RANGE, 5 * 4096, 4096).unwrap();
    assert_eq!(s[5 * 4096 + 1], 0);
    f.fallocate(falloc::COLLAPSE_RANGE, 0, 4096).unwrap();
    assert_eq!(s[0], 2, "collapse shifts what the mapping shows");
    assert_eq!(s[14 * 4096], 16);
    assert_eq!(
        kernel_load(s[15 * 4096..].as_ptr(), 1),
        Err(libc::EFAULT),
        "past new EOF"
    );
    f.fallocate(falloc::INSERT_RANGE, 0, 4096).unwrap();
    assert_eq!(s[0], 0);
    assert_eq!(s[4096], 2);
}

#[test]
fn m14_generic_462_kernel_write_into_read_only_mapping_gets_efault() {
    let fs = fresh(64);
    let f = fs.create("/ro", 0o644).unwrap();
    f.write_at(&[4u8; 8192], 0).unwrap();
    f.set_len(4 * 4096).unwrap();
    let m = map(&f, 0, 4 * 4096, Prot::Read, MapFlags::SHARED);
    let s = slice(&m);
    assert_eq!(s[0], 4);
    assert_eq!(
        kernel_store(s.as_mut_ptr(), b"no"),
        Err(libc::EFAULT),
        "mapped page"
    );
    assert_eq!(
        kernel_store(s[3 * 4096..].as_mut_ptr(), b"no"),
        Err(libc::EFAULT),
        "hole"
    );
    assert_eq!(f.stat().unwrap().blocks, 16, "nothing allocated");
    // A read-only handle cannot make a shared writable mapping.
    let ro = fs.open("/ro", &udax::fs::OpenOptions::read_only()).unwrap();
    assert_eq!(
        ro.mmap(0, 4096, Prot::ReadWrite, MapFlags::SHARED)
            .unwrap_err()
            .errno(),
        libc::EACCES
    );
    assert!(ro.mmap(0, 4096, Prot::ReadWrite, MapFlags::PRIVATE).is_ok());
}

#[test]
fn m1_generic_647_read_write_with_buffer_in_mapping_of_same_file() {
    let fs = fresh(64);
    let f = fs.create("/rw", 0o644).unwrap();
    f.set_len(1 << 20).unwrap();
    let m = map(&f, 0, 1 << 20, Prot::ReadWrite, MapFlags::SHARED);
    let s = slice(&m);
    // write_at from an unpopulated part of a mapping of the same file.
    s[0..4].copy_from_slice(b"abcd");
    assert_eq!(f.write_at(&s[0..65536], 512 * 1024).unwrap(), 65536);
    assert_eq!(&s[512 * 1024..512 * 1024 + 4], b"abcd");
    // read_at into an unpopulated part of the mapping (a hole).
    let n = f.read_at(&mut s[768 * 1024..768 * 1024 + 8192], 0).unwrap();
    assert_eq!(n, 8192);
    assert_eq!(&s[768 * 1024..768 * 1024 + 4], b"abcd");
}

#[test]
fn m12_generic_503_io_with_buffer_in_mapping_races_punch_zero_collapse_truncate() {
    let fs = fresh(128);
    let f = fs.create("/503", 0o644).unwrap();
    let size = 1u64 << 20;
    f.write_at(&vec![0xabu8; size as usize], 0).unwrap();
    // The I/O buffer: a mapping of the first 64 KiB of the same file, which no
    // layout change below touches.
    let m = map(&f, 0, 64 * 1024, Prot::ReadWrite, MapFlags::SHARED);
    let buf = m.as_ptr() as usize;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (f, stop) = (&f, &stop);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // SAFETY: 64 KiB live mapping, this thread's 16 KiB slice.
                    let b = unsafe {
                        std::slice::from_raw_parts_mut((buf + t as usize * 16384) as *mut u8, 16384)
                    };
                    let off = 256 * 1024 + (i * 4096 * 7 + t * 65536) % (512 * 1024);
                    if i.is_multiple_of(2) {
                        f.write_at(b, off).expect("write_at from a mapped buffer");
                    } else {
                        f.read_at(b, off).expect("read_at into a mapped buffer");
                    }
                    i += 1;
                }
            });
        }
        let (f, stop) = (&f, &stop);
        s.spawn(move || {
            for round in 0..40u64 {
                let off = 256 * 1024 + (round % 8) * 32768;
                f.fallocate(falloc::PUNCH_HOLE | falloc::KEEP_SIZE, off, 16384)
                    .unwrap();
                f.fallocate(falloc::ZERO_RANGE | falloc::KEEP_SIZE, off + 4096, 8192)
                    .unwrap();
                let len = f.len();
                if len > 512 * 1024 {
                    f.fallocate(falloc::COLLAPSE_RANGE, 256 * 1024, 4096)
                        .unwrap();
                    f.fallocate(falloc::INSERT_RANGE, 256 * 1024, 4096).unwrap();
                }
                f.set_len(300 * 1024).unwrap();
                f.set_len(size).unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    });
    drop(m);
    drop(f);
    let rep = udax::fs::fsck(fs.device().clone()).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
}

#[test]
fn m4_m12_stress_kernel_stores_into_mapping_race_truncate_no_leak() {
    let fs = fresh(128);
    let free0 = fs.statfs().free_blocks;
    let f = fs.create("/s", 0o644).unwrap();
    let len = 2usize << 20;
    f.set_len(len as u64).unwrap();
    let maps: Vec<Mapping> = (0..2)
        .map(|_| map(&f, 0, len, Prot::ReadWrite, MapFlags::SHARED))
        .collect();
    let bases: Vec<usize> = maps.iter().map(|m| m.as_ptr() as usize).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ok, efault) = (
        std::sync::atomic::AtomicU64::new(0),
        std::sync::atomic::AtomicU64::new(0),
    );
    std::thread::scope(|s| {
        for t in 0..3usize {
            let (bases, stop, ok, efault) = (&bases, &stop, &ok, &efault);
            s.spawn(move || {
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let page = (i * 37 + t * 101) % (len / 4096);
                    let p = (bases[(i + t) % 2] + page * 4096) as *mut u8;
                    match kernel_store(p, &[t as u8 + 1; 64]) {
                        Ok(64) => ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                        Err(libc::EFAULT) => {
                            efault.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        }
                        other => panic!("kernel store into the mapping: {other:?}"),
                    };
                    i += 1;
                }
            });
        }
        let (f, stop) = (&f, &stop);
        s.spawn(move || {
            for round in 0..30u64 {
                f.set_len((round % 3) * 4096 * 50).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
                f.set_len(len as u64).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    });
    assert!(ok.load(std::sync::atomic::Ordering::Relaxed) > 0);
    drop(maps);
    // Every page either holds a store or zeros: never another file's data.
    let mut all = vec![0u8; len];
    f.read_at(&mut all, 0).unwrap();
    assert!(all.iter().all(|&b| b <= 3));
    drop(f);
    fs.unlink("/s").unwrap();
    assert_eq!(fs.statfs().free_blocks, free0, "no block leaked");
    let rep = udax::fs::fsck(fs.device().clone()).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
}

#[test]
fn m11_pins_hold_truncate_nowait_is_ebusy_longterm_refused() {
    let fs = fresh(64);
    let f = fs.create("/pin", 0o644).unwrap();
    f.write_at(&vec![1u8; 8 * 4096], 0).unwrap();
    let m = map(&f, 0, 8 * 4096, Prot::ReadWrite, MapFlags::SHARED);
    assert_eq!(
        m.pin_longterm(0, 4096).unwrap_err().errno(),
        libc::EOPNOTSUPP
    );
    let pin = m.pin(4096, 2 * 4096, true).unwrap();
    assert_eq!(pin.blocks().len(), 2);
    assert_eq!(f.set_len_nowait(0).unwrap_err().errno(), libc::EBUSY);
    assert_eq!(
        f.fallocate_nowait(falloc::PUNCH_HOLE | falloc::KEEP_SIZE, 0, 8192)
            .unwrap_err()
            .errno(),
        libc::EBUSY
    );
    // The blocking variant waits for the pin.
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            f.set_len(0).unwrap();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            !done.load(std::sync::atomic::Ordering::SeqCst),
            "truncate must wait for the pin"
        );
        drop(pin);
    });
    assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(f.stat().unwrap().blocks, 0);
}

#[test]
fn m13_unmount_with_a_live_mapping_names_it_instead_of_hanging() {
    let fs = fresh(64);
    let f = fs.create("/leak", 0o644).unwrap();
    f.write_at(&[1u8; 4096], 0).unwrap();
    let m = map(&f, 0, 4096, Prot::Read, MapFlags::SHARED);
    assert_eq!(slice(&m)[0], 1);
    let err = fs
        .clone()
        .unmount_timeout(std::time::Duration::from_millis(50))
        .unwrap_err();
    assert_eq!(err.errno(), libc::EBUSY);
    let msg = err.to_string();
    assert!(msg.contains(&format!("inode {}", f.ino())), "{msg}");
    drop(m);
    drop(f);
    fs.unmount_timeout(std::time::Duration::from_millis(50))
        .unwrap();
}

#[test]
fn m8_msync_flushes_exactly_the_pages_stored_since_last_sync() {
    let fs = fresh(64);
    let f = fs.create("/dirty", 0o644).unwrap();
    f.fallocate(0, 0, 4 * MB).unwrap();
    let m = map(&f, 0, 4 << 20, Prot::ReadWrite, MapFlags::SHARED);
    let s = slice(&m);
    for i in (0..s.len()).step_by(4096) {
        // SAFETY: inside the mapping. Map everything with read faults.
        unsafe { std::ptr::read_volatile(&s[i]) };
    }
    let flushed = |fs: &Fs| fs.dax_stats().flushed_pages;
    let base = flushed(&fs);
    m.msync(0, m.len()).unwrap();
    assert_eq!(flushed(&fs) - base, 0, "nothing stored, nothing flushed");
    for p in [3usize, 100, 700, 701] {
        s[p * 4096 + 17] = 1;
    }
    m.msync(0, m.len()).unwrap();
    assert_eq!(flushed(&fs) - base, 4, "exactly the four stored pages");
    m.msync(0, m.len()).unwrap();
    assert_eq!(flushed(&fs) - base, 4, "re-armed: nothing new");
    // A store after the sync is tracked for the next one, also via fsync; a
    // store made by the kernel (read(2) into the mapping) counts too.
    s[5 * 4096] = 2;
    assert_eq!(kernel_store(s[9 * 4096..].as_mut_ptr(), b"k").unwrap(), 1);
    f.fsync().unwrap();
    assert_eq!(flushed(&fs) - base, 6);
    // msync of a sub-range flushes only what is in it.
    s[10 * 4096] = 3;
    s[900 * 4096] = 3;
    m.msync(0, 512 * 4096).unwrap();
    assert_eq!(flushed(&fs) - base, 7);
    m.msync(512 * 4096, 512 * 4096).unwrap();
    assert_eq!(flushed(&fs) - base, 8);
}

#[test]
fn m9_map_sync_store_plus_persist_survives_crash_without_fsync() {
    use udax::device::{MappedCrashDevice, RamDevice};
    let dev = Arc::new(MappedCrashDevice::new(64 << 20).unwrap());
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone()).unwrap();
    let f = fs.create("/sync", 0o644).unwrap();
    f.set_len(8 * 4096).unwrap(); // all holes: the stores allocate by fault
    let m = map(&f, 0, 8 * 4096, Prot::ReadWrite, MapFlags::SHARED.sync());
    let s = slice(&m);
    s[4096..4096 + 11].copy_from_slice(b"synchronous");
    udax::persist(s[4096..].as_ptr(), 11).unwrap();
    // Control: a store that is never persisted is lost by the crash.
    s[3 * 4096..3 * 4096 + 4].copy_from_slice(b"lost");
    let image = dev.crash_image();
    drop(m);
    drop(f);
    drop(fs);
    let after: Arc<dyn Device> = Arc::new(RamDevice::from_image(image));
    let fs = Fs::mount(after).unwrap();
    let f = fs
        .open("/sync", &udax::fs::OpenOptions::read_only())
        .unwrap();
    let mut b = [0u8; 11];
    f.read_at(&mut b, 4096).unwrap();
    assert_eq!(
        &b, b"synchronous",
        "block allocation and data durable without fsync"
    );
    let mut c = [0u8; 4];
    f.read_at(&mut c, 3 * 4096).unwrap();
    assert_eq!(
        c, [0; 4],
        "unpersisted store lost (the block itself is allocated and zeroed)"
    );
    assert!(udax::fs::fsck(fs.device().clone())
        .unwrap()
        .problems
        .is_empty());
}

#[test]
fn m7_hugetlbfs_device_maps_real_2m_pages() {
    let Some(fs) = huge_fs("m7_hugetlbfs_device_maps_real_2m_pages") else {
        return;
    };
    let f = fs.create("/h", 0o644).unwrap();
    f.write_at(&vec![5u8; 4 << 20], 0).unwrap();
    f.set_len(8 * MB).unwrap(); // 4 MiB data, then a 4 MiB hole
    let m = map(&f, 0, 8 << 20, Prot::ReadWrite, MapFlags::SHARED);
    let s = slice(&m);
    assert_eq!(s[1 << 20], 5);
    assert_eq!(s[3 << 20], 5);
    s[5 << 20] = 6; // write fault on a hole: allocates 2 MiB
    let mut b = [0u8; 1];
    f.read_at(&mut b, 5 << 20).unwrap();
    assert_eq!(b[0], 6);
    assert_eq!(fs.dax_stats().pmd_maps, 3);
    // The kernel backs the mapping with 2 MiB pages.
    let sizes: Vec<String> = smaps_fields(&m, true)
        .into_iter()
        .filter(|l| l.starts_with("KernelPageSize:"))
        .collect();
    assert!(
        !sizes.is_empty(),
        "device ranges of the mapping not found in smaps"
    );
    for l in &sizes {
        assert!(l.contains("2048 kB"), "{l}");
    }
}

/// A file system on a hugetlbfs memfd device, or `None` (skipped, said why)
/// where huge pages are unavailable and not required.
fn huge_fs(test: &str) -> Option<Fs> {
    let require = std::env::var("UDAX_REQUIRE_HUGEPAGES").is_ok_and(|v| v == "1");
    match device::open("memfd-huge:32M", &DevOpen::default()) {
        Ok(dev) => {
            Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
            Some(Fs::mount(dev).unwrap())
        }
        Err(e) => {
            assert!(
                !require,
                "UDAX_REQUIRE_HUGEPAGES=1 but no huge-page memfd: {e}"
            );
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}

#[test]
fn m7_hugetlbfs_chunk_with_a_rewritten_block_is_moved_and_mapped_2m() {
    let Some(fs) = huge_fs("m7_hugetlbfs_chunk_with_a_rewritten_block_is_moved_and_mapped_2m")
    else {
        return;
    };
    let f = fs.create("/h", 0o644).unwrap();
    f.write_at(&vec![5u8; 4 << 20], 0).unwrap();
    // Punch a block of the second chunk, let another file take it (small
    // allocations fill partly used chunks), and write it again: it gets a
    // block from elsewhere, and the chunk is no longer one aligned extent.
    let at = (2 << 20) + 8192;
    f.fallocate(falloc::PUNCH_HOLE | falloc::KEEP_SIZE, at, 4096)
        .unwrap();
    fs.create("/other", 0o644)
        .unwrap()
        .write_at(&[1u8; 4096], 0)
        .unwrap();
    f.write_at(&[9u8; 4096], at).unwrap();
    let ext = f.extents();
    assert!(ext.len() > 2, "the second chunk is fragmented: {ext:?}");
    let free = fs.statfs().free_blocks;
    let maps = fs.dax_stats().pmd_maps;
    let m = map(&f, 0, 4 << 20, Prot::ReadWrite, MapFlags::SHARED);
    let s = slice(&m);
    assert_eq!(s[at as usize], 9, "the rewritten block");
    assert_eq!(s[(2 << 20) + 1], 5);
    assert_eq!(s[(4 << 20) - 1], 5);
    assert_eq!(s[1], 5);
    assert_eq!(
        fs.dax_stats().pmd_maps,
        maps + 2,
        "both chunks mapped 2 MiB"
    );
    let b = m.device_block_of(2 << 20).expect("mapped");
    assert_eq!(b % 512, 0, "moved to an aligned extent");
    assert_eq!(m.device_block_of(at as usize), Some(b + 2));
    assert_eq!(fs.statfs().free_blocks, free, "the old blocks were freed");
    // Stores through the mapping reach the file.
    s[at as usize + 1] = 7;
    let mut back = [0u8; 2];
    f.read_at(&mut back, at).unwrap();
    assert_eq!(back, [9, 7]);
}

#[test]
fn m7_hugetlbfs_sparse_chunk_is_filled_and_mapped_2m() {
    let Some(fs) = huge_fs("m7_hugetlbfs_sparse_chunk_is_filled_and_mapped_2m") else {
        return;
    };
    let f = fs.create("/s", 0o644).unwrap();
    f.set_len(2 << 20).unwrap();
    f.write_at(&[b'a'; 4096], 0).unwrap();
    f.write_at(&[b'b'; 4096], 1 << 20).unwrap();
    assert_eq!(f.stat().unwrap().blocks, 2 * 8);
    let m = map(&f, 0, 2 << 20, Prot::Read, MapFlags::SHARED);
    let s = slice(&m);
    assert_eq!(s[0], b'a');
    assert_eq!(s[1 << 20], b'b');
    assert_eq!(s[4096], 0, "a hole reads as zeros");
    assert_eq!(s[(2 << 20) - 1], 0);
    assert!(m.device_block_of(0).is_some_and(|b| b % 512 == 0));
    // The holes became zeroed blocks, as a write fault over the chunk would
    // allocate them.
    assert_eq!(f.stat().unwrap().blocks, 512 * 8);
}

#[test]
fn m3_store_racing_a_zero_page_read_fault_is_never_lost() {
    let fs = fresh(64);
    let f = fs.create("/zr", 0o644).unwrap();
    let pages = 512usize;
    f.set_len((pages * 4096) as u64).unwrap();
    // Unaligned mapping: 4 KiB faults with zero-page fault-around.
    let m = map(
        &f,
        4096,
        (pages - 1) * 4096,
        Prot::ReadWrite,
        MapFlags::SHARED,
    );
    let base = m.as_ptr() as usize;
    let barrier = std::sync::Barrier::new(3);
    std::thread::scope(|s| {
        for t in 0..3usize {
            let barrier = &barrier;
            s.spawn(move || {
                for i in 0..(pages - 1) / 4 {
                    barrier.wait();
                    let p = (base + i * 4 * 4096 + t * 4096 + 64) as *mut u8;
                    // SAFETY: inside the live mapping.
                    unsafe {
                        if t == 0 {
                            let _ = p.read_volatile();
                        } else {
                            p.write_volatile(t as u8);
                            p.sub(4096 * t).add(16 * t).write_volatile(t as u8);
                        }
                    }
                }
            });
        }
    });
    for i in 0..(pages - 1) / 4 {
        let mut b = [0u8; 4096 * 3];
        f.read_at(&mut b, 4096 + (i * 4 * 4096) as u64).unwrap();
        for t in 1..3usize {
            assert_eq!(
                b[t * 4096 + 64],
                t as u8,
                "store of thread {t} in round {i} lost"
            );
            assert_eq!(
                b[16 * t + 64],
                t as u8,
                "store of thread {t} to the read page lost"
            );
        }
    }
}

/// Regression: with other tests doing `mremap` (break layouts) in parallel,
/// userfaultfd ioctls return EAGAIN while the REMAP event is unread; a zero
/// page install cut short that way must not leave unprotected zero pages behind.
#[test]
fn m7_split_of_2m_zero_entry_stress() {
    let fs = fresh(256);
    for round in 0..300 {
        let name = format!("/split{round}");
        let g = fs.create(&name, 0o644).unwrap();
        g.set_len(4 * MB).unwrap();
        let big = map(&g, 0, 4 << 20, Prot::ReadWrite, MapFlags::SHARED);
        let small = map(&g, 4096, 8192, Prot::ReadWrite, MapFlags::SHARED);
        assert_eq!(slice(&big)[100], 0);
        slice(&small)[0] = 7;
        let got = slice(&big)[4096];
        if got != 7 {
            let mut b = [0u8; 1];
            g.read_at(&mut b, 4096).unwrap();
            panic!(
                "round {round}: big reads {got}, read_at {}, big blk {:?}, small blk {:?}, stats {:?}",
                b[0],
                big.device_block_of(4096),
                small.device_block_of(0),
                fs.dax_stats()
            );
        }
        drop((big, small, g));
        fs.unlink(&name).unwrap();
    }
}

#[test]
fn m1_appends_racing_reads_through_a_mapping_and_fsyncs_stress() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let fs = fresh(256);
    let f = fs.create("/race-log", 0o644).unwrap();
    let m = map(&f, 0, 64 << 20, Prot::Read, MapFlags::SHARED);
    let base = m.as_ptr() as usize;
    let pages = 6000u64;
    let written = AtomicU64::new(0);
    let done = Arc::new(AtomicBool::new(false));
    // A lost wake-up (a reader faulting on a page that an fsync maps ahead
    // without waking anyone) would hang the test: fail it instead.
    let watchdog = Watchdog::start(120, "appends/reads/fsyncs");
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..pages {
                f.write_at(&[(i % 251) as u8 + 1; 4096], i * 4096).unwrap();
                if i % 3 == 2 {
                    f.fsync().unwrap();
                }
                written.store(i + 1, Ordering::Release);
            }
            done.store(true, Ordering::Release);
        });
        s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                f.fsync().unwrap();
            }
        });
        for t in 0..2u64 {
            let (written, done) = (&written, &*done);
            s.spawn(move || {
                let mut r = fastrand::Rng::with_seed(t);
                while !done.load(Ordering::Acquire) {
                    let n = written.load(Ordering::Acquire);
                    if n == 0 {
                        continue;
                    }
                    // The newest page half the time (likely not mapped yet).
                    let p = if r.bool() { n - 1 } else { r.u64(0..n) };
                    // SAFETY: page `p` is inside the file (written) and the mapping.
                    let got =
                        unsafe { ((base + p as usize * 4096 + 17) as *const u8).read_volatile() };
                    assert_eq!(got, (p % 251) as u8 + 1, "page {p} of {n}");
                }
            });
        }
    });
    drop(watchdog);
    for p in [0, pages / 2, pages - 1] {
        assert_eq!(slice(&m)[p as usize * 4096], (p % 251) as u8 + 1);
    }
}

#[test]
fn m1_appends_by_write_at_are_mapped_as_one_run_at_fsync() {
    let fs = fresh(64);
    let f = fs.create("/log", 0o644).unwrap();
    let m = map(&f, 0, 4 << 20, Prot::Read, MapFlags::SHARED);
    let maps0 = fs.dax_stats().pte_maps;
    for i in 0..8u64 {
        f.write_at(&[i as u8 + 1; 4096], i * 4096).unwrap();
    }
    // Collected, not mapped one write at a time.
    assert_eq!(fs.dax_stats().pte_maps, maps0);
    f.fsync().unwrap();
    // Mapped by the fsync as one run (one mmap), before any access.
    assert_eq!(fs.dax_stats().pte_maps, maps0 + 1);
    let faults = fs.dax_stats().faults;
    for i in 0..8usize {
        assert!(m.device_block_of(i * 4096).is_some(), "page {i}");
        assert_eq!(slice(&m)[i * 4096 + 7], i as u8 + 1);
    }
    assert_eq!(fs.dax_stats().faults, faults, "the reads needed no fault");
    // Past the end of file nothing is mapped (a later access gets SIGBUS).
    assert!(m.device_block_of(8 * 4096).is_none());

    // Read before any fsync: the first access faults and the fault maps the
    // run written since from that page on (fault-around).
    for i in 8..12u64 {
        f.write_at(&[i as u8 + 1; 4096], i * 4096).unwrap();
    }
    assert_eq!(slice(&m)[8 * 4096], 9);
    assert_eq!(fs.dax_stats().faults, faults + 1);
    for i in 8..12usize {
        assert!(m.device_block_of(i * 4096).is_some(), "page {i}");
        assert_eq!(slice(&m)[i * 4096 + 1], i as u8 + 1);
    }
    assert!(m.device_block_of(12 * 4096).is_none());
}

#[test]
fn m8_read_only_mapping_has_nothing_to_flush_until_made_writable() {
    let fs = fresh(64);
    let f = fs.create("/ro", 0o644).unwrap();
    f.write_at(&vec![3u8; 16 * 4096], 0).unwrap();
    let m = map(&f, 0, 16 * 4096, Prot::Read, MapFlags::SHARED);
    let s = slice(&m);
    assert_eq!(s[5 * 4096], 3); // maps the pages
    let before = fs.dax_stats().flushed_pages;
    m.msync(0, m.len()).unwrap();
    f.fsync().unwrap();
    assert_eq!(
        fs.dax_stats().flushed_pages,
        before,
        "no store can go through a read-only mapping: nothing to scan or flush"
    );
    // Made writable: the pages mapped while read-only are not tracked, so the
    // next msync flushes them whole (conservative); then tracking is exact.
    m.protect(Prot::ReadWrite).unwrap();
    s[5 * 4096] = 4;
    m.msync(0, m.len()).unwrap();
    let after = fs.dax_stats().flushed_pages;
    assert!(after > before, "the store was flushed");
    let mut b = [0u8; 1];
    f.read_at(&mut b, 5 * 4096).unwrap();
    assert_eq!(b[0], 4);
}

#[test]
fn m1_fork_child_sees_mapped_pages_and_faults_on_unresolved_ones() {
    let fs = fresh(64);
    let f = fs.create("/fork", 0o644).unwrap();
    f.write_at(&[0x11u8; 4096], 0).unwrap();
    f.write_at(&[0x88u8; 4096], 8 * 4096).unwrap(); // another extent
    let m = map(&f, 0, 16 * 4096, Prot::ReadWrite, MapFlags::SHARED);
    let p = m.as_ptr();
    // SAFETY: inside the mapping; maps page 0 (its extent is that page).
    assert_eq!(unsafe { p.read_volatile() }, 0x11);
    assert!(
        m.device_block_of(8 * 4096).is_none(),
        "page 8 not resolved yet"
    );
    // SAFETY: the child only reads memory and calls _exit (async-signal-safe).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: the child's copy of the mapping; page 0 is a device page.
        unsafe {
            if p.read_volatile() != 0x11 {
                libc::_exit(1);
            }
            // No fault handler in the child: SIGSEGV, never silent zeros.
            let v = p.add(8 * 4096).read_volatile();
            libc::_exit(if v == 0 { 2 } else { 3 });
        }
    }
    assert!(pid > 0);
    let mut st = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
    assert!(
        libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSEGV,
        "child status {st:#x}: exit 2 = read zeros from an unresolved page"
    );
    // The parent is unaffected.
    // SAFETY: inside the mapping.
    assert_eq!(unsafe { p.add(8 * 4096).read_volatile() }, 0x88);
}

#[test]
fn m5_sigbus_marker_racing_growth_never_outlives_it_stress() {
    // A thread probing the page just past end of file (kernel loads: EFAULT
    // there) races appends: a marker put on a page the file grows over at
    // that instant must go (the fault re-checks the file's growth), or the
    // page would keep failing once inside the file.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let fs = fresh(64);
    let f = fs.create("/probe", 0o644).unwrap();
    for shared_rw in [false, true] {
        f.set_len(0).unwrap();
        let prot = if shared_rw {
            Prot::ReadWrite
        } else {
            Prot::Read
        };
        let m = map(&f, 0, 16 << 20, prot, MapFlags::SHARED);
        let base = m.as_ptr() as usize;
        let pages = 2000usize;
        let next = AtomicUsize::new(0);
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    let p = next.load(Ordering::Acquire);
                    let _ = kernel_load((base + p * 4096 + 8) as *const u8, 1);
                }
            });
            for i in 0..pages {
                f.write_at(&[(i % 250) as u8 + 1; 4096], (i * 4096) as u64)
                    .unwrap();
                next.store(i + 1, Ordering::Release);
            }
            done.store(true, Ordering::Release);
        });
        for i in 0..pages {
            assert_eq!(
                kernel_load((base + i * 4096 + 8) as *const u8, 1),
                Ok(vec![(i % 250) as u8 + 1]),
                "page {i} inside the file (shared_rw {shared_rw})"
            );
        }
    }
}

#[test]
fn m12_fault_during_a_truncate_waits_on_the_slow_worker_and_sees_the_result() {
    // A truncate waiting for a pin holds the file's invalidate lock: a
    // fault on the file meanwhile is deferred to the slow worker (started
    // then), which resolves it once the truncate is done: SIGBUS past the new
    // end (EFAULT for this kernel access), the data before it.
    use std::sync::atomic::{AtomicBool, Ordering};
    let fs = fresh(64);
    let f = fs.create("/slow", 0o644).unwrap();
    f.write_at(&vec![7u8; 8 * 4096], 0).unwrap();
    let m = map(&f, 0, 8 * 4096, Prot::Read, MapFlags::SHARED);
    let base = m.as_ptr() as usize;
    let pin = m.pin(6 * 4096, 4096, false).unwrap();
    let d0 = fs.dax_stats().deferred;
    let cut = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            f.set_len(4 * 4096).unwrap();
            cut.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        let probe = s.spawn(move || {
            (
                kernel_load((base + 4096) as *const u8, 1),
                kernel_load((base + 5 * 4096) as *const u8, 1),
            )
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            !cut.load(Ordering::SeqCst),
            "the truncate waits for the pin"
        );
        assert!(!probe.is_finished(), "the faults wait for the truncate");
        drop(pin);
        let (inside, cut_off) = probe.join().unwrap();
        assert_eq!(inside, Ok(vec![7]));
        assert_eq!(cut_off, Err(libc::EFAULT));
    });
    assert!(fs.dax_stats().deferred > d0, "{:?}", fs.dax_stats());
}
