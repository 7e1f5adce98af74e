//! `udax`: the command-line tool of the udax user-space DAX file system.

mod bench;
mod demo;
mod demo_mmap;
mod serve;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serve::Meta;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use udax::device::{self, Device};
use udax::fs::{falloc, Fs, MkfsOptions, MountOptions, OpenOptions};

/// A direct-access (DAX) file system in user space.
///
/// DEV is a device: `memfd:SIZE` (anonymous memory, gone at exit; for demo and
/// bench), a file on tmpfs (e.g. /dev/shm/udax.img), a file on hugetlbfs, a
/// regular file (durable through msync), or a device-dax node /dev/daxX.Y.
///
/// Paths inside udax are written DEV:/path (e.g. /dev/shm/udax.img:/dir/file), or
/// just /path with --device DEV or UDAX_DEVICE=DEV set.
#[derive(Parser)]
#[command(name = "udax", version, about, long_about)]
struct Cli {
    /// Device for paths written without DEV: (also from UDAX_DEVICE).
    #[arg(long, global = true, env = "UDAX_DEVICE")]
    device: Option<String>,
    /// Mount read-only: write nothing to the device (no log replay made
    /// durable, no orphan reclaimed); commands that change files fail with
    /// "read-only file system".
    #[arg(long, global = true)]
    read_only: bool,
    /// Read a damaged file system as far as it can be read (implies
    /// --read-only), to copy files out: a damaged checkpoint header is rebuilt
    /// from its body, the log is cut before a damaged record. What that
    /// skipped is printed to stderr. `udax fsck --repair` makes it durable.
    #[arg(long, global = true)]
    salvage: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new, empty file system on DEV (everything on it is lost).
    ///
    /// Refuses a DEV that already holds a udax file system unless --force,
    /// and never grows or shrinks an existing DEV.
    Mkfs {
        dev: String,
        /// Create a device file of this size (e.g. 1G). An existing DEV keeps
        /// its size: a different --size is refused.
        #[arg(long)]
        size: Option<String>,
        /// Label (up to 32 bytes).
        #[arg(long, default_value = "")]
        label: String,
        /// Overwrite the udax file system already on DEV: every file on it
        /// is lost.
        #[arg(long)]
        force: bool,
    },
    /// Show the device, its persistence domain, geometry and usage.
    Info {
        dev: String,
        #[arg(long)]
        json: bool,
    },
    /// List a directory.
    Ls {
        target: String,
        /// Long format: type, mode, links, size, blocks, name.
        #[arg(short, long)]
        long: bool,
    },
    /// Show a file's metadata.
    Stat {
        target: String,
        #[arg(long)]
        json: bool,
        /// Also map the file read-only, read every page, and report how the
        /// fault engine mapped it (2 MiB vs 4 KiB mappings, zero pages).
        #[arg(long)]
        mmap: bool,
    },
    /// Print a file to stdout.
    Cat { target: String },
    /// Copy a file: host -> udax, udax -> host, or udax -> udax (same device).
    Cp {
        src: String,
        dst: String,
        /// udax -> udax: share the blocks instead of copying them (reflink);
        /// a later write to either file copies only what it changes.
        #[arg(long)]
        reflink: bool,
    },
    /// Share the blocks of two files' ranges whose bytes are equal (dedupe, like
    /// FIDEDUPERANGE). Nothing is shared if any byte differs.
    Dedupe {
        src: String,
        dst: String,
        /// Offset in SRC (block aligned).
        #[arg(long, default_value = "0")]
        src_offset: String,
        /// Offset in DST (block aligned).
        #[arg(long, default_value = "0")]
        dst_offset: String,
        /// Length (default: all of SRC).
        #[arg(long)]
        length: Option<String>,
    },
    /// Create a directory.
    Mkdir {
        target: String,
        /// Create missing parents; no error if it exists.
        #[arg(short, long)]
        parents: bool,
    },
    /// Remove a file, or with -r a directory tree.
    Rm {
        target: String,
        #[arg(short, long)]
        recursive: bool,
    },
    /// Rename or move within one device (replaces an existing target).
    Mv { src: String, dst: String },
    /// Make a link: with -s a symbolic link LINK whose target is TARGET,
    /// stored as written (it may be relative, name nothing yet, or lead off
    /// the device); without -s a hard link LINK to the file TARGET (same
    /// device).
    Ln {
        target: String,
        link: String,
        #[arg(short, long)]
        symbolic: bool,
    },
    /// Print a symbolic link's target.
    Readlink { target: String },
    /// Set a file's size (shrink frees blocks; grow makes a hole).
    Truncate {
        target: String,
        #[arg(short, long)]
        size: String,
    },
    /// Allocate, punch, zero, collapse or insert a range (like fallocate(1)).
    Fallocate {
        target: String,
        #[arg(short, long, default_value = "0")]
        offset: String,
        #[arg(short, long)]
        length: String,
        #[arg(short = 'n', long)]
        keep_size: bool,
        #[arg(short, long)]
        punch_hole: bool,
        #[arg(short, long)]
        zero_range: bool,
        #[arg(short, long)]
        collapse_range: bool,
        #[arg(short, long)]
        insert_range: bool,
    },
    /// Copy every file of SRC onto a new file system of the current format
    /// (3) made on DST: how an image of the older format 2 moves to format 3.
    ///
    /// SRC is only read (mounted read-only; it stays as it was; a device an
    /// owner serves is busy: stop the owner first). DST is made
    /// anew: a new device file of SRC's size (or --size), or an existing
    /// device that holds no udax file system (else --force). Kept: the tree,
    /// bytes, holes, blocks reserved past the end, hard links, reflink
    /// sharing of whole blocks, symbolic links, special files, modes,
    /// owners, access and modification times. Not kept: inode numbers,
    /// change times, the UUID (DST gets a new one; the label is kept).
    /// What cannot be read from SRC (a media error, damaged metadata: a file,
    /// an entry whose inode is damaged, the entries of a directory that
    /// cannot be listed) is left out and named (exit code 1); any other
    /// error stops the copy. With --salvage, SRC is mounted as far as a
    /// damaged one can be read. DST is checked
    /// (fsck) at the end. To convert a device in place, migrate it to a
    /// file (on /dev/shm, say), then migrate that back with --force.
    Migrate {
        /// The device to copy (a udax file system of any format), read only.
        src: String,
        /// The device to make a new format-3 file system on and copy into.
        dst: String,
        /// Size of a DST device file to create (e.g. 8G); default: SRC's size.
        #[arg(long)]
        size: Option<String>,
        /// Overwrite the udax file system already on DST: every file on it is
        /// lost.
        #[arg(long)]
        force: bool,
    },
    /// Check a file system and report every problem with its location.
    ///
    /// Without --repair it writes nothing. Damage (a superblock copy,
    /// checkpoint header or log record that fails its checksum where no crash
    /// could have left it so) is reported with what a repair would do and
    /// lose. Exit code as e2fsck's: 0 clean, 1 errors repaired, 4 errors left,
    /// 8 the check itself failed.
    Fsck {
        dev: String,
        #[arg(long)]
        json: bool,
        /// Repair damage: rewrite a bad superblock copy from the good one,
        /// rebuild a damaged checkpoint header from its body (or fall back to
        /// the older checkpoint), cut the log before a damaged record. Says
        /// exactly what was lost.
        #[arg(long)]
        repair: bool,
    },
    /// Show space usage.
    Df { dev: String },
    /// Mount DEV on directory DIR through FUSE, so every program sees its
    /// files (static binaries, Go, io_uring, exec of scripts, find, rsync,
    /// editors, containers).
    ///
    /// The mount is served by DEV's owner (`udax serve`), started if none
    /// runs; it keeps the owner running until `udax umount DIR`. Library and
    /// shim clients keep their direct DAX mappings of the same files.
    /// Permissions are checked by the kernel (default_permissions) and by the
    /// owner with each caller's uid and groups. If the owner dies the mount
    /// reports "Transport endpoint is not connected" (ENOTCONN) until
    /// `udax mount` is run again, which replaces it. As root the mount is
    /// made with mount(2); a user needs fusermount3 (package fuse3).
    /// See docs/fuse.md.
    Mount {
        dev: String,
        dir: String,
        /// Options, comma-separated: ro, rw, allow_other, default_permissions.
        #[arg(short = 'o', default_value = "")]
        options: String,
    },
    /// Unmount a udax FUSE mount (as `fusermount3 -u DIR`).
    Umount {
        dir: String,
        /// Detach it now even if it is busy; it goes when its last user does.
        #[arg(short = 'l', long)]
        lazy: bool,
    },
    /// Serve DEV to many processes: this process becomes the device's owner
    /// (it mounts DEV and makes every metadata change), and other processes
    /// (ls, stat, mkdir, rm, mv, df of this tool, the library's
    /// `udax::client`) talk to it over a unix socket named after the file
    /// system's UUID in the runtime directory ($UDAX_RUNTIME_DIR, /run/udax
    /// for root, else $XDG_RUNTIME_DIR/udax). Only a process that could open
    /// DEV itself is admitted. See docs/multiprocess.md.
    ///
    /// Without --foreground it starts the owner detached (log in the runtime
    /// directory) and returns once it answers. SIGINT/SIGTERM stop it with a
    /// checkpoint.
    Serve {
        dev: String,
        /// Stay in the foreground (for service managers), logging to stderr.
        #[arg(long)]
        foreground: bool,
        /// Exit (after a checkpoint) when no client has been connected for
        /// this many seconds; 0: never.
        #[arg(long, default_value = "30")]
        idle: u64,
    },
    /// Emulate a media error (poison) at device bytes OFFSET..OFFSET+LEN: the
    /// data there is lost, the blocks join the persistent bad-block table, and
    /// every owner is reported (files, metadata, or free). Reading the range
    /// through a file then fails with EIO; mapped pages raise SIGBUS.
    InjectPoison {
        dev: String,
        /// Device byte offset (suffixes K, M, G allowed).
        offset: String,
        /// Length in bytes (rounded out to 4 KiB blocks).
        #[arg(default_value = "4096")]
        len: String,
        #[arg(long)]
        json: bool,
    },
    /// Clear the media error of free (quarantined) device blocks by zeroing
    /// them. Blocks a file owns are cleared by overwriting them through the file.
    ClearPoison {
        dev: String,
        offset: String,
        #[arg(default_value = "4096")]
        len: String,
    },
    /// Show the main job on a memfd device: files, holes, truncate, fallocate,
    /// crash and recovery, fsck.
    Demo,
    /// Measure udax against the kernel baseline and the hardware limit (PERFORMANCE.md).
    Bench(bench::BenchArgs),
}

