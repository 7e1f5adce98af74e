//! P3, P4, P5: mmap. P3: map an allocated file and write-touch every 4 KiB page
//! (P3-huge: the same on a hugetlbfs device, when huge pages are reserved);
//! P4: the same on a hole, so every fault allocates (P4-fault: the cost of one
//! such fault). Baseline: the same on a tmpfs file mapped through the kernel;
//! no limit. P5: msync of a whole mapping with 1% of its pages dirty, on an
//! emulated-pmem device; baseline: flushing every line of the mapping; limit:
//! flushing just the dirty pages.

use super::{e, gbps, memfd_fs, repeat, res, stat, Cfg, Res};
use std::path::Path;
use std::time::Instant;
use udax::device::{self, persist};
use udax::fs::{Fs, MkfsOptions};

/// Store one byte in every 4 KiB page of `[p, p+len)`.
pub(super) fn touch(p: *mut u8, len: usize) {
    for i in (0..len).step_by(4096) {
        // SAFETY: callers pass a live writable mapping of `len` bytes.
        unsafe { p.add(i).write_volatile(1) };
    }
}

/// The kernel baseline: map a tmpfs file (pages allocated first, or a hole)
/// and write-touch every page.
fn tmpfs_touch(dir: &Path, size: u64, allocated: bool) -> Result<f64, String> {
    let path = dir.join(format!("udax-bench-mmap-{}", std::process::id()));
    let f = e(std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path))
    .map_err(|m| format!("{}: {m}", path.display()))?;
    e(f.set_len(size))?;
    if allocated {
        e(rustix::fs::fallocate(
            &f,
            rustix::fs::FallocateFlags::empty(),
            0,
            size,
        ))?;
    }
    let t = Instant::now();
    // SAFETY: a fresh shared mapping of our own file, unmapped below.
    let p = e(unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            size as usize,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            &f,
            0,
        )
    })?;
    touch(p.cast(), size as usize);
    // SAFETY: the mapping made above.
    let _ = unsafe { rustix::mm::munmap(p, size as usize) };
    let r = gbps(size, t);
    let _ = std::fs::remove_file(&path);
    Ok(r)
}

/// udax: map a file (allocated, or a hole) and write-touch every page.
/// Returns (GB/s, faults taken).
fn udax_touch(fs: &Fs, size: u64, allocated: bool) -> Result<(f64, u64), String> {
    let f = e(fs.create("/mmap-bench", 0o644))?;
    if allocated {
        e(f.fallocate(0, 0, size))?;
    } else {
        e(f.set_len(size))?;
    }
    let f0 = fs.dax_stats().faults;
    let t = Instant::now();
    let m = e(f.mmap(
        0,
        size as usize,
        udax::Prot::ReadWrite,
        udax::MapFlags::SHARED,
    ))?;
    touch(m.as_ptr(), size as usize);
    drop(m);
    let r = gbps(size, t);
    let faults = fs.dax_stats().faults - f0;
    drop(f);
    e(fs.unlink("/mmap-bench"))?;
    Ok((r, faults))
}

