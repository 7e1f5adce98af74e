//! Small mappings shown whole when made (docs/dax.md, "Small mappings of one
//! extent"): a mapping under 2 MiB of file pages that one extent maps is one
//! `mmap` of the device range, with no placeholder and no fault. Each test
//! checks one semantic the fault path gives that such a mapping must keep:
//! truncate and punch reach it, msync finds its stores, holes and shared
//! blocks still go through the fault path, its page references are dropped.
//! Needs userfaultfd: run as root (CI does).
#![allow(unsafe_code)]

mod common;

use common::{caught, fresh, kernel_load, Watchdog};
use std::sync::Arc;
use udax::device::{Device, MappedCrashDevice, RamDevice};
use udax::fs::{falloc, File, Fs, MkfsOptions, OpenOptions};
use udax::{MapFlags, Mapping, Prot};

const PAGE: usize = 4096;
const WIN: usize = 16 * PAGE;

fn map(f: &File, off: u64, len: usize, prot: Prot, flags: MapFlags) -> Mapping {
    f.mmap(off, len, prot, flags)
        .expect("mmap (the fault engine needs userfaultfd; run as root)")
}

/// A file of `pages` pages, page `i` filled with byte `i + 1`.
fn filled(fs: &Fs, name: &str, pages: usize) -> File {
    let f = fs.create(name, 0o644).unwrap();
    let data: Vec<u8> = (0..pages * PAGE).map(|i| (i / PAGE + 1) as u8).collect();
    f.write_at(&data, 0).unwrap();
    f
}

fn load(m: &Mapping, off: usize) -> u8 {
    assert!(off < m.len());
    // SAFETY: inside the live mapping.
    unsafe { m.as_ptr().add(off).read_volatile() }
}

fn store(m: &Mapping, off: usize, v: u8) {
    assert!(off < m.len());
    // SAFETY: inside the live, writable mapping.
    unsafe { m.as_ptr().add(off).write_volatile(v) }
}

#[test]
fn a_small_mapping_of_one_extent_is_shown_whole_and_its_loads_and_stores_take_no_fault() {
    let fs = fresh(64);
    let f = filled(&fs, "/f", 64);
    let s0 = fs.dax_stats();
    let m = map(&f, 8 * PAGE as u64, WIN, Prot::ReadWrite, MapFlags::SHARED);
    let s1 = fs.dax_stats();
    assert_eq!(s1.whole_maps, s0.whole_maps + 1, "{s1:?}");
    for p in 0..16 {
        assert_eq!(load(&m, p * PAGE + 5), (p + 9) as u8);
        store(&m, p * PAGE + 7, 0xEE);
    }
    // A system call reading from the mapping finds it mapped too.
    assert_eq!(kernel_load(m.as_ptr(), 4).unwrap(), vec![9u8; 4]);
    assert_eq!(fs.dax_stats().faults, s1.faults, "no fault was taken");
    let mut b = [0u8; 1];
    f.read_at(&mut b, 20 * PAGE as u64 + 7).unwrap();
    assert_eq!(b[0], 0xEE, "the store went to the file's block");
    assert_eq!(m.device_block_of(3 * PAGE), {
        match f.iomap(11) {
            udax::fs::extent::Lookup::Mapped { dev_blk, .. } => Some(dev_blk),
            h => panic!("page 11 is a hole: {h:?}"),
        }
    });
}

#[test]
fn a_mapping_shown_whole_gets_efault_and_sigbus_past_a_later_truncate() {
    let _w = Watchdog::start(60, "a truncated whole mapping");
    let fs = fresh(64);
    let f = filled(&fs, "/t", 16);
    let w0 = fs.dax_stats().whole_maps;
    let m = map(&f, 0, WIN, Prot::ReadWrite, MapFlags::SHARED);
    assert_eq!(fs.dax_stats().whole_maps, w0 + 1);
    assert_eq!(load(&m, 10 * PAGE), 11);
    f.set_len(4 * PAGE as u64).unwrap();
    // Inside the file still: the data.
    assert_eq!(load(&m, 3 * PAGE + 1), 4);
    // Past the new end: EFAULT for the kernel, SIGBUS for a user access.
    let past = m.as_ptr().wrapping_add(10 * PAGE);
    assert_eq!(kernel_load(past, 8), Err(libc::EFAULT));
    common::catch(libc::SIGBUS);
    // SAFETY: inside the mapping; expected to raise SIGBUS (the handler
    // puts a page there so the load completes).
    let (sig, _, addr) = caught(|| unsafe {
        let _ = past.add(3).read_volatile();
    });
    assert_eq!((sig, addr), (libc::SIGBUS, past as usize + 3));
}

