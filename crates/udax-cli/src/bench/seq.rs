//! P1: sequential write (appends to a new file) and read, 1 MiB requests, of
//! `Cfg::seq` bytes on a memfd device. Baseline: the same through pwrite /
//! pread on a tmpfs file; limit: non-temporal copies (write) and memcpy (read)
//! of the same bytes in memory.

use super::{e, gbps, host_appends, memfd_fs, repeat, res, udax_appends, Cfg, Res};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;
use udax::device::{self, persist};
use udax::fs::OpenOptions;

/// The rows P1-write and P1-read; baseline files go in `tmp` (on tmpfs).
pub(super) fn run(c: &Cfg, tmp: &Path) -> Result<Vec<Res>, String> {
    let chunk = 1usize << 20;
    let src: Vec<u8> = (0..chunk).map(|i| (i * 31 % 251) as u8).collect();
    let fs = memfd_fs(c.seq * 2 + (64 << 20))?;
    let n = c.seq / chunk as u64;
    let uw = repeat(c.reps, || {
        Ok(c.seq as f64 / udax_appends(&fs, "/seq", n, &src, false)? / 1e9)
    })?;
    let f = e(fs.open("/seq", &OpenOptions::read_only()))?;
    let mut dst = vec![0u8; chunk];
    let ur = repeat(c.reps, || {
        let t = Instant::now();
        for i in 0..n {
            e(f.read_at(&mut dst, i * chunk as u64))?;
        }
        Ok(gbps(c.seq, t))
    })?;
    drop(f);
    drop(fs);
    let bpath = tmp.join("seq");
    let bw = repeat(c.reps, || {
        Ok(c.seq as f64 / host_appends(&bpath, n, &src, false)? / 1e9)
    })?;
    let bf = e(std::fs::File::open(&bpath))?;
    let br = repeat(c.reps, || {
        let t = Instant::now();
        for i in 0..n {
            e(bf.read_exact_at(&mut dst, i * chunk as u64))?;
        }
        Ok(gbps(c.seq, t))
    })?;
    drop(bf);
    let _ = std::fs::remove_file(&bpath);
    let mut big = vec![0u8; c.seq as usize];
    big.iter_mut().step_by(4096).for_each(|b| *b = 1);
    let instr = device::detect_flush_instr();
    let lw = repeat(c.reps, || {
        let t = Instant::now();
        for i in 0..n as usize {
            // SAFETY: `big` has room for n chunks; source and destination differ.
            unsafe { persist::copy_nt(big.as_mut_ptr().add(i * chunk), &src, instr) };
        }
        persist::sfence();
        Ok(gbps(c.seq, t))
    })?;
    let lr = repeat(c.reps, || {
        let t = Instant::now();
        for i in 0..n as usize {
            dst.copy_from_slice(&big[i * chunk..(i + 1) * chunk]);
        }
        std::hint::black_box(&dst);
        Ok(gbps(c.seq, t))
    })?;
    drop(big);
    Ok(vec![
        res(
            "P1-write",
            "sequential write, 1 MiB requests (new file)",
            "GB/s",
            uw,
            Some(bw),
            Some(lw),
        ),
        res(
            "P1-read",
            "sequential read, 1 MiB requests",
            "GB/s",
            ur,
            Some(br),
            Some(lr),
        ),
    ])
}