/// The rows P3, P3-huge (when huge pages are reserved), P4, P4-fault and P5;
/// the baseline files go in `tmpfs`.
pub(super) fn run(c: &Cfg, tmpfs: &Path) -> Result<Vec<Res>, String> {
    let mut out = Vec::new();
    let size = c.seq;
    let fs = memfd_fs(size + (64 << 20))?;
    let u3 = repeat(c.reps, || Ok(udax_touch(&fs, size, true)?.0))?;
    let b3 = repeat(c.reps, || tmpfs_touch(tmpfs, size, true))?;
    out.push(res(
        "P3",
        "mmap an allocated file, write-touch every 4 KiB (touched bytes per second)",
        "GB/s",
        u3,
        Some(b3),
        None,
    ));
    // On a hugetlbfs device, as much as the reserved huge pages allow.
    let free_huge: u64 = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let hsize = (size.min(free_huge.saturating_sub(16) * (2 << 20))) & !((2 << 20) - 1);
    let huge = if hsize >= 16 << 20 {
        device::open(
            &format!("memfd-huge:{}", hsize + (16 << 20)),
            &device::OpenOptions::default(),
        )
        .ok()
    } else {
        None
    };
    match huge {
        Some(dev) => {
            e(Fs::mkfs(&*dev, &MkfsOptions::default()))?;
            let hfs = e(Fs::mount(dev))?;
            let uh = repeat(c.reps, || Ok(udax_touch(&hfs, hsize, true)?.0))?;
            let bh = repeat(c.reps, || tmpfs_touch(tmpfs, hsize, true))?;
            out.push(res(
                "P3-huge",
                "P3 on a hugetlbfs device (2 MiB extents) vs tmpfs 4 KiB pages",
                "GB/s",
                uh,
                Some(bh),
                None,
            ));
        }
        None => eprintln!(
            "P3-huge: skipped, not enough huge pages reserved ({free_huge}); \
             reserve with `echo 600 > /proc/sys/vm/nr_hugepages`"
        ),
    }
    let mut per_fault = Vec::new();
    let u4 = repeat(c.reps, || {
        let (r, faults) = udax_touch(&fs, size, false)?;
        per_fault.push(size as f64 / (r * 1e9) / faults.max(1) as f64 * 1e6);
        Ok(r)
    })?;
    let b4 = repeat(c.reps, || tmpfs_touch(tmpfs, size, false))?;
    out.push(res(
        "P4",
        "mmap a hole, write-touch every 4 KiB (allocation by fault)",
        "GB/s",
        u4,
        Some(b4),
        None,
    ));
    let pf = stat(per_fault);
    out.push(res(
        "P4-fault",
        "cost of one write fault on a hole (each allocates and maps 2 MiB)",
        "us",
        pf,
        None,
        None,
    ));
    // P5 on emulated pmem, where flushing really costs.
    let pdev = e(device::open(
        &format!("pmem-emul:{}", size + (64 << 20)),
        &device::OpenOptions::default(),
    ))?;
    e(Fs::mkfs(&*pdev, &MkfsOptions::default()))?;
    let pfs = e(Fs::mount(pdev))?;
    let f = e(pfs.create("/msync", 0o644))?;
    e(f.fallocate(0, 0, size))?;
    let m = e(f.mmap(
        0,
        size as usize,
        udax::Prot::ReadWrite,
        udax::MapFlags::SHARED,
    ))?;
    touch(m.as_ptr(), size as usize);
    e(m.msync(0, size as usize))?;
    let pages = size / 4096;
    let dirty = (pages / 100).max(1);
    let mut rng = fastrand::Rng::with_seed(5);
    let mut picks: Vec<usize> = Vec::new();
    let u5 = repeat(c.reps, || {
        picks = (0..dirty).map(|_| rng.usize(0..pages as usize)).collect();
        for &p in &picks {
            // SAFETY: inside the live mapping.
            unsafe { m.as_ptr().add(p * 4096).write_volatile(2) };
        }
        let t = Instant::now();
        e(m.msync(0, size as usize))?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    })?;
    let instr = device::detect_flush_instr();
    let all = repeat(c.reps, || {
        let t = Instant::now();
        // SAFETY: the live mapping; flushing changes no data.
        unsafe { persist::flush_lines(m.as_ptr(), size as usize, instr) };
        persist::sfence();
        Ok(t.elapsed().as_secs_f64() * 1e3)
    })?;
    let just = repeat(c.reps, || {
        let t = Instant::now();
        for &p in &picks {
            // SAFETY: inside the live mapping.
            unsafe { persist::flush_lines(m.as_ptr().add(p * 4096), 64, instr) };
        }
        persist::sfence();
        Ok(t.elapsed().as_secs_f64() * 1e3)
    })?;
    out.push(res(
        "P5",
        "msync of the whole mapping with 1% of pages dirty (baseline: flush all; limit: flush the dirty pages)",
        "ms",
        u5,
        Some(all),
        Some(just),
    ));
    Ok(out)
}
