//! P16: metadata scaling (issue 20). Empty files spread over directories of
//! 1000 files each (`/d123/f456`), created, looked up and removed through the
//! API (`Fs::create` then drop, `Fs::stat`, `Fs::unlink`) against the same
//! operations with std::fs on tmpfs:
//!
//! * the rate of 1000 creates, 1000 stats of random files and 1000 unlinks
//!   of random files on a file system holding 10^3 files (a fresh memfd
//!   device, median of `Cfg::reps`), and holding N (`Cfg::meta_files`, one
//!   fill: the creates of its last `Cfg::reps` directories, then as many
//!   batches of stats and of unlinks at that size; medians of the batches),
//!   and the flatness of each (rate at N / rate at 10^3; the target
//!   is within 1.2x, i.e. >= 0.83);
//! * the same for listings: the directory of 10^3 listed 20 times, and at N
//!   `Cfg::reps` random directories of 1000 listed once each (entries per
//!   second; udax through `Fs::read_dir_page`, pages of 128 by cookie as
//!   the shim's directory streams read them; tmpfs through `read_dir`);
//! * the max and p99 latency of one create over the whole fill to N; the
//!   limit of the max is the longest pause a busy thread saw in as long
//!   right after the fill (the VM's own stalls: no create can be shorter
//!   than one it falls into);
//! * after a clean unmount of the filled device (a sparse file on tmpfs),
//!   the time a new process takes to open and mount it read-only, and that
//!   process's resident memory after the mount and one lookup (the hidden
//!   `--mount-probe DEV PATH`). No baseline: tmpfs has no mount.
//!
//! A fill that fails (no space in the metadata area, ...) does not stop the
//! bench: the rows it could measure are reported, with a row saying how many
//! files it reached and a line on stderr saying why it stopped.

use super::{e, memfd_fs, res, stat, Cfg, Res, Stat};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use udax::device;
use udax::fs::{Fs, MkfsOptions, MountOptions};

/// Files per directory, and the size of every measured batch.
const BATCH: u64 = 1000;

/// Entries per page of a udax listing: the shim's directory streams'.
const LIST_PAGE: usize = 128;

/// Listings of the directory of 10^3 files per repeat.
const LISTINGS_1K: u64 = 20;

/// Checkpoint bytes budgeted per file when sizing the device: the image of
/// an empty file is ~107 bytes (its inode record and its directory entry;
/// measured with a device too small), and a checkpoint slot is 1/64 of the
/// device. The device file is sparse: the margin costs no memory.
const BYTES_PER_FILE: u64 = 256;

/// A file tree under test: udax through its API, or tmpfs through std::fs.
trait Tree {
    /// Prefixed to `/d{dir}` and `/d{dir}/f{file}`.
    fn root(&self) -> &str;
    fn mkdir(&self, p: &str) -> Result<(), String>;
    /// Create an empty file (exclusively, mode 0644) and close it.
    fn create(&self, p: &str) -> Result<(), String>;
    fn stat(&self, p: &str) -> Result<(), String>;
    fn unlink(&self, p: &str) -> Result<(), String>;
    /// List directory `p` as a program's readdir loop does (udax: pages of
    /// [`LIST_PAGE`] entries by cookie, as the shim's directory streams
    /// read them); how many entries it has.
    fn list(&self, p: &str) -> Result<u64, String>;

    fn dir(&self, d: u64) -> String {
        format!("{}/d{d}", self.root())
    }

    /// The path of file `i` of the tree: `f{i % 1000}` in `d{i / 1000}`.
    fn file(&self, i: u64) -> String {
        format!("{}/d{}/f{}", self.root(), i / BATCH, i % BATCH)
    }
}

struct Udax<'a>(&'a Fs);

/// A udax error as the fill reports it: ENOSPC of an empty file's create is
/// the metadata area (a checkpoint slot, 1/64 of the device) being full.
fn why(err: udax::fs::Error) -> String {
    match err {
        udax::fs::Error::NoSpace => {
            "no space (metadata area full: the image no longer fits a checkpoint slot)".into()
        }
        other => other.to_string(),
    }
}

