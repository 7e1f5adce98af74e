//! Real programs that fork and exec on one device (issue 17): a shell's
//! redirections, subshells, pipelines and working directory reach the
//! programs it runs; descriptors inherited across fork and exec share the
//! open file description (its offset) with the process that opened it.

mod common;
use common::*;

/// Run `prog args` under the shim; its stdout, with stderr checked to be
/// free of shim warnings (an inherited descriptor that failed would log).
fn quiet(env: &Env, prog: &str, args: &[&str]) -> String {
    let out = env.run(prog, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("udax-preload"), "shim warnings:\n{err}");
    stdout(&out)
}

/// Run a bash script under the shim (as [`quiet`]).
fn bash(env: &Env, script: &str) -> String {
    quiet(env, "bash", &["-c", script])
}

#[test]
fn p_a_shell_redirection_reaches_the_program_it_runs_and_the_next_one_reads_it() {
    if !have("bash") || !have("cat") || !have("wc") {
        return;
    }
    let env = Env::new(32 << 20);
    let m = &env.mount;
    let out = bash(
        &env,
        &format!(
            "echo hello > {m}/a; cat {m}/a; seq 1 5 | (cat > {m}/p); wc -l < {m}/p; \
             cat < {m}/a > {m}/b; cat {m}/b"
        ),
    );
    assert_eq!(out, "hello\n5\nhello\n");
    assert_eq!(env.read_udax("/p"), b"1\n2\n3\n4\n5\n");
}

#[test]
fn p_cd_into_udax_is_the_working_directory_of_the_programs_a_shell_runs() {
    if !have("bash") || !have("ls") || !have("pwd") {
        return;
    }
    let env = Env::new(32 << 20);
    let m = &env.mount;
    let out = bash(
        &env,
        &format!("mkdir {m}/d; cd {m}/d && echo x > f && ls && /bin/pwd && cat f && ls .."),
    );
    assert_eq!(out, format!("f\n{m}/d\nx\nd\n"));
}

#[test]
fn p_one_open_file_description_is_shared_by_the_programs_that_inherit_it() {
    if !have("bash") || !have("sh") || !have("date") {
        return;
    }
    let env = Env::new(32 << 20);
    let m = &env.mount;
    // Each writer appends at the shared offset: the parent's, a subshell's
    // (fork), a program's (fork and exec), a nested shell's (exec, fork).
    bash(
        &env,
        &format!(
            "exec 3>{m}/h; echo a >&3; (echo b >&3); sh -c 'echo c >&3'; \
             sh -c '(echo d >&3)'; echo e >&3; {{ echo f; date +%Y >/dev/null; echo g; }} >&3"
        ),
    );
    assert_eq!(env.read_udax("/h"), b"a\nb\nc\nd\ne\nf\ng\n");
    // A group of programs writing to one redirection: one offset.
    bash(
        &env,
        &format!("{{ echo one; sh -c 'echo two'; echo three; }} > {m}/g"),
    );
    assert_eq!(env.read_udax("/g"), b"one\ntwo\nthree\n");
    // A reader inherits the position the shell left.
    let out = bash(
        &env,
        &format!("exec 4<{m}/g; read first <&4; echo \"$first\"; cat <&4"),
    );
    assert_eq!(out, "one\ntwo\nthree\n");
}

#[test]
fn p_a_close_on_exec_descriptor_is_not_inherited() {
    if !have("bash") || !have("sh") {
        return;
    }
    if !have("python3") {
        return;
    }
    let env = Env::new(32 << 20);
    let m = &env.mount;
    // dup2 with inheritable=False sets FD_CLOEXEC: the child has no fd 5.
    let out = bash(
        &env,
        &format!(
            "python3 -c \"import os,subprocess; fd=os.open('{m}/c', os.O_CREAT|os.O_WRONLY, 0o644); \
             os.dup2(fd, 5, inheritable=False); \
             print(subprocess.run(['sh','-c','echo x >&5 2>/dev/null && echo inherited || echo closed'], \
             capture_output=True, text=True).stdout.strip())\""
        ),
    );
    assert_eq!(out, "closed\n");
}

