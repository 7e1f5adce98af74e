//! sqlite3, unmodified, on udax through the shim: WAL mode (its shared-memory
//! index is an mmap of the -shm file, served by the udax fault engine), POSIX
//! locks, fsync, truncate; checked with sqlite's own integrity check.

mod common;
use common::*;

fn script(txns: usize, per: usize) -> String {
    let mut s = String::from(
        "PRAGMA journal_mode=WAL;\nCREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT);\nCREATE INDEX tk ON t(k);\n",
    );
    for t in 0..txns {
        s.push_str("BEGIN;\n");
        for i in 0..per {
            let n = t * per + i;
            s.push_str(&format!(
                "INSERT INTO t(k, v) VALUES({}, 'value-{n}-{}');\n",
                (n * 7919) % 100_003,
                "x".repeat(n % 40)
            ));
        }
        s.push_str("COMMIT;\n");
    }
    s.push_str("PRAGMA integrity_check;\nSELECT count(*), sum(k) FROM t;\n");
    s
}

#[test]
fn sqlite3_wal_100k_inserts_pass_integrity_check_and_reopen() {
    if !have("sqlite3") {
        return;
    }
    let env = Env::new(256 << 20);
    let (txns, per) = (100, 1000);
    let n = txns * per;
    let sum: u64 = (0..n).map(|i| ((i * 7919) % 100_003) as u64).sum();
    let sql = env.host.join("load.sql");
    std::fs::write(&sql, script(txns, per)).unwrap();
    let db = env.at("db.sqlite");
    let out = output(
        env.cmd("sqlite3")
            .arg(&db)
            .stdin(std::fs::File::open(&sql).unwrap()),
    );
    env.check("sqlite3", &[&db], &out);
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(
        lines,
        ["wal", "ok", &format!("{n}|{sum}")],
        "first run output"
    );
    // The database and its WAL live in udax, not on the host.
    env.with_fs(|fs| {
        let st = fs.stat("/db.sqlite").expect("db in udax");
        assert!(st.size >= 4096, "db size {}", st.size);
        let names: Vec<String> = fs
            .read_dir("/")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(
            names.iter().all(|n| n.starts_with("db.sqlite")),
            "{names:?}"
        );
    });
    // Reopen in a new process: same rows, still consistent.
    let out = env.run(
        "sqlite3",
        &[
            &db,
            "PRAGMA integrity_check; SELECT count(*), sum(k), max(id) FROM t; PRAGMA journal_mode;",
        ],
    );
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(
        lines,
        ["ok", &format!("{n}|{sum}|{n}"), "wal"],
        "reopen output"
    );
    // A checkpoint back into the main file, and the data is still whole.
    let out = env.run(
        "sqlite3",
        &[&db, "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA quick_check; SELECT count(*) FROM t WHERE k < 1000;"],
    );
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    let small = (0..n).filter(|i| (i * 7919) % 100_003 < 1000).count();
    assert_eq!(
        lines[1..],
        ["ok".to_string(), small.to_string()],
        "{lines:?}"
    );
}
