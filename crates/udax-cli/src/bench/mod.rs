//! `udax bench`: udax against the kernel baseline (tmpfs files through syscalls)
//! and the physical limit (memcpy / non-temporal copy), measured in the same run.
//! Each figure is the median of repeats, with min and max. See
//! docs/performance.md.
//!
//! This module holds the options, the row type, the helpers the families
//! share, the runner and the report (table and JSON); each benchmark family is
//! a submodule whose `run` returns its rows: `seq` (P1), `random` (P2),
//! `fsync` (P6, P6-file), `scaling` (P7), `mmap` (P3, P4, P5), `aging` (P9),
//! `shim` (P8), `churn` (P14: mmap + touch + munmap churn, embedded and
//! through the shim), `owner` (P10, P12: a client of `udax serve`), `metadata` (P16:
//! create, stat and unlink at 10^3 and N files, mount time and memory),
//! `fuse` (P17: the FUSE mount against tmpfs, with the shim beside it).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use udax::device;
use udax::fs::{Fs, MkfsOptions, OpenOptions};

mod aging;
mod churn;
mod fsync;
mod fuse;
mod metadata;
mod mmap;
mod owner;
mod random;
mod scaling;
mod seq;
mod shim;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Small sizes and few repeats (under 2 minutes): a smoke run.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory on tmpfs for the kernel baseline.
    #[arg(long, default_value = "/dev/shm")]
    tmpfs_dir: PathBuf,
    /// Directory on a disk file system for the regular-file device of P6.
    #[arg(long, default_value = ".")]
    file_dir: PathBuf,
    /// Run only these benchmarks (comma-separated ids:
    /// P1,P2,P3,P4,P5,P6,P7,P8,P9,P10,P12,P13,P14,P16,P17; P3, P4 and P5 run
    /// together, as do P10 and P12 (with P14-client)).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    only: Vec<String>,
    /// Internal (P8): time N one-byte preads of PATH through libc and print ns/call.
    #[arg(long, hide = true, num_args = 2, value_names = ["PATH", "N"])]
    pread_loop: Option<Vec<String>>,
    /// Internal (P14): N times map a random 64 KiB window of PATH (filled
    /// with 16 MiB first) through libc, load once (STORES 1) or store to each
    /// page (STORES 16), unmap; print us per iteration.
    #[arg(long, hide = true, num_args = 3, value_names = ["PATH", "N", "STORES"])]
    map_loop: Option<Vec<String>>,
    /// Internal (P16): open and mount DEV read-only, stat PATH, and print the
    /// mount time in ns and VmRSS in bytes.
    #[arg(long, hide = true, num_args = 2, value_names = ["DEV", "PATH"])]
    mount_probe: Option<Vec<String>>,
    /// Internal (P17): run the P17 operations in DIR through libc (a SIZE-byte
    /// file written and read PASSES times, RAND 4 KiB reads and writes, FILES
    /// empty files created, stat'ed, unlinked) and print `name value` lines.
    #[arg(long, hide = true, num_args = 5, value_names = ["DIR", "SIZE", "PASSES", "RAND", "FILES"])]
    fs_ops: Option<Vec<String>>,
}

#[derive(Clone, Copy, serde::Serialize)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

#[derive(serde::Serialize)]
struct Res {
    id: &'static str,
    name: &'static str,
    unit: &'static str,
    udax: f64,
    baseline: Option<f64>,
    limit: Option<f64>,
    ratio_vs_baseline: Option<f64>,
    ratio_vs_limit: Option<f64>,
    udax_range: Stat,
    baseline_range: Option<Stat>,
    limit_range: Option<Stat>,
}

fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(f64::total_cmp);
    Stat {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

fn repeat(n: usize, mut f: impl FnMut() -> Result<f64, String>) -> Result<Stat, String> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(f()?);
    }
    Ok(stat(v))
}