#[test]
fn p_make_j2_builds_in_udax_with_recipes_run_by_dash_through_vfork() {
    if !have("make") || !have("sh") {
        return;
    }
    let env = Env::new(32 << 20);
    let m = &env.mount;
    // dash (Debian's /bin/sh) runs each command in a vfork child; the
    // recipes' redirections and `mv` reach udax through the handover.
    let mk = "all: a b c d\n\t@cat a b c d > all\n%:\n\t@echo $@ > $@.tmp && mv $@.tmp $@\n";
    env.with_fs(|fs| fs.mkdir("/mk", 0o755).expect("mkdir"));
    env.write_udax("/mk/Makefile", mk.as_bytes());
    let out = bash(
        &env,
        &format!("cd {m}/mk && make -j2 && cat all && make -j2"),
    );
    assert_eq!(out, "a\nb\nc\nd\nmake: 'all' is up to date.\n");
}

#[test]
fn p_two_sqlite3_processes_write_one_wal_database_at_once() {
    if !have("sqlite3") {
        return;
    }
    let env = Env::new(64 << 20);
    let m = &env.mount;
    let db = format!("{m}/db");
    bash(
        &env,
        &format!("sqlite3 {db} 'PRAGMA journal_mode=WAL; CREATE TABLE t(x);' >/dev/null"),
    );
    let ins = |from: u32| {
        (from..from + 200)
            .map(|i| format!("INSERT INTO t VALUES ({i});"))
            .collect::<String>()
    };
    std::fs::write(env.host.join("a.sql"), ins(1)).unwrap();
    std::fs::write(env.host.join("b.sql"), ins(201)).unwrap();
    let out = bash(
        &env,
        &format!(
            "(sqlite3 -cmd '.timeout 20000' {db} < a.sql) & (sqlite3 -cmd '.timeout 20000' {db} < b.sql) & \
             wait; sqlite3 {db} 'SELECT count(*), sum(x) FROM t; PRAGMA integrity_check;'"
        ),
    );
    assert_eq!(out, "400|80200\nok\n");
}

/// Run `script` under bash with its stderr folded into stdout; the output,
/// after checking that fsck finds the device clean.
fn run_then_fsck(env: &Env, what: &str, script: &str) -> String {
    let out = env.run("bash", &["-c", &format!("{script} 2>&1")]);
    let r = env.fsck();
    assert!(r.clean, "fsck after {what}: {:?}", r.problems);
    stdout(&out)
}

#[test]
fn p_stress_ng_file_stressors_verify_on_udax_in_forked_workers() {
    if !have("stress-ng") {
        return;
    }
    let env = Env::new(128 << 20);
    let m = &env.mount;
    // The issue's list, all at once, each verifying what it wrote; the
    // workers are forked children of stress-ng: each attaches on its own.
    let text = run_then_fsck(
        &env,
        "stress-ng",
        &format!(
            "mkdir {m}/s && stress-ng --temp-path {m}/s --verify --timeout 3s \
             --hdd 1 --hdd-bytes 2M --mmap 1 --mmap-file --mmap-bytes 4M \
             --fallocate 1 --fallocate-bytes 4M --dir 1 --rename 1 --link 1 \
             --dentry 1 --seek 1 --seek-size 4M --fiemap 1 --fiemap-bytes 4M \
             --sync-file 1 --sync-file-bytes 4M"
        ),
    );
    assert!(text.contains("successful run completed"), "{text}");
    assert!(!text.contains("stress-ng: fail"), "{text}");
}

#[test]
fn p_dbench_with_two_clients_runs_on_udax() {
    if !have("dbench") {
        return;
    }
    let env = Env::new(128 << 20);
    let m = &env.mount;
    let text = run_then_fsck(
        &env,
        "dbench",
        &format!("mkdir {m}/d && dbench -D {m}/d -t 3 2"),
    );
    assert!(
        text.contains("Throughput") && text.contains("2 clients"),
        "{text}"
    );
}