#[test]
fn a_punched_page_of_a_mapping_shown_whole_reads_zeros_and_a_store_there_allocates_again() {
    let _w = Watchdog::start(60, "a punched whole mapping");
    let fs = fresh(64);
    let f = filled(&fs, "/p", 16);
    let m = map(&f, 0, WIN, Prot::ReadWrite, MapFlags::SHARED);
    assert_eq!(load(&m, 5 * PAGE), 6);
    let old = m.device_block_of(5 * PAGE).expect("page 5 shown");
    f.fallocate(
        falloc::PUNCH_HOLE | falloc::KEEP_SIZE,
        5 * PAGE as u64,
        PAGE as u64,
    )
    .unwrap();
    assert_eq!(m.device_block_of(5 * PAGE), None, "unmapped by the punch");
    assert_eq!(load(&m, 5 * PAGE + 9), 0, "the hole reads zeros");
    assert_eq!(load(&m, 6 * PAGE), 7, "its neighbour keeps its data");
    store(&m, 5 * PAGE + 9, 0x42);
    let mut b = [0u8; 1];
    f.read_at(&mut b, 5 * PAGE as u64 + 9).unwrap();
    assert_eq!(b[0], 0x42, "the store allocated a block");
    assert!(m.device_block_of(5 * PAGE).is_some());
    let _ = old;
}

#[test]
fn a_small_mapping_over_a_hole_is_not_shown_whole_reads_zeros_and_allocates_on_write() {
    let _w = Watchdog::start(60, "a small mapping over a hole");
    let fs = fresh(64);
    let f = fs.create("/h", 0o644).unwrap();
    f.write_at(&[1u8; PAGE], 0).unwrap();
    f.write_at(&[2u8; PAGE], 15 * PAGE as u64).unwrap();
    let s0 = fs.dax_stats();
    let m = map(&f, 0, WIN, Prot::ReadWrite, MapFlags::SHARED);
    assert_eq!(
        fs.dax_stats().whole_maps,
        s0.whole_maps,
        "two extents and a hole"
    );
    assert_eq!(load(&m, 7 * PAGE), 0);
    assert_eq!(load(&m, 0), 1);
    assert_eq!(load(&m, 15 * PAGE), 2);
    store(&m, 7 * PAGE + 1, 9);
    let s1 = fs.dax_stats();
    assert!(s1.fault_allocs > s0.fault_allocs, "{s1:?}");
    let mut b = [0u8; 2];
    f.read_at(&mut b, 7 * PAGE as u64).unwrap();
    assert_eq!(b, [0, 9]);
}

#[test]
fn a_small_mapping_reaching_past_end_of_file_is_not_shown_whole_and_gets_efault_there() {
    let _w = Watchdog::start(60, "a small mapping past end of file");
    let fs = fresh(64);
    let f = filled(&fs, "/e", 4);
    let w0 = fs.dax_stats().whole_maps;
    let m = map(&f, 0, WIN, Prot::Read, MapFlags::SHARED);
    assert_eq!(fs.dax_stats().whole_maps, w0);
    assert_eq!(load(&m, 3 * PAGE), 4);
    assert_eq!(
        kernel_load(m.as_ptr().wrapping_add(8 * PAGE), 4),
        Err(libc::EFAULT)
    );
}

