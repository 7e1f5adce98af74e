//! R1: reflink. `clone_range` / `clone_file` share blocks (reference counted
//! on the device), `dedupe_range` shares only equal bytes, and a write to a
//! shared block — through `write_at`, truncate/punch/zero range, or an mmap
//! store — copies it first for that file only.
//! The mmap cases need userfaultfd (run as root; CI does).

use std::sync::Arc;
use udax::device::{self, Device, OpenOptions as DevOpen, RamDevice};
use udax::fs::extent::Lookup;
use udax::fs::{falloc, fsck, File, Fs, MkfsOptions, OpenOptions};
use udax::{Error, MapFlags, Mapping, Prot, BLOCK_SIZE};

/// Free blocks for file data: free, plus those format 3's metadata holds
/// (tree nodes come and go with the trees; block counts that follow file
/// data add them back).
fn free_for_data(st: &udax::fs::StatFs) -> u64 {
    st.free_blocks + st.metadata_bytes / st.block_size
}

const B: u64 = BLOCK_SIZE;

fn memfd_fs(mib: u64) -> Fs {
    let dev: Arc<dyn Device> = device::open(&format!("memfd:{mib}M"), &DevOpen::default()).unwrap();
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    Fs::mount(dev).unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

fn with(fs: &Fs, path: &str, data: &[u8]) -> File {
    let f = fs.open(path, &OpenOptions::create()).unwrap();
    f.write_at(data, 0).unwrap();
    f
}

fn content(f: &File) -> Vec<u8> {
    let mut v = vec![0u8; f.len() as usize];
    assert_eq!(f.read_at(&mut v, 0).unwrap(), v.len());
    v
}

fn dev_blk(f: &File, off: u64) -> u64 {
    match f.iomap(off / B) {
        Lookup::Mapped { dev_blk, .. } => dev_blk,
        h => panic!("offset {off} is a hole: {h:?}"),
    }
}

fn map(f: &File, len: usize, prot: Prot) -> Mapping {
    f.mmap(0, len, prot, MapFlags::SHARED)
        .expect("mmap (the fault engine needs userfaultfd; run as root)")
}

fn slice(m: &Mapping) -> &'static mut [u8] {
    // SAFETY: each mapping outlives every use of its slice in these tests; the
    // bytes are plain memory.
    unsafe { std::slice::from_raw_parts_mut(m.as_ptr(), m.len()) }
}

fn assert_clean(fs: &Fs) {
    let r = fsck(fs.device().clone()).unwrap();
    assert!(r.clean, "{:?}", r.problems);
}

#[test]
fn r1_clone_range_shares_blocks_and_uses_no_space() {
    let fs = memfd_fs(64);
    let data = pattern(64 * 4096, 1);
    let a = with(&fs, "/a", &data);
    let b = fs.create("/b", 0o644).unwrap();
    let free = free_for_data(&fs.statfs());
    let t0 = b.stat().unwrap().mtime_ns;
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert_eq!(fs.clone_range(&a, 0, &b, 0, 0).unwrap(), data.len() as u64);
    assert!(
        b.stat().unwrap().mtime_ns > t0,
        "a clone modifies the destination"
    );
    assert_eq!(content(&b), data);
    assert_eq!(
        free_for_data(&fs.statfs()),
        free,
        "a clone allocates nothing"
    );
    for off in [0, 17 * B, 63 * B] {
        assert_eq!(dev_blk(&a, off), dev_blk(&b, off));
        assert_eq!(fs.block_refs(dev_blk(&a, off)), 2);
    }
    assert_eq!(b.stat().unwrap().blocks, a.stat().unwrap().blocks);
    // A third file shares part of it.
    let c = fs.create("/c", 0o644).unwrap();
    fs.clone_range(&a, 8 * B, &c, 4 * B, 4 * B).unwrap();
    assert_eq!(c.len(), 8 * B);
    assert_eq!(fs.block_refs(dev_blk(&a, 9 * B)), 3);
    assert_eq!(fs.block_refs(dev_blk(&a, 20 * B)), 2);
    let mut v = vec![0u8; 8 * 4096];
    c.read_at(&mut v, 0).unwrap();
    assert!(
        v[..4 * 4096].iter().all(|&x| x == 0),
        "the skipped range is a hole"
    );
    assert_eq!(&v[4 * 4096..], &data[8 * 4096..12 * 4096]);
    assert_clean(&fs);
}