/// A parsed `DEV:/path` (or `/path` with the default device).
struct Target {
    dev: String,
    path: String,
}

fn split_target(s: &str, default: Option<&str>) -> Option<Target> {
    if let Some(i) = s.find(":/") {
        let (d, p) = (&s[..i], &s[i + 1..]);
        if !d.is_empty() {
            return Some(Target {
                dev: d.to_string(),
                path: p.to_string(),
            });
        }
    }
    default.map(|d| Target {
        dev: d.to_string(),
        path: s.to_string(),
    })
}

type AnyResult<T> = Result<T, String>;

fn owner_text(o: &udax::fs::Owner) -> String {
    match o {
        udax::fs::Owner::File { ino, file_off } => format!("inode {ino} at file offset {file_off}"),
        udax::fs::Owner::Metadata { what, repair } => format!("{what} (repair: {repair})"),
        udax::fs::Owner::Free => "no owner (free; quarantined)".into(),
    }
}

fn ctx<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> AnyResult<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn open_dev(spec: &str, create_size: Option<u64>) -> AnyResult<Arc<dyn Device>> {
    device::open(spec, &device::OpenOptions { create_size }).map_err(|e| open_error(spec, e))
}

fn open_error(spec: &str, e: udax::DeviceError) -> String {
    match e {
        // It names the device already.
        udax::DeviceError::Open { .. } => e.to_string(),
        e => format!("{spec}: {e}"),
    }
}

/// The mount options of this run (--read-only, --salvage).
static MOUNT_OPTS: std::sync::OnceLock<MountOptions> = std::sync::OnceLock::new();
/// The exit code of a run that succeeded (fsck's 1 and 4 are not failures).
static EXIT_CODE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn mount(spec: &str) -> AnyResult<Fs> {
    let dev = open_dev(spec, None)?;
    mount_dev(dev, spec, &mount_options(false))
}