impl Tree for Udax<'_> {
    fn root(&self) -> &str {
        ""
    }
    fn mkdir(&self, p: &str) -> Result<(), String> {
        self.0.mkdir(p, 0o755).map_err(why)
    }
    fn create(&self, p: &str) -> Result<(), String> {
        self.0.create(p, 0o644).map(drop).map_err(why)
    }
    fn stat(&self, p: &str) -> Result<(), String> {
        self.0
            .stat(p)
            .map(|s| {
                std::hint::black_box(s);
            })
            .map_err(why)
    }
    fn unlink(&self, p: &str) -> Result<(), String> {
        self.0.unlink(p).map_err(why)
    }
    fn list(&self, p: &str) -> Result<u64, String> {
        let (mut n, mut from) = (0, udax::fs::COOKIE_DOTDOT + 1);
        loop {
            let page = self.0.read_dir_page(p, from, LIST_PAGE).map_err(why)?;
            n += page.entries.len() as u64;
            std::hint::black_box(&page);
            match page.next {
                Some(next) => from = next,
                None => return Ok(n),
            }
        }
    }
}

struct Host(String);

impl Tree for Host {
    fn root(&self) -> &str {
        &self.0
    }
    fn mkdir(&self, p: &str) -> Result<(), String> {
        e(std::fs::create_dir(p))
    }
    fn create(&self, p: &str) -> Result<(), String> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(p)
            .map(drop)
            .map_err(|err| err.to_string())
    }
    fn stat(&self, p: &str) -> Result<(), String> {
        std::fs::metadata(p)
            .map(|m| {
                std::hint::black_box(m);
            })
            .map_err(|err| err.to_string())
    }
    fn unlink(&self, p: &str) -> Result<(), String> {
        e(std::fs::remove_file(p))
    }
    fn list(&self, p: &str) -> Result<u64, String> {
        let mut n = 0;
        for entry in std::fs::read_dir(p).map_err(|err| err.to_string())? {
            std::hint::black_box(entry.map_err(|err| err.to_string())?);
            n += 1;
        }
        Ok(n)
    }
}

/// `op` on every path of `paths`: the rate in k ops/s, and with `lat` each
/// op's duration in ns pushed there. On an error: how many ops succeeded
/// and the error.
fn batch(
    paths: &[String],
    mut lat: Option<&mut Vec<u64>>,
    op: impl Fn(&str) -> Result<(), String>,
) -> Result<f64, (u64, String)> {
    let t = Instant::now();
    for (k, p) in paths.iter().enumerate() {
        let t1 = Instant::now();
        op(p).map_err(|err| (k as u64, format!("{p}: {err}")))?;
        if let Some(l) = lat.as_deref_mut() {
            l.push(t1.elapsed().as_nanos() as u64);
        }
    }
    Ok(paths.len() as f64 / t.elapsed().as_secs_f64() / 1e3)
}

/// Rates (k ops/s; a listing's: k entries/s) of the operations on one tree.
#[derive(Clone, Copy)]
struct Rates {
    create: f64,
    stat: f64,
    list: f64,
    unlink: f64,
}

/// Entries listed per second (k) by listing each of `dirs`, each of which
/// must hold `BATCH` entries.
fn listings(t: &dyn Tree, dirs: &[String]) -> Result<f64, String> {
    let t0 = Instant::now();
    for d in dirs {
        let n = t.list(d)?;
        if n != BATCH {
            return Err(format!("listing {d}: {n} entries, {BATCH} expected"));
        }
    }
    Ok((dirs.len() as u64 * BATCH) as f64 / t0.elapsed().as_secs_f64() / 1e3)
}

/// The three rates on a tree of 10^3 files: the creates of `d0/f0..f999`
/// into an empty tree, 1000 stats of random ones, then the unlink of all of
/// them in random order.
fn small(t: &dyn Tree, rng: &mut fastrand::Rng) -> Result<Rates, String> {
    e(t.mkdir(&t.dir(0)))?;
    let files: Vec<String> = (0..BATCH).map(|i| t.file(i)).collect();
    let create = batch(&files, None, |p| t.create(p)).map_err(|(_, m)| m)?;
    let picks: Vec<String> = (0..BATCH).map(|_| t.file(rng.u64(0..BATCH))).collect();
    let stat = batch(&picks, None, |p| t.stat(p)).map_err(|(_, m)| m)?;
    let list = listings(t, &vec![t.dir(0); LISTINGS_1K as usize])?;
    let mut gone = files;
    rng.shuffle(&mut gone);
    let unlink = batch(&gone, None, |p| t.unlink(p)).map_err(|(_, m)| m)?;
    Ok(Rates {
        create,
        stat,
        list,
        unlink,
    })
}

