//! Model-based test (SPEC F1-F5, F7, F9, R1): random sequences of namespace and
//! data operations run on udax and on an in-memory model of a POSIX file
//! system; every result (bytes, sizes, link counts, errno) is compared after
//! each step, the whole tree every few steps and at every remount.
//! Checkpoints, remounts and crashes at a random fence of an operation are
//! interleaved: after a crash the recovered tree must be the model before or
//! after that operation (or, for the operations that are two steps by design
//! as tests/crash.rs documents them, their intermediate state: in-place data
//! stores and zeroed partial blocks before the size is logged, a byte-wise
//! mix in that file only; a `clone_file` destination emptied), fsck must be
//! clean, and the run goes on from the recovered state.
//!
//! CI runs `UDAX_MODEL_OPS` (default 200000) operations from `UDAX_MODEL_SEED`
//! (default fixed). A failure prints the seed, the step and the last
//! operations. A long run by hand (`random` picks a new seed and prints it):
//!
//! ```text
//! UDAX_MODEL_SEED=random UDAX_MODEL_OPS=10000000 \
//!     cargo test --release -p udax --test model -- --nocapture
//! ```
//!
//! `UDAX_MODEL_TRACE=1` prints every operation as it runs.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;
use udax::device::{CrashDevice, Device, RamDevice, Survivors};
use udax::fs::{falloc, fsck, File, Fs, MkfsOptions, OpenOptions, Rename};

/// Small enough that the log (32 blocks) wraps and checkpoints often.
const DEV_BYTES: u64 = 16 << 20;
/// Every file range the test touches lies below this (48 files of this size
/// fit the data area, so ENOSPC never happens).
const MAX_SIZE: u64 = 128 << 10;
const MAX_NODES: usize = 48;
const MAX_HANDLES: usize = 6;
const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const BS: u64 = 4096;
/// Steps between whole-tree comparisons.
const FULL_CHECK_EVERY: u64 = 100;

type Res<T> = Result<T, i32>;

fn er<T>(r: udax::Result<T>) -> Res<T> {
    r.map_err(|e| e.errno())
}

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::EISDIR => "EISDIR",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::EPERM => "EPERM",
        libc::EBADF => "EBADF",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOSPC => "ENOSPC",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::EBUSY => "EBUSY",
        _ => "errno",
    }
}

fn show<T: std::fmt::Debug>(r: &Res<T>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({} {e})", errno_name(*e)),
    }
}

// ---------------------------------------------------------------- the model

#[derive(Clone, Debug, PartialEq, Eq)]
enum Body {
    File(Vec<u8>),
    Dir(BTreeMap<String, u64>),
}

#[derive(Clone, Debug)]
struct Node {
    body: Body,
    /// Names of a file (directories: computed, 2 + subdirectories).
    nlink: u32,
    /// Parent of a directory.
    parent: u64,
}

/// The expected file system: inodes by udax inode number (learned when the
/// model creates one) and the open handle count of each.
#[derive(Clone, Debug)]
struct Model {
    nodes: BTreeMap<u64, Node>,
    open: BTreeMap<u64, u32>,
    root: u64,
}

fn comps(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

impl Model {
    fn new(root: u64) -> Model {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            root,
            Node {
                body: Body::Dir(BTreeMap::new()),
                nlink: 0,
                parent: root,
            },
        );
        Model {
            nodes,
            open: BTreeMap::new(),
            root,
        }
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(self.nodes[&ino].body, Body::Dir(_))
    }

    fn dir(&self, ino: u64) -> &BTreeMap<String, u64> {
        match &self.nodes[&ino].body {
            Body::Dir(d) => d,
            Body::File(_) => panic!("model: {ino} is not a directory"),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> &mut BTreeMap<String, u64> {
        match &mut self.nodes.get_mut(&ino).expect("model node").body {
            Body::Dir(d) => d,
            Body::File(_) => panic!("model: {ino} is not a directory"),
        }
    }

    fn data(&self, ino: u64) -> &Vec<u8> {
        match &self.nodes[&ino].body {
            Body::File(v) => v,
            Body::Dir(_) => panic!("model: {ino} is a directory"),
        }
    }

    fn data_mut(&mut self, ino: u64) -> &mut Vec<u8> {
        match &mut self.nodes.get_mut(&ino).expect("model node").body {
            Body::File(v) => v,
            Body::Dir(_) => panic!("model: {ino} is a directory"),
        }
    }

    fn nlink(&self, ino: u64) -> u32 {
        match &self.nodes[&ino].body {
            Body::File(_) => self.nodes[&ino].nlink,
            Body::Dir(d) => 2 + d.values().filter(|&&i| self.is_dir(i)).count() as u32,
        }
    }

    fn lookup(&self, dir: u64, name: &str) -> Res<u64> {
        match &self.nodes[&dir].body {
            Body::Dir(d) => d.get(name).copied().ok_or(libc::ENOENT),
            Body::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn resolve(&self, path: &str) -> Res<u64> {
        comps(path)
            .into_iter()
            .try_fold(self.root, |at, c| self.lookup(at, c))
    }

    /// (parent directory, last name).
    fn resolve_parent(&self, path: &str) -> Res<(u64, String)> {
        let c = comps(path);
        let (last, dirs) = c.split_last().expect("the test never names the root");
        if last.len() > 255 {
            return Err(libc::ENAMETOOLONG);
        }
        let mut at = self.root;
        for d in dirs {
            at = self.lookup(at, d)?;
        }
        if !self.is_dir(at) {
            return Err(libc::ENOTDIR);
        }
        Ok((at, last.to_string()))
    }

    /// Is `anc` the directory `d` or one above it?
    fn is_ancestor(&self, anc: u64, mut d: u64) -> bool {
        loop {
            if d == anc {
                return true;
            }
            if d == self.root {
                return false;
            }
            d = self.nodes[&d].parent;
        }
    }

    fn add(&mut self, dir: u64, name: &str, ino: u64, body: Body) {
        let prev = self.dir_mut(dir).insert(name.to_string(), ino);
        assert!(prev.is_none(), "model: {name} exists");
        let old = self.nodes.insert(
            ino,
            Node {
                body,
                nlink: 1,
                parent: dir,
            },
        );
        assert!(old.is_none(), "udax reused live inode {ino}");
    }

    /// One name of `ino` is gone: free it when it has none and is not open.
    fn unref(&mut self, ino: u64) {
        if self.is_dir(ino) {
            self.nodes.remove(&ino);
            return;
        }
        let n = self.nodes.get_mut(&ino).expect("model node");
        n.nlink -= 1;
        if n.nlink == 0 && !self.open.contains_key(&ino) {
            self.nodes.remove(&ino);
        }
    }

    fn opened(&mut self, ino: u64) {
        *self.open.entry(ino).or_default() += 1;
    }

    fn closed(&mut self, ino: u64) {
        let c = self.open.get_mut(&ino).expect("model: open count");
        *c -= 1;
        if *c == 0 {
            self.open.remove(&ino);
            if self.nodes[&ino].nlink == 0 {
                self.nodes.remove(&ino);
            }
        }
    }

    /// Every handle closed (an unmount or a crash): unlinked files are gone.
    fn forget_handles(&mut self) {
        self.open.clear();
        self.nodes
            .retain(|_, n| !matches!(n.body, Body::File(_)) || n.nlink > 0);
    }

    fn write(&mut self, ino: u64, off: u64, buf: &[u8]) {
        let v = self.data_mut(ino);
        let end = off as usize + buf.len();
        if v.len() < end {
            v.resize(end, 0);
        }
        v[off as usize..end].copy_from_slice(buf);
    }

    fn zero(&mut self, ino: u64, off: u64, end: u64) {
        let v = self.data_mut(ino);
        let end = (end as usize).min(v.len());
        if (off as usize) < end {
            v[off as usize..end].fill(0);
        }
    }

    fn grow(&mut self, ino: u64, size: u64) {
        let v = self.data_mut(ino);
        if (v.len() as u64) < size {
            v.resize(size as usize, 0);
        }
    }

    /// All directories (paths), the root first.
    fn paths(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), self.root)];
        while let Some((p, ino)) = stack.pop() {
            out.push((if p.is_empty() { "/".into() } else { p.clone() }, ino));
            if let Body::Dir(d) = &self.nodes[&ino].body {
                for (n, &i) in d.iter().rev() {
                    stack.push((format!("{p}/{n}"), i));
                }
            }
        }
        out
    }
}

/// What a tree shows at one path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    ino: u64,
    dir: bool,
    nlink: u32,
    data: Vec<u8>,
}

