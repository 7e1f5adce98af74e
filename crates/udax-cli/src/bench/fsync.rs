//! P6: 4 KiB appends, each followed by fsync, to a new file on a memfd device.
//! Baseline: pwrite + fsync on a tmpfs file; limit: 4 KiB memcpy into a buffer
//! in memory. P6-file: the same appends on a regular-file device (durability
//! through msync) in `--file-dir`, against pwrite + fsync on that same disk
//! file system; no limit.

use super::{e, host_appends, memfd_fs, ops, repeat, res, udax_appends, Cfg, Res, MB};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use udax::device::{self, Device};
use udax::fs::{Fs, MkfsOptions};

/// The rows P6 and P6-file; the P6 baseline file goes in `tmp` (on tmpfs),
/// P6-file's device and baseline file in a new directory under `file_dir`.
/// `page` is the 4 KiB that each append writes.
pub(super) fn run(c: &Cfg, tmp: &Path, file_dir: &Path, page: &[u8]) -> Result<Vec<Res>, String> {
    let fs = memfd_fs((c.append_ops * 4096 + (64 << 20)).next_multiple_of(2 << 20))?;
    let u6 = repeat(c.reps, || {
        Ok(c.append_ops as f64 / udax_appends(&fs, "/log", c.append_ops, page, true)? / MB)
    })?;
    drop(fs);
    let bpath = tmp.join("log");
    let b6 = repeat(c.reps, || {
        Ok(c.append_ops as f64 / host_appends(&bpath, c.append_ops, page, true)? / MB)
    })?;
    let _ = std::fs::remove_file(&bpath);
    let mut mem = vec![0u8; (c.append_ops * 4096) as usize];
    let l6 = repeat(c.reps, || {
        let t = Instant::now();
        for i in 0..c.append_ops as usize {
            mem[i * 4096..(i + 1) * 4096].copy_from_slice(page);
        }
        std::hint::black_box(&mem);
        Ok(ops(c.append_ops, t))
    })?;
    drop(mem);
    let mut out = vec![res(
        "P6",
        "4 KiB append + fsync (memfd device vs tmpfs)",
        "Mops/s",
        u6,
        Some(b6),
        Some(l6),
    )];

    // P6 on a regular-file device (durability through msync) vs ext4-style write+fsync.
    let fdir =
        tempfile::tempdir_in(file_dir).map_err(|err| format!("{}: {err}", file_dir.display()))?;
    let dpath = fdir.path().join("udax.img");
    let dev: Arc<dyn Device> = e(device::open(
        dpath.to_str().unwrap_or_default(),
        &device::OpenOptions {
            create_size: Some(64 << 20),
        },
    ))?;
    let kind = dev.info().kind;
    e(Fs::mkfs(&*dev, &MkfsOptions::default()))?;
    let fs = e(Fs::mount(dev))?;
    let fo = c.file_ops.min(3000);
    let u6f = repeat(c.reps.min(3), || {
        Ok(fo as f64 / udax_appends(&fs, "/log", fo, page, true)?)
    })?;
    drop(fs);
    let bpath = fdir.path().join("log");
    let b6f = repeat(c.reps.min(3), || {
        Ok(fo as f64 / host_appends(&bpath, fo, page, true)?)
    })?;
    eprintln!("P6-file: device kind {kind:?} in {}", file_dir.display());
    out.push(res(
        "P6-file",
        "4 KiB append + fsync (regular-file device, msync, vs write+fsync on the same fs)",
        "ops/s",
        u6f,
        Some(b6f),
        None,
    ));
    Ok(out)
}