#[test]
fn p_the_cli_lists_and_reads_through_the_owner_while_a_program_holds_files_open() {
    if !have("bash") {
        return;
    }
    let env = Env::new(32 << 20);
    let m = &env.mount;
    let mut holder = spawn_ready(env.cmd("bash").args([
        "-c",
        &format!("exec 3>{m}/held; echo kept >&3; echo ready; read x; echo more >&3"),
    ]));
    let udax = shim().with_file_name("udax");
    let cli = |args: &[&str]| {
        let out = output(
            std::process::Command::new(&udax)
                .args(args)
                .env("UDAX_RUNTIME_DIR", env.runtime()),
        );
        assert!(out.status.success(), "udax {args:?}: {out:?}");
        stdout(&out)
    };
    let dev = env.dev.to_str().unwrap();
    assert!(cli(&["ls", &format!("{dev}:/")]).contains("held"));
    assert_eq!(cli(&["cat", &format!("{dev}:/held")]), "kept\n");
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    assert_eq!(cli(&["cat", &format!("{dev}:/held")]), "kept\nmore\n");
}

#[test]
fn p_kill_9_of_writing_clients_loses_nothing_they_were_told_was_written() {
    if !have("bash") {
        return;
    }
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let env = Env::new(32 << 20);
    let m = &env.mount;
    for round in 0..6u64 {
        // A shell appends numbered lines (each `echo` is one O_APPEND write
        // through the owner) and reports each one once its write returned.
        let mut w = spawn(
            env.cmd("bash")
                .args([
                    "-c",
                    &format!(
                        "i=0; while :; do i=$((i+1)); echo $i >> {m}/log{round}; echo $i; done"
                    ),
                ])
                .stdout(Stdio::piped()),
        );
        let mut out = BufReader::new(w.stdout.take().unwrap());
        let until = std::time::Instant::now() + std::time::Duration::from_millis(40 + 45 * round);
        let mut acked = 0u64;
        let mut line = String::new();
        while std::time::Instant::now() < until {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                break;
            }
            acked = line.trim().parse().unwrap();
        }
        // SAFETY: kill(2) of our own child.
        assert_eq!(unsafe { libc::kill(w.id() as i32, libc::SIGKILL) }, 0);
        w.wait().unwrap();
        assert!(acked > 0, "round {round}: the writer wrote nothing");
        // Every acknowledged line is there, in order, none torn; one more
        // (written, its report lost) may follow.
        let text = String::from_utf8(env.read_udax_via_shim(&format!("log{round}"))).unwrap();
        let got: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert!(
            got.len() as u64 >= acked,
            "round {round}: {} lines, {acked} acknowledged",
            got.len()
        );
        assert!(
            got.iter().enumerate().all(|(i, &v)| v == i as u64 + 1),
            "round {round}: lines out of order or torn"
        );
    }
    let r = env.fsck();
    assert!(r.clean, "fsck after the kills: {:?}", r.problems);
}

