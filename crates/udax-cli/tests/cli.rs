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