/// The mount options of this run; for a command that only looks (ls, cat,
/// stat, df, info, the source of a copy out, `look`) read-only whatever the
/// flags say, so a look never writes.
fn mount_options(look: bool) -> MountOptions {
    let o = MOUNT_OPTS.get().copied().unwrap_or_default();
    if look {
        MountOptions {
            read_only: true,
            salvage: o.salvage,
        }
    } else {
        o
    }
}

/// Mount for a command that only looks: see [`mount_options`].
fn mount_ro(spec: &str) -> AnyResult<Fs> {
    mount_dev(open_dev(spec, None)?, spec, &mount_options(true))
}

fn mount_dev(dev: Arc<dyn Device>, spec: &str, opts: &MountOptions) -> AnyResult<Fs> {
    let fs = ctx(Fs::mount_with(dev, opts), spec)?;
    let s = fs.salvaged();
    for d in &s.damage {
        eprintln!(
            "udax: {spec}: damage at device offset {:#x}: {} ({})",
            d.device_offset, d.what, d.salvage
        );
    }
    for l in &s.lost {
        eprintln!("udax: {spec}: not seen by this salvage: {l}");
    }
    Ok(fs)
}

fn target(s: &str, default: Option<&str>) -> AnyResult<Target> {
    split_target(s, default).ok_or_else(|| {
        format!("{s}: not a udax path (write DEV:/path, or set --device / UDAX_DEVICE)")
    })
}

fn size_arg(s: &str) -> AnyResult<u64> {
    ctx(device::parse_size(s), "size")
}

fn type_char(st: &udax::fs::Stat) -> char {
    if st.is_dir() {
        'd'
    } else {
        match st.mode & 0o170000 {
            0o120000 => 'l',
            0o010000 => 'p',
            0o020000 => 'c',
            0o060000 => 'b',
            0o140000 => 's',
            _ => '-',
        }
    }
}

