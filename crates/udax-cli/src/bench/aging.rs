//! P9: fragmentation after aging: a memfd file system of `Cfg::age` bytes is
//! filled to ~70% through its API with small and large files (a third of them
//! deleted again as it goes), then new 64 MiB files are written and the share
//! of their 2 MiB pieces that are 2 MiB-aligned and contiguous (so mappable
//! with one huge page) is measured. No baseline; limit: 1.0, every piece.

use super::{e, memfd_fs, repeat, res, Cfg, Res, Stat};

/// The row P9.
pub(super) fn run(c: &Cfg) -> Result<Vec<Res>, String> {
    let u9 = repeat(1, || aging(c.age))?;
    Ok(vec![res(
        "P9",
        "share of new 64 MiB files' 2 MiB pieces that are 2 MiB-mappable after aging to ~70%",
        "fraction",
        u9,
        None,
        Some(Stat {
            median: 1.0,
            min: 1.0,
            max: 1.0,
        }),
    )])
}

/// Age a file system through its API, then measure new 64 MiB files.
fn aging(size: u64) -> Result<f64, String> {
    let fs = memfd_fs(size)?;
    let total = fs.statfs().data_blocks;
    let mut rng = fastrand::Rng::with_seed(42);
    let mut live: Vec<String> = Vec::new();
    let mut i = 0u64;
    let buf = vec![5u8; 1 << 20];
    while (total - fs.statfs().free_blocks) * 10 < total * 7 {
        i += 1;
        let name = format!("/age{i}");
        let len = if rng.u32(0..20) == 0 {
            rng.usize(2 << 20..16 << 20)
        } else {
            rng.usize(1..256 << 10)
        };
        // Never past ~70%: the measurement needs the rest (a 16 MiB file
        // at the end overshot it by 6% of a 256 MiB device).
        let used = total - fs.statfs().free_blocks;
        let room = ((total * 7 / 10).saturating_sub(used) * 4096).max(4096) as usize;
        let len = len.min(room);
        let f = e(fs.create(&name, 0o644))?;
        let mut off = 0;
        while off < len {
            let n = (len - off).min(64 << 10).min(buf.len());
            e(f.write_at(&buf[..n], off as u64))?;
            off += n;
        }
        live.push(name);
        if rng.u32(0..3) == 0 {
            let v = live.swap_remove(rng.usize(..live.len()));
            e(fs.unlink(&v))?;
        }
    }
    eprintln!(
        "P9: aged to {} of {} blocks used, {} files",
        total - fs.statfs().free_blocks,
        total,
        live.len()
    );
    let mut pieces = 0u64;
    let mut good = 0u64;
    let mut k = 0;
    while fs.statfs().free_blocks > 16384 + total / 50 && k < 8 {
        k += 1;
        let f = e(fs.create(&format!("/new{k}"), 0o644))?;
        for c in 0..32u64 {
            e(f.write_at(&buf, c << 21))?;
            e(f.write_at(&buf, (c << 21) + (1 << 20)))?;
        }
        for c in 0..32u64 {
            pieces += 1;
            if let udax::fs::extent::Lookup::Mapped { dev_blk, len } = f.iomap(c * 512) {
                if dev_blk % 512 == 0 && len >= 512 {
                    good += 1;
                }
            }
        }
    }
    if pieces == 0 {
        return Err("aging left no room for new files".into());
    }
    Ok(good as f64 / pieces as f64)
}