type Tree = BTreeMap<String, Entry>;

fn model_tree(m: &Model) -> Tree {
    m.paths()
        .into_iter()
        .map(|(p, ino)| {
            let dir = m.is_dir(ino);
            let data = if dir { Vec::new() } else { m.data(ino).clone() };
            let e = Entry {
                ino,
                dir,
                nlink: m.nlink(ino),
                data,
            };
            (p, e)
        })
        .collect()
}

fn read_file(f: &File) -> Vec<u8> {
    let size = f.len() as usize;
    let mut v = vec![0u8; size + 1];
    let n = f.read_at(&mut v, 0).expect("read a whole file");
    assert_eq!(n, size, "read of a whole file returned {n} of {size} bytes");
    v.truncate(n);
    v
}

fn fs_tree(fs: &Fs) -> Tree {
    let mut out = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(p) = stack.pop() {
        let path = if p.is_empty() {
            "/".to_string()
        } else {
            p.clone()
        };
        let st = fs.stat(&path).expect("stat while walking");
        let mut e = Entry {
            ino: st.ino,
            dir: st.is_dir(),
            nlink: st.nlink,
            data: Vec::new(),
        };
        if e.dir {
            for d in fs.read_dir(&path).expect("read_dir while walking") {
                stack.push(format!("{p}/{}", d.name));
            }
        } else {
            let f = fs
                .open(&path, &OpenOptions::read_only())
                .expect("open while walking");
            e.data = read_file(&f);
            assert_eq!(st.size, e.data.len() as u64);
        }
        out.insert(path, e);
    }
    out
}

fn first_diff(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("first differing byte at {i}: {} vs {}", a[i], b[i]),
        None => format!("sizes {} vs {}", a.len(), b.len()),
    }
}

/// Why `got` differs from `want` (None: equal).
fn tree_diff(got: &Tree, want: &Tree) -> Option<String> {
    for (p, w) in want {
        let Some(g) = got.get(p) else {
            return Some(format!("{p} missing (model: {})", brief(w)));
        };
        if g != w {
            return Some(format!(
                "{p}: udax {} vs model {}{}",
                brief(g),
                brief(w),
                if g.data != w.data {
                    format!(", {}", first_diff(&g.data, &w.data))
                } else {
                    String::new()
                }
            ));
        }
    }
    got.iter()
        .find(|(p, _)| !want.contains_key(*p))
        .map(|(p, g)| format!("{p} not in the model ({})", brief(g)))
}

fn brief(e: &Entry) -> String {
    format!(
        "{{ino {}, {}, nlink {}, {} bytes}}",
        e.ino,
        if e.dir { "dir" } else { "file" },
        e.nlink,
        e.data.len()
    )
}

/// A crash inside a data operation on inode `ino` that is several steps by
/// design (blocks written in place, partial blocks zeroed before the size is
/// logged, transactions split by the op budget): the tree equals `before`
/// except that file, whose size is one of `sizes` and whose every byte is its
/// byte before or after (zero past either end).
fn mixed_ok(got: &Tree, before: &Tree, after: &Tree, ino: u64, sizes: &[u64]) -> bool {
    if got.len() != before.len() {
        return false;
    }
    let at = |v: &[u8], i: usize| v.get(i).copied().unwrap_or(0);
    got.iter().all(|(p, g)| {
        let (Some(b), Some(a)) = (before.get(p), after.get(p)) else {
            return false;
        };
        if g.ino != ino || b.ino != ino {
            return g == b;
        }
        g.nlink == b.nlink
            && sizes.contains(&(g.data.len() as u64))
            && g.data
                .iter()
                .enumerate()
                .all(|(i, &x)| x == at(&b.data, i) || x == at(&a.data, i))
    })
}

// ------------------------------------------------------------- the harness

struct Handle {
    ino: u64,
    file: File,
    writable: bool,
}

/// What a crash in the middle of an operation may leave besides the states
/// before and after it (the two-step operations of tests/crash.rs).
#[derive(Clone, Copy, Debug)]
enum Between {
    /// Nothing else: one transaction.
    Nothing,
    /// A data operation on this file that stores in place before it logs
    /// (overwrites, zeroed partial blocks; see [`mixed_ok`]).
    Mixed(u64),
    /// `clone_file`: this destination emptied, its truncate logged but not
    /// yet the clone.
    Emptied(u64),
}

/// How an operation may be seen after a crash in its middle.
struct Applied {
    between: Between,
    /// Made durable before it returned (a crash after its last fence must
    /// show it whole).
    durable: bool,
}