/// What a fill to N measured.
struct Fill {
    /// Files the tree holds at the end (N less the unlinked ones, unless it
    /// stopped).
    files: u64,
    /// Duration of every create, ns.
    lat: Vec<u64>,
    /// The rates at N, create, stat, list and unlink (None if the fill
    /// stopped).
    at_n: Option<[Stat; 4]>,
    /// Where and why the fill stopped before N.
    stopped: Option<String>,
    secs: f64,
}

/// Fill `t` with `n` files, directory by directory (the mkdirs untimed), each
/// create's duration recorded. At N: the create rate is that of the last
/// `reps` directories' 1000 creates each (at N - reps * 1000 files and up);
/// then `reps` times 1000 stats of random files, then `reps` times 1000
/// unlinks of distinct random files (never file 0, which the mount probe
/// looks up). Medians of the `reps` batches.
fn fill(t: &dyn Tree, n: u64, reps: usize, what: &str, rng: &mut fastrand::Rng) -> Fill {
    let t0 = Instant::now();
    let dirs = n / BATCH;
    let mut out = Fill {
        files: 0,
        lat: Vec::with_capacity(n as usize),
        at_n: None,
        stopped: None,
        secs: 0.0,
    };
    let mut rates = Vec::with_capacity(dirs as usize);
    for d in 0..dirs {
        if let Err(m) = t.mkdir(&t.dir(d)) {
            out.stopped = Some(format!("mkdir {}: {m}", t.dir(d)));
            break;
        }
        let paths: Vec<String> = (d * BATCH..(d + 1) * BATCH).map(|i| t.file(i)).collect();
        match batch(&paths, Some(&mut out.lat), |p| t.create(p)) {
            Ok(r) => rates.push(r),
            Err((k, m)) => {
                out.files += k;
                out.stopped = Some(m);
                break;
            }
        }
        out.files += BATCH;
        if (d + 1) % (dirs / 10).max(1) == 0 {
            eprintln!(
                "P16: {what}: {} of {n} files, {:.1} s",
                out.files,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    if out.stopped.is_none() {
        out.stopped = at_n(t, n, reps, &rates, &mut out, rng).err();
    }
    out.secs = t0.elapsed().as_secs_f64();
    out
}

/// The measurements at N of [`fill`], into `out`.
fn at_n(
    t: &dyn Tree,
    n: u64,
    reps: usize,
    rates: &[f64],
    out: &mut Fill,
    rng: &mut fastrand::Rng,
) -> Result<(), String> {
    let create = stat(rates[rates.len().saturating_sub(reps)..].to_vec());
    let mut st = Vec::with_capacity(reps);
    for _ in 0..reps {
        let picks: Vec<String> = (0..BATCH).map(|_| t.file(rng.u64(0..n))).collect();
        st.push(
            batch(&picks, None, |p| t.stat(p))
                .map_err(|(_, m)| format!("stat at {n} files: {m}"))?,
        );
    }
    let mut ls = Vec::with_capacity(reps);
    for _ in 0..reps {
        let d = t.dir(rng.u64(0..n / BATCH));
        ls.push(listings(t, &[d]).map_err(|m| format!("at {n} files: {m}"))?);
    }
    let want = (reps as u64 * BATCH).min(n - 1);
    let mut chosen = std::collections::BTreeSet::new();
    while (chosen.len() as u64) < want {
        chosen.insert(rng.u64(1..n));
    }
    let mut gone: Vec<String> = chosen.into_iter().map(|i| t.file(i)).collect();
    rng.shuffle(&mut gone);
    let mut un = Vec::with_capacity(reps);
    for b in gone.chunks(BATCH as usize) {
        match batch(b, None, |p| t.unlink(p)) {
            Ok(r) => un.push(r),
            Err((k, m)) => {
                out.files -= k;
                return Err(format!("unlink at {} files: {m}", out.files));
            }
        }
        out.files -= b.len() as u64;
    }
    out.at_n = Some([create, stat(st), stat(ls), stat(un)]);
    Ok(())
}

/// A sparse device file of `size` bytes, removed when dropped (also when
/// the bench returns early with an error).
struct DevFile(PathBuf);

impl DevFile {
    fn new(dir: &Path, size: u64) -> Result<DevFile, String> {
        let p = dir.join(format!("udax-p16-{}.img", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let f = std::fs::File::create_new(&p).map_err(|err| format!("{}: {err}", p.display()))?;
        let d = DevFile(p);
        f.set_len(size)
            .map_err(|err| format!("{}: {err}", d.0.display()))?;
        Ok(d)
    }

    fn spec(&self) -> Result<&str, String> {
        self.0.to_str().ok_or_else(|| "non-UTF-8 tmpfs path".into())
    }
}

impl Drop for DevFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A device for `n` empty files: its checkpoint slot (1/64) holds
/// `BYTES_PER_FILE` per file and 16 MiB more; a multiple of 2 MiB.
fn device_size(n: u64) -> u64 {
    ((n * BYTES_PER_FILE + (16 << 20)) * 64).next_multiple_of(2 << 20)
}

fn one(x: f64) -> Stat {
    stat(vec![x])
}

/// Rate at N over the rates at 10^3: the median over the median, the range
/// over the range.
fn flat(at_n: f64, small: Stat) -> Stat {
    Stat {
        median: at_n / small.median,
        min: at_n / small.max,
        max: at_n / small.min,
    }
}

/// The longest a thread that only reads the clock saw between two reads
/// within `secs` seconds, in us: how long the machine (the host, its other
/// guests, this guest's interrupts and kernel threads) may stop a running
/// thread, which a latency measured over as long may include.
fn longest_pause(secs: f64) -> f64 {
    let t0 = Instant::now();
    let mut last = t0;
    let mut max = std::time::Duration::ZERO;
    while t0.elapsed().as_secs_f64() < secs {
        let now = Instant::now();
        max = max.max(now - last);
        last = now;
    }
    max.as_secs_f64() * 1e6
}

/// Max and p99 of `lat` (ns), in us; the median, p99.9 and the count over
/// 1 ms go to stderr.
fn tail(lat: &[u64], what: &str) -> (Stat, Stat) {
    let mut v = lat.to_vec();
    v.sort_unstable();
    let at = |q: usize| v.get((v.len() * q / 1000).min(v.len().saturating_sub(1)));
    let us = |x: Option<&u64>| x.copied().unwrap_or(0) as f64 / 1e3;
    eprintln!(
        "P16: {what} create latency: median {:.2} us, p99 {:.2} us, p99.9 {:.2} us, max {:.1} us, \
         {} over 1 ms",
        us(at(500)),
        us(at(990)),
        us(at(999)),
        us(v.last()),
        v.iter().filter(|&&x| x > 1_000_000).count()
    );
    (one(us(v.last())), one(us(at(990))))
}

/// The rows P16; the tmpfs trees go in `tmp`, the device file in `tmpfs`.
pub(super) fn run(c: &Cfg, tmp: &Path, tmpfs: &Path) -> Result<Vec<Res>, String> {
    let n = c.meta_files;
    let mut rng = fastrand::Rng::with_seed(16);
    let tmp_root = |name: &str| -> Result<String, String> {
        let p = tmp.join(name);
        let _ = std::fs::remove_dir_all(&p);
        e(std::fs::create_dir(&p))?;
        p.to_str()
            .map(str::to_string)
            .ok_or_else(|| "non-UTF-8 tmpfs path".into())
    };

    // ---- 10^3 files: a fresh tree per repeat, udax and tmpfs in turn ----
    let (mut us, mut bs) = (Vec::new(), Vec::new());
    for r in 0..c.reps {
        let fs = memfd_fs(device_size(n))?;
        us.push(small(&Udax(&fs), &mut rng)?);
        drop(fs);
        let root = tmp_root(&format!("small{r}"))?;
        bs.push(small(&Host(root), &mut rng)?);
    }
    let pick = |v: &[Rates], f: fn(&Rates) -> f64| stat(v.iter().map(f).collect());
    let u1 = [
        pick(&us, |r| r.create),
        pick(&us, |r| r.stat),
        pick(&us, |r| r.list),
        pick(&us, |r| r.unlink),
    ];
    let b1 = [
        pick(&bs, |r| r.create),
        pick(&bs, |r| r.stat),
        pick(&bs, |r| r.list),
        pick(&bs, |r| r.unlink),
    ];

    // ---- N files: udax on a sparse device file on tmpfs ----
    let size = device_size(n);
    let dev_file = DevFile::new(tmpfs, size)?;
    let dev = e(device::open(
        dev_file.spec()?,
        &device::OpenOptions::default(),
    ))?;
    e(Fs::mkfs(&*dev, &MkfsOptions::default()))?;
    let fs = e(Fs::mount(dev))?;
    eprintln!(
        "P16: filling udax to {n} files ({:.1} GiB sparse device {})",
        size as f64 / (1u64 << 30) as f64,
        dev_file.0.display()
    );
    let uf = fill(&Udax(&fs), n, c.reps, "udax", &mut rng);
    let js = fs.journal_stats();
    eprintln!(
        "P16: udax fill took {:.1} s, checkpoints: {} (the log is {} MiB)",
        uf.secs,
        js.checkpoints,
        js.log_bytes >> 20
    );
    let pause = longest_pause(uf.secs.min(10.0));
    eprintln!("P16: the longest pause of a busy thread in as long: {pause:.1} us");
    let t = Instant::now();
    let unmounted = fs.unmount();
    eprintln!(
        "P16: udax unmount (a checkpoint of {} files): {:.3} s",
        uf.files,
        t.elapsed().as_secs_f64()
    );
    let mut out = Vec::new();
    let mount = match unmounted {
        Err(err) => {
            eprintln!("P16-mount: skipped, the unmount failed: {err}");
            None
        }
        Ok(()) => match probes(c.reps.min(3), &dev_file) {
            Ok(m) => Some(m),
            Err(err) => {
                eprintln!("P16-mount: skipped, {err}");
                None
            }
        },
    };
    drop(dev_file);

    // ---- N files: tmpfs ----
    let root = tmp_root("big")?;
    eprintln!("P16: filling tmpfs to {n} files ({root})");
    let bf = fill(&Host(root.clone()), n, c.reps, "tmpfs", &mut rng);
    eprintln!("P16: tmpfs fill took {:.1} s", bf.secs);
    let t = Instant::now();
    let _ = std::fs::remove_dir_all(&root);
    eprintln!(
        "P16: removing the tmpfs tree took {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // ---- the rows ----
    const ROWS: [[(&str, &str); 3]; 4] = [
        [
            (
                "P16-create-1k",
                "create + close of an empty file, 1000 into an empty tree (fresh memfd device)",
            ),
            (
                "P16-create-N",
                "create + close of an empty file, batches of 1000 at the end of a fill to N \
                 files (10^6; 10^5 with --quick) in directories of 1000",
            ),
            (
                "P16-create-flat",
                "create rate at N / at 10^3 (issue 20: >= 0.83, within 1.2x)",
            ),
        ],
        [
            (
                "P16-stat-1k",
                "stat of a random file of 10^3 (one directory)",
            ),
            (
                "P16-stat-N",
                "stat of a random file of N (directories of 1000)",
            ),
            ("P16-stat-flat", "stat rate at N / at 10^3"),
        ],
        [
            (
                "P16-readdir-1k",
                "entries listed per second: the directory of 10^3, 20 times (udax: pages of 128 by cookie, as the shim reads them)",
            ),
            (
                "P16-readdir-N",
                "entries listed per second: a random directory of 1000 of N, once each",
            ),
            ("P16-readdir-flat", "listing rate at N / at 10^3"),
        ],
        [
            ("P16-unlink-1k", "unlink of the 10^3 files, random order"),
            ("P16-unlink-N", "unlink of 1000 random files of N"),
            ("P16-unlink-flat", "unlink rate at N / at 10^3"),
        ],
    ];
    for (k, [r1, rn, rf]) in ROWS.iter().enumerate() {
        let unit = if k == 2 { "k entries/s" } else { "k ops/s" };
        out.push(res(r1.0, r1.1, unit, u1[k], Some(b1[k]), None));
        if let Some(u) = &uf.at_n {
            let b = bf.at_n.as_ref().map(|b| b[k]);
            out.push(res(rn.0, rn.1, unit, u[k], b, None));
            out.push(res(
                rf.0,
                rf.1,
                "x",
                flat(u[k].median, u1[k]),
                b.map(|b| flat(b.median, b1[k])),
                None,
            ));
        }
    }
    if uf.stopped.is_none() {
        let (umax, up99) = tail(&uf.lat, "udax");
        let (bmax, bp99) = if bf.stopped.is_none() {
            let (m, p) = tail(&bf.lat, "tmpfs");
            (Some(m), Some(p))
        } else {
            (None, None)
        };
        out.push(res(
            "P16-create-max",
            "longest create of the fill to N; limit: the longest pause of a busy thread over as long (lower is better)",
            "us",
            umax,
            bmax,
            Some(stat(vec![pause])),
        ));
        out.push(res(
            "P16-create-p99",
            "99th percentile of the creates of the fill to N (lower is better)",
            "us",
            up99,
            bp99,
            None,
        ));
    }
    for (who, f) in [("udax", &uf), ("tmpfs", &bf)] {
        if let Some(why) = &f.stopped {
            eprintln!(
                "P16 stopped at {} files on {who} (of {n}): {why}; its rows at N are left out",
                f.files
            );
        }
    }
    if uf.stopped.is_some() {
        out.push(res(
            "P16-stopped",
            "files udax held when its fill to N stopped (why: on stderr); no rows at N",
            "files",
            one(uf.files as f64),
            None,
            None,
        ));
    }
    if let Some([t, rss]) = mount {
        out.push(res(
            "P16-mount",
            "open + read-only mount of the filled device in a new process (lower is better)",
            "ms",
            t,
            None,
            None,
        ));
        out.push(res(
            "P16-mount-rss",
            "resident memory (VmRSS) of that process after the mount and one lookup",
            "MiB",
            rss,
            None,
            None,
        ));
    }
    Ok(out)
}

/// `reps` probes of the device of `dev`: mount time (ms) and resident
/// memory (MiB), medians.
fn probes(reps: usize, dev: &DevFile) -> Result<[Stat; 2], String> {
    let (mut t, mut rss) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let [a, b] = probe(dev, "/d0/f0")?;
        t.push(a);
        rss.push(b);
    }
    Ok([stat(t), stat(rss)])
}

/// Mount the device of `dev` in a new process (`--mount-probe`): its mount
/// time in ms and its resident memory in MiB.
fn probe(dev: &DevFile, path: &str) -> Result<[f64; 2], String> {
    let exe = e(std::env::current_exe())?;
    let o = Command::new(exe)
        .args(["bench", "--mount-probe", dev.spec()?, path])
        .output()
        .map_err(|err| format!("mount probe: {err}"))?;
    let text = String::from_utf8_lossy(&o.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match (o.status.success(), v.as_slice()) {
        (true, [ns, rss]) => Ok([ns / 1e6, rss / (1u64 << 20) as f64]),
        _ => Err(format!(
            "mount probe failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
    }
}

/// Resident memory of this process in bytes (VmRSS of /proc/self/status).
fn vm_rss() -> Result<u64, String> {
    let s = e(std::fs::read_to_string("/proc/self/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmRSS in /proc/self/status".into())
}

/// The `--mount-probe DEV PATH` child: open and mount DEV read-only, stat
/// PATH; prints the time of the open and mount in ns and VmRSS in bytes.
pub(super) fn mount_probe(args: &[String]) -> Result<(), String> {
    let [dev, path] = args else {
        return Err("--mount-probe DEV PATH".into());
    };
    let t = Instant::now();
    let d = e(device::open(dev, &device::OpenOptions::default()))?;
    let fs = e(Fs::mount_with(
        d,
        &MountOptions {
            read_only: true,
            ..MountOptions::default()
        },
    ))?;
    let ns = t.elapsed().as_nanos();
    e(fs.stat(path))?;
    println!("{ns} {}", vm_rss()?);
    Ok(())
}