/// A forked child's shared mapping of a udax file, inherited from its
/// parent, is the child's own from the fork on (docs/preload.md, "fork and
/// exec"): it sees the parent's stores and the parent its stores (into a
/// hole too: the parent's zero page goes); a truncate by another process
/// gives it SIGBUS past the new end, as the kernel's
/// `unmap_mapping_range` reaches every process; and the child can map udax
/// files of its own (its parent's fault engine did not cross the fork).
#[test]
fn m1_a_forked_child_shares_the_parents_mapping_and_a_truncate_elsewhere_gives_it_sigbus() {
    if !have("python3") || !have("timeout") {
        return;
    }
    let env = Env::new(32 << 20);
    let m = &env.mount;
    let script = format!(
        r#"
import mmap, os, signal, sys
P = 4096
fd = os.open("{m}/f", os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"a" * (2 * P))
os.ftruncate(fd, 3 * P)  # page 2: a hole
mm = mmap.mmap(fd, 3 * P)
assert mm[0:1] == b"a" and mm[2 * P:2 * P + 1] == b"\0"  # the hole read: a zero page
to_child_r, to_child_w = os.pipe()
to_parent_r, to_parent_w = os.pipe()
pid = os.fork()
if pid == 0:
    out = []
    out.append(mm[0:1].decode())
    mm[100:105] = b"child"             # a store into the parent's block
    mm[2 * P:2 * P + 4] = b"hole"      # a store into the hole: blocks allocated
    g = os.open("{m}/g", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(g, b"hello")
    own = mmap.mmap(g, 5)
    out.append(own[:5].decode())
    print(" ".join(out), flush=True)
    os.write(to_parent_w, b"1")
    os.read(to_child_r, 1)             # the file is cut to 100 bytes now
    print("page 0 still", mm[50:51].decode(), flush=True)
    mm[P]                              # past the new end of file: SIGBUS
    print("no SIGBUS", flush=True)
    os._exit(0)
os.read(to_parent_r, 1)
print("parent sees", mm[100:105].decode(), mm[2 * P:2 * P + 4].decode(), flush=True)
import subprocess
subprocess.run(["truncate", "-s", "100", "{m}/f"], check=True)  # another process
os.write(to_child_w, b"1")
_, st = os.waitpid(pid, 0)
print("child", "signal %d" % os.WTERMSIG(st) if os.WIFSIGNALED(st) else "exit %d" % os.WEXITSTATUS(st), flush=True)
"#
    );
    assert_eq!(
        quiet(&env, "timeout", &["60", "python3", "-c", &script]),
        format!(
            "a hello\nparent sees child hole\npage 0 still a\nchild signal {}\n",
            libc::SIGBUS
        )
    );
    let r = env.fsck();
    assert!(r.clean, "fsck: {:?}", r.problems);
}

/// `system` and `popen` run their shell inside glibc, out of the shim's
/// sight; the shim runs it through its own `posix_spawn` when there is
/// something to hand over, so the shell starts in the udax working
/// directory with the udax descriptors (here fd 7), and the exit statuses
/// are glibc's (3, and 127 for a command that cannot run).
#[test]
fn p_system_and_popen_run_the_shell_in_the_udax_working_directory_with_udax_descriptors() {
    if !have("cc") || !have("sh") {
        return;
    }
    let env = Env::new(32 << 20);
    let exe = cc(env.host.as_path(), "shell", &[]);
    env.run("mkdir", &[&env.at("d")]);
    assert_eq!(
        quiet(&env, exe.to_str().unwrap(), &[&env.at("d")]),
        format!(
            "{}\nout\nsystem 0\npclose 0\nthrough the pipe\nparent\nfrom-system\nfrom-popen\n\
             pclose 0\nexit 3\nmissing 127\n",
            env.at("d")
        )
    );
}

/// A forked child's `MAP_PRIVATE` mapping inherited from its parent is the
/// child's own too, and keeps what the parent had stored in it before the
/// fork: a private copy of a file page and of a hole's zero page (as on
/// the kernel, where fork copies them); the child's own stores stay its
/// own; another process's truncate gives it SIGBUS past the new end. The
/// same script on the host (tmpfs) is the reference.
#[test]
fn m1_a_forked_child_keeps_the_private_copies_of_its_parents_private_mapping() {
    if !have("python3") || !have("timeout") || !have("truncate") {
        return;
    }
    let script = r#"
import mmap, os, subprocess, sys
P = 4096
m = sys.argv[1]
fd = os.open(m + "/p", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"f" * (3 * P))
os.ftruncate(fd, 5 * P)  # pages 3, 4: a hole
mm = mmap.mmap(fd, 5 * P, access=mmap.ACCESS_COPY)
mm[0:4] = b"PRIV"              # a private copy of a file page
mm[3 * P:3 * P + 4] = b"HOLE"  # a private copy of a hole's zero page
mm[4 * P:4 * P + 1]            # a hole read: the zero page
r, w = os.pipe()
r2, w2 = os.pipe()
pid = os.fork()
if pid == 0:
    out = [mm[0:4].decode(), mm[4:8].decode(), mm[3 * P:3 * P + 4].decode(), repr(mm[4 * P:4 * P + 2])]
    mm[P:P + 5] = b"child"
    print("child sees", *out, flush=True)
    os.write(w, b"1")
    os.read(r2, 1)
    print("child after", mm[P:P + 5].decode(), mm[2 * P + 100:2 * P + 103].decode(), flush=True)
    mm[4 * P]  # past the new end: SIGBUS
    print("no SIGBUS", flush=True)
    os._exit(0)
os.read(r, 1)
print("parent sees", mm[P:P + 5].decode(), mm[0:4].decode(), flush=True)
os.pwrite(fd, b"NEW", 2 * P + 100)  # an untouched private page follows the file
subprocess.run(["truncate", "-s", str(3 * P), m + "/p"], check=True)
os.write(w2, b"1")
_, st = os.waitpid(pid, 0)
print("child", "signal %d" % os.WTERMSIG(st) if os.WIFSIGNALED(st) else "exit %d" % os.WEXITSTATUS(st), flush=True)
"#;
    let env = Env::new(32 << 20);
    let got = quiet(
        &env,
        "timeout",
        &["60", "python3", "-c", script, &env.mount],
    );
    let host = std::process::Command::new("timeout")
        .args(["60", "python3", "-c", script])
        .arg(&env.host)
        .output()
        .unwrap();
    assert!(host.status.success(), "on the host: {host:?}");
    let expected = "child sees PRIV ffff HOLE b'\\x00\\x00'\nparent sees fffff PRIV\n\
                    child after child NEW\nchild signal 7\n";
    assert_eq!(stdout(&host), expected, "the kernel's answer changed");
    assert_eq!(got, expected);
}

/// POSIX record locks belong to the process, and exec keeps the process:
/// a lock on a file whose descriptor stays open across exec is still held
/// by the new program (another process is refused, and `F_GETLK` names the
/// same pid), while a lock on a file whose only descriptor was
/// close-on-exec goes with that descriptor, as on the kernel; the kept
/// lock goes when the process exits.
#[test]
fn p_record_locks_survive_exec_on_files_the_exec_keeps_open() {
    if !have("python3") {
        return;
    }
    let env = Env::new(32 << 20);
    let m = &env.mount;
    let holder = format!(
        r#"
import fcntl, os, sys
kept = os.open("{m}/kept", os.O_RDWR | os.O_CREAT, 0o644)
os.set_inheritable(kept, True)
gone = os.open("{m}/gone", os.O_RDWR | os.O_CREAT, 0o644)  # close-on-exec
fcntl.lockf(kept, fcntl.LOCK_EX)
fcntl.lockf(gone, fcntl.LOCK_EX)
os.execv(sys.executable, [sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.read()"])
"#
    );
    let mut h = spawn_ready(env.cmd("python3").args(["-c", &holder]));
    let probe = format!(
        r#"
import fcntl, os, struct
def try_lock(name):
    fd = os.open("{m}/" + name, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return "free"
    except OSError:
        lk = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0)
        pid = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, lk))[4]
        return "held by %d" % pid
    finally:
        os.close(fd)
print(try_lock("kept"), try_lock("gone"))
"#
    );
    let out = env.run("python3", &["-c", &probe]);
    assert_eq!(stdout(&out), format!("held by {} free\n", h.id()));
    drop(h.stdin.take());
    assert!(h.wait().unwrap().success());
    let out = env.run("python3", &["-c", &probe]);
    assert_eq!(stdout(&out), "free free\n");
    // A new program without the shim never adopts the locks: the owner
    // keeps them while the process lives, and lets them go when it dies.
    let plain = holder.replace(
        "os.execv(sys.executable, [sys.executable,",
        "env = dict(os.environ); env.pop('LD_PRELOAD')\nos.execve(sys.executable, [sys.executable,",
    );
    let plain = plain.replace(".read()\"])", ".read()\"], env)");
    assert!(
        plain.contains("os.execve(") && plain.contains("], env)"),
        "{plain}"
    );
    let mut h = spawn_ready(env.cmd("python3").args(["-c", &plain]));
    let out = env.run("python3", &["-c", &probe]);
    assert_eq!(stdout(&out), format!("held by {} free\n", h.id()));
    drop(h.stdin.take());
    assert!(h.wait().unwrap().success());
    let out = env.run("python3", &["-c", &probe]);
    assert_eq!(stdout(&out), "free free\n");
}

/// `execl`, `execlp` and `execle` (C-variadic, interposed by a naked entry
/// on x86-64) hand over like `execv`: the shell they start writes to the
/// inherited udax descriptor and starts in the virtual working directory;
/// arguments past the registers and execle's environment arrive intact.
#[cfg(target_arch = "x86_64")]
#[test]
fn p_execl_execlp_and_execle_hand_over_descriptors_and_the_working_directory() {
    if !have("cc") || !have("sh") {
        return;
    }
    let env = Env::new(32 << 20);
    let dir = tempfile::tempdir().unwrap();
    let prog = cc(dir.path(), "execl", &[]);
    let m = &env.mount;
    env.with_fs(|fs| fs.mkdir("/d", 0o755).unwrap());
    for mode in ["l", "lp", "le"] {
        let out = quiet(&env, prog.to_str().unwrap(), &[&format!("{m}/d"), mode]);
        assert_eq!(out, format!("{m}/d\n"), "exec{mode}: pwd");
    }
    assert_eq!(
        String::from_utf8(env.read_udax("/d/out")).unwrap(),
        "a b c d e f  \na b c d e f  \na b c d e f  from-envp\n"
    );
}

/// A program that starts as root, touches udax, then drops to another
/// uid, gid and groups (as pjdfstest's helper before each operation, and
/// servers that drop privileges) is checked as what it became, through the
/// owner it attached to as root and embedded alike: denied a write to
/// root's 0644 file, a create in root's directory, a stat under root's
/// 0700 directory and a chmod of another's file; allowed a write where its
/// new group may; root again, allowed. The shim keeps each thread's
/// credentials between calls, so the changes must reach it: another
/// thread that had made calls as root is checked as the new user after
/// the main thread's `seteuid` (glibc changes every thread), and a
/// thread's own `setfsuid` (no other thread's) counts at its next call.
#[test]
fn a_root_program_that_drops_privileges_is_checked_as_what_it_became() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to drop to another user (CI runs as root)");
        return;
    }
    if !have("python3") || !have("timeout") {
        return;
    }
    for embedded in [false, true] {
        let env = Env::new(32 << 20);
        let m = &env.mount;
        let script = format!(
            r#"
import errno, os
m = "{m}"
def did(f, *a):
    try:
        r = f(*a)
        if isinstance(r, int):
            os.close(r)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
os.chmod(m, 0o755)
os.close(os.open(m + "/root-only", os.O_CREAT | os.O_WRONLY, 0o644))
os.chmod(m + "/root-only", 0o644)
os.close(os.open(m + "/group", os.O_CREAT | os.O_WRONLY, 0o664))
os.chmod(m + "/group", 0o664)
os.chown(m + "/group", 0, 2000)
os.mkdir(m + "/private", 0o700)
os.chmod(m + "/private", 0o700)
os.close(os.open(m + "/private/x", os.O_CREAT | os.O_WRONLY, 0o644))
os.stat(m + "/private/x")
import ctypes, threading
libc = ctypes.CDLL(None)
asked, dropped, seen = threading.Event(), threading.Event(), []
def other():
    seen.append(did(os.stat, m + "/private/x"))
    asked.set()
    dropped.wait()
    seen.append(did(os.stat, m + "/private/x"))
t = threading.Thread(target=other)
t.start()
asked.wait()
os.setgroups([2000])
os.setegid(1000)
os.seteuid(1000)
dropped.set()
t.join()
out = [
    did(os.open, m + "/root-only", os.O_WRONLY),
    did(os.open, m + "/group", os.O_WRONLY),
    did(os.open, m + "/mine", os.O_CREAT | os.O_WRONLY, 0o644),
    did(os.stat, m + "/private/x"),
    did(os.chmod, m + "/group", 0o666),
] + seen
os.seteuid(0)
os.setegid(0)
os.setgroups([])
out.append(did(os.open, m + "/root-only", os.O_WRONLY))
libc.setfsuid(1000)
out.append(did(os.open, m + "/root-only", os.O_WRONLY))
libc.setfsuid(0)
out.append(did(os.open, m + "/root-only", os.O_WRONLY))
print(" ".join(out))
"#
        );
        let mut c = env.cmd("timeout");
        c.args(["60", "python3", "-c", &script]);
        if embedded {
            c.env("UDAX_MOUNT_OPTIONS", "embedded");
        }
        let out = output(&mut c);
        env.check("python3", &[], &out);
        assert_eq!(
            stdout(&out),
            "EACCES ok EACCES EACCES EPERM ok EACCES ok EACCES ok\n",
            "embedded: {embedded}; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A child made by a raw `clone` (as `syscall(SYS_fork)`: no
/// `pthread_atfork` handler runs) is a process of its own to udax: it
/// attaches with its own connection, so it and its parent each create,
/// write, read back and remove 300 files at the same time without a wrong
/// answer; the udax descriptor it inherited was not handed over (EIO, as
/// after a fork whose handover failed), and the parent's stays its own.
#[test]
fn p_a_child_of_a_raw_clone_attaches_on_its_own_and_leaves_the_parents_connection_alone() {
    if !have("cc") || !have("timeout") {
        return;
    }
    let env = Env::new(32 << 20);
    let dir = tempfile::tempdir().unwrap();
    let prog = cc(dir.path(), "rawfork", &[]);
    // Under a timeout: two processes on one connection could wait for ever.
    let out = env.run("timeout", &["60", prog.to_str().unwrap(), &env.mount]);
    let text = stdout(&out);
    for want in [
        "child_inherited_write=-1,EIO",
        "child_bad=0",
        "parent_bad=0",
        "child_exit=0",
        "parent_after=6,parent",
    ] {
        assert!(text.lines().any(|l| l == want), "want {want} in:\n{text}");
    }
    let r = env.fsck();
    assert!(r.clean, "{:?}", r.problems);
}

/// The pid of the owner serving `dev` (a `udax serve` process naming it).
fn owner_pid(dev: &std::path::Path) -> Option<i32> {
    let want = dev.to_str().unwrap();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        let serves = args.contains(&&b"serve"[..]) && args.contains(&want.as_bytes());
        serves.then_some(pid)
    })
}

