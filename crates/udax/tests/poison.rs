//! Media errors (SPEC E1-E4): persistent bad-block table, reverse lookup,
//! SIGBUS BUS_MCEERR_AR delivery to mappings, EIO from read_at, recovery by
//! overwrite. Its own binary: it installs a process-wide SIGBUS handler.
#![allow(unsafe_code)]

mod common;
use common::free_for_data;

use std::cell::Cell;
use std::sync::{Arc, Once};
use udax::device::{self, Device, OpenOptions as DevOpen, RamDevice};
use udax::fs::{falloc, Fs, MkfsOptions, Owner};
use udax::{MapFlags, Prot, BLOCK_SIZE};

thread_local! {
    /// (signal, si_code, si_addr, si_addr_lsb) of the last signal on this thread.
    static LAST: Cell<(i32, i32, usize, i16)> = const { Cell::new((0, 0, 0, 0)) };
}

extern "C" fn on_sigbus(sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel (or udax's chained handler) passes a valid SIGBUS
    // siginfo; si_addr_lsb is the i16 at byte 24 of the 64-bit Linux layout.
    let (code, addr, lsb) = unsafe {
        (
            (*info).si_code,
            (*info).si_addr() as usize,
            info.cast::<u8>().add(24).cast::<i16>().read(),
        )
    };
    LAST.with(|l| l.set((sig, code, addr, lsb)));
    // Let the access complete: put a private page over the faulting one (the
    // test only looks at what was reported, and drops the mapping after).
    // SAFETY: the page lies inside a udax mapping owned by the test.
    unsafe {
        libc::mmap(
            (addr & !4095) as *mut _,
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
    }
}

/// Install the test's SIGBUS handler once, then udax's in front of it (the
/// order a program that installs its handler first gets).
fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with a valid SA_SIGINFO handler.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            assert_eq!(libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()), 0);
        }
        udax::install_sigbus_handler().unwrap();
    });
}

/// Run `access`; the (signal, code, addr, lsb) it raised, or zeros.
fn caught(access: impl FnOnce()) -> (i32, i32, usize, i16) {
    LAST.with(|l| l.set((0, 0, 0, 0)));
    access();
    LAST.with(|l| l.get())
}

fn memfd_fs(size: &str) -> Fs {
    let dev: Arc<dyn Device> = device::open(&format!("memfd:{size}"), &DevOpen::default()).unwrap();
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    Fs::mount(dev).unwrap()
}

