//! `udax bench`: udax against the kernel baseline (tmpfs files through syscalls)
//! and the physical limit (memcpy / non-temporal copy), measured in the same run.
//! Each figure is the median of repeats, with min and max. See PERFORMANCE.md.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use udax::device::{self, persist, Device};
use udax::fs::{Fs, MkfsOptions, OpenOptions};

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
    /// Run only these benchmarks (comma-separated ids: P1,P2,P3,P4,P5,P6,P7,P8,P9;
    /// P3, P4 and P5 run together).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    only: Vec<String>,
    /// Internal (P8): time N one-byte preads of PATH through libc and print ns/call.
    #[arg(long, hide = true, num_args = 2, value_names = ["PATH", "N"])]
    pread_loop: Option<Vec<String>>,
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
fn host_appends(path: &std::path::Path, n: u64, buf: &[u8], sync: bool) -> Result<f64, String> {
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
}

pub fn run(a: &BenchArgs) -> Result<(), String> {
    if let Some(v) = &a.pread_loop {
        return shim::pread_loop(v);
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
        }
    };
    let chunk = 1usize << 20;
    let src: Vec<u8> = (0..chunk).map(|i| (i * 31 % 251) as u8).collect();
    let tmp = tempfile::tempdir_in(&a.tmpfs_dir)
        .map_err(|err| format!("{}: {err}", a.tmpfs_dir.display()))?;
    let mut out = Vec::new();
    let mut page = vec![0u8; 4096];
    const IDS: [&str; 9] = ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9"];
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

    // ---- P1: sequential write / read, 1 MiB requests ----
    if want("P1") {
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
        let bpath = tmp.path().join("seq");
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
        out.push(res(
            "P1-write",
            "sequential write, 1 MiB requests (new file)",
            "GB/s",
            uw,
            Some(bw),
            Some(lw),
        ));
        out.push(res(
            "P1-read",
            "sequential read, 1 MiB requests",
            "GB/s",
            ur,
            Some(br),
            Some(lr),
        ));
    }

    // ---- P2: 4 KiB random read / write over 64 MiB ----
    if want("P2") {
        let span = c.rand_span;
        let blocks = span / 4096;
        let fs = memfd_fs(span * 2 + (16 << 20))?;
        let f = e(fs.create("/rand", 0o644))?;
        e(f.write_at(&vec![1u8; span as usize], 0))?;
        let mut rng = fastrand::Rng::with_seed(9);
        let offs: Vec<u64> = (0..c.rand_ops).map(|_| rng.u64(0..blocks) * 4096).collect();
        let u2r = rate_over(c.reps, &offs, |o| e(f.read_at(&mut page, o)).map(drop))?;
        let u2w = rate_over(c.reps, &offs, |o| e(f.write_at(&page, o)).map(drop))?;
        drop(f);
        drop(fs);
        let bpath = tmp.path().join("rand");
        e(std::fs::write(&bpath, vec![1u8; span as usize]))?;
        let bf = e(std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&bpath))?;
        let b2r = rate_over(c.reps, &offs, |o| e(bf.read_exact_at(&mut page, o)))?;
        let b2w = rate_over(c.reps, &offs, |o| e(bf.write_all_at(&page, o)))?;
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
            unsafe { persist::copy_nt(mem.as_mut_ptr().add(o as usize), &page, instr) };
            persist::sfence();
            Ok(())
        })?;
        drop(mem);
        out.push(res(
            "P2-read",
            "4 KiB random read",
            "Mops/s",
            u2r,
            Some(b2r),
            Some(l2),
        ));
        out.push(res(
            "P2-write",
            "4 KiB random overwrite",
            "Mops/s",
            u2w,
            Some(b2w),
            Some(l2w),
        ));
    }

    // ---- P6: 4 KiB append + fsync ----
    if want("P6") {
        let fs = memfd_fs((c.append_ops * 4096 + (64 << 20)).next_multiple_of(2 << 20))?;
        let u6 = repeat(c.reps, || {
            Ok(c.append_ops as f64 / udax_appends(&fs, "/log", c.append_ops, &page, true)? / MB)
        })?;
        drop(fs);
        let bpath = tmp.path().join("log");
        let b6 = repeat(c.reps, || {
            Ok(c.append_ops as f64 / host_appends(&bpath, c.append_ops, &page, true)? / MB)
        })?;
        let _ = std::fs::remove_file(&bpath);
        let mut mem = vec![0u8; (c.append_ops * 4096) as usize];
        let l6 = repeat(c.reps, || {
            let t = Instant::now();
            for i in 0..c.append_ops as usize {
                mem[i * 4096..(i + 1) * 4096].copy_from_slice(&page);
            }
            std::hint::black_box(&mem);
            Ok(ops(c.append_ops, t))
        })?;
        drop(mem);
        out.push(res(
            "P6",
            "4 KiB append + fsync (memfd device vs tmpfs)",
            "Mops/s",
            u6,
            Some(b6),
            Some(l6),
        ));

        // P6 on a regular-file device (durability through msync) vs ext4-style write+fsync.
        let fdir = tempfile::tempdir_in(&a.file_dir)
            .map_err(|err| format!("{}: {err}", a.file_dir.display()))?;
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
            Ok(fo as f64 / udax_appends(&fs, "/log", fo, &page, true)?)
        })?;
        drop(fs);
        let bpath = fdir.path().join("log");
        let b6f = repeat(c.reps.min(3), || {
            Ok(fo as f64 / host_appends(&bpath, fo, &page, true)?)
        })?;
        eprintln!("P6-file: device kind {kind:?} in {}", a.file_dir.display());
        out.push(res(
            "P6-file",
            "4 KiB append + fsync (regular-file device, msync, vs write+fsync on the same fs)",
            "ops/s",
            u6f,
            Some(b6f),
            None,
        ));
    }

    // ---- P7: two threads vs one (4 KiB random overwrites, separate files) ----
    if want("P7") {
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
        let paths: Vec<PathBuf> = (0..2).map(|t| tmp.path().join(format!("t{t}"))).collect();
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
        out.push(res(
            "P7",
            "scaling of 4 KiB random writes, 2 threads / 1 thread (limit: bare 4 KiB copies)",
            "x",
            u7,
            Some(b7),
            Some(l7),
        ));
    }

    // ---- P3 / P4 / P5: mmap ----
    if want("P3/P4/P5") {
        mmap_benches(&c, &a.tmpfs_dir, &mut out)?;
    }

    // ---- P9: fragmentation after aging ----
    if want("P9") {
        let u9 = repeat(1, || aging(c.age))?;
        out.push(res(
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
        ));
    }

    // ---- P8: unmodified programs through the LD_PRELOAD shim ----
    if want("P8") {
        shim::p8(a.quick, c.reps, &a.tmpfs_dir, &mut out)?;
    }

    let w = out.iter().map(|r| r.id.len()).max().unwrap_or(0).max(9);
    println!(
        "{:<w$} {:>10} {:>10} {:>10} {:>8} {:>8}  {:<8} what",
        "id", "udax", "baseline", "limit", "x base", "x limit", "unit"
    );
    let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
    for r in &out {
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
    if let Some(p) = &a.json {
        let j = serde_json::json!({ "quick": a.quick, "results": out });
        std::fs::write(p, serde_json::to_string_pretty(&j).unwrap_or_default())
            .map_err(|err| format!("{}: {err}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// Store one byte in every 4 KiB page of `[p, p+len)`.
fn touch(p: *mut u8, len: usize) {
    for i in (0..len).step_by(4096) {
        // SAFETY: callers pass a live writable mapping of `len` bytes.
        unsafe { p.add(i).write_volatile(1) };
    }
}

/// The kernel baseline: map a tmpfs file (pages allocated first, or a hole)
/// and write-touch every page.
fn tmpfs_touch(dir: &std::path::Path, size: u64, allocated: bool) -> Result<f64, String> {
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

fn mmap_benches(c: &Cfg, tmpfs: &std::path::Path, out: &mut Vec<Res>) -> Result<(), String> {
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
    Ok(())
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