#[test]
fn r1_clone_rules_like_ficlonerange() {
    let fs = memfd_fs(64);
    let a = with(&fs, "/a", &pattern(10 * 4096 + 100, 2));
    let b = fs.create("/b", 0o644).unwrap();
    let einval = |r: udax::Result<u64>| match r {
        Err(Error::Invalid(_)) => {}
        other => panic!("want EINVAL, got {other:?}"),
    };
    einval(fs.clone_range(&a, 100, &b, 0, B));
    einval(fs.clone_range(&a, 0, &b, 100, B));
    einval(fs.clone_range(&a, 0, &b, 0, B + 1));
    einval(fs.clone_range(&a, 0, &b, 0, 12 * B)); // past the source's end
    einval(fs.clone_range(&a, 11 * B, &b, 0, 0)); // source offset past its end
    einval(fs.clone_range(&a, 0, &a, 2 * B, 4 * B)); // overlap within one file
    assert_eq!(Error::Invalid("x").errno(), libc::EINVAL);
    // The partial last block may be cloned when the range ends at the source's
    // end of file; the destination's size becomes the range's end.
    assert_eq!(
        fs.clone_range(&a, 8 * B, &b, 0, 2 * B + 100).unwrap(),
        2 * B + 100
    );
    assert_eq!(b.len(), 2 * B + 100);
    assert_eq!(content(&b), content(&a)[8 * 4096..].to_vec());
    // ... but not into the middle of a longer destination.
    let long = with(&fs, "/long", &pattern(20 * 4096, 3));
    einval(fs.clone_range(&a, 8 * B, &long, 0, 2 * B + 100));
    // Within one file, disjoint ranges are fine.
    fs.clone_range(&a, 0, &a, 4 * B, 0).unwrap_err();
    let s = fs.create("/self", 0o644).unwrap();
    s.write_at(&pattern(8 * 4096, 4), 0).unwrap();
    fs.clone_range(&s, 0, &s, 4 * B, 4 * B).unwrap();
    let v = content(&s);
    assert_eq!(v[..4 * 4096], v[4 * 4096..]);
    // Rights: a destination open read-only is EBADF.
    let ro = fs.open("/b", &OpenOptions::read_only()).unwrap();
    assert!(matches!(
        fs.clone_range(&a, 0, &ro, 0, B),
        Err(Error::BadFd)
    ));
    // Another file system: EXDEV.
    let other = memfd_fs(16);
    let x = other.create("/x", 0o644).unwrap();
    assert!(matches!(
        fs.clone_range(&a, 0, &x, 0, B),
        Err(Error::CrossDevice)
    ));
    assert_clean(&fs);
}

#[test]
fn r1_cow_by_write_at_changes_only_that_file() {
    let fs = memfd_fs(64);
    let data = pattern(16 * 4096, 5);
    let a = with(&fs, "/a", &data);
    let b = fs.create("/b", 0o644).unwrap();
    fs.clone_file(&a, &b).unwrap();
    let shared = dev_blk(&a, 5 * B);
    let free = free_for_data(&fs.statfs());
    // A write inside one block: the rest of the block is copied around it.
    b.write_at(b"hello", 5 * B + 1000).unwrap();
    assert_eq!(content(&a), data, "the source is unchanged");
    let mut want = data.clone();
    want[5 * 4096 + 1000..5 * 4096 + 1005].copy_from_slice(b"hello");
    assert_eq!(content(&b), want);
    assert_ne!(dev_blk(&b, 5 * B), shared, "b got its own block");
    assert_eq!(dev_blk(&a, 5 * B), shared, "a keeps the old one");
    assert_eq!(fs.block_refs(shared), 1);
    assert_eq!(
        free_for_data(&fs.statfs()),
        free - 1,
        "exactly one block copied"
    );
    // A write across shared and unshared blocks of the source.
    let big = pattern(6 * 4096, 9);
    a.write_at(&big, 3 * B + 7).unwrap();
    let mut want_a = data.clone();
    want_a[3 * 4096 + 7..3 * 4096 + 7 + big.len()].copy_from_slice(&big);
    assert_eq!(content(&a), want_a);
    assert_eq!(content(&b), want, "b does not see a's write");
    // Appending past the end of a cloned file.
    b.write_at(b"tail", b.len()).unwrap();
    assert_eq!(&content(&b)[16 * 4096..], b"tail");
    assert_eq!(content(&a), want_a);
    assert_clean(&fs);
}

