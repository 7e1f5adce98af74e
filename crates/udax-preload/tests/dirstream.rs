//! Directory streams through the shim read a page at a time, positioned by
//! listing cookies (docs/preload.md, "Directory streams"): a small C
//! program (tests/dirstream.c) lists udax directories while they change.
//! Each run is under `timeout`: a stream that never reaches its end would
//! otherwise hang the test.

mod common;
use common::*;

fn dirstream(env: &Env, mode: &str, n: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let prog = cc(dir.path(), "dirstream", &[]);
    let out = env.run(
        "timeout",
        &[
            "120",
            prog.to_str().unwrap(),
            mode,
            &env.at("d"),
            &n.to_string(),
        ],
    );
    stdout(&out)
}

fn want_lines(text: &str, want: &[&str]) {
    for w in want {
        assert!(text.lines().any(|l| l == *w), "want {w} in:\n{text}");
    }
}

/// 5000 names stay in a directory while a thread of the listing process
/// creates and removes 4000 others without pause: three listings by
/// readdir and three by getdents64 (each more than one page, pausing
/// between pages) each return every name that stayed exactly once.
#[test]
fn a_listing_while_another_thread_creates_and_removes_entries_returns_each_kept_entry_once() {
    if !have("cc") || !have("timeout") {
        return;
    }
    let env = Env::new(64 << 20);
    let text = dirstream(&env, "churn", 5000);
    want_lines(&text, &["churn_readdir_bad=0", "churn_getdents_bad=0"]);
    let r = env.fsck();
    assert!(r.clean, "{:?}", r.problems);
}

/// '.' and '..' come first; a telldir position (and a getdents64 `d_off`
/// given to lseek) taken halfway through 3000 names resumes at the same
/// entry after 3000 names were added around it and the
/// stream read the directory afresh (rewinddir, lseek to 0); the telldir
/// position given to another stream's seekdir reads the same entry too.
#[test]
fn seekdir_and_lseek_to_a_saved_position_resume_at_the_same_entry_after_names_were_added_before_it()
{
    if !have("cc") || !have("timeout") {
        return;
    }
    let env = Env::new(64 << 20);
    let text = dirstream(&env, "seek", 3000);
    want_lines(
        &text,
        &[
            "dots_first=1",
            "seekdir_same=1",
            "seekdir_0_dot=1",
            "seekdir_other_stream_same=1",
            "lseek_same=1",
        ],
    );
}

/// A directory of 20000 names lists each exactly once by readdir and by
/// getdents64; the readdir stream holds a page, not a copy of the
/// directory taken at opendir: names created after its first entries
/// appear further on.
#[test]
fn a_directory_of_20000_entries_lists_in_pages_and_a_stream_sees_names_added_after_opendir() {
    if !have("cc") || !have("timeout") {
        return;
    }
    let env = Env::new(128 << 20);
    let text = dirstream(&env, "big", 20000);
    want_lines(
        &text,
        &[
            "big_readdir_bad=0",
            "big_added_seen=1",
            "big_getdents_bad=0",
        ],
    );
}
