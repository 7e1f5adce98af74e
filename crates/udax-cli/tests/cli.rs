//! The `udax` binary end to end on a tmpfs device file.

use std::process::{Command, Output};

fn udax(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_udax"))
        .args(args)
        .env_remove("UDAX_DEVICE")
        .output()
        .expect("run udax")
}

fn ok(args: &[&str]) -> String {
    let o = udax(args);
    assert!(
        o.status.success(),
        "udax {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn cli_round_trip_on_a_shm_device() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let dev = dir.path().join("u.img");
    let dev = dev.to_str().unwrap();
    let host = dir.path().join("host.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&host, &data).unwrap();

    ok(&["mkfs", dev, "--size", "64M", "--label", "t"]);
    ok(&["mkdir", "-p", &format!("{dev}:/a/b")]);
    ok(&["cp", host.to_str().unwrap(), &format!("{dev}:/a/b/f")]);
    let ls = ok(&["ls", "-l", &format!("{dev}:/a/b")]);
    assert!(ls.contains("3000000") && ls.contains(" f"), "{ls}");
    let back = dir.path().join("back.bin");
    ok(&["cp", &format!("{dev}:/a/b/f"), back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    ok(&["mv", &format!("{dev}:/a/b/f"), &format!("{dev}:/g")]);
    ok(&["truncate", "--size", "4096", &format!("{dev}:/g")]);
    let st = ok(&["stat", "--json", &format!("{dev}:/g")]);
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(v["size"], 4096);
    ok(&["fallocate", "-l", "1M", &format!("{dev}:/g")]);
    let out = Command::new(env!("CARGO_BIN_EXE_udax"))
        .args(["cat", "/g"])
        .env("UDAX_DEVICE", dev)
        .output()
        .unwrap();
    assert_eq!(out.stdout.len(), 1 << 20);
    assert_eq!(&out.stdout[..4096], &data[..4096]);
    ok(&["rm", "-r", &format!("{dev}:/a")]);
    let fsck = ok(&["fsck", "--json", dev]);
    let v: serde_json::Value = serde_json::from_str(&fsck).unwrap();
    assert_eq!(v["clean"], true);
    let info = ok(&["info", dev]);
    assert!(
        info.contains("Shm") && info.contains("persistence"),
        "{info}"
    );
    assert!(ok(&["df", dev]).contains("use%"));
}

#[test]
fn cli_cp_reflink_and_dedupe() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let dev = dir.path().join("u.img");
    let dev = dev.to_str().unwrap();
    let host = dir.path().join("host.bin");
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&host, &data).unwrap();
    ok(&["mkfs", dev, "--size", "64M"]);
    ok(&["cp", host.to_str().unwrap(), &format!("{dev}:/a")]);
    ok(&["cp", host.to_str().unwrap(), &format!("{dev}:/twin")]);
    let fsck = |want_shared: u64| {
        let v: serde_json::Value = serde_json::from_str(&ok(&["fsck", "--json", dev])).unwrap();
        assert_eq!(v["clean"], true);
        assert_eq!(v["shared_blocks"], want_shared, "{v}");
        v["used_blocks"].as_u64().unwrap()
    };
    let blocks = 1_000_000u64.div_ceil(4096);
    assert_eq!(fsck(0), 2 * blocks);
    let o = udax(&[
        "cp",
        "--reflink",
        &format!("{dev}:/a"),
        &format!("{dev}:/b"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cloned 1000000 bytes"));
    assert_eq!(fsck(blocks), 2 * blocks, "the clone used no space");
    let st: serde_json::Value =
        serde_json::from_str(&ok(&["stat", "--json", &format!("{dev}:/b")])).unwrap();
    assert_eq!(st["shared_blocks"], blocks);
    let back = dir.path().join("back.bin");
    ok(&["cp", &format!("{dev}:/b"), back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    // The twin has equal bytes: dedupe shares its blocks too.
    let out = ok(&["dedupe", &format!("{dev}:/a"), &format!("{dev}:/twin")]);
    assert_eq!(out.trim(), "deduped 1000000 bytes");
    assert_eq!(fsck(blocks), blocks);
    // Unequal files: nothing shared.
    ok(&["truncate", "--size", "8192", &format!("{dev}:/other")]);
    let out = ok(&[
        "dedupe",
        "--length",
        "8192",
        &format!("{dev}:/a"),
        &format!("{dev}:/other"),
    ]);
    assert_eq!(out.trim(), "differs: nothing shared");
    let o = udax(&[
        "dedupe",
        "--src-offset",
        "100",
        &format!("{dev}:/a"),
        &format!("{dev}:/b"),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("block aligned"));
}

#[test]
fn cli_errors_are_one_line_and_nonzero() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let dev = dir.path().join("u.img");
    let dev = dev.to_str().unwrap();
    ok(&["mkfs", dev, "--size", "8M"]);
    for args in [
        vec!["cat".to_string(), format!("{dev}:/missing")],
        vec!["ls".to_string(), "/nowhere".to_string()],
        vec!["mkfs".to_string(), "memfd:12Q".to_string()],
        vec!["info".to_string(), "/dev/null".to_string()],
        vec![
            "bench".to_string(),
            "--only".to_string(),
            "P1,P42".to_string(),
        ],
    ] {
        let o = udax(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        assert!(!o.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("udax: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let help = ok(&["--help"]);
    assert!(help.contains("DEV:/path") && help.contains("fallocate"));
}

/// The mmap part of the demo as an unprivileged user where
/// `vm.unprivileged_userfaultfd=0`: udax falls back to a user-mode-only
/// userfaultfd, says so, and the demo's checks (which need no kernel-context
/// fault on an unresolved page) all pass. Needs root to switch users.
#[test]
fn demo_runs_unprivileged_with_user_mode_only_userfaultfd() {
    let sysctl =
        std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd").unwrap_or_default();
    let root = rustix::process::geteuid().is_root();
    let runuser = std::path::Path::new("/usr/sbin/runuser").exists()
        || std::path::Path::new("/sbin/runuser").exists();
    if !root || !runuser || sysctl.trim() != "0" {
        eprintln!(
            "SKIPPED demo_runs_unprivileged_with_user_mode_only_userfaultfd: needs root and runuser, \
             and vm.unprivileged_userfaultfd=0 (root={root}, runuser={runuser}, sysctl={})",
            sysctl.trim()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("udax");
    std::fs::copy(env!("CARGO_BIN_EXE_udax"), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&bin)
        .arg("demo")
        .output()
        .expect("runuser");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "demo as nobody failed: {err}\n{out}");
    assert!(err.contains("user-mode only"), "no fallback warning: {err}");
    assert!(
        out.contains("store into the hole: allocated by the fault"),
        "{out}"
    );
    assert!(out.contains("got SIGBUS (BUS_ADRERR"), "{out}");
}

#[test]
fn e1_e4_cli_inject_poison_stat_fsck_and_clear_by_rewrite() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let dev = dir.path().join("p.img");
    let dev = dev.to_str().unwrap();
    let host = dir.path().join("h.bin");
    let data: Vec<u8> = (0..5 * 4096u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&host, &data).unwrap();
    ok(&["mkfs", dev, "--size", "64M"]);
    ok(&["cp", host.to_str().unwrap(), &format!("{dev}:/f")]);
    let st: serde_json::Value =
        serde_json::from_str(&ok(&["stat", "--json", &format!("{dev}:/f")])).unwrap();
    let first = st["extents"][0]["dev_blk"].as_u64().unwrap();
    let bad = (first + 2) * 4096;
    let out = ok(&["inject-poison", dev, &bad.to_string(), "100"]);
    assert!(out.contains("at file offset 8192"), "{out}");
    // stat lists the range; cat fails with EIO; fsck names the owner.
    let stat = ok(&["stat", &format!("{dev}:/f")]);
    assert!(
        stat.contains("media errors") && stat.contains("8192..12288"),
        "{stat}"
    );
    let o = udax(&["cat", &format!("{dev}:/f")]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("media error"),
        "{o:?}"
    );
    // A media error in a file is an error left: exit 4, as e2fsck.
    let o = udax(&["fsck", "--json", dev]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    let fsck: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(fsck["bad_blocks"][0]["dev_blk"], first + 2);
    assert_eq!(fsck["bad_blocks"][0]["owners"][0]["kind"], "file");
    assert_eq!(fsck["bad_blocks"][0]["owners"][0]["file_off"], 8192);
    assert_eq!(
        fsck["bad_blocks"][0]["paths"][0], "/f",
        "owners named by path"
    );
    // Rewriting the file whole clears the error.
    ok(&["cp", host.to_str().unwrap(), &format!("{dev}:/f")]);
    let back = dir.path().join("back.bin");
    ok(&["cp", &format!("{dev}:/f"), back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    // cp truncated the file first: the bad block was freed and stays
    // quarantined (owned by nobody) until clear-poison zeroes it.
    let stat = ok(&["stat", &format!("{dev}:/f")]);
    assert!(!stat.contains("media errors"), "{stat}");
    let fsck: serde_json::Value = serde_json::from_str(&ok(&["fsck", "--json", dev])).unwrap();
    assert_eq!(fsck["bad_blocks"][0]["owners"][0]["kind"], "free", "{fsck}");
    let out = ok(&["clear-poison", dev, &bad.to_string()]);
    assert!(out.contains("1 blocks cleared"), "{out}");
    let fsck: serde_json::Value = serde_json::from_str(&ok(&["fsck", "--json", dev])).unwrap();
    assert_eq!(fsck["bad_blocks"].as_array().unwrap().len(), 0, "{fsck}");
}

/// Patch `bytes` into the image file at `off`.
fn patch(img: &str, off: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

#[test]
fn f8_cli_fsck_reports_damage_with_exit_4_writes_nothing_and_repair_exits_1() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let dev = dir.path().join("d.img");
    let dev = dev.to_str().unwrap();
    let host = dir.path().join("h.bin");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 249) as u8).collect();
    std::fs::write(&host, &data).unwrap();
    ok(&["mkfs", dev, "--size", "16M"]);
    ok(&["cp", host.to_str().unwrap(), &format!("{dev}:/f")]);
    assert_eq!(udax(&["fsck", dev]).status.code(), Some(0));

    // A damaged primary superblock: fsck says so (exit 4) and writes nothing;
    // info (read-only) works through the backup and writes nothing either.
    patch(dev, 64, &[0xff; 4]);
    let before = std::fs::read(dev).unwrap();
    let o = udax(&["fsck", dev]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("damage: primary superblock"), "{out}");
    ok(&["info", dev]);
    ok(&["ls", "-l", &format!("{dev}:/")]);
    ok(&["stat", &format!("{dev}:/f")]);
    ok(&["df", dev]);
    assert!(udax(&["cat", &format!("{dev}:/f")]).stdout == data);
    assert!(
        std::fs::read(dev).unwrap() == before,
        "fsck, info, ls, stat, df or cat wrote"
    );
    let o = udax(&["fsck", "--repair", dev]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("repaired: primary superblock"));
    assert_eq!(udax(&["fsck", dev]).status.code(), Some(0));

    // A zeroed root block header (format 3: one line, rewritten whole at
    // each log truncation, never torn): every command refuses (never an
    // older state); --salvage reads through it; the repair takes the
    // log's epoch and rewrites the header, losing nothing.
    let info: serde_json::Value = serde_json::from_str(&ok(&["info", "--json", dev])).unwrap();
    assert_eq!(info["superblock"]["format"], "3", "{info}");
    patch(dev, 2 * 4096, &[0; 64]);
    let o = udax(&["cat", &format!("{dev}:/f")]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("root block header") && err.lines().count() == 1,
        "{err}"
    );
    let o = udax(&["--salvage", "cat", &format!("{dev}:/f")]);
    assert!(o.status.success(), "{o:?}");
    assert!(o.stdout == data);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("taken from the log"),
        "{o:?}"
    );
    assert_eq!(udax(&["fsck", dev]).status.code(), Some(4));
    let o = udax(&["--salvage", "rm", &format!("{dev}:/f")]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("read-only"),
        "{o:?}"
    );
    let o = udax(&["fsck", "--repair", dev]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("lost:"),
        "{o:?}"
    );
    let o = udax(&["cat", &format!("{dev}:/f")]);
    assert!(
        o.status.success() && o.stdout == data,
        "repaired data differs"
    );
    assert_eq!(udax(&["fsck", dev]).status.code(), Some(0));
}

/// `udax ARGS` fails with one line on stderr, "udax: ...", and no panic;
/// returns that line.
fn fails(args: &[&str]) -> String {
    let o = udax(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "udax {args:?} should fail: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(
        err.starts_with("udax: ") && !err.contains("panicked"),
        "{err}"
    );
    err
}

/// A fresh 16 MiB image in a tmpfs directory holding /f (5 bytes) and
/// /dir/inner: (directory, image path).
fn image_with_files() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let dev = dir.path().join("u.img").to_str().unwrap().to_string();
    let host = dir.path().join("h.txt");
    std::fs::write(&host, b"hello").unwrap();
    ok(&["mkfs", &dev, "--size", "16M", "--label", "keep"]);
    ok(&["cp", host.to_str().unwrap(), &format!("{dev}:/f")]);
    ok(&["mkdir", &format!("{dev}:/dir")]);
    ok(&["cp", host.to_str().unwrap(), &format!("{dev}:/dir/inner")]);
    (dir, dev)
}

/// The image still holds /f ("hello") and /dir/inner, and is clean.
fn assert_files_intact(dev: &str) {
    assert_eq!(udax(&["cat", &format!("{dev}:/f")]).stdout, b"hello");
    assert_eq!(
        udax(&["cat", &format!("{dev}:/dir/inner")]).stdout,
        b"hello"
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&["fsck", "--json", dev])).unwrap();
    assert_eq!(v["clean"], true, "{v}");
}

#[test]
fn cp_onto_the_same_file_refuses_and_leaves_it_whole() {
    let (dir, dev) = image_with_files();
    // A second name for /f: a hard link, made through the library.
    {
        let d = udax::device::open(&dev, &Default::default()).unwrap();
        let fs = udax::fs::Fs::mount(d).unwrap();
        fs.link("/f", "/dir/link").unwrap();
        fs.unmount().unwrap();
    }
    let same_dev = format!("{}/./u.img", dir.path().display());
    for (src, dst) in [
        (format!("{dev}:/f"), format!("{dev}:/f")),
        (format!("{dev}:/f"), format!("{dev}://f")),
        (format!("{dev}:/f"), format!("{dev}:/./dir/../f")),
        (format!("{dev}:/f"), format!("{same_dev}:/f")),
        (format!("{dev}:/dir/link"), format!("{dev}:/f")),
    ] {
        for reflink in [false, true] {
            let mut args = vec!["cp", &src, &dst];
            if reflink {
                args.insert(1, "--reflink");
            }
            let err = fails(&args);
            assert!(
                err.contains(&format!("'{src}' and '{dst}' are the same file")),
                "{err}"
            );
            assert_files_intact(&dev);
        }
    }
    // Nor onto the device file itself (that would overwrite the image).
    let err = fails(&["cp", &format!("{dev}:/f"), &dev]);
    assert!(err.contains("is the device of"), "{err}");
    assert_files_intact(&dev);
    // A different file on the same device is still copied.
    ok(&["cp", &format!("{dev}:/f"), &format!("{dev}:/dir/inner")]);
    assert_files_intact(&dev);
}

#[test]
fn rm_r_of_the_root_refuses_before_removing_anything() {
    let (_dir, dev) = image_with_files();
    for root in [
        format!("{dev}:/"),
        format!("{dev}://"),
        format!("{dev}:/dir/../"),
    ] {
        let err = fails(&["rm", "-r", &root]);
        assert!(
            err.contains("the root directory") || err.contains("refusing to remove"),
            "{err}"
        );
        assert_files_intact(&dev);
    }
    let o = Command::new(env!("CARGO_BIN_EXE_udax"))
        .args(["rm", "-r", "/"])
        .env("UDAX_DEVICE", &dev)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim_end(),
        "udax: it is dangerous to operate recursively on '/' (the root directory): nothing removed"
    );
    assert_files_intact(&dev);
    // Without -r the root is a directory, not a file to unlink.
    assert!(fails(&["rm", &format!("{dev}:/")]).contains("is a directory"));
    assert_files_intact(&dev);
}

#[test]
fn rm_of_dot_or_dotdot_refuses_before_removing_anything() {
    let (_dir, dev) = image_with_files();
    for p in [
        "/dir/..", "/dir/.", "/dir/./", "/dir/../", "/.", "/..", "/f/..",
    ] {
        let arg = format!("{dev}:{p}");
        for r in [&["rm", "-r"][..], &["rm"][..]] {
            let err = fails(&[r, &[arg.as_str()]].concat());
            assert_eq!(
                err.trim_end(),
                format!("udax: refusing to remove '.' or '..' directory: skipping '{arg}'")
            );
            assert_files_intact(&dev);
        }
    }
    // The directory itself, by its name, goes.
    ok(&["rm", "-r", &format!("{dev}:/dir/")]);
    assert!(!ok(&["ls", &format!("{dev}:/")]).contains("dir"));
}

#[test]
fn mkfs_refuses_an_existing_udax_file_system_without_force() {
    let (_dir, dev) = image_with_files();
    let err = fails(&["mkfs", &dev]);
    assert!(
        err.contains("already holds a udax file system")
            && err.contains("label \"keep\"")
            && err.contains("16 MiB")
            && err.contains("--force"),
        "{err}"
    );
    assert_files_intact(&dev);
    ok(&["mkfs", "--force", &dev, "--label", "new"]);
    assert_eq!(ok(&["ls", &format!("{dev}:/")]), "");
    assert!(ok(&["info", &dev]).contains("label: \"new\""));
    // A device without a udax file system needs no --force.
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let zeros = dir.path().join("zeros.img");
    std::fs::write(&zeros, vec![0u8; 8 << 20]).unwrap();
    ok(&["mkfs", zeros.to_str().unwrap()]);
}

#[test]
fn mkfs_refuses_a_size_other_than_the_existing_devices() {
    let (_dir, dev) = image_with_files();
    for size in ["8M", "32M"] {
        let err = fails(&["mkfs", "--force", &dev, "--size", size]);
        assert!(
            err.contains("is 16777216 bytes") && err.contains("does not grow or shrink"),
            "{err}"
        );
        assert_eq!(std::fs::metadata(&dev).unwrap().len(), 16 << 20);
        assert_files_intact(&dev);
    }
    // Its own size is no change.
    ok(&["mkfs", "--force", &dev, "--size", "16M"]);
    assert_eq!(std::fs::metadata(&dev).unwrap().len(), 16 << 20);
}

#[test]
fn failed_mkfs_removes_the_file_it_created_and_only_that() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let dev = dir.path().join("new.img");
    let d = dev.to_str().unwrap();
    let long = "x".repeat(33);
    for args in [
        vec!["mkfs", d, "--size", "1M"],                    // too small
        vec!["mkfs", d, "--size", "16M", "--label", &long], // label too long
        vec!["mkfs", d, "--size", "100T"],                  // ENOSPC on tmpfs
    ] {
        let err = fails(&args);
        assert!(!dev.exists(), "{args:?} left {d} behind");
        assert_eq!(err.matches(d).count(), 1, "the device named once: {err}");
    }
    // A file that was there before stays, whatever fails.
    std::fs::write(&dev, vec![0u8; 16 << 20]).unwrap();
    fails(&["mkfs", d, "--label", &long]);
    assert_eq!(std::fs::metadata(&dev).unwrap().len(), 16 << 20);
}

#[test]
fn trailing_slash_on_a_file_is_not_a_directory() {
    let (dir, dev) = image_with_files();
    for args in [
        vec!["rm".to_string(), format!("{dev}:/f/")],
        vec!["cat".to_string(), format!("{dev}:/f/")],
        vec!["stat".to_string(), format!("{dev}:/f/")],
        vec!["ls".to_string(), format!("{dev}:/f/")],
        vec!["rm".to_string(), "-r".to_string(), format!("{dev}:/f/")],
    ] {
        let err = fails(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        assert!(err.contains("not a directory"), "{args:?}: {err}");
    }
    assert_files_intact(&dev);
    // A regular file cannot be created as "new/" (the kernel's EISDIR).
    let host = dir.path().join("h.txt");
    let err = fails(&["cp", host.to_str().unwrap(), &format!("{dev}:/new/")]);
    assert!(err.contains("is a directory"), "{err}");
    assert!(!ok(&["ls", &format!("{dev}:/")]).contains("new"));
    // Into a directory written with a slash, by its full name, is fine.
    ok(&["cp", host.to_str().unwrap(), &format!("{dev}:/dir//new")]);
    assert_eq!(udax(&["cat", &format!("{dev}:/dir/new")]).stdout, b"hello");
}

#[test]
fn cp_draws_no_progress_bar_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let dev = dir.path().join("u.img");
    let dev = dev.to_str().unwrap();
    let host = dir.path().join("big.bin");
    std::fs::write(&host, vec![7u8; 17 << 20]).unwrap();
    ok(&["mkfs", dev, "--size", "64M"]);
    let o = udax(&["cp", host.to_str().unwrap(), &format!("{dev}:/big")]);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!("udax: copied {} bytes\n", 17 << 20)
    );
}

#[test]
fn mkfs_refuses_a_udax_file_system_of_another_format_version_without_force() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let dev = dir.path().join("v1.img");
    let dev = dev.to_str().unwrap();
    ok(&["mkfs", dev, "--size", "8M"]);
    // Both superblock copies say format version 1 (an image of an older udax).
    let img = std::fs::read(dev).unwrap();
    for at in [0usize, 4096] {
        let mut sb = img[at..at + 512].to_vec();
        sb[8..12].copy_from_slice(&1u32.to_le_bytes());
        let c = udax::layout::crc(at as u64, &sb[..508]);
        sb[508..].copy_from_slice(&c.to_le_bytes());
        patch(dev, at as u64, &sb);
    }
    let o = udax(&["mkfs", dev]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("format version 1") && err.contains("--force"),
        "{err}"
    );
    let o = udax(&["ls", &format!("{dev}:/")]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("version 1"),
        "{o:?}"
    );
    ok(&["mkfs", "--force", dev]);
    ok(&["ls", &format!("{dev}:/")]);
    // Both copies damaged: still refused without --force.
    // Byte 100 is in the mkfs time: flipped, never set to a value it may
    // already hold.
    let img = std::fs::read(dev).unwrap();
    patch(dev, 100, &[!img[100]]);
    patch(dev, 4096 + 100, &[!img[4096 + 100]]);
    let o = udax(&["mkfs", dev]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("damaged udax file system"),
        "{err}"
    );
}

#[test]
fn cli_ln_s_readlink_ls_stat_and_rm_r_never_follows_a_link() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let dev = dir.path().join("u.img");
    let dev = dev.to_str().unwrap();
    let at = |p: &str| format!("{dev}:{p}");
    ok(&["mkfs", dev, "--size", "64M"]);
    ok(&["mkdir", "-p", &at("/keep/sub")]);
    let host = dir.path().join("h");
    std::fs::write(&host, b"kept\n").unwrap();
    ok(&["cp", host.to_str().unwrap(), &at("/keep/sub/f")]);
    ok(&["mkdir", &at("/tree")]);
    ok(&["ln", "-s", "../keep", &at("/tree/dirlink")]);
    ok(&["ln", "-s", "../keep/sub/f", &at("/tree/filelink")]);
    ok(&["ln", &at("/keep/sub/f"), &at("/tree/hard")]);
    assert_eq!(ok(&["readlink", &at("/tree/dirlink")]), "../keep\n");
    let ls = ok(&["ls", "-l", &at("/tree")]);
    assert!(ls.contains("dirlink -> ../keep"), "{ls}");
    assert!(ls.lines().any(|l| l.starts_with('l')), "{ls}");
    // cat follows the link; stat shows the link itself.
    assert_eq!(ok(&["cat", &at("/tree/filelink")]), "kept\n");
    let st = ok(&["stat", &at("/tree/filelink")]);
    assert!(
        st.contains("symbolic link") && st.contains("target: ../keep/sub/f"),
        "{st}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["stat", "--json", &at("/tree/dirlink")])).unwrap();
    assert_eq!(j["target"], "../keep");
    // readlink of a file is an error; ln -s onto an existing name too.
    assert!(!udax(&["readlink", &at("/keep/sub/f")]).status.success());
    assert!(!udax(&["ln", "-s", "x", &at("/tree/hard")]).status.success());
    // rm -r removes the links, not what they lead to.
    ok(&["rm", "-r", &at("/tree")]);
    assert_eq!(ok(&["cat", &at("/keep/sub/f")]), "kept\n");
    let v: serde_json::Value = serde_json::from_str(&ok(&["fsck", "--json", dev])).unwrap();
    assert_eq!(v["clean"], true);
}

#[test]
fn migrate_copies_a_format_2_image_onto_format_3_and_leaves_the_source_as_it_was() {
    use udax::fs::{Fs, MkfsOptions, OpenOptions};
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let src = dir.path().join("old.img");
    let src = src.to_str().unwrap();
    let dst = dir.path().join("new.img");
    let dst = dst.to_str().unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    {
        let dev = udax::device::open(
            src,
            &udax::device::OpenOptions {
                create_size: Some(32 << 20),
            },
        )
        .unwrap();
        Fs::mkfs(
            &*dev,
            &MkfsOptions {
                label: "legacy".into(),
                format: 2,
            },
        )
        .unwrap();
        let fs = Fs::mount(dev).unwrap();
        fs.mkdir("/d", 0o750).unwrap();
        let f = fs
            .open(
                "/d/f",
                &OpenOptions {
                    write: true,
                    create: true,
                    ..Default::default()
                },
            )
            .unwrap();
        f.write_at(&data, 0).unwrap();
        drop(f);
        fs.unmount().unwrap();
    }
    assert!(ok(&["info", src]).contains("format:       2 (the older format: `udax migrate"));
    let before = std::fs::read(src).unwrap();

    let out = ok(&["migrate", src, dst]);
    assert!(
        out.contains("(format 2) to") && out.contains("(format 3, uuid") && out.contains("1 files"),
        "{out}"
    );
    assert_eq!(std::fs::read(src).unwrap(), before, "the source changed");
    assert_eq!(std::fs::metadata(dst).unwrap().len(), 32 << 20);
    let info = ok(&["info", dst]);
    assert!(
        info.contains("format:       3") && info.contains("\"legacy\""),
        "{info}"
    );
    let cat = udax(&["cat", &format!("{dst}:/d/f")]);
    assert!(cat.status.success());
    assert_eq!(cat.stdout, data);
    assert!(ok(&["ls", "-l", &format!("{dst}:/")]).contains("rwxr-x---"));

    // The target holds a file system now: not again without --force.
    let e = fails(&["migrate", src, dst]);
    assert!(e.contains("already holds a udax file system"), "{e}");
    ok(&["migrate", "--force", src, dst]);
    let e = fails(&["migrate", src, src]);
    assert!(e.contains("the same device"), "{e}");
    assert_eq!(std::fs::read(src).unwrap(), before);
}