fn dev_blk(f: &udax::fs::File, off: u64) -> u64 {
    match f.iomap(off / BLOCK_SIZE) {
        udax::fs::extent::Lookup::Mapped { dev_blk, .. } => dev_blk,
        h => panic!("offset {off} is a hole: {h:?}"),
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn e1_poison_table_survives_remount_and_checkpoint() {
    let dev = Arc::new(RamDevice::new(64 << 20));
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone()).unwrap();
    let f = fs.create("/f", 0o644).unwrap();
    f.write_at(&pattern(8 * 4096, 1), 0).unwrap();
    let b = dev_blk(&f, 3 * 4096);
    let rep = fs.inject_poison(b * BLOCK_SIZE + 100, 1).unwrap();
    assert_eq!(rep.blocks, (b, 1));
    assert_eq!(
        rep.owners,
        vec![(
            b,
            Owner::File {
                ino: f.ino(),
                file_off: 3 * 4096
            }
        )]
    );
    drop(f);
    drop(fs);
    // Remount from the durable image only (the device's own list is gone):
    // the table came from the log.
    let img = dev.image();
    let fs = Fs::mount(Arc::new(RamDevice::from_image(img))).unwrap();
    assert_eq!(fs.bad_blocks(), vec![(b, 1)]);
    // Again after a checkpoint (record kind 3).
    fs.checkpoint().unwrap();
    let img = {
        let f = fs.open("/f", &udax::fs::OpenOptions::read_only()).unwrap();
        assert_eq!(f.poisoned_ranges(), vec![(3 * 4096, 4096)]);
        drop(f);
        fs.unmount().unwrap();
        dev.image()
    };
    let _ = img;
    let fs = Fs::mount(dev.clone()).unwrap();
    assert_eq!(fs.bad_blocks(), vec![(b, 1)]);
    let rep = udax::fs::fsck(dev.clone()).unwrap();
    // A media error in a file's data is an error fsck leaves (exit 4).
    assert!(!rep.clean);
    assert_eq!(rep.exit_code(), 4);
    assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
    assert!(rep.problems[0]
        .what
        .contains("media error in file data at file offset 12288"));
    assert_eq!(rep.problems[0].device_offset, Some(b * 4096));
    assert_eq!(rep.bad_blocks.len(), 1);
    assert_eq!(rep.bad_blocks[0].dev_blk, b);
}

#[test]
fn e2_owners_of_file_free_and_metadata_blocks() {
    let fs = memfd_fs("64M");
    let f = fs.create("/f", 0o644).unwrap();
    f.write_at(&pattern(3 * 4096, 2), 0).unwrap();
    let b = dev_blk(&f, 4096);
    assert_eq!(
        fs.owners_of(b),
        vec![Owner::File {
            ino: f.ino(),
            file_off: 4096
        }]
    );
    let udax::layout::AnySuperblock::V3(sb) = fs.superblock() else {
        panic!("a format-3 file system");
    };
    let g = sb.geometry;
    assert_eq!(fs.owners_of(g.total_blocks - 1), vec![Owner::Free]);
    let what = |blk: u64| match fs.owners_of(blk)[0] {
        Owner::Metadata { what, .. } => what,
        ref o => panic!("block {blk}: {o:?}"),
    };
    assert_eq!(what(0), "primary superblock");
    assert_eq!(what(1), "backup superblock");
    assert_eq!(what(2), "root block");
    assert_eq!(what(g.log_start), "metadata log");
    assert_eq!(what(g.bitmap_start), "free-space bitmap");
    // Inode chunk 0 opens the data area (format 3's metadata lives there).
    assert_eq!(what(g.data_start), "inode chunk or tree node");
    // Poison on a free block: no owner, and the allocator never hands it out.
    let free_before = free_for_data(&fs.statfs());
    let rep = fs
        .inject_poison((g.total_blocks - 1) * BLOCK_SIZE, 4096)
        .unwrap();
    assert_eq!(rep.owners, vec![(g.total_blocks - 1, Owner::Free)]);
    assert_eq!(free_for_data(&fs.statfs()), free_before - 1);
}

#[test]
fn e2_e3_poison_in_unmapped_but_owned_page_read_at_eio() {
    let fs = memfd_fs("64M");
    let f = fs.create("/f", 0o644).unwrap();
    let data = pattern(4 * 4096, 3);
    f.write_at(&data, 0).unwrap();
    // Mapped once, then unmapped: the file still owns the block (seed 000's
    // "owner known until truncate" case).
    {
        let m = f.mmap(0, 4 * 4096, Prot::Read, MapFlags::SHARED).unwrap();
        // SAFETY: inside the mapping.
        assert_eq!(
            unsafe { m.as_ptr().add(2 * 4096).read_volatile() },
            data[2 * 4096]
        );
    }
    let b = dev_blk(&f, 2 * 4096);
    let rep = fs.inject_poison(b * BLOCK_SIZE, 4096).unwrap();
    assert_eq!(rep.pages_unmapped, 0);
    assert!(rep.owners.iter().any(|(_, o)| *o
        == Owner::File {
            ino: f.ino(),
            file_off: 2 * 4096
        }));
    let mut buf = vec![0u8; 4096];
    let e = f.read_at(&mut buf, 2 * 4096).unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    // A read that starts before the bad block stops short of it.
    let mut buf = vec![0u8; 3 * 4096];
    assert_eq!(f.read_at(&mut buf, 4096).unwrap(), 4096);
    assert_eq!(buf[..4096], data[4096..2 * 4096]);
    // The rest of the file is intact.
    let mut buf = vec![0u8; 4096];
    assert_eq!(f.read_at(&mut buf, 3 * 4096).unwrap(), 4096);
    assert_eq!(buf[..], data[3 * 4096..]);
    // A partial overwrite of the bad block is refused.
    assert_eq!(
        f.write_at(b"x", 2 * 4096 + 7).unwrap_err().errno(),
        libc::EIO
    );
}

#[test]
fn e2_e3_poison_in_reflinked_block_reported_for_every_file() {
    setup();
    let fs = memfd_fs("64M");
    let data = pattern(4 * 4096, 6);
    let a = fs.create("/a", 0o644).unwrap();
    a.write_at(&data, 0).unwrap();
    let b = fs.create("/b", 0o644).unwrap();
    fs.clone_file(&a, &b).unwrap();
    // b's page is mapped (read-only shared mappings map the shared block).
    let m = b.mmap(0, 4 * 4096, Prot::Read, MapFlags::SHARED).unwrap();
    let p = m.as_ptr();
    // SAFETY: inside the mapping.
    assert_eq!(unsafe { p.add(2 * 4096).read_volatile() }, data[2 * 4096]);
    let blk = dev_blk(&a, 2 * 4096);
    assert_eq!(dev_blk(&b, 2 * 4096), blk);
    let rep = fs.inject_poison(blk * BLOCK_SIZE, 4096).unwrap();
    let want = [
        Owner::File {
            ino: a.ino(),
            file_off: 2 * 4096,
        },
        Owner::File {
            ino: b.ino(),
            file_off: 2 * 4096,
        },
    ];
    for o in &want {
        assert!(rep.owners.iter().any(|(_, x)| x == o), "{o:?} in {rep:?}");
        assert!(fs.owners_of(blk).contains(o));
    }
    assert_eq!(rep.pages_unmapped, 1, "b's mapping lost the page");
    for f in [&a, &b] {
        let mut buf = vec![0u8; 4096];
        assert_eq!(
            f.read_at(&mut buf, 2 * 4096).unwrap_err().errno(),
            libc::EIO
        );
        assert_eq!(f.read_at(&mut buf, 3 * 4096).unwrap(), 4096);
        assert_eq!(buf[..], data[3 * 4096..]);
        assert_eq!(f.poisoned_ranges(), vec![(2 * 4096, 4096)]);
    }
    // SAFETY: inside the mapping; expected to fault.
    let got = caught(|| unsafe {
        let _ = p.add(2 * 4096 + 5).read_volatile();
    });
    assert_eq!(
        got,
        (
            libc::SIGBUS,
            libc::BUS_MCEERR_AR,
            p as usize + 2 * 4096 + 5,
            12
        )
    );
    drop(m);
    // fsck names both owners.
    let r = udax::fs::fsck(fs.device().clone()).unwrap();
    let bb = r.bad_blocks.iter().find(|x| x.dev_blk == blk).unwrap();
    for o in &want {
        assert!(bb.owners.contains(o), "{:?}", bb.owners);
    }
}

#[test]
fn r1_cow_of_poisoned_shared_block_is_eio_and_overwrite_gives_a_new_block() {
    let fs = memfd_fs("64M");
    let data = pattern(4 * 4096, 7);
    let a = fs.create("/a", 0o644).unwrap();
    a.write_at(&data, 0).unwrap();
    let b = fs.create("/b", 0o644).unwrap();
    fs.clone_file(&a, &b).unwrap();
    let blk = dev_blk(&a, 4096);
    fs.inject_poison(blk * BLOCK_SIZE, 4096).unwrap();
    // Copy on write would have to copy the bad bytes around this write: EIO,
    // never a silent copy.
    assert_eq!(b.write_at(b"xy", 4096 + 10).unwrap_err().errno(), libc::EIO);
    // Nor may a truncate into the block copy it.
    assert_eq!(b.set_len(4096 + 10).unwrap_err().errno(), libc::EIO);
    // A write of the whole block needs no copy: b gets a new, good block.
    let fresh = pattern(4096, 8);
    assert_eq!(b.write_at(&fresh, 4096).unwrap(), 4096);
    assert_ne!(dev_blk(&b, 4096), blk);
    let mut buf = vec![0u8; 4096];
    b.read_at(&mut buf, 4096).unwrap();
    assert_eq!(buf, fresh);
    // The bad block is still a's, and still bad.
    assert_eq!(a.read_at(&mut buf, 4096).unwrap_err().errno(), libc::EIO);
    assert_eq!(fs.bad_blocks(), vec![(blk, 1)]);
    assert_eq!(fs.block_refs(blk), 1);
    // a alone owns it now: overwriting it whole clears the error.
    a.write_at(&fresh, 4096).unwrap();
    assert!(fs.bad_blocks().is_empty());
    a.read_at(&mut buf, 4096).unwrap();
    assert_eq!(buf, fresh);
    let r = udax::fs::fsck(fs.device().clone()).unwrap();
    assert!(r.clean, "{:?}", r.problems);
}

#[test]
fn e3_poison_mapped_4k_page_sigbus_mceerr_ar_and_kernel_efault() {
    setup();
    let fs = memfd_fs("64M");
    let f = fs.create("/f", 0o644).unwrap();
    let data = pattern(4 * 4096, 4);
    f.write_at(&data, 0).unwrap();
    let m = f
        .mmap(0, 4 * 4096, Prot::ReadWrite, MapFlags::SHARED)
        .unwrap();
    let p = m.as_ptr();
    // SAFETY: inside the mapping (maps the pages).
    assert_eq!(unsafe { p.add(4096).read_volatile() }, data[4096]);
    let b = dev_blk(&f, 4096);
    let rep = fs.inject_poison(b * BLOCK_SIZE, 4096).unwrap();
    assert_eq!(rep.pages_unmapped, 1);
    // A kernel access (write(2) from the page, read(2) into it): EFAULT.
    let mut fds = [0; 2];
    // SAFETY: a valid array for pipe(2).
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: valid fd; the buffer is the poisoned page (the kernel checks it).
    let n = unsafe { libc::write(fds[1], p.add(4096).cast(), 16) };
    assert_eq!(n, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EFAULT)
    );
    // SAFETY: valid fd and a valid buffer.
    assert_eq!(
        unsafe { libc::write(fds[1], b"0123456789".as_ptr().cast(), 10) },
        10
    );
    // SAFETY: as above.
    let n = unsafe { libc::read(fds[0], p.add(4096 + 8).cast(), 10) };
    assert_eq!(n, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EFAULT)
    );
    // SAFETY: closing our own pipe.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    // The other pages are still there.
    // SAFETY: inside the mapping.
    assert_eq!(
        unsafe { p.add(2 * 4096 + 9).read_volatile() },
        data[2 * 4096 + 9]
    );
    // A user access: SIGBUS, BUS_MCEERR_AR, the exact address, lsb 12.
    // SAFETY: inside the mapping; expected to fault.
    let got = caught(|| unsafe {
        let _ = p.add(4096 + 33).read_volatile();
    });
    assert_eq!(
        got,
        (
            libc::SIGBUS,
            libc::BUS_MCEERR_AR,
            p as usize + 4096 + 33,
            12
        )
    );
    drop(m);
    // A new mapping of the poisoned block (resolved by the fault path) too.
    let m = f.mmap(0, 4 * 4096, Prot::Read, MapFlags::SHARED).unwrap();
    let p = m.as_ptr();
    // SAFETY: inside the mapping; expected to fault.
    let got = caught(|| unsafe {
        let _ = p.add(4096).read_volatile();
    });
    assert_eq!(
        got,
        (libc::SIGBUS, libc::BUS_MCEERR_AR, p as usize + 4096, 12)
    );
    // SAFETY: inside the mapping, a healthy page next to the bad one.
    assert_eq!(unsafe { p.read_volatile() }, data[0]);
}

