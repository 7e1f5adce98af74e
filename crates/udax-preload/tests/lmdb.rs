//! LMDB on udax through the shim: its data file is read through a shared
//! mmap (and written through one with MDB_WRITEMAP), its lock file is a shared
//! mapping holding process-shared mutexes. A C program against liblmdb, and
//! the mdb_load / mdb_dump tools.

mod common;
use common::*;

fn have_liblmdb() -> bool {
    let found = std::path::Path::new("/usr/include/lmdb.h").exists();
    if !found {
        if std::env::var("UDAX_REQUIRE_PROGRAMS").as_deref() == Ok("1") {
            panic!("liblmdb-dev (lmdb.h) is not installed and UDAX_REQUIRE_PROGRAMS=1");
        }
        eprintln!("SKIP: lmdb.h not installed (liblmdb-dev)");
    }
    found
}

fn run_program(writemap: bool) {
    if !have("cc") || !have_liblmdb() {
        return;
    }
    let env = Env::new(128 << 20);
    let exe = cc(&env.host, "lmdb", &["-llmdb"]);
    env.run("mkdir", &[&env.at("db")]);
    let mut args = vec![env.at("db")];
    if writemap {
        args.push("writemap".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.run(exe.to_str().unwrap(), &args);
    assert_eq!(stdout(&out), "ok 20000\n");
    env.with_fs(|fs| {
        let names: Vec<String> = fs
            .read_dir("/db")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["data.mdb", "lock.mdb"]);
        let st = fs.stat("/db/data.mdb").unwrap();
        assert!(st.size >= 20000 * 16, "data.mdb size {}", st.size);
        if writemap {
            // WRITEMAP sizes the file to the map; stores allocated only what they touched.
            assert_eq!(st.size, 64 << 20);
            assert!(st.blocks * 512 < st.size, "sparse: {} blocks", st.blocks);
        }
    });
}

#[test]
fn lmdb_puts_and_gets_through_a_read_only_map() {
    run_program(false);
}

#[test]
fn lmdb_puts_and_gets_with_writemap() {
    run_program(true);
}

#[test]
fn mdb_load_then_mdb_dump_round_trip() {
    if !have("mdb_load") || !have("mdb_dump") || !have("mdb_stat") {
        return;
    }
    let env = Env::new(64 << 20);
    let mut data = String::new();
    for i in 0..5000 {
        data.push_str(&format!(" key{i:05}\n value-{i}-{}\n", "v".repeat(i % 50)));
    }
    let input = format!("VERSION=3\nformat=print\ntype=btree\nHEADER=END\n{data}DATA=END\n");
    let f = env.host.join("in.txt");
    std::fs::write(&f, &input).unwrap();
    env.run("mkdir", &[&env.at("env")]);
    env.run("mdb_load", &["-f", f.to_str().unwrap(), &env.at("env")]);
    let out = env.run("mdb_dump", &["-p", &env.at("env")]);
    let dump = stdout(&out);
    let body = dump
        .split_once("HEADER=END\n")
        .and_then(|(_, b)| b.strip_suffix("DATA=END\n"))
        .unwrap_or_else(|| panic!("mdb_dump output:\n{dump}"));
    assert_eq!(body, data, "dump = loaded data");
    let out = env.run("mdb_stat", &[&env.at("env")]);
    assert!(stdout(&out).contains("Entries: 5000"), "{}", stdout(&out));
    env.with_fs(|fs| assert!(fs.stat("/env/data.mdb").unwrap().size > 0));
}