/// A process that holds a udax descriptor and makes no call when its owner
/// is killed (an idle shell) does not keep a new owner from starting: its
/// client lets go of the device at the end of its connection (a writable
/// client holds the owner's open of the device, whose flock is the device
/// lock), so another program attaches at once and reads what was written.
#[test]
fn p_an_idle_process_of_a_killed_owner_does_not_keep_a_new_owner_from_starting() {
    idle_while_the_owner_is_killed(|m, h| {
        format!(
            "echo a > {m}/x && exec 3< {m}/x && : > {h}/ready && \
             until [ -e {h}/done ]; do sleep 0.05 3<&-; done; echo idle-done"
        )
    });
}

/// A process forked from a client that makes no udax call of its own (a
/// shell's subshell) does not keep a new owner from starting once its
/// owner is killed: the fork's child handler let go of the copy of the
/// parent's device open and mapping it inherited (it has no listener to
/// let go at the owner's death).
#[test]
fn p_a_forked_child_that_makes_no_udax_call_does_not_keep_a_new_owner_from_starting() {
    idle_while_the_owner_is_killed(|m, h| {
        format!(
            "echo a > {m}/x; ( until [ -e {h}/done ]; do sleep 0.05; done ) & \
             : > {h}/ready; wait; echo idle-done"
        )
    });
}