#[test]
fn e3_poison_inside_2mib_mapping_splits_and_only_that_page_is_lost() {
    setup();
    let fs = memfd_fs("256M");
    let f = fs.create("/big", 0o644).unwrap();
    let len = 4usize << 20;
    let data = pattern(len, 5);
    f.write_at(&data, 0).unwrap();
    let m = f.mmap(0, len, Prot::Read, MapFlags::SHARED).unwrap();
    let p = m.as_ptr();
    assert_eq!(p as usize % (2 << 20), 0, "2 MiB-aligned mapping");
    let before = fs.dax_stats();
    // SAFETY: inside the mapping (both 2 MiB chunks).
    unsafe {
        assert_eq!(p.add(4096 * 5).read_volatile(), data[4096 * 5]);
        assert_eq!(p.add((2 << 20) + 7).read_volatile(), data[(2 << 20) + 7]);
    }
    assert_eq!(
        fs.dax_stats().pmd_maps - before.pmd_maps,
        2,
        "mapped with 2 MiB pages"
    );
    let b = dev_blk(&f, 4096 * 5);
    let rep = fs.inject_poison(b * BLOCK_SIZE + 64, 64).unwrap();
    assert_eq!(rep.pages_unmapped, 1);
    // The bad page: SIGBUS with lsb 21 (it was part of a 2 MiB mapping).
    // SAFETY: inside the mapping; expected to fault.
    let got = caught(|| unsafe {
        let _ = p.add(4096 * 5 + 100).read_volatile();
    });
    assert_eq!(
        got,
        (
            libc::SIGBUS,
            libc::BUS_MCEERR_AR,
            p as usize + 4096 * 5 + 100,
            21
        )
    );
    // Its neighbours in the same 2 MiB come back as 4 KiB mappings.
    let mid = fs.dax_stats();
    // SAFETY: inside the mapping.
    unsafe {
        assert_eq!(p.add(4096 * 4).read_volatile(), data[4096 * 4]);
        assert_eq!(p.add(4096 * 6).read_volatile(), data[4096 * 6]);
        assert_eq!(p.add(4096 * 511).read_volatile(), data[4096 * 511]);
        // The other 2 MiB chunk is still mapped as it was.
        assert_eq!(p.add((2 << 20) + 9).read_volatile(), data[(2 << 20) + 9]);
    }
    let after = fs.dax_stats();
    assert!(after.pte_maps > mid.pte_maps, "refaulted with 4 KiB pages");
    assert_eq!(after.pmd_maps, mid.pmd_maps, "never 2 MiB over a bad page");
}

