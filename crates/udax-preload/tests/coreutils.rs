//! coreutils and tar, unmodified, on udax through the shim. Each test checks
//! the programs' output and then looks inside the device with the library:
//! the data is in udax, and the mount prefix never appears on the host.

mod common;
use common::*;

#[test]
fn cp_host_to_udax_and_back_is_identical() {
    if !have("cp") || !have("cmp") {
        return;
    }
    let env = Env::new(64 << 20);
    let data = bytes(3 * 1024 * 1024 + 123, 1);
    let src = env.host.join("src.bin");
    std::fs::write(&src, &data).unwrap();
    env.run("cp", &[src.to_str().unwrap(), &env.at("a.bin")]);
    assert_eq!(env.read_udax("/a.bin"), data, "udax holds the copied bytes");
    let back = env.host.join("back.bin");
    env.run("cp", &[&env.at("a.bin"), back.to_str().unwrap()]);
    // cmp through the shim, comparing a udax file with a host file.
    let out = env.run("cmp", &[&env.at("a.bin"), back.to_str().unwrap()]);
    assert_eq!(stdout(&out), "", "cmp reports no difference");
    assert_eq!(std::fs::read(&back).unwrap(), data);
    // udax -> udax as well.
    env.run("cp", &[&env.at("a.bin"), &env.at("b.bin")]);
    assert_eq!(env.read_udax("/b.bin"), data);
}

#[test]
fn cmp_reports_the_first_differing_byte_of_udax_files() {
    if !have("cmp") {
        return;
    }
    let env = Env::new(16 << 20);
    let a = bytes(10000, 2);
    let mut b = a.clone();
    b[4321] ^= 0xff;
    env.write_udax("/a", &a);
    env.write_udax("/b", &b);
    let out = output(env.cmd("cmp").args([env.at("a"), env.at("b")]));
    assert_eq!(out.status.code(), Some(1), "cmp exits 1 on a difference");
    let s = stdout(&out);
    // diffutils 3.8 says "char", newer ones "byte".
    assert!(
        s.contains("differ: byte 4322") || s.contains("differ: char 4322"),
        "cmp output: {s}"
    );
}

#[test]
fn cat_prints_a_udax_file() {
    if !have("cat") {
        return;
    }
    let env = Env::new(16 << 20);
    let text: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    env.write_udax("/hello.txt", text.as_bytes());
    let out = env.run("cat", &[&env.at("hello.txt")]);
    assert_eq!(stdout(&out), text);
    // And cat > file writes into udax (stdout redirected to a host file here,
    // input concatenated from two udax files).
    env.write_udax("/two.txt", b"second\n");
    let out = env.run("cat", &[&env.at("hello.txt"), &env.at("two.txt")]);
    assert_eq!(stdout(&out), format!("{text}second\n"));
}

#[test]
fn ls_l_lists_names_and_sizes() {
    if !have("ls") {
        return;
    }
    let env = Env::new(16 << 20);
    env.write_udax("/empty", b"");
    env.write_udax("/five", b"12345");
    env.write_udax("/big", &bytes(1 << 20, 3));
    env.with_fs(|fs| fs.mkdir("/sub", 0o755).unwrap());
    let out = env.run("ls", &["-l", &env.mount]);
    let s = stdout(&out);
    let mut rows: Vec<(String, String, String)> = s
        .lines()
        .filter(|l| !l.starts_with("total"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[4].to_string(), f[8].to_string())
        })
        .collect();
    rows.sort_by(|a, b| a.2.cmp(&b.2));
    let names: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(names, ["big", "empty", "five", "sub"], "ls -l output:\n{s}");
    let size = |n: &str| rows.iter().find(|r| r.2 == n).unwrap().1.clone();
    assert_eq!(size("big"), "1048576");
    assert_eq!(size("empty"), "0");
    assert_eq!(size("five"), "5");
    assert!(rows
        .iter()
        .find(|r| r.2 == "sub")
        .unwrap()
        .0
        .starts_with('d'));
    assert!(rows
        .iter()
        .find(|r| r.2 == "five")
        .unwrap()
        .0
        .starts_with("-rw"));
    // -a shows . and .. too.
    let out = env.run("ls", &["-a", &env.mount]);
    let names: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(names, [".", "..", "big", "empty", "five", "sub"]);
}