#[test]
fn r1_truncate_punch_zero_of_one_file_leave_the_other_intact() {
    let fs = memfd_fs(64);
    let data = pattern(32 * 4096, 6);
    let a = with(&fs, "/a", &data);
    let b = fs.create("/b", 0o644).unwrap();
    fs.clone_file(&a, &b).unwrap();
    let free = free_for_data(&fs.statfs());
    // Truncate into the middle of a block: that block is copied, the rest released.
    b.set_len(20 * B + 10).unwrap();
    assert_eq!(content(&a), data);
    assert_eq!(content(&b), data[..20 * 4096 + 10].to_vec());
    assert_eq!(
        free_for_data(&fs.statfs()),
        free - 1,
        "only the partial block copied"
    );
    // Punch (with partial edges) and zero range in a.
    a.fallocate(falloc::PUNCH_HOLE | falloc::KEEP_SIZE, 2 * B + 5, 4 * B)
        .unwrap();
    a.fallocate(falloc::ZERO_RANGE, 10 * B + 3, 3 * B).unwrap();
    let mut want_a = data.clone();
    want_a[2 * 4096 + 5..6 * 4096 + 5].fill(0);
    want_a[10 * 4096 + 3..13 * 4096 + 3].fill(0);
    assert_eq!(content(&a), want_a);
    assert_eq!(content(&b), data[..20 * 4096 + 10].to_vec());
    // Unlink a: b still reads everything; the blocks only b held are freed
    // when b goes too.
    drop(a);
    fs.unlink("/a").unwrap();
    assert_eq!(content(&b), data[..20 * 4096 + 10].to_vec());
    assert_clean(&fs);
    drop(b);
    fs.unlink("/b").unwrap();
    let st = fs.statfs();
    assert_eq!(free_for_data(&st), st.data_blocks, "every block came back");
    assert!(fs.shared_blocks().is_empty());
    assert_clean(&fs);
}

/// Found by tests/model.rs: a punch or zero range from a block boundary to the
/// middle of that block zeroed the shared block in place (only a partial
/// start block was copied first), changing the other file too.
#[test]
fn r1_punch_or_zero_from_a_block_start_into_a_shared_block_copies_it() {
    let fs = memfd_fs(16);
    let data = pattern(4 * 4096, 7);
    for mode in [falloc::ZERO_RANGE, falloc::PUNCH_HOLE | falloc::KEEP_SIZE] {
        let a = with(&fs, "/a", &data);
        let b = fs.create("/b", 0o644).unwrap();
        fs.clone_file(&a, &b).unwrap();
        b.fallocate(mode, B, 1000).unwrap();
        assert!(content(&a) == data, "mode {mode:#x}: the source changed");
        let mut want = data.clone();
        want[4096..4096 + 1000].fill(0);
        assert!(content(&b) == want, "mode {mode:#x}: the clone");
        assert_clean(&fs);
        drop((a, b));
        fs.unlink("/a").unwrap();
        fs.unlink("/b").unwrap();
    }
}

#[test]
fn r1_dedupe_of_unequal_ranges_shares_nothing_equal_ones_share() {
    let fs = memfd_fs(64);
    let data = pattern(8 * 4096, 7);
    let a = with(&fs, "/a", &data);
    let b = with(&fs, "/b", &data);
    let mut other = data.clone();
    other[6 * 4096 + 9] ^= 1;
    let c = with(&fs, "/c", &other);
    let free = free_for_data(&fs.statfs());
    let r = fs.dedupe_range(&a, 0, &c, 0, 8 * B).unwrap();
    assert!(r.differs);
    assert_eq!(r.bytes_deduped, 0);
    assert_ne!(dev_blk(&a, 0), dev_blk(&c, 0), "nothing shared");
    assert_eq!(free_for_data(&fs.statfs()), free);
    // The equal prefix of c can be deduped.
    let r = fs.dedupe_range(&a, 0, &c, 0, 6 * B).unwrap();
    assert_eq!((r.bytes_deduped, r.differs), (6 * B, false));
    assert_eq!(dev_blk(&a, 0), dev_blk(&c, 0));
    assert_eq!(free_for_data(&fs.statfs()), free + 6);
    // Equal files: all blocks shared, contents unchanged.
    let r = fs.dedupe_range(&a, 0, &b, 0, 8 * B).unwrap();
    assert_eq!(r.bytes_deduped, 8 * B);
    assert_eq!(content(&b), data);
    assert_eq!(content(&c), other);
    assert_eq!(fs.block_refs(dev_blk(&a, 0)), 3);
    // Dedupe needs both ranges inside their files.
    assert!(matches!(
        fs.dedupe_range(&a, 0, &b, 4 * B, 8 * B),
        Err(Error::Invalid(_))
    ));
    assert_clean(&fs);
}