#[test]
fn e4_clear_by_overwrite_then_mappings_see_the_new_data() {
    setup();
    let fs = memfd_fs("64M");
    let f = fs.create("/f", 0o644).unwrap();
    f.write_at(&pattern(4 * 4096, 6), 0).unwrap();
    let m = f.mmap(0, 4 * 4096, Prot::Read, MapFlags::SHARED).unwrap();
    let b = dev_blk(&f, 4096);
    fs.inject_poison(b * BLOCK_SIZE, 4096).unwrap();
    assert_eq!(f.poisoned_ranges(), vec![(4096, 4096)]);
    // Overwrite the whole block: poison gone, data readable, the mapping
    // faults the block in again (no SIGBUS).
    let fresh = pattern(4096, 7);
    assert_eq!(f.write_at(&fresh, 4096).unwrap(), 4096);
    assert!(fs.bad_blocks().is_empty());
    assert!(f.poisoned_ranges().is_empty());
    let mut buf = vec![0u8; 4096];
    f.read_at(&mut buf, 4096).unwrap();
    assert_eq!(buf, fresh);
    // SAFETY: inside the mapping; no fault is expected now.
    let got = caught(|| unsafe {
        assert_eq!(m.as_ptr().add(4096 + 10).read_volatile(), fresh[10]);
    });
    assert_eq!(got.0, 0, "no signal after the overwrite");
    drop(m);

    // ZERO_RANGE over a whole bad block clears it too.
    let b2 = dev_blk(&f, 2 * 4096);
    fs.inject_poison(b2 * BLOCK_SIZE, 4096).unwrap();
    f.fallocate(falloc::ZERO_RANGE | falloc::KEEP_SIZE, 2 * 4096, 4096)
        .unwrap();
    assert!(fs.bad_blocks().is_empty());
    f.read_at(&mut buf, 2 * 4096).unwrap();
    assert!(buf.iter().all(|&x| x == 0));

    // Punch hole + write: the file gets a new block; the bad one is
    // quarantined (free, owned by nobody, not reused) until cleared.
    let b3 = dev_blk(&f, 3 * 4096);
    fs.inject_poison(b3 * BLOCK_SIZE, 4096).unwrap();
    f.fallocate(falloc::PUNCH_HOLE | falloc::KEEP_SIZE, 3 * 4096, 4096)
        .unwrap();
    f.write_at(&fresh, 3 * 4096).unwrap();
    assert_ne!(dev_blk(&f, 3 * 4096), b3);
    assert!(f.poisoned_ranges().is_empty());
    assert_eq!(fs.bad_blocks(), vec![(b3, 1)]);
    assert_eq!(fs.owners_of(b3), vec![Owner::Free]);
    let free = free_for_data(&fs.statfs());
    assert_eq!(fs.clear_poison(b3 * BLOCK_SIZE, 4096).unwrap(), 1);
    assert!(fs.bad_blocks().is_empty());
    assert_eq!(free_for_data(&fs.statfs()), free + 1);
    // Clearing a block a file owns is refused (overwrite it through the file).
    let b0 = dev_blk(&f, 0);
    fs.inject_poison(b0 * BLOCK_SIZE, 4096).unwrap();
    assert_eq!(
        fs.clear_poison(b0 * BLOCK_SIZE, 4096).unwrap_err().errno(),
        libc::EBUSY
    );
}