fn res(
    id: &'static str,
    name: &'static str,
    unit: &'static str,
    u: Stat,
    b: Option<Stat>,
    l: Option<Stat>,
) -> Res {
    Res {
        id,
        name,
        unit,
        udax: u.median,
        baseline: b.map(|s| s.median),
        limit: l.map(|s| s.median),
        ratio_vs_baseline: b.map(|s| better_ratio(unit, u.median, s.median)),
        ratio_vs_limit: l.map(|s| better_ratio(unit, u.median, s.median)),
        udax_range: u,
        baseline_range: b,
        limit_range: l,
    }
}

/// A ratio where > 1 means udax is better: udax/other for rates, other/udax
/// for times (units "ns", "us", "ms", "s", also per something: "ns/call").
fn better_ratio(unit: &str, udax: f64, other: f64) -> f64 {
    let time = ["ns", "us", "ms", "s"]
        .iter()
        .any(|t| unit == *t || unit.starts_with(&format!("{t}/")));
    if time {
        other / udax
    } else {
        udax / other
    }
}

/// Median (min, max) over `reps` runs of the rate of `op` over every offset
/// of `offs`, in millions per second.
fn rate_over(
    reps: usize,
    offs: &[u64],
    mut op: impl FnMut(u64) -> Result<(), String>,
) -> Result<Stat, String> {
    repeat(reps, || {
        let t = Instant::now();
        for &o in offs {
            op(o)?;
        }
        Ok(ops(offs.len() as u64, t))
    })
}

