//! P7: thread scaling: the rate of 4 KiB random overwrites by 2 threads (each
//! on its own 32 MiB file) divided by that of 1 thread, on a memfd device.
//! Baseline: the same ratio for pwrite on tmpfs files; limit: the same ratio
//! for bare 4 KiB copies into private 32 MiB buffers.

use super::{e, memfd_fs, ops, repeat, res, Cfg, Res};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use udax::fs::OpenOptions;

/// The row P7; baseline files go in `tmp` (on tmpfs).
pub(super) fn run(c: &Cfg, tmp: &Path) -> Result<Vec<Res>, String> {
    let fs = memfd_fs(256 << 20)?;
    for t in 0..2 {
        e(e(fs.create(&format!("/t{t}"), 0o644))?.write_at(&vec![1u8; 32 << 20], 0))?;
    }
    let per = c.rand_ops;
    let run_threads = |threads: usize| -> Result<f64, String> {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let fs = fs.clone();
                    s.spawn(move || -> Result<(), String> {
                        let f = e(fs.open(&format!("/t{t}"), &OpenOptions::read_write()))?;
                        let mut r = fastrand::Rng::with_seed(t as u64);
                        let p = [t as u8; 4096];
                        for _ in 0..per {
                            e(f.write_at(&p, r.u64(0..8192) * 4096))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            hs.into_iter()
                .try_for_each(|h| h.join().map_err(|_| "thread panicked".to_string())?)
        })?;
        Ok(ops(per * threads as u64, t0))
    };
    let u7 = repeat(c.reps, || Ok(run_threads(2)? / run_threads(1)?))?;
    drop(fs);
    let paths: Vec<PathBuf> = (0..2).map(|t| tmp.join(format!("t{t}"))).collect();
    for p in &paths {
        e(std::fs::write(p, vec![1u8; 32 << 20]))?;
    }
    let brun = |threads: usize| -> Result<f64, String> {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for (t, p) in paths.iter().enumerate().take(threads) {
                s.spawn(move || {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(p)
                        .expect("baseline file");
                    let mut r = fastrand::Rng::with_seed(t as u64);
                    let pg = [t as u8; 4096];
                    for _ in 0..per {
                        f.write_all_at(&pg, r.u64(0..8192) * 4096).expect("pwrite");
                    }
                });
            }
        });
        Ok(ops(per * threads as u64, t0))
    };
    let b7 = repeat(c.reps, || Ok(brun(2)? / brun(1)?))?;
    // The physical limit: how bare 4 KiB copies to random offsets of two
    // private 32 MiB buffers scale on this machine (memory bandwidth and
    // shared cores cap it below 2.0).
    let lrun = |threads: usize| -> Result<f64, String> {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                s.spawn(move || {
                    let mut buf = vec![1u8; 32 << 20];
                    let src = [t as u8; 4096];
                    let mut r = fastrand::Rng::with_seed(t as u64);
                    for _ in 0..per {
                        let o = r.usize(0..8192) * 4096;
                        buf[o..o + 4096].copy_from_slice(&src);
                        std::hint::black_box(&buf[o]);
                    }
                });
            }
        });
        Ok(ops(per * threads as u64, t0))
    };
    let l7 = repeat(c.reps, || Ok(lrun(2)? / lrun(1)?))?;
    Ok(vec![res(
        "P7",
        "scaling of 4 KiB random writes, 2 threads / 1 thread (limit: bare 4 KiB copies)",
        "x",
        u7,
        Some(b7),
        Some(l7),
    )])
}
