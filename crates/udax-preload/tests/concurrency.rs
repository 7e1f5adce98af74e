//! Threads and processes: the lazy attach raced by many threads; processes
//! sharing a device through its owner; and, mounted embedded, a second
//! process on a device that is in use (one owner at a time, SPEC D3).

mod common;
use common::*;

#[test]
fn threads_racing_the_first_call_all_get_their_own_data() {
    if !have("cc") {
        return;
    }
    let env = Env::new(64 << 20);
    let exe = cc(&env.host, "threads", &[]);
    let out = env.run(
        exe.to_str().unwrap(),
        &[&env.mount, env.host.to_str().unwrap()],
    );
    assert_eq!(stdout(&out), "ok 8\n");
    env.with_fs(|fs| {
        for t in 0..8u8 {
            let d = read_all(fs, &format!("/t{t}"));
            assert_eq!(d.len(), 256 * 1024);
            assert!(d
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i as u32 * 31 + t as u32) as u8));
        }
    });
    for t in 0..8 {
        assert_eq!(
            std::fs::read(env.host.join(format!("h{t}"))).unwrap(),
            b"hhhhhhhh"
        );
    }
}

#[test]
fn a_second_process_shares_the_device_through_the_owner_while_another_holds_a_file() {
    if !have("sh") || !have("cat") {
        return;
    }
    let env = Env::new(16 << 20);
    env.write_udax("/f", b"data\n");
    // A shell opens a udax file (attaching to the owner, started for it)
    // and keeps running.
    let mut holder = spawn_ready(env.cmd("sh").args([
        "-c",
        &format!(
            "exec 3<>{}; echo ready; read x; echo more >&3; exit 0",
            env.at("f")
        ),
    ]));
    // Meanwhile, other processes read and write the same device.
    let out = env.run("cat", &[&env.at("f")]);
    assert_eq!(stdout(&out), "data\n");
    env.run("sh", &["-c", &format!("echo other > {}", env.at("g"))]);
    drop(holder.stdin.take()); // `read x` ends: the holder writes and exits
    assert!(holder.wait().unwrap().success());
    let out = env.run("cat", &[&env.at("f"), &env.at("g")]);
    assert_eq!(stdout(&out), "more\nother\n");
}

#[test]
fn embedded_exit_releases_the_device_lock_and_a_busy_device_names_its_holder() {
    // Regression: the shim kept its mounted Fs in a static, so the device
    // outlived the checkpoint. Mounted embedded (one process owns the
    // device, SPEC D3), a second process meanwhile is refused, and the
    // error names the holder's pid (from /proc/locks).
    if !have("sh") || !have("cat") {
        return;
    }
    let env = Env::new(16 << 20);
    env.write_udax("/f", b"x");
    let embedded = |prog: &str| {
        let mut c = env.cmd(prog);
        c.env("UDAX_MOUNT_OPTIONS", "embedded");
        c
    };
    let mut holder = spawn_ready(embedded("sh").args([
        "-c",
        &format!("exec 3<{}; echo ready; read x; exit 0", env.at("f")),
    ]));
    let out = output(embedded("cat").arg(env.at("f")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "cat must fail while the device is held"
    );
    assert!(err.contains("Device or resource busy"), "stderr: {err}");
    assert!(
        err.contains(&format!("held by pid {}", holder.id())),
        "the busy error names the holder: {err}"
    );
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    // dash leaves with _exit (no destructors): the kernel dropped its flock.
    // The next owner takes over.
    let out = output(embedded("cat").arg(env.at("f")));
    env.check("cat", &[], &out);
    assert_eq!(stdout(&out), "x");
}

#[test]
fn stdio_streams_lock_once_the_program_starts_a_thread_and_lines_never_mix() {
    if !have("cc") {
        return;
    }
    let env = Env::new(64 << 20);
    let exe = cc(&env.host, "stdio_locks", &[]);
    for mode in ["pthread", "thrd", "timer", "aio"] {
        let out = env.run(
            exe.to_str().unwrap(),
            &[mode, &env.mount, env.host.to_str().unwrap()],
        );
        assert_eq!(
            stdout(&out),
            "ok\n",
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn one_fault_handler_serves_one_faulting_thread_and_a_second_starts_when_faults_queue() {
    if !have("cc") {
        return;
    }
    let env = Env::new(384 << 20);
    let exe = cc(&env.host, "handlers", &[]);
    let out = env.run(exe.to_str().unwrap(), &["one", &env.mount]);
    assert_eq!(
        stdout(&out),
        "udax-fault-0\n",
        "faults one at a time: one handler"
    );
    let env = Env::new(384 << 20);
    let out = env.run(exe.to_str().unwrap(), &["many", &env.mount]);
    assert_eq!(
        stdout(&out),
        "udax-fault-0 udax-fault-1\n",
        "8 threads faulting at once: a second handler; {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_panic_inside_the_shim_is_eio_for_that_call_and_the_program_goes_on() {
    if !have("cc") {
        return;
    }
    if !cfg!(debug_assertions) {
        // The shim under test has the panic path only when built with debug
        // assertions (the test profile; not `--release`).
        eprintln!("SKIP: the release shim has no test panic path");
        return;
    }
    let env = Env::new(16 << 20);
    let exe = cc(&env.host, "panic", &[]);
    // Silent by default: nothing on the program's stderr.
    let out = output(
        env.cmd(exe.to_str().unwrap())
            .arg(&env.mount)
            .env_remove("UDAX_LOG"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout(&out), "ok\n", "stderr: {err}");
    assert_eq!(err, "", "no panic message without UDAX_LOG");
    // With the log: one line per panic.
    let out = output(
        env.cmd(exe.to_str().unwrap())
            .arg(&env.mount)
            .env("UDAX_LOG", "error"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout(&out), "ok\n", "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "one line for each of 3 panics: {err}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("internal panic") && l.contains("the test panic")),
        "{err}"
    );
    assert_eq!(env.read_udax("/after"), b"after");
}

#[test]
fn calls_relative_to_a_directory_being_renamed_all_land_in_it() {
    if !have("cc") {
        return;
    }
    let env = Env::new(64 << 20);
    let exe = cc(&env.host, "renames", &[]);
    // The kernel's answer first, on the host directory: every call succeeds.
    let host = output(std::process::Command::new(&exe).args([env.host.to_str().unwrap(), "3000"]));
    assert_eq!(stdout(&host), "ok 3000\n", "on the host");
    let out = env.run(exe.to_str().unwrap(), &[&env.mount, "3000"]);
    assert_eq!(stdout(&out), "ok 3000\n");
    env.with_fs(|fs| {
        // 3000 renames: back at its first name, empty.
        assert!(fs.stat("/ren_a").unwrap().is_dir());
        assert!(fs.stat("/ren_b").is_err());
        assert!(fs.read_dir("/ren_a").unwrap().is_empty());
    });
}