#[test]
fn r1_refcounts_survive_log_replay_checkpoint_and_remount() {
    let dev = Arc::new(RamDevice::new(64 << 20));
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    let data = pattern(12 * 4096, 8);
    let blk;
    {
        let fs = Fs::mount(dev.clone()).unwrap();
        let a = with(&fs, "/a", &data);
        let b = fs.create("/b", 0o644).unwrap();
        let c = fs.create("/c", 0o644).unwrap();
        fs.clone_file(&a, &b).unwrap();
        fs.clone_file(&a, &c).unwrap();
        blk = dev_blk(&a, 4 * B);
        assert_eq!(fs.block_refs(blk), 3);
        // No unmount: the state is in the log only.
    }
    let dev = Arc::new(RamDevice::from_image(dev.image()));
    let fs = Fs::mount(dev.clone()).unwrap();
    assert_eq!(fs.block_refs(blk), 3, "replayed from the log");
    let c = fs.open("/c", &OpenOptions::read_write()).unwrap();
    c.write_at(b"x", 4 * B).unwrap();
    assert_eq!(fs.block_refs(blk), 2);
    drop(c);
    fs.unmount().unwrap(); // checkpoint: record kind 4
    let fs = Fs::mount(dev.clone()).unwrap();
    assert_eq!(fs.block_refs(blk), 2, "from the checkpoint");
    let r = fsck(dev.clone()).unwrap();
    assert!(r.clean, "{:?}", r.problems);
    // Used blocks are counted once however many files share them.
    assert_eq!(r.used_blocks, 12 + 1);
    let a = fs.open("/a", &OpenOptions::read_only()).unwrap();
    assert_eq!(content(&a), data);
}

#[test]
fn r1_cow_by_mmap_store_never_writes_the_shared_block() {
    let fs = memfd_fs(64);
    let data = pattern(8 * 4096, 10);
    let a = with(&fs, "/a", &data);
    let b = fs.create("/b", 0o644).unwrap();
    fs.clone_file(&a, &b).unwrap();
    let shared = dev_blk(&a, 3 * B);
    // A read-only mapping of b maps the shared blocks directly.
    let ro = map(&b, 8 * 4096, Prot::Read);
    assert_eq!(slice(&ro)[3 * 4096 + 1], data[3 * 4096 + 1]);
    assert_eq!(ro.device_block_of(3 * 4096), Some(shared));
    // A writable mapping: a store copies the block first.
    let rw = map(&b, 8 * 4096, Prot::ReadWrite);
    let before = fs.dax_stats().cow_faults;
    slice(&rw)[3 * 4096 + 1] = 0xEE;
    assert!(fs.dax_stats().cow_faults > before, "the fault copied");
    assert_eq!(content(&a), data, "the other file never sees the store");
    assert_eq!(dev_blk(&a, 3 * B), shared);
    let mine = dev_blk(&b, 3 * B);
    assert_ne!(mine, shared);
    assert_eq!(rw.device_block_of(3 * 4096), Some(mine));
    let mut v = [0u8; 1];
    b.read_at(&mut v, 3 * B + 1).unwrap();
    assert_eq!(v[0], 0xEE, "read_at sees the store");
    // The read-only mapping of the same file follows (no stale shared block).
    assert_eq!(slice(&ro)[3 * 4096 + 1], 0xEE);
    assert_eq!(ro.device_block_of(3 * 4096).unwrap_or(mine), mine);
    // A kernel store into the writable mapping (read(2) into it) copies too.
    let (r, w) = {
        let mut fds = [0i32; 2];
        // SAFETY: fds is a valid 2-int array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds[0], fds[1])
    };
    // SAFETY: valid fds; the destination lies in the mapping (8 pages).
    let n = unsafe {
        assert_eq!(libc::write(w, b"KERNEL".as_ptr().cast(), 6), 6);
        let n = libc::read(r, slice(&rw)[6 * 4096..].as_mut_ptr().cast(), 6);
        libc::close(r);
        libc::close(w);
        n
    };
    assert_eq!(n, 6);
    assert_eq!(
        &content(&a)[6 * 4096..6 * 4096 + 6],
        &data[6 * 4096..6 * 4096 + 6]
    );
    let mut v = [0u8; 6];
    b.read_at(&mut v, 6 * B).unwrap();
    assert_eq!(&v, b"KERNEL");
    drop((ro, rw));
    assert_clean(&fs);
}