fn mode_string(mode: u32) -> String {
    let mut s = String::new();
    for shift in [6, 3, 0] {
        let b = (mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// A progress bar for a long copy, only on a terminal.
fn progress(len: u64) -> Option<ProgressBar> {
    if len < (16 << 20) || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(pb)
}

/// Move bytes in 4 MiB chunks from `read(buf, offset)` (0 = end) to
/// `write(data, offset)`, updating `pb`. Returns the bytes copied.
fn pump(
    pb: Option<ProgressBar>,
    mut read: impl FnMut(&mut [u8], u64) -> AnyResult<usize>,
    mut write: impl FnMut(&[u8], u64) -> AnyResult<()>,
) -> AnyResult<u64> {
    let mut buf = vec![0u8; 4 << 20];
    let mut off = 0u64;
    loop {
        let n = read(&mut buf, off)?;
        if n == 0 {
            return Ok(off);
        }
        write(&buf[..n], off)?;
        off += n as u64;
        if let Some(pb) = &pb {
            pb.set_position(off);
        }
    }
}

/// Paths `a` and `b` name one host file (same device and inode).
fn same_host_file(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

/// Device specs `a` and `b` name one device (`img` and `./img` do).
fn same_device(a: &str, b: &str) -> bool {
    a == b || same_host_file(a, b)
}

/// Refuse to copy `inp` onto itself (`dst`, at `path` in `fs`): opening the
/// destination would truncate the source. Same file: same inode, whatever
/// the spelling (`/f`, `//f`, a hard link).
fn not_same_file(fs: &Fs, inp: &udax::fs::File, path: &str, src: &str, dst: &str) -> AnyResult<()> {
    match fs.stat(path) {
        Ok(st) if st.ino == inp.ino() => Err(format!("'{src}' and '{dst}' are the same file")),
        _ => Ok(()),
    }
}

fn copy(src: &str, dst: &str, default: Option<&str>) -> AnyResult<u64> {
    let s = split_target(src, None);
    let d = split_target(dst, None);
    let s = s.or_else(|| {
        if std::path::Path::new(src).exists() {
            None
        } else {
            split_target(src, default)
        }
    });
    let d = d.or_else(|| {
        if s.is_none() {
            split_target(dst, default)
        } else {
            None
        }
    });
    let create_trunc = OpenOptions {
        truncate: true,
        ..OpenOptions::create()
    };
    match (s, d) {
        (None, Some(d)) => {
            let mut f = ctx(std::fs::File::open(src), src)?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let m = Meta::open(&d.dev, false)?;
            let out = ctx(m.open_file(&d.path, true), dst)?;
            let n = pump(
                progress(len),
                |buf, _| ctx(f.read(buf), src),
                |data, off| ctx(out.write_at(data, off).map(drop), dst),
            )?;
            ctx(out.fsync(), dst)?;
            drop(out);
            m.finish(&d.dev)?;
            Ok(n)
        }
        (Some(s), None) => {
            if same_host_file(&s.dev, dst) {
                return Err(format!(
                    "'{dst}' is the device of '{src}': copying would overwrite the file system"
                ));
            }
            let m = Meta::open(&s.dev, true)?;
            let inp = ctx(m.open_file(&s.path, false), src)?;
            let len = ctx(inp.len(), src)?;
            let mut out = ctx(std::fs::File::create(dst), dst)?;
            pump(
                progress(len),
                |buf, off| ctx(inp.read_at(buf, off), src),
                |data, _| ctx(out.write_all(data), dst),
            )
        }
        (Some(s), Some(d)) => {
            if !same_device(&s.dev, &d.dev) {
                return Err("copy between two udax devices: copy through a host file".into());
            }
            let fs = mount(&s.dev)?;
            let inp = ctx(fs.open(&s.path, &OpenOptions::read_only()), src)?;
            not_same_file(&fs, &inp, &d.path, src, dst)?;
            let out = ctx(fs.open(&d.path, &create_trunc), dst)?;
            let n = pump(
                None,
                |buf, off| ctx(inp.read_at(buf, off), src),
                |data, off| ctx(out.write_at(data, off).map(drop), dst),
            )?;
            drop((inp, out));
            ctx(fs.unmount(), &s.dev)?;
            Ok(n)
        }
        (None, None) => Err("neither side is a udax path (write DEV:/path)".into()),
    }
}

/// `udax mkfs`. A device file this run created is removed if it fails.
fn mkfs(dev: &str, size: Option<&str>, label: String, force: bool) -> AnyResult<()> {
    let existed = std::path::Path::new(dev).exists();
    let r = make_fs(dev, size, label, force, existed);
    if r.is_err() && !existed && std::path::Path::new(dev).is_file() {
        // Best effort: the error that matters is already in `r`.
        let _ = std::fs::remove_file(dev);
    }
    r
}

fn make_fs(
    dev: &str,
    size: Option<&str>,
    label: String,
    force: bool,
    existed: bool,
) -> AnyResult<()> {
    let size = size.map(size_arg).transpose()?;
    let d = if existed {
        let d = open_dev(dev, None)?;
        may_overwrite(dev, &*d, size, force)?;
        d
    } else {
        // A new device file is allocated (and on tmpfs zeroed) whole:
        // seconds for many GiB.
        let spin = size
            .filter(|&n| n >= 1 << 30 && std::io::stderr().is_terminal())
            .map(|n| {
                let p = ProgressBar::new_spinner();
                p.set_message(format!("allocating {dev} ({} MiB)", n >> 20));
                p.enable_steady_tick(std::time::Duration::from_millis(100));
                p
            });
        let d = open_dev(dev, size);
        if let Some(p) = spin {
            p.finish_and_clear();
        }
        d?
    };
    let sb = ctx(
        Fs::mkfs(
            &*d,
            &MkfsOptions {
                label,
                ..Default::default()
            },
        ),
        dev,
    )?;
    println!(
        "udax: made a file system on {dev} ({}, {:?}): {} MiB data, uuid {}",
        format!("{:?}", d.info().kind).to_lowercase(),
        d.info().persistence,
        (sb.data_blocks() * 4096) >> 20,
        sb.uuid_str()
    );
    Ok(())
}

/// mkfs of an existing device `d`: never over a udax file system without
/// `force` (as mkfs.xfs without -f), and never to a different size.
fn may_overwrite(dev: &str, d: &dyn Device, size: Option<u64>, force: bool) -> AnyResult<()> {
    match Fs::read_superblock(d) {
        Ok(sb) if !force => {
            return Err(format!(
                "{dev} already holds a udax file system (label {:?}, {} MiB, uuid {}): \
                 use --force to overwrite it",
                sb.label_str(),
                d.len() >> 20,
                sb.uuid_str()
            ))
        }
        Err(udax::Error::Format(udax::layout::FormatError::UnsupportedVersion(v))) if !force => {
            return Err(format!(
                "{dev} holds a udax file system of format version {v}: use --force to overwrite it"
            ))
        }
        // A udax superblock that does not verify: still someone's file system.
        Err(e @ udax::Error::Corrupted { .. }) if !force => {
            return Err(format!(
                "{dev} holds a damaged udax file system ({e}): `udax fsck --repair` may save it; \
                 use --force to overwrite it"
            ))
        }
        _ => {}
    }
    match size {
        Some(want) if want != d.len() => Err(format!(
            "{dev} is {} bytes, --size asks for {want}: mkfs does not grow or shrink \
             an existing device (leave out --size, or remove the file first)",
            d.len()
        )),
        _ => Ok(()),
    }
}

/// The last component of `path` is `.` or `..`: it names a directory by
/// where it is reached from, not an entry to remove.
fn ends_in_dot(path: &str) -> bool {
    matches!(
        path.trim_end_matches('/').rsplit('/').next(),
        Some("." | "..")
    )
}

fn remove_tree(fs: &Meta, path: &str) -> Result<(), udax::Error> {
    // A symbolic link is removed, never followed into.
    if fs.lstat(path)?.is_dir() {
        for e in fs.read_dir(path)? {
            remove_tree(fs, &format!("{}/{}", path.trim_end_matches('/'), e.name))?;
        }
        fs.rmdir(path)
    } else {
        fs.unlink(path)
    }
}

fn run(cli: Cli) -> AnyResult<()> {
    let def = cli.device.as_deref();
    let _ = MOUNT_OPTS.set(MountOptions {
        read_only: cli.read_only || cli.salvage,
        salvage: cli.salvage,
    });
    match cli.cmd {
        Cmd::Mkfs {
            dev,
            size,
            label,
            force,
        } => mkfs(&dev, size.as_deref(), label, force)?,
        Cmd::Info { dev, json } => info_cmd(dev, json)?,
        Cmd::Ls { target: t, long } => ls_cmd(t, long, def)?,
        Cmd::Stat {
            target: t,
            json,
            mmap,
        } => stat_cmd(t, json, mmap, def)?,
        Cmd::Cat { target: t } => cat_cmd(t, def)?,
        Cmd::Cp {
            src,
            dst,
            reflink: false,
        } => {
            let n = copy(&src, &dst, def)?;
            eprintln!("udax: copied {n} bytes");
        }
        Cmd::Cp {
            src,
            dst,
            reflink: true,
        } => reflink_cmd(&src, &dst, def)?,
        Cmd::Dedupe {
            src,
            dst,
            src_offset,
            dst_offset,
            length,
        } => dedupe_cmd(src, dst, src_offset, dst_offset, length, def)?,
        Cmd::Mkdir { target: t, parents } => mkdir_cmd(t, parents, def)?,
        Cmd::Rm {
            target: arg,
            recursive,
        } => rm_cmd(arg, recursive, def)?,
        Cmd::Mv { src, dst } => mv_cmd(&src, &dst, def)?,
        Cmd::Ln {
            target: t,
            link,
            symbolic,
        } => ln_cmd(&t, &link, symbolic, def)?,
        Cmd::Readlink { target: t } => {
            let t = target(&t, def)?;
            let fs = Meta::open(&t.dev, true)?;
            let l = ctx(fs.readlink(&t.path), &t.path)?;
            println!("{}", String::from_utf8_lossy(&l));
            fs.finish(&t.dev)?;
        }
        Cmd::Truncate { target: t, size } => truncate_cmd(&t, &size, def)?,
        Cmd::Fallocate {
            target: t,
            offset,
            length,
            keep_size,
            punch_hole,
            zero_range,
            collapse_range,
            insert_range,
        } => {
            // fallocate(1)'s flags as one fallocate(2) mode.
            let mode = [
                (keep_size, falloc::KEEP_SIZE),
                (punch_hole, falloc::PUNCH_HOLE | falloc::KEEP_SIZE),
                (zero_range, falloc::ZERO_RANGE),
                (collapse_range, falloc::COLLAPSE_RANGE),
                (insert_range, falloc::INSERT_RANGE),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .fold(0, |m, (_, bit)| m | bit);
            fallocate_cmd(t, &offset, &length, mode, def)?
        }
        Cmd::Fsck { dev, json, repair } => fsck_cmd(dev, json, repair)?,
        Cmd::Migrate {
            src,
            dst,
            size,
            force,
        } => migrate_cmd(&src, &dst, size.as_deref(), force)?,
        Cmd::InjectPoison {
            dev,
            offset,
            len,
            json,
        } => inject_poison_cmd(dev, offset, len, json)?,
        Cmd::ClearPoison { dev, offset, len } => {
            let fs = mount(&dev)?;
            let n = ctx(fs.clear_poison(size_arg(&offset)?, size_arg(&len)?), &dev)?;
            println!("{dev}: {n} blocks cleared and returned to free space");
            ctx(fs.unmount(), &dev)?;
        }
        Cmd::Df { dev } => df_cmd(dev)?,
        Cmd::Mount { dev, dir, options } => mount_cmd(&dev, &dir, &options)?,
        Cmd::Umount { dir, lazy } => ctx(
            udax::client::mount::unmount(std::path::Path::new(&dir), lazy),
            &dir,
        )?,
        Cmd::Serve {
            dev,
            foreground,
            idle,
        } => serve::serve_cmd(&dev, foreground, idle)?,
        Cmd::Demo => demo::run()?,
        Cmd::Bench(args) => bench::run(&args)?,
    }
    Ok(())
}

/// `udax mount DEV DIR -o OPTIONS`.
fn mount_cmd(dev: &str, dir: &str, options: &str) -> AnyResult<()> {
    use udax::client::mount;
    let opts = ctx(mount::MountOptions::parse(options), options)?;
    let exe = ctx(std::env::current_exe(), "udax executable")?;
    let connect = udax::client::ConnectOptions {
        start: Some(exe),
        ..Default::default()
    };
    let path = std::path::Path::new(dir);
    ctx(
        mount::mount(std::path::Path::new(dev), path, &opts, &connect),
        &format!("mount {dev} on {dir}"),
    )
}

/// `udax cp --reflink`.
fn reflink_cmd(src: &str, dst: &str, def: Option<&str>) -> AnyResult<()> {
    let s = target(src, def)?;
    let d = target(dst, Some(&s.dev))?;
    if !same_device(&s.dev, &d.dev) {
        return Err(format!(
            "{src} -> {dst}: --reflink needs both files on one udax device"
        ));
    }
    let fs = mount(&s.dev)?;
    let inp = ctx(fs.open(&s.path, &OpenOptions::read_only()), src)?;
    not_same_file(&fs, &inp, &d.path, src, dst)?;
    let out = ctx(fs.open(&d.path, &OpenOptions::create()), dst)?;
    ctx(fs.clone_file(&inp, &out), &format!("{src} -> {dst}"))?;
    let n = out.len();
    drop((inp, out));
    ctx(fs.unmount(), &s.dev)?;
    eprintln!("udax: cloned {n} bytes (blocks shared)");
    Ok(())
}

/// `udax mv`.
fn mv_cmd(src: &str, dst: &str, def: Option<&str>) -> AnyResult<()> {
    let s = target(src, def)?;
    let d = target(dst, Some(&s.dev))?;
    if !same_device(&s.dev, &d.dev) {
        return Err(format!("{src} -> {dst}: {}", udax::Error::CrossDevice));
    }
    let fs = Meta::open(&s.dev, false)?;
    ctx(
        fs.rename(&s.path, &d.path),
        &format!("{} -> {}", s.path, d.path),
    )?;
    fs.finish(&s.dev)
}

/// `udax ln [-s]`.
fn ln_cmd(t: &str, link: &str, symbolic: bool, def: Option<&str>) -> AnyResult<()> {
    let l = target(link, def)?;
    let fs = Meta::open(&l.dev, false)?;
    if symbolic {
        // The target is text, not a path on any device.
        ctx(fs.symlink(t.as_bytes(), &l.path), &l.path)?;
    } else {
        let s = target(t, Some(&l.dev))?;
        if !same_device(&s.dev, &l.dev) {
            return Err(format!("{t} -> {link}: {}", udax::Error::CrossDevice));
        }
        ctx(
            fs.link(&s.path, &l.path),
            &format!("{} -> {}", s.path, l.path),
        )?;
    }
    fs.finish(&l.dev)
}

/// `udax truncate`.
fn truncate_cmd(t: &str, size: &str, def: Option<&str>) -> AnyResult<()> {
    let t = target(t, def)?;
    let size = size_arg(size)?;
    let fs = mount(&t.dev)?;
    let f = ctx(fs.open(&t.path, &OpenOptions::create()), &t.path)?;
    ctx(f.set_len(size), &t.path)?;
    drop(f);
    ctx(fs.unmount(), &t.dev)?;
    Ok(())
}

/// `udax info`.
fn info_cmd(dev: String, json: bool) -> AnyResult<()> {
    let fs = mount_ro(&dev)?;
    let info = fs.device().info().clone();
    let sb = fs.superblock().clone();
    let st = fs.statfs();
    let j = fs.journal_stats();
    let a = fs.alloc_stats();
    if json {
        let v = serde_json::json!({"device": info, "superblock": sb, "uuid": sb.uuid_str(), "statfs": st, "journal": j, "alloc": a});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("device:       {} ({:?})", info.path, info.kind);
        println!(
            "persistence:  {:?} (flush: {:?})",
            info.persistence, info.flush
        );
        println!("page size:    {}", info.page_size);
        println!("size:         {} MiB", info.len >> 20);
        println!(
            "uuid:         {}  label: {:?}",
            sb.uuid_str(),
            sb.label_str()
        );
        println!(
            "data:         {} MiB, {} MiB free, {} free 2 MiB chunks",
            (st.data_blocks * 4096) >> 20,
            (st.free_blocks * 4096) >> 20,
            a.free_chunks
        );
        if sb.version() == 2 {
            println!(
                "format:       2 (the older format: `udax migrate {dev} NEW` copies it onto \
                 format 3)"
            );
        } else {
            println!("format:       {}", sb.version());
        }
        println!("inodes:       {}", st.inodes);
        let room = if st.metadata_capacity == 0 {
            "in the data area, no fixed bound".to_string()
        } else {
            format!("of {} KiB", st.metadata_capacity >> 10)
        };
        println!(
            "metadata:     {} KiB {room}; log {} of {} KiB (epoch {})",
            st.metadata_bytes >> 10,
            j.log_used >> 10,
            j.log_bytes >> 10,
            j.epoch
        );
    }
    Ok(())
}

/// `udax ls`.
fn ls_cmd(t: String, long: bool, def: Option<&str>) -> AnyResult<()> {
    let t = target(&t, def)?;
    let fs = Meta::open(&t.dev, true)?;
    for e in ctx(fs.read_dir(&t.path), &t.path)? {
        if long {
            let p = format!("{}/{}", t.path.trim_end_matches('/'), e.name);
            let st = ctx(fs.lstat(&p), &p)?;
            let to = if st.is_symlink() {
                format!(
                    " -> {}",
                    String::from_utf8_lossy(&ctx(fs.readlink(&p), &p)?)
                )
            } else {
                String::new()
            };
            println!(
                "{}{} {:>3} {:>12} {:>8} {}{to}",
                type_char(&st),
                mode_string(st.mode),
                st.nlink,
                st.size,
                st.blocks / 8,
                e.name
            );
        } else {
            println!("{}", e.name);
        }
    }
    Ok(())
}

/// `udax stat`.
/// Load one byte of every 4 KiB page of a read-only mapping of `len` bytes
/// at `p`, but the pages on media errors (they would raise SIGBUS).
fn read_every_page(p: *const u8, len: usize, poisoned: &[(u64, u64)]) {
    let bad = |o: u64| poisoned.iter().any(|&(a, l)| (a..a + l).contains(&o));
    let mut sum = 0u64;
    for off in (0..len).step_by(4096).filter(|&o| !bad(o as u64)) {
        // SAFETY: callers pass a live read-only mapping of `len` bytes;
        // the page has no media error (that would raise SIGBUS).
        sum += unsafe { p.add(off).read_volatile() } as u64;
    }
    std::hint::black_box(sum);
}

fn stat_cmd(t: String, json: bool, mmap: bool, def: Option<&str>) -> AnyResult<()> {
    let t = target(&t, def)?;
    let m = Meta::open(&t.dev, true)?;
    // Of a symbolic link itself, as stat(1) without -L.
    let st = ctx(m.lstat(&t.path), &t.path)?;
    // Extents, media errors, sharing and (with --mmap) the mapping
    // counters: from the embedded mount, or from a client's lease and its
    // own fault engine when an owner serves the device.
    let (poisoned, extents, shared, faults) = match &m {
        _ if !st.is_file() => (Vec::new(), serde_json::json!([]), 0, None),
        Meta::Local(fs) => {
            let f = ctx(fs.open(&t.path, &OpenOptions::read_only()), &t.path)?;
            let poisoned = f.poisoned_ranges();
            let faults = if mmap && st.size > 0 {
                let m = ctx(
                    f.mmap(
                        0,
                        st.size as usize,
                        udax::Prot::Read,
                        udax::MapFlags::SHARED,
                    ),
                    &t.path,
                )?;
                read_every_page(m.as_ptr(), m.len(), &poisoned);
                Some(fs.dax_stats())
            } else {
                None
            };
            (
                poisoned,
                serde_json::json!(f.extents()),
                f.shared_blocks(),
                faults,
            )
        }
        Meta::Owner(c) => {
            let f = ctx(c.open(&t.path, false, false, 0), &t.path)?;
            let poisoned = ctx(f.poisoned_ranges(), &t.path)?;
            let ext = ctx(f.extents(), &t.path)?;
            let shared = ext.iter().filter(|e| e.3).map(|e| e.2).sum();
            let extents: Vec<serde_json::Value> = ext
                .iter()
                .map(|&(file_blk, dev_blk, len, _)| {
                    serde_json::json!({ "file_blk": file_blk, "dev_blk": dev_blk, "len": len })
                })
                .collect();
            let faults = if mmap && st.size > 0 {
                let m = ctx(
                    f.mmap(
                        0,
                        st.size as usize,
                        udax::Prot::Read,
                        udax::MapFlags::SHARED,
                    ),
                    &t.path,
                )?;
                read_every_page(m.as_ptr(), m.len(), &poisoned);
                c.dax_stats()
            } else {
                None
            };
            (poisoned, serde_json::json!(extents), shared, faults)
        }
    };
    let link = if st.is_symlink() {
        Some(String::from_utf8_lossy(&ctx(m.readlink(&t.path), &t.path)?).into_owned())
    } else {
        None
    };
    if json {
        let mut j = serde_json::to_value(st).unwrap_or_default();
        if let Some(o) = j.as_object_mut() {
            if let Some(l) = &link {
                o.insert("target".into(), serde_json::json!(l));
            }
            if let Some(s) = faults {
                o.insert("mmap".into(), serde_json::to_value(s).unwrap_or_default());
            }
            o.insert("poisoned".into(), serde_json::json!(poisoned));
            o.insert("extents".into(), extents);
            o.insert("shared_blocks".into(), serde_json::json!(shared));
        }
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
    } else {
        if let Some(s) = faults {
            println!(
                "  mmap: {} faults ({} by the kernel in a system call); {} 2 MiB mappings, {} 4 KiB-entry mappings, {} zero-page maps (holes); {} windows past end of file, {} ranges shown through them",
                s.faults, s.kernel_faults, s.pmd_maps, s.pte_maps, s.zero_maps, s.windows, s.continued
            );
        }
        print_stat(&t.path, &st, Some(shared));
        if let Some(l) = &link {
            println!("  target: {l}");
        }
        if matches!(m, Meta::Owner(_)) {
            println!("  (served by the device's owner; this command is one of its clients)");
        }
        if !poisoned.is_empty() {
            let list: Vec<String> = poisoned
                .iter()
                .map(|(o, l)| format!("{o}..{} ({l} bytes)", o + l))
                .collect();
            println!("  media errors (reads fail with EIO): {}", list.join(", "));
        }
    }
    Ok(())
}

/// The attribute lines of `udax stat` (with the shared block count if known).
fn print_stat(path: &str, st: &udax::fs::Stat, shared: Option<u64>) {
    println!("  file: {path}");
    println!(
        "  type: {}  mode: {:o}  inode: {}  links: {}",
        if st.is_dir() {
            "directory"
        } else if st.is_symlink() {
            "symbolic link"
        } else {
            "regular file"
        },
        st.mode & 0o7777,
        st.ino,
        st.nlink
    );
    print!(
        "  size: {}  blocks (512 B): {}  io block: {}",
        st.size, st.blocks, st.blksize
    );
    match shared {
        Some(n) => println!("  shared (reflink): {n} blocks"),
        None => println!(),
    }
    println!(
        "  mtime: {} ns  ctime: {} ns  btime: {} ns",
        st.mtime_ns, st.ctime_ns, st.btime_ns
    );
}

/// `udax cat`.
fn cat_cmd(t: String, def: Option<&str>) -> AnyResult<()> {
    let t = target(&t, def)?;
    let m = Meta::open(&t.dev, true)?;
    let f = ctx(m.open_file(&t.path, false), &t.path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    let mut out = std::io::stdout().lock();
    loop {
        let n = ctx(f.read_at(&mut buf, off), &t.path)?;
        if n == 0 {
            break;
        }
        if out.write_all(&buf[..n]).is_err() {
            break; // closed pipe
        }
        off += n as u64;
    }
    Ok(())
}

/// `udax dedupe`.
fn dedupe_cmd(
    src: String,
    dst: String,
    src_offset: String,
    dst_offset: String,
    length: Option<String>,
    def: Option<&str>,
) -> AnyResult<()> {
    let s = target(&src, def)?;
    let d = target(&dst, Some(&s.dev))?;
    if !same_device(&s.dev, &d.dev) {
        return Err(format!("{src} -> {dst}: both files must be on one device"));
    }
    let (so, dof) = (size_arg(&src_offset)?, size_arg(&dst_offset)?);
    let fs = mount(&s.dev)?;
    let a = ctx(fs.open(&s.path, &OpenOptions::read_only()), &src)?;
    let b = ctx(fs.open(&d.path, &OpenOptions::read_write()), &dst)?;
    let len = match length {
        Some(l) => size_arg(&l)?,
        None => a.len().saturating_sub(so),
    };
    let r = ctx(
        fs.dedupe_range(&a, so, &b, dof, len),
        &format!("{src} {dst}"),
    )?;
    drop((a, b));
    ctx(fs.unmount(), &s.dev)?;
    if r.differs {
        println!("differs: nothing shared");
    } else {
        println!("deduped {} bytes", r.bytes_deduped);
    }
    Ok(())
}

/// `udax mkdir`.
fn mkdir_cmd(t: String, parents: bool, def: Option<&str>) -> AnyResult<()> {
    let t = target(&t, def)?;
    let fs = Meta::open(&t.dev, false)?;
    if parents {
        let mut p = String::new();
        for c in t.path.split('/').filter(|c| !c.is_empty()) {
            p.push('/');
            p.push_str(c);
            match fs.mkdir(&p, 0o755) {
                Ok(()) | Err(udax::Error::Exists) => {}
                Err(e) => return Err(format!("{p}: {e}")),
            }
        }
    } else {
        ctx(fs.mkdir(&t.path, 0o755), &t.path)?;
    }
    fs.finish(&t.dev)
}

/// `udax rm`.
fn rm_cmd(arg: String, recursive: bool, def: Option<&str>) -> AnyResult<()> {
    let t = target(&arg, def)?;
    // Both refusals come before anything is removed (coreutils' rm).
    if ends_in_dot(&t.path) {
        return Err(format!(
            "refusing to remove '.' or '..' directory: skipping '{arg}'"
        ));
    }
    let fs = Meta::open(&t.dev, false)?;
    let root = ctx(fs.stat("/"), &t.dev)?.ino;
    if recursive && fs.stat(&t.path).is_ok_and(|st| st.ino == root) {
        return Err(format!(
            "it is dangerous to operate recursively on '{arg}' (the root directory): nothing removed"
        ));
    }
    if recursive {
        ctx(remove_tree(&fs, &t.path), &t.path)?;
    } else {
        ctx(fs.unlink(&t.path), &t.path)?;
    }
    fs.finish(&t.dev)
}

/// `udax fallocate`.
fn fallocate_cmd(
    t: String,
    offset: &str,
    length: &str,
    mode: u32,
    def: Option<&str>,
) -> AnyResult<()> {
    let t = target(&t, def)?;
    let (off, len) = (size_arg(offset)?, size_arg(length)?);
    let fs = mount(&t.dev)?;
    let f = ctx(fs.open(&t.path, &OpenOptions::create()), &t.path)?;
    ctx(f.fallocate(mode, off, len), &t.path)?;
    drop(f);
    ctx(fs.unmount(), &t.dev)?;
    Ok(())
}

/// `udax fsck`.
fn migrate_cmd(src: &str, dst: &str, size: Option<&str>, force: bool) -> AnyResult<()> {
    use std::os::unix::fs::MetadataExt;
    let same = match (std::fs::metadata(src), std::fs::metadata(dst)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => src == dst,
    };
    if same {
        return Err(format!(
            "{src} and {dst} are the same device: migrate to another one (a file on /dev/shm, \
             say), then back"
        ));
    }
    let sdev = open_dev(src, None)?;
    let from = mount_dev(sdev.clone(), src, &mount_options(true))?;
    let sb = from.superblock().clone();
    let existed = std::path::Path::new(dst).exists();
    let r = migrate_into(&from, dst, size, force, existed, sdev.len());
    if r.is_err() && !existed && std::path::Path::new(dst).is_file() {
        // Best effort: the error that matters is already in `r`.
        let _ = std::fs::remove_file(dst);
    }
    let (report, uuid) = r?;
    for (path, why) in &report.left_out {
        eprintln!("udax: {src}:{path}: left out: {why}");
    }
    if !report.left_out.is_empty() {
        EXIT_CODE.store(1, std::sync::atomic::Ordering::Relaxed);
    }
    println!(
        "udax: migrated {src} (format {}) to {dst} (format 3, uuid {uuid}): {} directories, \
         {} files, {} hard links, {} symbolic links, {} special files; {} MiB copied, {} MiB \
         shared; {} left out",
        sb.version(),
        report.dirs,
        report.files,
        report.hard_links,
        report.symlinks,
        report.specials,
        report.bytes_copied >> 20,
        report.bytes_shared >> 20,
        report.left_out.len(),
    );
    Ok(())
}

/// Make a format-3 file system on `dst` and copy `from` onto it; checked
/// by fsck. Its report and UUID.
fn migrate_into(
    from: &Fs,
    dst: &str,
    size: Option<&str>,
    force: bool,
    existed: bool,
    src_len: u64,
) -> AnyResult<(udax::migrate::Report, String)> {
    let size = size.map(size_arg).transpose()?;
    let d = if existed {
        let d = open_dev(dst, None)?;
        may_overwrite(dst, &*d, size, force)?;
        d
    } else {
        open_dev(dst, Some(size.unwrap_or(src_len)))?
    };
    let sb = ctx(
        Fs::mkfs(
            &*d,
            &MkfsOptions {
                label: from.superblock().label_str(),
                format: 3,
            },
        ),
        dst,
    )?;
    let to = mount_dev(d.clone(), dst, &MountOptions::default())?;
    let totals = udax::migrate::totals(from);
    let pb = progress(totals.bytes);
    let report = ctx(
        udax::migrate::copy_all(from, &to, &mut |p| {
            if let Some(pb) = &pb {
                pb.set_position(p.bytes);
            }
        }),
        "migrate",
    )?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    ctx(to.unmount(), dst)?;
    let check = ctx(udax::fs::fsck(d), dst)?;
    if check.exit_code() != 0 {
        return Err(format!(
            "{dst}: the copy does not check clean (run `udax fsck {dst}`): {:?}",
            check.problems
        ));
    }
    Ok((report, sb.uuid_str()))
}

fn fsck_cmd(dev: String, json: bool, repair: bool) -> AnyResult<()> {
    let d = open_dev(&dev, None)?;
    let r = match if repair {
        udax::fs::fsck_repair(d)
    } else {
        udax::fs::fsck(d.clone())
    } {
        Ok(r) => r,
        Err(e @ udax::Error::Corrupted { .. }) => {
            // Damage no salvage reads past: an error left.
            EXIT_CODE.store(4, std::sync::atomic::Ordering::Relaxed);
            eprintln!("udax: {dev}: {e}");
            return Ok(());
        }
        Err(e) => {
            EXIT_CODE.store(8, std::sync::atomic::Ordering::Relaxed);
            eprintln!("udax: {dev}: {e}");
            return Ok(());
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        for d in &r.damage {
            println!(
                "damage: {} at device offset {:#x} (--repair: {})",
                d.what, d.device_offset, d.salvage
            );
        }
        for l in &r.repaired {
            println!("repaired: {l}");
        }
        let verb = if r.repaired.is_empty() {
            "a repair would lose"
        } else {
            "lost"
        };
        for l in &r.lost {
            println!("{verb}: {l}");
        }
        for p in &r.problems {
            let at = p
                .device_offset
                .map(|o| format!(" at device offset {o:#x}"))
                .unwrap_or_default();
            let ino = p.ino.map(|i| format!("inode {i}: ")).unwrap_or_default();
            println!("problem: {ino}{}{at}", p.what);
        }
        for b in &r.bad_blocks {
            let owners: Vec<String> = b.owners.iter().map(owner_text).collect();
            println!(
                "media error: device block {} (offset {:#x}): {}{}",
                b.dev_blk,
                b.dev_blk * udax::BLOCK_SIZE,
                owners.join("; "),
                if b.paths.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", b.paths.join(", "))
                }
            );
        }
        println!(
            "{dev}: {} — {} files, {} directories, {} blocks used ({} shared), {} free; epoch {}, {} log records replayed{}{}{}",
            match r.exit_code() {
                0 => "clean",
                1 => "REPAIRED",
                _ => "NOT CLEAN",
            },
            r.files, r.directories, r.used_blocks, r.shared_blocks, r.free_blocks, r.checkpoint_epoch, r.log_records_replayed,
            r.torn_log_tail_at.map(|o| format!(", torn log tail discarded at {o:#x}")).unwrap_or_default(),
            if r.unacknowledged_records == 0 { String::new() } else { format!(" ({} unacknowledged records after it)", r.unacknowledged_records) },
            if r.orphans.is_empty() { String::new() } else { format!(", {} orphans to reclaim at mount", r.orphans.len()) },
        );
    }
    EXIT_CODE.store(r.exit_code(), std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// `udax inject-poison`.
fn inject_poison_cmd(dev: String, offset: String, len: String, json: bool) -> AnyResult<()> {
    let (off, n) = (size_arg(&offset)?, size_arg(&len)?);
    let fs = match Meta::open(&dev, false)? {
        Meta::Local(fs) => fs,
        // An owner serves the device: it records the error and tells every
        // client that maps a page on it.
        Meta::Owner(c) => {
            let pages = ctx(c.inject_poison(off, n), &dev)?;
            if json {
                println!("{}", serde_json::json!({ "file_pages": pages }));
            } else {
                println!(
                    "{dev}: media error recorded through the owner; {pages} file page(s) on it"
                );
            }
            return Ok(());
        }
    };
    let rep = ctx(fs.inject_poison(off, n), &dev)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rep).unwrap_or_default());
    } else {
        let (b, n) = rep.blocks;
        println!(
            "{dev}: media error recorded on device blocks {b}..{}",
            b + n
        );
        for (blk, o) in &rep.owners {
            println!("  block {blk}: {}", owner_text(o));
        }
    }
    ctx(fs.unmount(), &dev)?;
    Ok(())
}

/// `udax df`.
fn df_cmd(dev: String) -> AnyResult<()> {
    let fs = Meta::open(&dev, true)?;
    let s = ctx(fs.statfs(), &dev)?;
    let used = s.data_blocks - s.free_blocks;
    println!(
        "{:<24} {:>12} {:>12} {:>12} {:>5}",
        "device", "size KiB", "used KiB", "free KiB", "use%"
    );
    println!(
        "{:<24} {:>12} {:>12} {:>12} {:>4}%",
        dev,
        s.data_blocks * 4,
        used * 4,
        s.free_blocks * 4,
        (used * 100).checked_div(s.data_blocks).unwrap_or(0)
    );
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("UDAX_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Die quietly on a closed pipe (`udax cat ... | head`), as coreutils do.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(EXIT_CODE.load(std::sync::atomic::Ordering::Relaxed)),
        Err(e) => {
            eprintln!("udax: {e}");
            ExitCode::FAILURE
        }
    }
}