#[test]
fn stores_through_a_mapping_shown_whole_are_flushed_by_msync_and_survive_a_crash() {
    let dev = Arc::new(MappedCrashDevice::new(64 << 20).unwrap());
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone()).unwrap();
    let f = filled(&fs, "/d", 16);
    f.fsync().unwrap();
    let w0 = fs.dax_stats().whole_maps;
    let m = map(&f, 0, WIN, Prot::ReadWrite, MapFlags::SHARED);
    assert_eq!(fs.dax_stats().whole_maps, w0 + 1);
    store(&m, 3 * PAGE + 1, 0xA1);
    let flushed = |fs: &Fs| fs.dax_stats().flushed_pages;
    let before = flushed(&fs);
    m.msync(0, WIN).unwrap();
    assert!(flushed(&fs) > before, "the store was flushed");
    // Tracking is armed now: the next msync flushes exactly the page stored.
    store(&m, 9 * PAGE + 2, 0xB2);
    let before = flushed(&fs);
    m.msync(0, WIN).unwrap();
    assert_eq!(flushed(&fs) - before, 1, "exactly the one page stored");
    // Control: a store that is never synced is lost by the crash.
    store(&m, 12 * PAGE + 3, 0xC3);
    let image = dev.crash_image();
    drop(m);
    drop(f);
    drop(fs);
    let after: Arc<dyn Device> = Arc::new(RamDevice::from_image(image));
    let fs = Fs::mount(after).unwrap();
    let f = fs.open("/d", &OpenOptions::read_only()).unwrap();
    let mut b = [0u8; 1];
    for (off, want) in [
        (3 * PAGE + 1, 0xA1),
        (9 * PAGE + 2, 0xB2),
        (12 * PAGE + 3, 13),
    ] {
        f.read_at(&mut b, off as u64).unwrap();
        assert_eq!(b[0], want, "byte {off} after the crash");
    }
}

#[test]
fn a_small_private_mapping_shown_whole_copies_on_store_and_follows_the_file_elsewhere() {
    let fs = fresh(64);
    let f = filled(&fs, "/v", 16);
    let w0 = fs.dax_stats().whole_maps;
    let m = map(&f, 0, WIN, Prot::ReadWrite, MapFlags::PRIVATE);
    assert_eq!(fs.dax_stats().whole_maps, w0 + 1);
    store(&m, PAGE, 0x77);
    let mut b = [0u8; 1];
    f.read_at(&mut b, PAGE as u64).unwrap();
    assert_eq!(b[0], 2, "the file keeps its data");
    assert_eq!(load(&m, PAGE), 0x77, "the mapping sees its copy");
    f.write_at(&[0x55], 2 * PAGE as u64).unwrap();
    assert_eq!(
        load(&m, 2 * PAGE),
        0x55,
        "an untouched page follows the file"
    );
}

#[test]
fn a_writable_mapping_of_reflinked_blocks_is_not_shown_whole_and_a_store_goes_to_a_copy() {
    let _w = Watchdog::start(60, "a store onto shared blocks");
    let fs = fresh(64);
    let a = filled(&fs, "/a", 16);
    let b = fs.create("/b", 0o644).unwrap();
    fs.clone_file(&a, &b).unwrap();
    let w0 = fs.dax_stats().whole_maps;
    // Read-only: the shared blocks are shown (nothing can be written).
    let r = map(&b, 0, WIN, Prot::Read, MapFlags::SHARED);
    assert_eq!(fs.dax_stats().whole_maps, w0 + 1);
    assert_eq!(load(&r, 4 * PAGE), 5);
    drop(r);
    let m = map(&b, 0, WIN, Prot::ReadWrite, MapFlags::SHARED);
    assert_eq!(fs.dax_stats().whole_maps, w0 + 1, "shared blocks, writable");
    store(&m, 4 * PAGE, 0x99);
    let mut x = [0u8; 1];
    a.read_at(&mut x, 4 * PAGE as u64).unwrap();
    assert_eq!(x[0], 5, "the other file's block is untouched");
    b.read_at(&mut x, 4 * PAGE as u64).unwrap();
    assert_eq!(x[0], 0x99);
}

#[test]
fn a_mapping_shown_whole_holds_page_references_until_it_is_dropped() {
    let fs = fresh(64);
    let f = filled(&fs, "/r", 16);
    let m = map(&f, 0, WIN, Prot::ReadWrite, MapFlags::SHARED);
    assert_eq!(load(&m, 0), 1);
    let pin = m.pin(2 * PAGE, PAGE, false).unwrap();
    assert_eq!(
        f.set_len_nowait(0).unwrap_err().errno(),
        libc::EBUSY,
        "a pinned page of the mapping holds the truncate"
    );
    drop(pin);
    drop(m);
    // Every reference the mapping took is gone: the truncate goes through at once.
    let g = filled(&fs, "/r2", 16);
    let m = map(&g, 0, WIN, Prot::Read, MapFlags::SHARED);
    assert_eq!(load(&m, 15 * PAGE), 16);
    drop(m);
    g.set_len_nowait(0).unwrap();
    f.set_len_nowait(0).unwrap();
}