#[test]
fn r1_mprotect_to_writable_breaks_sharing_before_a_store() {
    let fs = memfd_fs(64);
    let data = pattern(4 * 4096, 11);
    let a = with(&fs, "/a", &data);
    let b = fs.create("/b", 0o644).unwrap();
    fs.clone_file(&a, &b).unwrap();
    let m = map(&b, 4 * 4096, Prot::Read);
    assert_eq!(slice(&m)[100], data[100]); // maps the shared block
    m.protect(Prot::ReadWrite).unwrap();
    slice(&m)[100] = !data[100];
    assert_eq!(content(&a), data);
    let mut v = [0u8; 1];
    b.read_at(&mut v, 100).unwrap();
    assert_eq!(v[0], !data[100]);
    drop(m);
    assert_clean(&fs);
}

#[test]
fn r1_clone_breaks_layouts_of_a_writable_source_mapping() {
    let fs = memfd_fs(64);
    let data = pattern(4 * 4096, 12);
    let a = with(&fs, "/a", &data);
    let m = map(&a, 4 * 4096, Prot::ReadWrite);
    slice(&m)[10] = 1; // the block is mapped writable, exclusively a's
    let b = fs.create("/b", 0o644).unwrap();
    fs.clone_file(&a, &b).unwrap();
    // The mapping was unmapped by the clone: this store faults and copies.
    slice(&m)[10] = 2;
    slice(&m)[3 * 4096] = 3;
    let mut want_b = data.clone();
    want_b[10] = 1;
    assert_eq!(
        content(&b),
        want_b,
        "the clone holds the data as of the clone"
    );
    let mut v = [0u8; 1];
    a.read_at(&mut v, 10).unwrap();
    assert_eq!(v[0], 2);
    assert_ne!(dev_blk(&a, 0), dev_blk(&b, 0));
    drop(m);
    assert_clean(&fs);
}

#[test]
fn r1_concurrent_writers_to_both_sides_of_a_clone() {
    let fs = memfd_fs(128);
    let data = pattern(64 * 4096, 13);
    let a = Arc::new(with(&fs, "/a", &data));
    let b = Arc::new(fs.create("/b", 0o644).unwrap());
    fs.clone_file(&a, &b).unwrap();
    let ths: Vec<_> = [(a.clone(), 1u8), (b.clone(), 2u8)]
        .into_iter()
        .map(|(f, tag)| {
            std::thread::spawn(move || {
                for i in 0..64u64 {
                    f.write_at(&[tag; 100], i * B + (i * 37) % 3000).unwrap();
                }
            })
        })
        .collect();
    for t in ths {
        t.join().unwrap();
    }
    for (f, tag) in [(&a, 1u8), (&b, 2u8)] {
        let mut want = data.clone();
        for i in 0..64u64 {
            let o = (i * B + (i * 37) % 3000) as usize;
            want[o..o + 100].fill(tag);
        }
        assert_eq!(
            content(f),
            want,
            "file {tag}: its writes, and nothing of the other's"
        );
    }
    assert!(fs.shared_blocks().is_empty(), "every block was copied once");
    assert_clean(&fs);
}