const DURABLE: Applied = Applied {
    between: Between::Nothing,
    durable: true,
};

#[derive(Default, Debug)]
struct Totals {
    ops: u64,
    errors: u64,
    checkpoints: u64,
    explicit_checkpoints: u64,
    remounts: u64,
    crashes: u64,
    crash_between: u64,
    crash_before: u64,
    max_nodes: usize,
    /// Operations and those that failed (as the model said), by kind.
    by_kind: BTreeMap<&'static str, (u64, u64)>,
}

struct Run {
    seed: u64,
    rng: fastrand::Rng,
    trace: bool,
    step: u64,
    recent: VecDeque<String>,
    dev: Arc<dyn Device>,
    /// Set while the fs runs on a crash-recording device (until the crash).
    crash: Option<Arc<CrashDevice>>,
    crash_in: u64,
    fs: Option<Fs>,
    model: Model,
    handles: Vec<Handle>,
    next_remount: u64,
    next_crash: u64,
    totals: Totals,
}

impl Run {
    fn new(seed: u64) -> Run {
        let dev: Arc<dyn Device> = Arc::new(RamDevice::new(DEV_BYTES));
        Fs::mkfs(&*dev, &MkfsOptions::default()).expect("mkfs");
        let fs = Fs::mount(dev.clone()).expect("mount");
        let root = fs.stat("/").expect("stat /").ino;
        let mut rng = fastrand::Rng::with_seed(seed);
        let next_remount = rng.u64(2000..10_000);
        let next_crash = rng.u64(..2000);
        Run {
            seed,
            rng,
            trace: std::env::var_os("UDAX_MODEL_TRACE").is_some(),
            step: 0,
            recent: VecDeque::new(),
            dev,
            crash: None,
            crash_in: 0,
            fs: Some(fs),
            model: Model::new(root),
            handles: Vec::new(),
            next_remount,
            next_crash,
            totals: Totals::default(),
        }
    }

    fn fs(&self) -> &Fs {
        self.fs.as_ref().expect("mounted")
    }

    /// Record what the current step does (shown on failure).
    fn note(&mut self, what: String) {
        if self.trace {
            eprintln!("{:>8} {what}", self.step);
        }
        if self.recent.len() == 24 {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("{:>8} {what}", self.step));
    }

    fn context(&self) -> String {
        let ops: Vec<&str> = self.recent.iter().map(String::as_str).collect();
        format!(
            "udax model test failed at step {} with seed {}\n\
             replay: UDAX_MODEL_SEED={} UDAX_MODEL_OPS={} UDAX_MODEL_TRACE=1 \
             cargo test -p udax --test model -- --nocapture\nlast operations:\n{}",
            self.step,
            self.seed,
            self.seed,
            self.step + 1,
            ops.join("\n")
        )
    }

    fn expect<T: std::fmt::Debug + PartialEq>(&mut self, got: Res<T>, want: Res<T>) -> bool {
        assert!(
            got == want,
            "result differs: udax {} vs model {}",
            show(&got),
            show(&want)
        );
        if got.is_err() {
            self.totals.errors += 1;
        }
        got.is_ok()
    }

    // ------------------------------------------------------ random choices

    /// A path of one to three random names (often missing or through a file).
    fn gen_path(&mut self) -> String {
        let depth = self.rng.usize(1..=3);
        (0..depth)
            .map(|_| format!("/{}", NAMES[self.rng.usize(..NAMES.len())]))
            .collect()
    }

    /// Mostly the path of an existing file or directory.
    fn gen_existing(&mut self) -> String {
        let paths = self.model.paths();
        if paths.len() > 1 && self.rng.u8(..10) < 8 {
            return paths[self.rng.usize(1..paths.len())].0.clone();
        }
        self.gen_path()
    }

    /// Mostly the path of an existing file.
    fn gen_file(&mut self) -> String {
        let files: Vec<String> = (self.model.paths().into_iter())
            .filter(|(_, i)| !self.model.is_dir(*i))
            .map(|(p, _)| p)
            .collect();
        if !files.is_empty() && self.rng.u8(..10) < 8 {
            return files[self.rng.usize(..files.len())].clone();
        }
        self.gen_existing()
    }

    /// Mostly a free name in an existing directory.
    fn gen_new(&mut self) -> String {
        if self.rng.u8(..10) < 2 {
            return self.gen_existing();
        }
        let dirs: Vec<(String, u64)> = (self.model.paths().into_iter())
            .filter(|(_, i)| self.model.is_dir(*i))
            .collect();
        let (p, d) = &dirs[self.rng.usize(..dirs.len())];
        let free: Vec<&str> = NAMES
            .iter()
            .copied()
            .filter(|n| !self.model.dir(*d).contains_key(*n))
            .collect();
        let name = if free.is_empty() {
            NAMES[self.rng.usize(..NAMES.len())]
        } else {
            free[self.rng.usize(..free.len())]
        };
        format!("{}/{name}", p.trim_end_matches('/'))
    }

    fn gen_off(&mut self, size: u64) -> u64 {
        let off = match self.rng.u8(..10) {
            0 => 0,
            1 => size,
            2 => size + self.rng.u64(1..3 * BS),
            3 => self.rng.u64(..MAX_SIZE / BS) * BS,
            4..=6 => self.rng.u64(..=size),
            _ => self.rng.u64(..MAX_SIZE),
        };
        off.min(MAX_SIZE - 1)
    }

    fn gen_len(&mut self, off: u64) -> u64 {
        let len = match self.rng.u8(..10) {
            0..=4 => self.rng.u64(1..2 * BS),
            5 | 6 => self.rng.u64(1..=8) * BS,
            7 => self.rng.u64(1..64 << 10),
            8 => 1,
            _ => self.rng.u64(1..16 << 10),
        };
        len.min(MAX_SIZE - off)
    }

    /// Open `path` read-write in both (None: an error, compared).
    fn open_path(&mut self, path: &str, write: bool) -> Option<Handle> {
        let want = self.model.resolve(path).and_then(|i| {
            if self.model.is_dir(i) {
                Err(libc::EISDIR)
            } else {
                Ok(i)
            }
        });
        let opts = if write {
            OpenOptions::read_write()
        } else {
            OpenOptions::read_only()
        };
        let got = er(self.fs().open(path, &opts));
        let got_ino = got.as_ref().map(File::ino).map_err(|e| *e);
        if !self.expect(got_ino, want) {
            return None;
        }
        let ino = want.expect("checked");
        self.model.opened(ino);
        Some(Handle {
            ino,
            file: got.expect("checked"),
            writable: write,
        })
    }