/// Start bash running `script` under the shim, wait until it has touched
/// `ready` in the host directory, then kill the device's owner with
/// SIGKILL. Returns the bash child, when it was started, and the owner's
/// pid.
fn bash_then_kill_its_owner(
    env: &Env,
    script: &str,
) -> (std::process::Child, std::time::Instant, i32) {
    let child = env
        .cmd("bash")
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !env.host.join("ready").exists() {
        assert!(t.elapsed().as_secs() < 60, "the script never wrote /x");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = owner_pid(&env.dev).expect("an owner serves the device");
    // SAFETY: kill(2) of a process this test's program started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    (child, t, pid)
}

/// Run the bash script `script(mount, host dir)` under the shim: it writes
/// `a` into `/x`, touches `ready`, idles until `done` appears and then
/// prints `idle-done`. Meanwhile its owner is killed with SIGKILL and `cat`
/// of `/x` must start a new owner and print the file; fsck is clean after.
fn idle_while_the_owner_is_killed(script: impl Fn(&str, &str) -> String) {
    if !have("bash") {
        return;
    }
    let env = Env::new(32 << 20);
    let m = &env.mount;
    let h = env.host.to_str().unwrap();
    let (mut idle, t, _) = bash_then_kill_its_owner(&env, &script(m, h));
    // `cat` may come while the owner dies (its listening socket still
    // takes the connection, then resets it): the client starts a new owner
    // then too.
    let out = env.cmd("cat").arg(format!("{m}/x")).output().unwrap();
    std::fs::write(env.host.join("done"), b"").unwrap();
    let idle_out = loop {
        if idle.try_wait().unwrap().is_some() {
            break idle.wait_with_output().unwrap();
        }
        if t.elapsed().as_secs() > 120 {
            let _ = idle.kill();
            panic!("the idle script did not finish");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(
        stdout(&out),
        "a\n",
        "cat through a new owner, stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&idle_out), "idle-done\n");
    let r = env.fsck();
    assert!(r.clean, "{:?}", r.problems);
}

/// `kill -9` of the owner under a running program: the program's next
/// udax calls attach anew, to an owner started again, which recovers the
/// device from its journal: bash reads back what it wrote before the
/// death and goes on writing (it did not fail for the rest of its life
/// with ENOTCONN); fsck is clean.
#[test]
fn p_a_program_whose_owner_was_killed_attaches_to_a_new_owner_and_goes_on() {
    if !have("bash") {
        return;
    }
    let env = Env::new(32 << 20);
    let m = &env.mount;
    let h = env.host.to_str().unwrap();
    let script = format!(
        "echo a > {m}/x && : > {h}/ready && \
         until [ -e {h}/go ]; do sleep 0.05; done; \
         for i in $(seq 100); do read v < {m}/x && break; sleep 0.1; done; \
         echo \"v=$v\"; echo b > {m}/y && read w < {m}/y; echo \"w=$w\""
    );
    let (mut child, t, pid) = bash_then_kill_its_owner(&env, &script);
    // Gone, or a zombie (an empty command line).
    while std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty()) {
        assert!(t.elapsed().as_secs() < 60, "the owner did not die");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::write(env.host.join("go"), b"").unwrap();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed().as_secs() > 120 {
            let _ = child.kill();
            panic!("the script did not finish: {:?}", child.wait_with_output());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l == "v=a") && text.lines().any(|l| l == "w=b"),
        "want v=a and w=b in:\n{text}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.read_udax("/y"), b"b\n");
    let r = env.fsck();
    assert!(r.clean, "{:?}", r.problems);
}