#[test]
fn r1_stress_clone_racing_write_at_and_mmap_stores_keeps_files_apart() {
    let fs = memfd_fs(256);
    let n = 256usize;
    let a = Arc::new(with(&fs, "/a", &vec![0x55u8; n * 4096]));
    let b = Arc::new(fs.create("/b", 0o644).unwrap());
    let c = Arc::new(fs.create("/c", 0o644).unwrap());
    fs.clone_file(&a, &b).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut ths = Vec::new();
    {
        let a = a.clone();
        ths.push(std::thread::spawn(move || {
            for i in 0..20_000u64 {
                let off = (i * 7919) % (n as u64 * B - 64);
                a.write_at(&[1u8; 64], off).unwrap();
            }
        }));
    }
    {
        let b = b.clone();
        let stop = stop.clone();
        ths.push(std::thread::spawn(move || {
            let m = map(&b, n * 4096, Prot::ReadWrite);
            let s = slice(&m);
            let mut i = 0usize;
            while i < 20_000 || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                s[(i * 104_729) % s.len()] = 2;
                i += 1;
            }
        }));
    }
    {
        // Clones from a and from b (whose writable mapping is being stored
        // to: each clone unmaps it and the next stores copy again).
        let (fs, a, b, c) = (fs.clone(), a.clone(), b.clone(), c.clone());
        ths.push(std::thread::spawn(move || {
            for i in 0..400u64 {
                let off = (i % 8) * 32 * B;
                let src = if i % 2 == 0 { &a } else { &b };
                fs.clone_range(src, off, &c, off, 32 * B).unwrap();
            }
        }));
    }
    let first = ths.remove(0);
    first.join().unwrap();
    let third = ths.pop().unwrap();
    third.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in ths {
        t.join().unwrap();
    }
    for (f, ok) in [(&a, 1u8), (&b, 2u8)] {
        let v = content(f);
        let bad = v.iter().position(|&x| x != 0x55 && x != ok);
        assert_eq!(bad, None, "file with tag {ok} holds a foreign byte");
    }
    let bad = content(&c).iter().position(|&x| ![0x55, 1, 2].contains(&x));
    assert_eq!(bad, None, "the clone target holds bytes nobody wrote");
    assert!(content(&b).contains(&2));
    assert_clean(&fs);
}

#[test]
fn r1_cow_by_mmap_store_in_a_2mib_mapping_copies_the_chunk() {
    let fs = memfd_fs(256);
    let len = 4usize << 20;
    let data = pattern(len, 14);
    let a = with(&fs, "/a", &data);
    let b = fs.create("/b", 0o644).unwrap();
    fs.clone_file(&a, &b).unwrap();
    let m = map(&b, len, Prot::ReadWrite);
    assert_eq!(m.as_ptr() as usize % (2 << 20), 0);
    let before = fs.dax_stats();
    slice(&m)[(2 << 20) + 5] = 0xAB;
    let after = fs.dax_stats();
    assert!(after.cow_faults > before.cow_faults);
    assert!(
        after.pmd_maps > before.pmd_maps,
        "the copy is mapped with 2 MiB"
    );
    let nb = dev_blk(&b, 2 << 20);
    assert_eq!(nb % 512, 0, "the copy is a 2 MiB-aligned extent");
    assert_ne!(nb, dev_blk(&a, 2 << 20));
    // Only the touched chunk was copied; the first chunk is still shared.
    assert_eq!(dev_blk(&b, 0), dev_blk(&a, 0));
    assert_eq!(content(&a), data);
    let mut want = data.clone();
    want[(2 << 20) + 5] = 0xAB;
    assert_eq!(content(&b), want);
    drop(m);
    assert_clean(&fs);
}