    /// A file to work on: an open handle or a path (opened now, closed after).
    /// None: the path did not open (as the model predicted).
    fn pick_file(&mut self, write: bool) -> Option<(Handle, bool)> {
        if !self.handles.is_empty() && self.rng.bool() {
            let i = self.rng.usize(..self.handles.len());
            return Some((self.handles.swap_remove(i), true));
        }
        let path = self.gen_file();
        self.note(format!("open {path} {}", if write { "rw" } else { "ro" }));
        self.open_path(&path, write).map(|h| (h, false))
    }

    /// [`Self::pick_file`], opened read-only one time in `one_in`.
    fn pick_writable(&mut self, one_in: u8) -> Option<(Handle, bool)> {
        let write = self.rng.u8(..one_in) != 0;
        self.pick_file(write)
    }

    fn put_back(&mut self, h: Handle, kept: bool) {
        if kept {
            self.handles.push(h);
        } else {
            self.close(h);
        }
    }

    fn close(&mut self, h: Handle) {
        let ino = h.ino;
        drop(h.file);
        self.model.closed(ino);
    }

    /// Size, link count and every byte of the file behind `h`.
    fn check_file(&self, h: &Handle) {
        let st = h.file.stat().expect("fstat");
        let data = self.model.data(h.ino);
        assert_eq!(st.ino, h.ino);
        assert_eq!(st.size, data.len() as u64, "size of inode {}", h.ino);
        assert_eq!(
            st.nlink,
            self.model.nlink(h.ino),
            "nlink of inode {}",
            h.ino
        );
        let got = read_file(&h.file);
        assert!(
            &got == data,
            "content of inode {}: {}",
            h.ino,
            first_diff(&got, data)
        );
    }

    /// The entries of the directory at `path` (in the model) and their link counts.
    fn check_dir(&self, path: &str) {
        let Ok(ino) = self.model.resolve(path) else {
            return;
        };
        if !self.model.is_dir(ino) {
            return;
        }
        let got: Vec<(String, u64, u8)> = self
            .fs()
            .read_dir(path)
            .expect("read_dir")
            .into_iter()
            .map(|e| (e.name, e.ino, e.file_type))
            .collect();
        let want: Vec<(String, u64, u8)> = self
            .model
            .dir(ino)
            .iter()
            .map(|(n, &i)| (n.clone(), i, if self.model.is_dir(i) { 4 } else { 8 }))
            .collect();
        assert_eq!(got, want, "entries of {path}");
        let st = self.fs().stat(path).expect("stat dir");
        assert_eq!(st.nlink, self.model.nlink(ino), "nlink of {path}");
        for (n, i, _) in want {
            let st = self
                .fs()
                .stat(&format!("{}/{n}", path.trim_end_matches('/')));
            assert_eq!(st.expect("stat entry").nlink, self.model.nlink(i));
        }
    }

    fn parent_of(path: &str) -> String {
        match path.rfind('/') {
            Some(0) | None => "/".into(),
            Some(i) => path[..i].into(),
        }
    }

    fn check_all(&self) {
        let got = fs_tree(self.fs());
        if let Some(d) = tree_diff(&got, &model_tree(&self.model)) {
            panic!("tree differs: {d}");
        }
        assert_eq!(
            self.fs().statfs().inodes,
            self.model.nodes.len() as u64,
            "inodes in use (open unlinked ones included)"
        );
    }

    // ------------------------------------------------------- operations

    fn op_write(&mut self) -> Applied {
        let Some((h, kept)) = self.pick_writable(10) else {
            return DURABLE;
        };
        let size = self.model.data(h.ino).len() as u64;
        let off = self.gen_off(size);
        let len = self.gen_len(off);
        let mut buf = vec![0u8; len as usize];
        self.rng.fill(&mut buf);
        let sync = self.rng.u8(..4) == 0;
        self.note(format!(
            "write ino {} [{off}, +{len}){}",
            h.ino,
            if sync { " + fsync" } else { "" }
        ));
        let want = if h.writable {
            Ok(len as usize)
        } else {
            Err(libc::EBADF)
        };
        let got = er(h.file.write_at(&buf, off));
        if self.expect(got, want) {
            self.model.write(h.ino, off, &buf);
        }
        if sync {
            h.file.fsync().expect("fsync");
        }
        self.check_file(&h);
        let ino = h.ino;
        self.put_back(h, kept);
        Applied {
            between: Between::Mixed(ino),
            durable: sync,
        }
    }

    fn op_read(&mut self) -> Applied {
        let Some((h, kept)) = self.pick_file(false) else {
            return DURABLE;
        };
        let size = self.model.data(h.ino).len() as u64;
        let off = self.gen_off(size);
        let len = self.gen_len(off);
        self.note(format!("read ino {} [{off}, +{len})", h.ino));
        let data = self.model.data(h.ino);
        let mut buf = vec![0xa5u8; len as usize];
        let n = h.file.read_at(&mut buf, off).expect("read");
        let want = &data[(off.min(size) as usize)..((off + len).min(size) as usize)];
        assert_eq!(n, want.len(), "bytes read");
        assert!(&buf[..n] == want, "read: {}", first_diff(&buf[..n], want));
        self.put_back(h, kept);
        DURABLE
    }

    fn op_truncate(&mut self) -> Applied {
        let Some((h, kept)) = self.pick_file(true) else {
            return DURABLE;
        };
        let size = self.model.data(h.ino).len() as u64;
        let len = match self.rng.u8(..6) {
            0 => 0,
            1 => size.saturating_sub(self.rng.u64(..2 * BS)),
            2 => (size + self.rng.u64(..2 * BS)).min(MAX_SIZE),
            3 => self.rng.u64(..MAX_SIZE / BS) * BS,
            _ => self.rng.u64(..=MAX_SIZE),
        };
        self.note(format!("truncate ino {} {size} -> {len}", h.ino));
        let want = if h.writable { Ok(()) } else { Err(libc::EBADF) };
        if self.expect(er(h.file.set_len(len)), want) {
            self.model.data_mut(h.ino).resize(len as usize, 0);
        }
        self.check_file(&h);
        let ino = h.ino;
        self.put_back(h, kept);
        Applied {
            between: Between::Mixed(ino),
            durable: true,
        }
    }