/// Crash at every fence of `op` (run after `setup`); `check` sees each
/// recovered file system and whether the operation had returned.
fn crash_every_fence(setup: impl Fn(&Fs), op: impl Fn(&Fs), check: impl Fn(&Fs, bool, &str)) {
    use udax::device::{CrashDevice, Survivors};
    let dev = Arc::new(CrashDevice::new(8 << 20));
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone()).unwrap();
    setup(&fs);
    fs.sync().unwrap();
    dev.start_recording();
    op(&fs);
    let points = dev.crash_points();
    assert!(points > 0, "the operation fenced nothing");
    for p in 0..=points {
        let mut cases = vec![Survivors::None, Survivors::All];
        cases.extend((0..4).map(|seed| Survivors::Random { seed }));
        for s in cases {
            let what = format!("crash point {p}/{points}, {s:?}");
            let img: Arc<dyn Device> = Arc::new(RamDevice::from_image(dev.crash_image(p, &s)));
            let rep = udax::fs::fsck(img.clone()).unwrap_or_else(|e| panic!("{what}: fsck: {e}"));
            // Media errors in files are reported; nothing else may be.
            assert!(rep.damage.is_empty(), "{what}: {:?}", rep.damage);
            assert!(
                rep.problems
                    .iter()
                    .all(|p| p.what.starts_with("media error in file data")),
                "{what}: {:?}",
                rep.problems
            );
            let fs = Fs::mount(img).unwrap_or_else(|e| panic!("{what}: mount: {e}"));
            check(&fs, p == points, &what);
        }
    }
}