#[test]
fn r1_clone_breaks_layouts_and_waits_for_a_pin_on_the_destination() {
    let fs = memfd_fs(64);
    let src = Arc::new(with(&fs, "/src", &pattern(4 * 4096, 15)));
    let dst = Arc::new(with(&fs, "/dst", &pattern(4 * 4096, 16)));
    let m = map(&dst, 4 * 4096, Prot::ReadWrite);
    let pin = m.pin(4096, 4096, true).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t = {
        let (fs, src, dst, done) = (fs.clone(), src.clone(), dst.clone(), done.clone());
        std::thread::spawn(move || {
            fs.clone_range(&src, 0, &dst, 0, 0).unwrap();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        !done.load(std::sync::atomic::Ordering::SeqCst),
        "the clone must wait while a page it releases is pinned"
    );
    drop(pin);
    t.join().unwrap();
    assert_eq!(content(&dst), content(&src));
    // The mapping faults the shared blocks back in (and copies on a store).
    assert_eq!(slice(&m)[4096], pattern(4 * 4096, 15)[4096]);
    drop(m);
    assert_clean(&fs);
}

#[test]
fn r1_fallocate_unshare_range_gives_the_file_its_own_blocks() {
    let fs = memfd_fs(64);
    let data = pattern(8 * 4096, 17);
    let a = with(&fs, "/a", &data);
    let b = fs.create("/b", 0o644).unwrap();
    fs.clone_file(&a, &b).unwrap();
    let free = free_for_data(&fs.statfs());
    b.fallocate(falloc::UNSHARE_RANGE | falloc::KEEP_SIZE, 2 * B, 3 * B)
        .unwrap();
    assert_eq!(free_for_data(&fs.statfs()), free - 3);
    for i in 0..8 {
        let shared = dev_blk(&a, i * B) == dev_blk(&b, i * B);
        assert_eq!(shared, !(2..5).contains(&i), "block {i}");
    }
    assert_eq!(content(&b), data);
    assert_eq!(content(&a), data);
    // Unshare also allocates holes in the range (and may grow the file).
    b.fallocate(falloc::UNSHARE_RANGE, 8 * B, 2 * B).unwrap();
    assert_eq!(b.len(), 10 * B);
    assert_eq!(b.stat().unwrap().blocks, 10 * 8);
    assert_clean(&fs);
}

#[test]
fn r1_cow_by_mmap_store_on_a_hugetlbfs_device_keeps_2mib_mappings() {
    let require = std::env::var("UDAX_REQUIRE_HUGEPAGES").is_ok_and(|v| v == "1");
    let dev = match device::open("memfd-huge:32M", &DevOpen::default()) {
        Ok(d) => d,
        Err(e) => {
            assert!(
                !require,
                "UDAX_REQUIRE_HUGEPAGES=1 but no huge-page memfd: {e}"
            );
            eprintln!(
                "SKIPPED r1_cow_by_mmap_store_on_a_hugetlbfs_device_keeps_2mib_mappings: {e}"
            );
            return;
        }
    };
    Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev).unwrap();
    let len = 4usize << 20;
    let data = pattern(len, 18);
    let a = with(&fs, "/a", &data);
    let b = fs.create("/b", 0o644).unwrap();
    fs.clone_file(&a, &b).unwrap();
    let m = map(&b, len, Prot::ReadWrite);
    slice(&m)[(2 << 20) + 9] = 0x77;
    assert_eq!(dev_blk(&b, 2 << 20) % 512, 0, "the copy is 2 MiB aligned");
    assert_ne!(dev_blk(&b, 2 << 20), dev_blk(&a, 2 << 20));
    assert_eq!(content(&a), data);
    let mut want = data.clone();
    want[(2 << 20) + 9] = 0x77;
    assert_eq!(content(&b), want);
    assert_eq!(slice(&m)[5], data[5]);
    drop(m);
    assert_clean(&fs);
}

#[test]
fn r1_extents_shared_splits_where_sharing_changes() {
    let fs = memfd_fs(64);
    let a = with(&fs, "/a", &pattern(8 * 4096, 19));
    let b = fs.create("/b", 0o644).unwrap();
    fs.clone_range(&a, 2 * B, &b, 0, 3 * B).unwrap();
    let v: Vec<(u64, u64, bool)> = a
        .extents_shared()
        .into_iter()
        .map(|(e, s)| (e.file_blk, e.len, s))
        .collect();
    assert_eq!(v, vec![(0, 2, false), (2, 3, true), (5, 3, false)]);
    let v: Vec<(u64, u64, bool)> = b
        .extents_shared()
        .into_iter()
        .map(|(e, s)| (e.file_blk, e.len, s))
        .collect();
    assert_eq!(v, vec![(0, 3, true)]);
}

#[test]
fn r1_pin_for_write_of_a_shared_page_pins_the_files_own_copy() {
    let fs = memfd_fs(64);
    let data = pattern(4 * 4096, 20);
    let a = with(&fs, "/a", &data);
    let b = fs.create("/b", 0o644).unwrap();
    fs.clone_file(&a, &b).unwrap();
    let shared = dev_blk(&a, 4096);
    let m = map(&b, 4 * 4096, Prot::ReadWrite);
    let pin = m.pin(4096, 4096, true).unwrap();
    assert_eq!(pin.blocks().len(), 1, "the page is mapped and pinned");
    assert_ne!(pin.blocks()[0], shared, "never the block a shares");
    assert_eq!(pin.blocks()[0], dev_blk(&b, 4096));
    drop(pin);
    drop(m);
    assert_eq!(content(&a), data);
    assert_clean(&fs);
}