    fn op_fallocate(&mut self) -> Applied {
        use falloc::*;
        const MODES: [u32; 12] = [
            0,
            KEEP_SIZE,
            PUNCH_HOLE | KEEP_SIZE,
            PUNCH_HOLE | KEEP_SIZE,
            PUNCH_HOLE,
            ZERO_RANGE,
            ZERO_RANGE | KEEP_SIZE,
            COLLAPSE_RANGE,
            INSERT_RANGE,
            COLLAPSE_RANGE | KEEP_SIZE,
            PUNCH_HOLE | ZERO_RANGE | KEEP_SIZE,
            UNSHARE_RANGE,
        ];
        let Some((h, kept)) = self.pick_writable(20) else {
            return DURABLE;
        };
        let mode = MODES[self.rng.usize(..MODES.len())];
        let size = self.model.data(h.ino).len() as u64;
        let (mut off, mut len) = {
            let off = self.gen_off(size);
            (off, self.gen_len(off))
        };
        if mode & (COLLAPSE_RANGE | INSERT_RANGE) != 0 && self.rng.u8(..10) != 0 {
            off = self.rng.u64(..=size.div_ceil(BS)) * BS;
            len = self.rng.u64(1..=8) * BS;
        }
        if self.rng.u8(..50) == 0 {
            len = 0;
        }
        let end = off + len;
        let excl = mode & (PUNCH_HOLE | COLLAPSE_RANGE | ZERO_RANGE | INSERT_RANGE | UNSHARE_RANGE);
        let keep = mode & KEEP_SIZE != 0;
        let aligned = off % BS == 0 && len % BS == 0;
        let want: Res<()> = if !h.writable {
            Err(libc::EBADF)
        } else if len == 0 || excl.count_ones() > 1 {
            Err(libc::EINVAL)
        } else {
            match excl {
                PUNCH_HOLE if !keep => Err(libc::EOPNOTSUPP),
                COLLAPSE_RANGE | INSERT_RANGE if keep || !aligned => Err(libc::EINVAL),
                COLLAPSE_RANGE if end >= size => Err(libc::EINVAL),
                INSERT_RANGE if off >= size => Err(libc::EINVAL),
                _ => Ok(()),
            }
        };
        if excl == INSERT_RANGE && want.is_ok() && size + len > MAX_SIZE {
            self.put_back(h, kept);
            return DURABLE;
        }
        self.note(format!(
            "fallocate ino {} mode {mode:#x} [{off}, +{len}) size {size}",
            h.ino
        ));
        if self.expect(er(h.file.fallocate(mode, off, len)), want) {
            match excl {
                0 | UNSHARE_RANGE if !keep => self.model.grow(h.ino, end),
                PUNCH_HOLE => self.model.zero(h.ino, off, end),
                ZERO_RANGE => {
                    self.model.zero(h.ino, off, end);
                    if !keep {
                        self.model.grow(h.ino, end);
                    }
                }
                COLLAPSE_RANGE => {
                    self.model.data_mut(h.ino).drain(off as usize..end as usize);
                }
                INSERT_RANGE => {
                    let v = self.model.data_mut(h.ino);
                    v.splice(
                        off as usize..off as usize,
                        std::iter::repeat_n(0, len as usize),
                    );
                }
                _ => {}
            }
        }
        self.check_file(&h);
        let ino = h.ino;
        self.put_back(h, kept);
        match excl {
            COLLAPSE_RANGE | INSERT_RANGE => DURABLE,
            _ => Applied {
                between: Between::Mixed(ino),
                // Zeroing and allocating only what is mapped logs nothing.
                durable: excl == PUNCH_HOLE,
            },
        }
    }

    fn op_clone(&mut self) -> Applied {
        let Some((src, src_kept)) = self.pick_file(false) else {
            return DURABLE;
        };
        let Some((dst, dst_kept)) = self.pick_writable(20) else {
            self.put_back(src, src_kept);
            return DURABLE;
        };
        let whole = self.rng.u8(..4) == 0;
        let sdata = self.model.data(src.ino).clone();
        let (ssize, dsize) = (sdata.len() as u64, self.model.data(dst.ino).len() as u64);
        let applied;
        if whole {
            self.note(format!("clone_file ino {} -> ino {}", src.ino, dst.ino));
            let want = if src.ino == dst.ino {
                Err(libc::EINVAL)
            } else if !dst.writable {
                Err(libc::EBADF)
            } else {
                Ok(())
            };
            if self.expect(er(self.fs().clone_file(&src.file, &dst.file)), want) {
                *self.model.data_mut(dst.ino) = sdata;
            }
            applied = Applied {
                between: Between::Emptied(dst.ino),
                durable: true,
            };
        } else {
            let mut so = self.rng.u64(..=ssize.div_ceil(BS)) * BS;
            let mut dof = self.rng.u64(..MAX_SIZE / BS) * BS;
            if self.rng.u8(..20) == 0 {
                so += self.rng.u64(1..BS);
            }
            if self.rng.u8(..20) == 0 {
                dof += self.rng.u64(1..BS);
            }
            so = so.min(MAX_SIZE - 1);
            let len = match self.rng.u8(..6) {
                0 => 0,
                1 => ssize.saturating_sub(so),
                2 => self.rng.u64(1..2 * BS),
                _ => self.rng.u64(1..=8) * BS,
            }
            .min(MAX_SIZE - dof);
            self.note(format!(
                "clone_range ino {} [{so}, +{len}) -> ino {} at {dof} (sizes {ssize}, {dsize})",
                src.ino, dst.ino
            ));
            // The rules of FICLONERANGE (the kernel's generic_remap_checks).
            let same = src.ino == dst.ino;
            let plan: Res<Option<(u64, u64)>> = (|| {
                if !dst.writable {
                    return Err(libc::EBADF);
                }
                if !so.is_multiple_of(BS) || !dof.is_multiple_of(BS) {
                    return Err(libc::EINVAL);
                }
                let len = if len == 0 {
                    if so == ssize {
                        return Ok(None);
                    }
                    if so > ssize {
                        return Err(libc::EINVAL);
                    }
                    ssize - so
                } else {
                    len
                };
                if so >= ssize || so + len > ssize {
                    return Err(libc::EINVAL);
                }
                let to_eof = so + len == ssize;
                if !to_eof && len % BS != 0 {
                    return Err(libc::EINVAL);
                }
                if to_eof && len % BS != 0 && dof + len < dsize {
                    return Err(libc::EINVAL);
                }
                let span = len.div_ceil(BS) * BS;
                if same && dof < so + span && so < dof + span {
                    return Err(libc::EINVAL);
                }
                Ok(Some((len, dof + len)))
            })();
            let want = plan.map(|p| p.map_or(0, |(len, _)| len));
            let got = er(self.fs().clone_range(&src.file, so, &dst.file, dof, len));
            if self.expect(got, want) {
                if let Ok(Some((len, _))) = plan {
                    let bytes = sdata[so as usize..(so + len) as usize].to_vec();
                    self.model.write(dst.ino, dof, &bytes);
                }
            }
            // One transaction: the range has at most 32 extents.
            applied = DURABLE;
        }
        self.check_file(&dst);
        self.check_file(&src);
        self.put_back(dst, dst_kept);
        self.put_back(src, src_kept);
        applied
    }

