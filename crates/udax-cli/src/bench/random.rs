//! P2: 4 KiB random read and overwrite at `Cfg::rand_ops` offsets of a
//! `Cfg::rand_span`-byte file on a memfd device. Baseline: pread / pwrite at the
//! same offsets of a tmpfs file; limit: 4 KiB memcpy (read) and non-temporal
//! copies (write) at the same offsets of a buffer in memory.

use super::{e, memfd_fs, rate_over, res, Cfg, Res};
use std::os::unix::fs::FileExt;
use std::path::Path;
use udax::device::{self, persist};

/// The rows P2-read and P2-write; baseline files go in `tmp` (on tmpfs).
/// `page` is the 4 KiB buffer read into and written from.
pub(super) fn run(c: &Cfg, tmp: &Path, page: &mut [u8]) -> Result<Vec<Res>, String> {
    let span = c.rand_span;
    let blocks = span / 4096;
    let fs = memfd_fs(span * 2 + (16 << 20))?;
    let f = e(fs.create("/rand", 0o644))?;
    e(f.write_at(&vec![1u8; span as usize], 0))?;
    let mut rng = fastrand::Rng::with_seed(9);
    let offs: Vec<u64> = (0..c.rand_ops).map(|_| rng.u64(0..blocks) * 4096).collect();
    let u2r = rate_over(c.reps, &offs, |o| e(f.read_at(page, o)).map(drop))?;
    let u2w = rate_over(c.reps, &offs, |o| e(f.write_at(page, o)).map(drop))?;
    drop(f);
    drop(fs);
    let bpath = tmp.join("rand");
    e(std::fs::write(&bpath, vec![1u8; span as usize]))?;
    let bf = e(std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&bpath))?;
    let b2r = rate_over(c.reps, &offs, |o| e(bf.read_exact_at(page, o)))?;
    let b2w = rate_over(c.reps, &offs, |o| e(bf.write_all_at(page, o)))?;
    drop(bf);
    let _ = std::fs::remove_file(&bpath);
    let mut mem = vec![1u8; span as usize];
    let l2 = rate_over(c.reps, &offs, |o| {
        page.copy_from_slice(&mem[o as usize..o as usize + 4096]);
        std::hint::black_box(&page);
        Ok(())
    })?;
    // The write limit: non-temporal 4 KiB copies (what udax's write path
    // uses for a page), as P1's.
    let instr = device::detect_flush_instr();
    let l2w = rate_over(c.reps, &offs, |o| {
        // SAFETY: `o + 4096 <= span == mem.len()`; source and destination differ.
        unsafe { persist::copy_nt(mem.as_mut_ptr().add(o as usize), page, instr) };
        persist::sfence();
        Ok(())
    })?;
    drop(mem);
    Ok(vec![
        res(
            "P2-read",
            "4 KiB random read",
            "Mops/s",
            u2r,
            Some(b2r),
            Some(l2),
        ),
        res(
            "P2-write",
            "4 KiB random overwrite",
            "Mops/s",
            u2w,
            Some(b2w),
            Some(l2w),
        ),
    ])
}