#[test]
fn e1_e4_crash_during_poison_record_and_clear_by_overwrite() {
    let new = pattern(4096, 9);
    let setup = |fs: &Fs| {
        let f = fs.create("/f", 0o644).unwrap();
        f.write_at(&pattern(4 * 4096, 8), 0).unwrap();
    };
    let blk_of = |fs: &Fs| {
        let f = fs.open("/f", &udax::fs::OpenOptions::read_only()).unwrap();
        dev_blk(&f, 4096)
    };
    // Recording the error: after recovery the table has it or not, never
    // anything else; once the call returned, it has it.
    crash_every_fence(
        setup,
        |fs| {
            fs.inject_poison(blk_of(fs) * BLOCK_SIZE, 4096).unwrap();
        },
        |fs, done, what| {
            let bad = fs.bad_blocks();
            assert!(
                bad.is_empty() || bad == vec![(blk_of(fs), 1)],
                "{what}: {bad:?}"
            );
            assert!(!done || !bad.is_empty(), "{what}: recorded error lost");
        },
    );
    // Clearing by overwrite: the table may only lose the block once the new
    // data is durable (never a cleared block with lost data).
    crash_every_fence(
        |fs| {
            setup(fs);
            fs.inject_poison(blk_of(fs) * BLOCK_SIZE, 4096).unwrap();
        },
        |fs| {
            let f = fs.open("/f", &udax::fs::OpenOptions::read_write()).unwrap();
            f.write_at(&new, 4096).unwrap();
        },
        |fs, done, what| {
            let f = fs.open("/f", &udax::fs::OpenOptions::read_only()).unwrap();
            let mut buf = vec![0u8; 4096];
            match f.read_at(&mut buf, 4096) {
                Ok(n) => {
                    assert_eq!(n, 4096, "{what}");
                    assert_eq!(buf, new, "{what}: cleared but the new data is not there");
                }
                Err(e) => {
                    assert_eq!(e.errno(), libc::EIO, "{what}");
                    assert!(!done, "{what}: the overwrite returned but the error stayed");
                }
            }
        },
    );
}