    fn gen_new_path(&mut self) -> String {
        if self.rng.u8(..100) == 0 {
            let dirs: Vec<String> = (self.model.paths().into_iter())
                .filter(|(_, i)| self.model.is_dir(*i))
                .map(|(p, _)| p)
                .collect();
            let p = &dirs[self.rng.usize(..dirs.len())];
            return format!("{}/{}", p.trim_end_matches('/'), "n".repeat(256));
        }
        self.gen_new()
    }

    fn op_create(&mut self, dir: bool) -> Applied {
        if self.model.nodes.len() >= MAX_NODES {
            return self.op_remove();
        }
        let path = self.gen_new_path();
        self.note(format!("{} {path}", if dir { "mkdir" } else { "create" }));
        let want = self.model.resolve_parent(&path).and_then(|(d, n)| {
            if self.model.dir(d).contains_key(&n) {
                Err(libc::EEXIST)
            } else {
                Ok((d, n))
            }
        });
        if dir {
            let got = er(self.fs().mkdir(&path, 0o755));
            if self.expect(got, want.as_ref().map(|_| ()).map_err(|e| *e)) {
                let (d, n) = want.expect("checked");
                let ino = self.fs().stat(&path).expect("stat new dir").ino;
                self.model.add(d, &n, ino, Body::Dir(BTreeMap::new()));
            }
        } else {
            let got = er(self.fs().create(&path, 0o644));
            let got_ok = got.as_ref().map(|_| ()).map_err(|e| *e);
            if self.expect(got_ok, want.as_ref().map(|_| ()).map_err(|e| *e)) {
                let (d, n) = want.expect("checked");
                let f = got.expect("checked");
                let ino = f.ino();
                self.model.add(d, &n, ino, Body::File(Vec::new()));
                self.model.opened(ino);
                let h = Handle {
                    ino,
                    file: f,
                    writable: true,
                };
                let keep = self.handles.len() < MAX_HANDLES && self.rng.u8(..4) == 0;
                self.put_back(h, keep);
            }
        }
        self.check_dir(&Self::parent_of(&path));
        DURABLE
    }

    /// Open a handle and keep it (with O_CREAT / O_TRUNC at times).
    fn op_open(&mut self) -> Applied {
        if self.handles.len() >= MAX_HANDLES {
            return self.op_close();
        }
        let write = self.rng.u8(..4) != 0;
        let create = write && self.rng.u8(..4) == 0 && self.model.nodes.len() < MAX_NODES;
        let truncate = write && self.rng.u8(..8) == 0;
        let path = if create {
            self.gen_new()
        } else {
            self.gen_file()
        };
        let opts = OpenOptions {
            write,
            create,
            truncate,
            ..OpenOptions::default()
        };
        self.note(format!("open {path} {opts:?}"));
        let want = match self.model.resolve(&path) {
            Ok(i) if self.model.is_dir(i) => Err(libc::EISDIR),
            Ok(i) => Ok((i, None)),
            Err(libc::ENOENT) if create => self
                .model
                .resolve_parent(&path)
                .map(|(d, n)| (0, Some((d, n)))),
            Err(e) => Err(e),
        };
        let got = er(self.fs().open(&path, &opts));
        let got_ok = got.as_ref().map(|_| ()).map_err(|e| *e);
        if self.expect(got_ok, want.as_ref().map(|_| ()).map_err(|e| *e)) {
            let f = got.expect("checked");
            let (ino, new) = want.expect("checked");
            let ino = match new {
                Some((d, n)) => {
                    self.model.add(d, &n, f.ino(), Body::File(Vec::new()));
                    f.ino()
                }
                None => ino,
            };
            assert_eq!(f.ino(), ino);
            if truncate {
                self.model.data_mut(ino).clear();
            }
            self.model.opened(ino);
            let h = Handle {
                ino,
                file: f,
                writable: write,
            };
            self.check_file(&h);
            self.handles.push(h);
        }
        self.check_dir(&Self::parent_of(&path));
        DURABLE
    }

    fn op_close(&mut self) -> Applied {
        if self.handles.is_empty() {
            return DURABLE;
        }
        let h = self
            .handles
            .swap_remove(self.rng.usize(..self.handles.len()));
        self.note(format!("close ino {}", h.ino));
        self.close(h);
        DURABLE
    }

    /// unlink or rmdir.
    fn op_remove(&mut self) -> Applied {
        let path = self.gen_existing();
        let is_dir = self
            .model
            .resolve(&path)
            .is_ok_and(|i| self.model.is_dir(i));
        let dir = is_dir == (self.rng.u8(..8) != 0);
        self.note(format!("{} {path}", if dir { "rmdir" } else { "unlink" }));
        let want = self.model.resolve_parent(&path).and_then(|(d, n)| {
            let i = self.model.lookup(d, &n)?;
            match (dir, self.model.is_dir(i)) {
                (false, true) => Err(libc::EISDIR),
                (true, false) => Err(libc::ENOTDIR),
                (true, true) if !self.model.dir(i).is_empty() => Err(libc::ENOTEMPTY),
                _ => Ok((d, n, i)),
            }
        });
        let got = if dir {
            er(self.fs().rmdir(&path))
        } else {
            er(self.fs().unlink(&path))
        };
        if self.expect(got, want.as_ref().map(|_| ()).map_err(|e| *e)) {
            let (d, n, i) = want.expect("checked");
            self.model.dir_mut(d).remove(&n);
            self.model.unref(i);
        }
        self.check_dir(&Self::parent_of(&path));
        DURABLE
    }