#[test]
fn dd_with_bs_and_seek_writes_at_the_offset() {
    if !have("dd") {
        return;
    }
    let env = Env::new(16 << 20);
    let data = bytes(8192, 4);
    let src = env.host.join("in.bin");
    std::fs::write(&src, &data).unwrap();
    env.run(
        "dd",
        &[
            &format!("if={}", src.display()),
            &format!("of={}", env.at("d.bin")),
            "bs=4096",
            "seek=3",
            "count=2",
            "status=none",
        ],
    );
    let got = env.read_udax("/d.bin");
    assert_eq!(got.len(), 5 * 4096, "seek=3 + 2 blocks");
    assert!(
        got[..3 * 4096].iter().all(|&b| b == 0),
        "the skipped range is a hole of zeros"
    );
    assert_eq!(&got[3 * 4096..], &data[..]);
    // The hole occupies no blocks: 2 data blocks = 16 sectors.
    let st = env.with_fs(|fs| fs.stat("/d.bin").unwrap());
    assert_eq!(st.blocks, 16);
    // Read back with skip, through a pipe to stdout.
    let out = env.run(
        "dd",
        &[
            &format!("if={}", env.at("d.bin")),
            "bs=4096",
            "skip=4",
            "count=1",
            "status=none",
        ],
    );
    assert_eq!(out.stdout, &data[4096..]);
    // conv=notrunc overwrite in the middle keeps the size.
    env.run(
        "dd",
        &[
            &format!("if={}", src.display()),
            &format!("of={}", env.at("d.bin")),
            "bs=1000",
            "seek=1",
            "count=1",
            "conv=notrunc",
            "status=none",
        ],
    );
    let got = env.read_udax("/d.bin");
    assert_eq!(got.len(), 5 * 4096);
    assert_eq!(&got[1000..2000], &data[..1000]);
    assert!(got[..1000].iter().all(|&b| b == 0));
}

#[test]
fn mkdir_mv_rm_change_the_udax_namespace() {
    if !have("mkdir") || !have("mv") || !have("rm") {
        return;
    }
    let env = Env::new(16 << 20);
    env.run("mkdir", &[&env.at("a")]);
    env.run("mkdir", &["-p", &env.at("a/b/c/d")]);
    env.write_udax("/a/b/c/f", b"file");
    env.with_fs(|fs| {
        assert!(fs.stat("/a/b/c/d").unwrap().is_dir());
    });
    env.run("mv", &[&env.at("a/b"), &env.at("x")]);
    env.with_fs(|fs| {
        assert!(fs.stat("/a/b").is_err(), "moved away");
        assert_eq!(super_names(fs, "/x/c"), ["d", "f"]);
    });
    // A file moved out to the host crosses the boundary: mv copies then removes.
    let out_host = env.host.join("f");
    env.run("mv", &[&env.at("x/c/f"), out_host.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out_host).unwrap(), b"file");
    env.with_fs(|fs| assert!(fs.stat("/x/c/f").is_err()));
    env.run("rm", &["-r", &env.at("x")]);
    env.run("rm", &["-d", &env.at("a")]);
    env.with_fs(|fs| assert!(fs.read_dir("/").unwrap().is_empty()));
}