/// Seconds taken by `n` appends of `buf` (each followed by fsync if `sync`)
/// to a new file `name` on `fs`.
fn udax_appends(fs: &Fs, name: &str, n: u64, buf: &[u8], sync: bool) -> Result<f64, String> {
    let f = e(fs.open(
        name,
        &OpenOptions {
            truncate: true,
            ..OpenOptions::create()
        },
    ))?;
    let t = Instant::now();
    for i in 0..n {
        e(f.write_at(buf, i * buf.len() as u64))?;
        if sync {
            e(f.fsync())?;
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// The same through system calls, to a new host file at `path`.
fn host_appends(path: &Path, n: u64, buf: &[u8], sync: bool) -> Result<f64, String> {
    let f = e(std::fs::File::create(path))?;
    let t = Instant::now();
    for i in 0..n {
        e(f.write_all_at(buf, i * buf.len() as u64))?;
        if sync {
            e(f.sync_all())?;
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

fn e<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn memfd_fs(size: u64) -> Result<Fs, String> {
    let dev = e(device::open(
        &format!("memfd:{size}"),
        &device::OpenOptions::default(),
    ))?;
    e(Fs::mkfs(&*dev, &MkfsOptions::default()))?;
    e(Fs::mount(dev))
}

const MB: f64 = 1e6;

fn gbps(bytes: u64, t: Instant) -> f64 {
    bytes as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn ops(n: u64, t: Instant) -> f64 {
    n as f64 / t.elapsed().as_secs_f64() / MB
}

struct Cfg {
    reps: usize,
    seq: u64,
    rand_ops: u64,
    /// File size of the random-access workloads (P2).
    rand_span: u64,
    append_ops: u64,
    file_ops: u64,
    age: u64,
    /// Files of the large tree of P16 (N).
    meta_files: u64,
}

pub fn run(a: &BenchArgs) -> Result<(), String> {
    if let Some(v) = &a.pread_loop {
        return shim::pread_loop(v);
    }
    if let Some(v) = &a.map_loop {
        return churn::map_loop(v);
    }
    if let Some(v) = &a.mount_probe {
        return metadata::mount_probe(v);
    }
    if let Some(v) = &a.fs_ops {
        return fuse::fs_ops(v);
    }
    let c = if a.quick {
        Cfg {
            reps: 3,
            seq: 64 << 20,
            rand_ops: 100_000,
            rand_span: 64 << 20,
            append_ops: 20_000,
            file_ops: 100,
            age: 256 << 20,
            meta_files: 100_000,
        }
    } else {
        Cfg {
            reps: 7,
            seq: 1 << 30,
            rand_ops: 1_000_000,
            rand_span: 1 << 30,
            append_ops: 200_000,
            file_ops: 1000,
            age: 1 << 30,
            meta_files: 1_000_000,
        }
    };
    let tmp = tempfile::tempdir_in(&a.tmpfs_dir)
        .map_err(|err| format!("{}: {err}", a.tmpfs_dir.display()))?;
    let mut out = Vec::new();
    // The 4 KiB buffer of P2 and P6 starts on a cache line: where the heap
    // happens to put a plain `vec!` moved P2-read by ~7% between builds
    // whose read path was the same (memcpy into a buffer that straddles
    // one more line).
    let mut backing = vec![0u8; 4096 + 64];
    let skew = backing.as_ptr().align_offset(64);
    let page = &mut backing[skew..skew + 4096];
    const IDS: [&str; 15] = [
        "P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "P10", "P12", "P13", "P14", "P16",
        "P17",
    ];
    if let Some(bad) = a
        .only
        .iter()
        .find(|o| !IDS.iter().any(|i| i.eq_ignore_ascii_case(o)))
    {
        return Err(format!(
            "unknown benchmark id {bad:?} (known: {})",
            IDS.join(", ")
        ));
    }
    let want = |id: &str| {
        a.only.is_empty()
            || a.only
                .iter()
                .any(|o| id.split('/').any(|i| i.eq_ignore_ascii_case(o)))
    };
    eprintln!(
        "udax bench ({}): results are medians of {} repeats",
        if a.quick { "quick" } else { "full" },
        c.reps
    );

    // The families, in the order of the report. `page` is shared as it always
    // was: P2 reads into it and P6 appends what it holds.
    if want("P1") {
        out.extend(seq::run(&c, tmp.path())?);
    }
    if want("P2") {
        out.extend(random::run(&c, tmp.path(), page)?);
    }
    if want("P6") {
        out.extend(fsync::run(&c, tmp.path(), &a.file_dir, page)?);
    }
    if want("P7") {
        out.extend(scaling::run(&c, tmp.path())?);
    }
    if want("P3/P4/P5") {
        out.extend(mmap::run(&c, &a.tmpfs_dir)?);
    }
    if want("P9") {
        out.extend(aging::run(&c)?);
    }
    if want("P8") {
        out.extend(shim::run(a.quick, c.reps, &a.tmpfs_dir)?);
    }
    if want("P10/P12") {
        out.extend(owner::run(&c, tmp.path())?);
    }
    if want("P14") {
        out.extend(churn::run(&c, a.quick, &a.tmpfs_dir)?);
    }
    if want("P13") {
        out.extend(shim::dbench(a.quick, c.reps.min(3), &a.tmpfs_dir)?);
    }
    if want("P16") {
        out.extend(metadata::run(&c, tmp.path(), &a.tmpfs_dir)?);
    }
    if want("P17") {
        out.extend(fuse::run(a.quick, c.reps, &a.tmpfs_dir)?);
    }

    report(&out, a.quick, a.json.as_deref())
}

/// Print the rows as a table on stdout and, with `json`, write them there too.
fn report(out: &[Res], quick: bool, json: Option<&Path>) -> Result<(), String> {
    let w = out.iter().map(|r| r.id.len()).max().unwrap_or(0).max(9);
    println!(
        "{:<w$} {:>10} {:>10} {:>10} {:>8} {:>8}  {:<8} what",
        "id", "udax", "baseline", "limit", "x base", "x limit", "unit"
    );
    let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
    for r in out {
        println!(
            "{:<w$} {:>10.3} {:>10} {:>10} {:>8} {:>8}  {:<8} {}",
            r.id,
            r.udax,
            f(r.baseline),
            f(r.limit),
            f(r.ratio_vs_baseline),
            f(r.ratio_vs_limit),
            r.unit,
            r.name
        );
    }
    if let Some(p) = json {
        let j = serde_json::json!({ "quick": quick, "results": out });
        std::fs::write(p, serde_json::to_string_pretty(&j).unwrap_or_default())
            .map_err(|err| format!("{}: {err}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