    fn op_link(&mut self) -> Applied {
        if self.model.nodes.len() >= MAX_NODES {
            return self.op_remove();
        }
        // linkat(fd, "", ..., AT_EMPTY_PATH) on an open file, at times.
        let by_handle = !self.handles.is_empty() && self.rng.u8(..4) == 0;
        let new = self.gen_new();
        let (old, got, want) = if by_handle {
            let i = self.rng.usize(..self.handles.len());
            let ino = self.handles[i].ino;
            self.note(format!("link ino {ino} (open) -> {new}"));
            // As do_linkat: the new name first, then "the file has no name".
            let want = self.model.resolve_parent(&new).and_then(|(d, n)| {
                if self.model.dir(d).contains_key(&n) {
                    Err(libc::EEXIST)
                } else if self.model.nodes[&ino].nlink == 0 {
                    Err(libc::ENOENT)
                } else {
                    Ok((ino, d, n))
                }
            });
            (String::new(), er(self.handles[i].file.link(&new)), want)
        } else {
            let old = self.gen_existing();
            self.note(format!("link {old} -> {new}"));
            let want = self.model.resolve(&old).and_then(|ino| {
                let (d, n) = self.model.resolve_parent(&new)?;
                if self.model.dir(d).contains_key(&n) {
                    Err(libc::EEXIST)
                } else if self.model.is_dir(ino) {
                    Err(libc::EPERM)
                } else {
                    Ok((ino, d, n))
                }
            });
            (old.clone(), er(self.fs().link(&old, &new)), want)
        };
        if self.expect(got, want.as_ref().map(|_| ()).map_err(|e| *e)) {
            let (ino, d, n) = want.expect("checked");
            self.model.dir_mut(d).insert(n, ino);
            self.model.nodes.get_mut(&ino).expect("node").nlink += 1;
        }
        self.check_dir(&Self::parent_of(&new));
        if !old.is_empty() {
            self.check_dir(&Self::parent_of(&old));
        }
        DURABLE
    }

    fn op_rename(&mut self) -> Applied {
        let from = self.gen_existing();
        let to = if self.rng.bool() {
            self.gen_existing()
        } else {
            self.gen_new()
        };
        let how = match self.rng.u8(..6) {
            0 => Rename::NoReplace,
            1 => Rename::Exchange,
            _ => Rename::Replace,
        };
        self.note(format!("rename {from} -> {to} {how:?}"));
        let m = &self.model;
        // The order of do_renameat2 and vfs_rename.
        let want = (|| {
            let (sd, sn) = m.resolve_parent(&from)?;
            let (dd, dn) = m.resolve_parent(&to)?;
            let src = m.lookup(sd, &sn)?;
            let dst = m.dir(dd).get(&dn).copied();
            if how == Rename::NoReplace && dst.is_some() {
                return Err(libc::EEXIST);
            }
            if how == Rename::Exchange && dst.is_none() {
                return Err(libc::ENOENT);
            }
            // The source must not be above the destination, nor the
            // destination above the source.
            if m.is_dir(src) && m.is_ancestor(src, dd) && sd != dd {
                return Err(libc::EINVAL);
            }
            if let Some(d) = dst {
                if m.is_dir(d) && m.is_ancestor(d, sd) && sd != dd {
                    return Err(if how == Rename::Exchange {
                        libc::EINVAL
                    } else {
                        libc::ENOTEMPTY
                    });
                }
            }
            if dst == Some(src) {
                return Ok(None);
            }
            if let (Some(d), true) = (dst, how != Rename::Exchange) {
                match (m.is_dir(src), m.is_dir(d)) {
                    (true, false) => return Err(libc::ENOTDIR),
                    (false, true) => return Err(libc::EISDIR),
                    (true, true) if !m.dir(d).is_empty() => return Err(libc::ENOTEMPTY),
                    _ => {}
                }
            }
            Ok(Some((sd, sn, dd, dn, src, dst)))
        })();
        let got = er(self.fs().rename2(&from, &to, how));
        if self.expect(got, want.as_ref().map(|_| ()).map_err(|e| *e)) {
            if let Some((sd, sn, dd, dn, src, dst)) = want.expect("checked") {
                let m = &mut self.model;
                if how == Rename::Exchange {
                    let dst = dst.expect("exchange target");
                    m.dir_mut(sd).insert(sn, dst);
                    m.dir_mut(dd).insert(dn, src);
                    m.nodes.get_mut(&src).expect("node").parent = dd;
                    m.nodes.get_mut(&dst).expect("node").parent = sd;
                } else {
                    m.dir_mut(sd).remove(&sn);
                    m.dir_mut(dd).insert(dn, src);
                    m.nodes.get_mut(&src).expect("node").parent = dd;
                    if let Some(d) = dst {
                        m.unref(d);
                    }
                }
            }
        }
        self.check_dir(&Self::parent_of(&from));
        self.check_dir(&Self::parent_of(&to));
        DURABLE
    }

    fn op_checkpoint(&mut self) -> Applied {
        self.note("checkpoint".into());
        self.fs().checkpoint().expect("checkpoint");
        self.totals.explicit_checkpoints += 1;
        DURABLE
    }

    /// One random operation, compared.
    fn step_op(&mut self) -> Applied {
        let errors = self.totals.errors;
        let (kind, applied) = match self.rng.u16(..1000) {
            0..=219 => ("write", self.op_write()),
            220..=299 => ("read", self.op_read()),
            300..=369 => ("truncate", self.op_truncate()),
            370..=469 => ("fallocate", self.op_fallocate()),
            470..=529 => ("clone", self.op_clone()),
            530..=619 => ("create", self.op_create(false)),
            620..=649 => ("mkdir", self.op_create(true)),
            650..=729 => ("unlink/rmdir", self.op_remove()),
            730..=769 => ("link", self.op_link()),
            770..=859 => ("rename", self.op_rename()),
            860..=919 => ("open", self.op_open()),
            920..=998 => ("close", self.op_close()),
            // Rare: the log should fill and wrap on its own.
            _ if self.rng.u8(..5) == 0 => ("checkpoint", self.op_checkpoint()),
            _ => ("close", self.op_close()),
        };
        let c = self.totals.by_kind.entry(kind).or_default();
        c.0 += 1;
        c.1 += u64::from(self.totals.errors != errors);
        applied
    }

    // -------------------------------------------- remounts and crashes

    /// Close every handle and drop the fs (counting its checkpoints).
    fn teardown(&mut self) {
        for h in std::mem::take(&mut self.handles) {
            self.close(h);
        }
        if let Some(fs) = self.fs.take() {
            self.totals.checkpoints += fs.journal_stats().checkpoints;
            if self.rng.bool() {
                fs.unmount().expect("unmount");
            }
        }
        self.model.forget_handles();
    }

    fn fsck_clean(dev: &Arc<dyn Device>, what: &str) -> udax::fs::FsckReport {
        let r = fsck(dev.clone()).unwrap_or_else(|e| panic!("{what}: fsck failed: {e}"));
        assert!(r.problems.is_empty(), "{what}: fsck: {:?}", r.problems);
        r
    }