fn super_names(fs: &udax::fs::Fs, dir: &str) -> Vec<String> {
    fs.read_dir(dir)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

#[test]
fn tar_round_trip_of_a_small_tree() {
    if !have("tar") || !have("diff") {
        return;
    }
    let env = Env::new(64 << 20);
    let tree = env.host.join("tree");
    std::fs::create_dir_all(tree.join("x/y")).unwrap();
    std::fs::create_dir_all(tree.join("empty")).unwrap();
    std::fs::write(tree.join("x/y/h.txt"), b"hello\n").unwrap();
    std::fs::write(tree.join("x/big.bin"), bytes(700_000, 5)).unwrap();
    std::fs::write(tree.join("top"), b"").unwrap();
    std::process::Command::new("touch")
        .args(["-d", "2001-02-03 04:05:06 UTC"])
        .arg(tree.join("x/y/h.txt"))
        .status()
        .unwrap();
    // Archive a host tree into udax, extract it inside udax.
    env.run(
        "tar",
        &["-cf", &env.at("t.tar"), "-C", tree.to_str().unwrap(), "."],
    );
    env.run("mkdir", &[&env.at("out")]);
    // --no-same-owner: udax cannot give files to other owners (documented);
    // times are set (utimensat).
    env.run(
        "tar",
        &[
            "-xf",
            &env.at("t.tar"),
            "--no-same-owner",
            "-C",
            &env.at("out"),
        ],
    );
    env.with_fs(|fs| {
        assert_eq!(read_all(fs, "/out/x/y/h.txt"), b"hello\n");
        assert_eq!(
            fs.stat("/out/x/y/h.txt").unwrap().mtime_ns / 1_000_000_000,
            981_173_106,
            "tar restored the modification time"
        );
        assert_eq!(read_all(fs, "/out/x/big.bin"), bytes(700_000, 5));
        assert!(fs.stat("/out/empty").unwrap().is_dir());
        assert_eq!(fs.stat("/out/top").unwrap().size, 0);
    });
    // tar t lists the archive read from udax.
    let out = env.run("tar", &["-tf", &env.at("t.tar")]);
    let listing = stdout(&out);
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "./",
            "./empty/",
            "./top",
            "./x/",
            "./x/big.bin",
            "./x/y/",
            "./x/y/h.txt"
        ]
    );
    // Archive the udax copy back out and compare with the original on the host.
    let back = env.host.join("back");
    std::fs::create_dir(&back).unwrap();
    let host_tar = env.host.join("back.tar");
    env.run(
        "tar",
        &["-cf", host_tar.to_str().unwrap(), "-C", &env.at("out"), "."],
    );
    env.run(
        "tar",
        &[
            "-xf",
            host_tar.to_str().unwrap(),
            "-C",
            back.to_str().unwrap(),
        ],
    );
    let out = env.run(
        "diff",
        &["-r", tree.to_str().unwrap(), back.to_str().unwrap()],
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn sort_o_writes_through_stdout_redirected_to_udax() {
    // sort -o opens the output and dup2s it onto fd 1, then writes with stdio.
    if !have("sort") {
        return;
    }
    let env = Env::new(16 << 20);
    env.write_udax("/in", b"pear\napple\nfig\n");
    env.run("sort", &["-o", &env.at("out"), &env.at("in")]);
    assert_eq!(env.read_udax("/out"), b"apple\nfig\npear\n");
}

#[test]
fn shell_redirections_of_builtins_go_to_udax() {
    // A preloaded bash opens the target, dup2s it onto fd 1 / 0, and its
    // builtins use stdio: the shim points stdout/stdin at udax streams.
    if !have("bash") {
        return;
    }
    let env = Env::new(16 << 20);
    let f = env.at("b.txt");
    let script = format!(
        "echo first > {f}; printf '%s\\n' second third >> {f}; read line < {f}; echo \"read: $line\"; echo back on stdout"
    );
    let out = env.run("bash", &["-c", &script]);
    assert_eq!(stdout(&out), "read: first\nback on stdout\n");
    assert_eq!(env.read_udax("/b.txt"), b"first\nsecond\nthird\n");
}

#[test]
fn git_init_add_commit_log_status_in_udax() {
    // git creates its objects with mkstemp (glibc's internal open: served by
    // the shim's mkstemp), renames them into place, mmaps packs and the index.
    if !have("git") {
        return;
    }
    let env = Env::new(64 << 20);
    let repo = env.at("repo");
    let git = |args: &[&str]| {
        let mut a = vec![
            "-C",
            repo.as_str(),
            "-c",
            "user.name=u",
            "-c",
            "user.email=u@x",
        ];
        a.extend_from_slice(args);
        stdout(&env.run("git", &a))
    };
    env.run("git", &["init", "-q", &repo]);
    env.write_udax("/repo/a.txt", b"one\n");
    git(&["add", "a.txt"]);
    git(&["commit", "-q", "-m", "first"]);
    let log = git(&["log", "--format=%s"]);
    assert_eq!(log, "first\n");
    assert_eq!(git(&["status", "--short"]), "");
    env.write_udax("/repo/a.txt", b"one\ntwo\n");
    assert_eq!(git(&["status", "--short"]), " M a.txt\n");
    assert_eq!(git(&["show", "HEAD:a.txt"]), "one\n");
    env.with_fs(|fs| {
        assert!(fs.stat("/repo/.git/HEAD").unwrap().is_file());
        let objects = fs.read_dir("/repo/.git/objects").unwrap();
        assert!(
            objects.len() >= 3,
            "blob, tree and commit directories: {objects:?}"
        );
    });
}

#[test]
fn touch_and_stat_set_and_read_file_times() {
    if !have("touch") || !have("stat") {
        return;
    }
    let env = Env::new(16 << 20);
    env.run("touch", &["-d", "@1000000000", &env.at("new")]);
    env.write_udax("/old", b"x");
    env.run("touch", &["-m", "-d", "@1234567890", &env.at("old")]);
    let out = env.run("stat", &["-c", "%n %Y", &env.at("new"), &env.at("old")]);
    let s = stdout(&out);
    assert!(s.contains(&format!("{} 1000000000", env.at("new"))), "{s}");
    assert!(s.contains(&format!("{} 1234567890", env.at("old"))), "{s}");
    env.with_fs(|fs| {
        assert_eq!(fs.stat("/old").unwrap().mtime_ns, 1_234_567_890_000_000_000);
    });
}

#[test]
fn files_made_under_an_inherited_umask_get_its_mode() {
    if !have("sh") || !have("touch") || !have("mkdir") {
        return;
    }
    let env = Env::new(16 << 20);
    // The umask comes from the parent; the programs never call umask(2).
    for (mask, file, dir) in [("027", 0o640, 0o750), ("002", 0o664, 0o775)] {
        let f = format!("f{mask}");
        let d = format!("d{mask}");
        env.run(
            "sh",
            &[
                "-c",
                &format!(
                    "umask {mask} && touch {} && exec mkdir {}",
                    env.at(&f),
                    env.at(&d)
                ),
            ],
        );
        env.with_fs(|fs| {
            assert_eq!(
                fs.stat(&format!("/{f}")).unwrap().mode & 0o7777,
                file,
                "{f}"
            );
            assert_eq!(fs.stat(&format!("/{d}")).unwrap().mode & 0o7777, dir, "{d}");
        });
    }
}

#[test]
fn a_read_only_mount_reads_refuses_changes_with_erofs_and_writes_nothing() {
    if !have("cat") || !have("touch") {
        return;
    }
    let env = Env::new(16 << 20);
    let data = bytes(20000, 3);
    env.write_udax("/f", &data);
    let before = std::fs::read(&env.dev).unwrap();
    let out = output(
        env.cmd("cat")
            .env("UDAX_MOUNT_OPTIONS", "ro")
            .arg(env.at("f")),
    );
    env.check("cat", &[], &out);
    assert!(out.stdout == data, "cat read the file");
    let out = output(
        env.cmd("touch")
            .env("UDAX_MOUNT_OPTIONS", "ro")
            .arg(env.at("new")),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{out:?}"
    );
    let out = output(
        env.cmd("cat")
            .env("UDAX_MOUNT_OPTIONS", "ro,bogus")
            .arg(env.at("f")),
    );
    assert!(!out.status.success(), "an unknown option is refused");
    assert!(
        std::fs::read(&env.dev).unwrap() == before,
        "a read-only mount wrote to the device"
    );
}