/// The body of `e3_default_disposition_dies_by_sigbus`, run as its child.
#[test]
#[ignore = "run as a child process by e3_default_disposition_dies_by_sigbus"]
fn e3_child_touches_poisoned_page_without_a_handler() {
    let fs = memfd_fs("64M");
    let f = fs.create("/f", 0o644).unwrap();
    f.write_at(&pattern(2 * 4096, 10), 0).unwrap();
    let m = f.mmap(0, 2 * 4096, Prot::Read, MapFlags::SHARED).unwrap();
    fs.inject_poison(dev_blk(&f, 0) * BLOCK_SIZE, 4096).unwrap();
    // SAFETY: inside the mapping; the process is expected to die here.
    let v = unsafe { m.as_ptr().read_volatile() };
    eprintln!("UNEXPECTED: read {v} from a poisoned page");
}

#[test]
fn e3_default_disposition_dies_by_sigbus() {
    use std::os::unix::process::ExitStatusExt;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "e3_child_touches_poisoned_page_without_a_handler",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGBUS),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Poison found by the owner reaches every client that maps the page (the
/// kernel's `memory_failure` reaching every process): SIGBUS
/// `BUS_MCEERR_AR` at the exact address with lsb 21 where the client had
/// the page inside a 2 MiB mapping and 12 where it had it as a 4 KiB page;
/// the rest of the file stays readable; `read_at` in a client gets EIO.
#[test]
fn e3_poison_reaches_every_client_that_maps_the_page_with_its_lsb() {
    use common::serving::{opts, serve, setup as serving_setup};
    use udax::client::Client;
    setup();
    let _w = common::Watchdog::start(60, "poison across clients");
    let s = serving_setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, false)).unwrap();
    let len = 2usize << 20;
    let data = pattern(len, 9);
    let fa = a.open("/p", true, true, 0o644).unwrap();
    // One allocation of the whole 2 MiB takes a whole aligned chunk (writes
    // through the owner come in 60 KiB pieces, which fill partly used
    // chunks first, where format 3's metadata also lives).
    fa.fallocate(0, 0, len as u64).unwrap();
    fa.write_at(&data, 0).unwrap();
    let fb = b.open("/p", false, false, 0).unwrap();
    // A maps the file whole (a 2 MiB mapping where the extent allows it);
    // B maps its first 16 KiB (4 KiB pages).
    let ma = fa
        .mmap(0, len, Prot::Read, MapFlags::SHARED)
        .expect("mmap (the fault engine needs userfaultfd; run as root)");
    let mb = fb.mmap(0, 4 * 4096, Prot::Read, MapFlags::SHARED).unwrap();
    let (pa, pb) = (ma.as_ptr(), mb.as_ptr());
    // SAFETY: inside both mappings.
    unsafe {
        assert_eq!(pa.add(4096 + 5).read_volatile(), data[4096 + 5]);
        assert_eq!(pb.add(4096 + 5).read_volatile(), data[4096 + 5]);
    }
    let huge = ma.device_block_of(0).is_some()
        && ma.device_block_of(len - 1).is_some()
        && (pa as usize).is_multiple_of(2 << 20);
    let blk = mb.device_block_of(4096).expect("page 1 mapped in B");
    assert_eq!(ma.device_block_of(4096), Some(blk));
    assert_eq!(a.inject_poison(blk * BLOCK_SIZE + 64, 64).unwrap(), 1);
    // B: 4 KiB page, lsb 12.
    // SAFETY: inside the mapping; expected to fault.
    let got = caught(|| unsafe {
        let _ = pb.add(4096 + 33).read_volatile();
    });
    assert_eq!(
        got,
        (
            libc::SIGBUS,
            libc::BUS_MCEERR_AR,
            pb as usize + 4096 + 33,
            12
        )
    );
    // A: lsb 21, the page was part of its 2 MiB mapping.
    // SAFETY: inside the mapping; expected to fault.
    let got = caught(|| unsafe {
        let _ = pa.add(4096 + 40).read_volatile();
    });
    assert!(huge, "A's mapping is not 2 MiB aligned and whole");
    assert_eq!(
        got,
        (
            libc::SIGBUS,
            libc::BUS_MCEERR_AR,
            pa as usize + 4096 + 40,
            21
        )
    );
    // The neighbours stay readable in both.
    // SAFETY: inside both mappings, healthy pages.
    unsafe {
        assert_eq!(pb.read_volatile(), data[0]);
        assert_eq!(pb.add(2 * 4096).read_volatile(), data[2 * 4096]);
        assert_eq!(pa.add(3 * 4096).read_volatile(), data[3 * 4096]);
        assert_eq!(pa.add(len - 1).read_volatile(), data[len - 1]);
    }
    // read_at in a client: EIO at the page, a short read up to it.
    let mut buf = vec![0u8; 8192];
    assert_eq!(fb.read_at(&mut buf, 0).unwrap(), 4096);
    assert_eq!(buf[..4096], data[..4096]);
    assert_eq!(fb.read_at(&mut buf, 4096).unwrap_err().errno(), libc::EIO);
    // A new mapping in B: the fault path finds the page bad.
    drop(mb);
    let mb = fb.mmap(0, 4 * 4096, Prot::Read, MapFlags::SHARED).unwrap();
    let pb = mb.as_ptr();
    // SAFETY: inside the mapping; expected to fault.
    let got = caught(|| unsafe {
        let _ = pb.add(4096).read_volatile();
    });
    assert_eq!(
        got,
        (libc::SIGBUS, libc::BUS_MCEERR_AR, pb as usize + 4096, 12)
    );
}