    fn mount(&mut self, dev: Arc<dyn Device>) {
        Self::fsck_clean(&dev, "before mount");
        let fs = Fs::mount(dev.clone()).unwrap_or_else(|e| panic!("mount failed: {e}"));
        let r = Self::fsck_clean(&dev, "after mount");
        let used = r.used_blocks + r.metadata_blocks;
        let st = fs.statfs();
        assert_eq!(st.free_blocks, st.data_blocks - used, "free space");
        self.dev = dev;
        self.fs = Some(fs);
    }

    /// Remount; when a crash is due, on a crash-recording device, to crash
    /// in one of the next steps.
    fn remount(&mut self) {
        self.note("remount".into());
        self.teardown();
        self.totals.remounts += 1;
        if self.step >= self.next_crash {
            let image = self.ram_image();
            let dev = Arc::new(CrashDevice::from_image(image));
            self.crash = Some(dev.clone());
            // Long enough at times for the log to wrap on the crash device.
            self.crash_in = match self.rng.u8(..4) {
                0 => self.rng.u64(..20),
                _ => self.rng.u64(..4000),
            };
            self.mount(dev);
        } else {
            let dev = self.dev.clone();
            self.mount(dev);
        }
        self.check_all();
    }

    /// The content of the current RAM device (the fs is down).
    fn ram_image(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.dev.len() as usize];
        self.dev.read(0, &mut v).expect("read the device");
        v
    }

    /// Run one operation, crash at a random fence of it, recover and compare.
    fn crash_op(&mut self) {
        let dev = self.crash.take().expect("crash device");
        // A crash inside an operation that fences nothing shows nothing new:
        // go on to one that does (a few tries).
        let mut tries = 0;
        let (before, applied, points) = loop {
            self.fs().sync().expect("sync");
            let mut before = self.model.clone();
            before.forget_handles();
            dev.start_recording();
            let applied = self.step_op();
            let points = dev.crash_points();
            tries += 1;
            if points > 0 || tries == 8 {
                break (before, applied, points);
            }
            self.step += 1;
        };
        let p = match self.rng.u8(..4) {
            0 => points,
            _ => self.rng.usize(..=points),
        };
        let survivors = match self.rng.u8(..4) {
            0 => Survivors::None,
            1 => Survivors::All,
            _ => Survivors::Random {
                seed: self.rng.u64(..),
            },
        };
        self.note(format!("crash at fence {p}/{points}, {survivors:?}"));
        let image = dev.crash_image(p, &survivors);
        // Everything on the crashed fs goes, as with a power failure.
        self.handles.clear();
        self.model.forget_handles();
        if let Some(fs) = self.fs.take() {
            self.totals.checkpoints += fs.journal_stats().checkpoints;
        }
        let after = self.model.clone();
        drop(dev);
        self.mount(Arc::new(RamDevice::from_image(image)));
        self.totals.crashes += 1;
        let got = fs_tree(self.fs());
        let (tb, ta) = (model_tree(&before), model_tree(&after));
        let done = p == points && applied.durable;
        if got == ta {
            self.model = after;
        } else if !done && got == tb {
            self.model = before;
            self.totals.crash_before += 1;
        } else {
            let what = format!(
                "after a crash at fence {p}/{points} ({survivors:?}): neither the state \
                 before nor after the operation{}: vs before: {:?}; vs after: {:?}",
                if done { " (which had returned)" } else { "" },
                tree_diff(&got, &tb),
                tree_diff(&got, &ta)
            );
            assert!(!done, "{what}");
            self.model = before;
            match applied.between {
                Between::Mixed(ino) => {
                    let sizes: Vec<u64> = [tb.values(), ta.values()]
                        .into_iter()
                        .flatten()
                        .filter(|e| e.ino == ino)
                        .map(|e| e.data.len() as u64)
                        .collect();
                    assert!(mixed_ok(&got, &tb, &ta, ino, &sizes), "{what}");
                    if let Some(e) = got.values().find(|e| e.ino == ino) {
                        *self.model.data_mut(ino) = e.data.clone();
                    }
                }
                Between::Emptied(ino) => {
                    if let Some(Node {
                        body: Body::File(v),
                        ..
                    }) = self.model.nodes.get_mut(&ino)
                    {
                        v.clear();
                    }
                    let emptied = model_tree(&self.model);
                    assert!(
                        got == emptied,
                        "{what}; vs emptied: {:?}",
                        tree_diff(&got, &emptied)
                    );
                }
                Between::Nothing => panic!("{what}"),
            }
            self.totals.crash_between += 1;
        }
        self.check_all();
        self.next_crash = self.step + self.rng.u64(..2000);
        self.next_remount = self.step + self.rng.u64(2000..10_000);
    }

    fn go(&mut self, ops: u64) {
        while self.step < ops {
            if self.crash.is_some() {
                if self.crash_in == 0 {
                    self.crash_op();
                    self.step += 1;
                    continue;
                }
                self.crash_in -= 1;
            } else if self.step >= self.next_remount || self.step >= self.next_crash {
                self.remount();
                self.next_remount = self.step + self.rng.u64(2000..10_000);
            }
            self.step_op();
            self.step += 1;
            self.totals.max_nodes = self.totals.max_nodes.max(self.model.nodes.len());
            if self.step.is_multiple_of(FULL_CHECK_EVERY) {
                self.check_all();
            }
        }
        self.totals.ops = self.step;
        self.teardown();
        let dev = self.dev.clone();
        self.mount(dev);
        self.check_all();
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    if v == "random" {
        return Some(fastrand::u64(..));
    }
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
    )
}

#[test]
fn model_random_ops_checkpoints_remounts_and_crashes() {
    let seed = env_u64("UDAX_MODEL_SEED").unwrap_or(0x5eed_0018);
    let ops = env_u64("UDAX_MODEL_OPS").unwrap_or(200_000);
    eprintln!("model: seed {seed}, {ops} operations");
    let t = std::time::Instant::now();
    let mut run = Run::new(seed);
    if let Err(e) = catch_unwind(AssertUnwindSafe(|| run.go(ops))) {
        eprintln!("{}", run.context());
        resume_unwind(e);
    }
    let s = &run.totals;
    eprintln!("model: seed {seed}: {s:?} in {:.1?}", t.elapsed());
    assert!(
        s.checkpoints >= ops / 5000,
        "few checkpoints: {s:?} (the log should wrap often on a small device)"
    );
    assert!(
        s.remounts >= ops / 4000 && s.crashes >= ops / 10_000,
        "{s:?}"
    );
}
