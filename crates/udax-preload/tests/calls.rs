//! The interposed calls one by one: a small C program (tests/probe.c, built
//! here with `cc`) runs under the shim and prints the result of each call;
//! every line is checked against what the kernel would answer on a local file
//! system (or the documented udax answer), then the device is inspected.

mod common;
use common::*;
use std::collections::BTreeMap;

#[test]
fn interposed_calls_answer_as_the_kernel_would() {
    if !have("cc") || !have("sh") {
        return;
    }
    let env = Env::new(64 << 20);
    let exe = cc(&env.host, "probe", &[]);
    let host = env.host.to_str().unwrap().to_string();
    let out = env.run(exe.to_str().unwrap(), &[&env.mount, &host]);
    let text = stdout(&out);
    let got: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cwd = format!("{}/dir", env.mount);
    let expect: &[(&str, &str)] = &[
        ("open_fd_ge_3", "1"),
        ("fd_cloexec_default", "0"),
        ("getfl_rdwr", "1"),
        ("write", "11"),
        ("lseek_cur", "11"),
        ("pread", "5"),
        ("pread_data", "world"),
        ("writev", "5"),
        ("preadv", "7"),
        ("preadv_data", "ld"),
        ("preadv_data2", "abcde"),
        ("fstat", "0"),
        ("fstat_size", "16"),
        ("stat", "0"),
        ("stat_same_ino", "1"),
        ("dev_differs_from_host", "1"),
        ("statx", "0"),
        ("statx_size", "16"),
        ("dup_shares_offset", "1"),
        ("dup2", "100"),
        ("dup2_getfd", "0"),
        ("write_via_dup2", "1"),
        ("ftruncate", "0"),
        ("size_after_ftruncate", "3"),
        ("posix_fallocate", "0"),
        ("size_after_posix_fallocate", "1048576"),
        ("fsync", "0"),
        ("fdatasync", "0"),
        ("close_dup2", "0"),
        ("read_closed", "-EBADF"),
        ("seek_data", "1048576"),
        ("seek_hole", "0"),
        ("seek_data_past_eof", "-ENXIO"),
        ("mmap", "1"),
        ("mmap_sees_write", "yes"),
        ("msync", "0"),
        ("pread_sees_store", "from-store"),
        ("madvise", "0"),
        ("munmap", "0"),
        ("mremap", "1"),
        ("mremap_keeps_data", "yes"),
        ("mremap_no_maymove", "-ENOMEM"),
        ("mprotect_ro", "0"),
        ("mprotect_part", "-EOPNOTSUPP"),
        ("munmap_part", "0"),
        ("first_page_after_partial_munmap", "yes"),
        ("munmap_rest", "0"),
        ("mmap_fixed", "-EOPNOTSUPP"),
        ("flock_a", "0"),
        ("flock_b_nb", "-EAGAIN"), // = EWOULDBLOCK
        ("flock_a_un", "0"),
        ("flock_b_after", "0"),
        ("setlk", "0"),
        ("getlk", "0"),
        ("getlk_type_unlck", "1"),
        ("setlk_wr_on_rdonly", "-EBADF"),
        ("fopen_w", "1"),
        ("fclose", "0"),
        ("fgets_lines", "3"),
        ("fseek_fgets", "one"),
        ("fileno_of_udax_stream", "1"),
        ("fstat_fileno", "0"),
        ("fstat_fileno_size", "27"),
        ("last_line", "1"),
        ("mkdir", "0"),
        ("mkdir_again", "-EEXIST"),
        ("rmdir_not_empty", "-ENOTEMPTY"),
        ("opendir", "1"),
        ("dirfd_ge_3", "1"),
        ("readdir", "./,../,one,two,"),
        ("readdir_r_after_rewind", "4"),
        ("fstatat_dirfd", "0"),
        ("openat_dirfd", "1"),
        ("unlinkat_dirfd", "0"),
        ("getdents64", "1"),
        ("rename_inside", "0"),
        ("rename_across", "-EXDEV"),
        ("link", "0"),
        ("nlink", "2"),
        ("symlink", "0"),
        ("open_chr_on_udax", "-EACCES"),
        ("access_real_root", "0"),
        ("open_dir_without_read", "-EACCES"),
        ("open_wronly_needs_no_read", "1"),
        ("open_rdonly_trunc_needs_write", "-EACCES"),
        ("rdonly_trunc_truncates", "0"),
        ("faccessat_eaccess_user", "-EACCES"),
        ("eaccess_user", "-EACCES"),
        ("symlink_absolute_out", "0"),
        ("read_through_absolute_out", "1"),
        ("symlink_relative_out", "0"),
        ("stat_through_relative_out", "1"),
        ("host_link_into_udax", "0"),
        // The kernel resolves a host link, and the mount point is not
        // there for it (docs/limits.md).
        ("stat_through_host_link_into_udax", "-ENOENT"),
        ("symlink_dir_out", "0"),
        ("dotdot_after_link_out", "1"),
        ("creat_through_link_out", "1"),
        ("made_on_host", "0"),
        ("unlink", "0"),
        ("access_gone", "-ENOENT"),
        ("access_ok", "0"),
        ("open_missing", "-ENOENT"),
        ("mode_under_umask_027", "416"),
        ("mode_under_umask_0", "438"),
        ("umask_returns_old", "0"),
        ("utimensat", "0"),
        ("atime_mtime_after_utimensat", "12"),
        ("utimensat_omit", "0"),
        ("times_after_omit", "17"),
        ("utimensat_bad_nsec", "-EINVAL"),
        ("chmod", "0"),
        ("mode_after_chmod", "384"),
        ("mkstemp", "1"),
        ("mkstemp_name_filled", "1"),
        ("mkstemp_mode", "384"),
        ("mkstemp_unlink", "0"),
        ("mkdtemp", "1"),
        ("mkdtemp_is_dir", "1"),
        ("mkdtemp_rmdir", "0"),
        ("mkstemp_bad_template", "-EINVAL"),
        ("chdir", "0"),
        ("getcwd", &cwd),
        ("open_relative", "1"),
        ("stat_relative_abs", "0"),
        ("dotdot_relative_leaves_mount", "1"),
        ("dotdot_absolute_leaves_mount", "1"),
        ("dotdot_back_into_mount", "1"),
        ("dotdot_relative_to_host_dir", "1"),
        ("chdir_host", "0"),
        ("getcwd_host_ok", "1"),
        ("scandir", "6"),
        ("scandir_names", ".,..,rel.txt,sym,two,uno,"),
        ("pathconf_name_max", "255"),
        ("inotify_add_watch", "-EOPNOTSUPP"),
        ("copy_file_range", "10"),
        ("copy_data", "0123456789"),
        ("child_read", "1"),
        ("child_read_byte", "50"),
        ("child_open_ok", "1"),
        ("child_read_own", "5"),
        ("child_close", "0"),
        ("child_exit", "0"),
        ("parent_read_after_child", "1"),
        ("parent_read_byte", "51"),
        ("parent_pread_after_fork", "10"),
        ("dup2_for_exec", "9"),
        ("exec_fd_kept", "1"),
    ];
    // Checks the probe makes on a udax file and on the host file next to it
    // (lines NAME_udax and NAME_host): both must give these answers, the
    // kernel's. The generic ioctls; descriptors and the working directory
    // following renames; renameat2; O_TMPFILE; /proc/self/fd links.
    let both: &[(&str, &str)] = &[
        ("stat_file_slash", "-ENOTDIR"),
        ("stat_path_max", "-ENAMETOOLONG"),
        ("fstatat_long_relative", "0"),
        ("stat_file_slash_dot", "-ENOTDIR"),
        ("stat_dir_slash", "0"),
        ("open_file_slash", "-ENOTDIR"),
        ("open_creat_file_slash", "-EISDIR"),
        ("open_creat_new_slash", "-EISDIR"),
        ("new_slash_not_created", "-ENOENT"),
        ("unlink_file_slash", "-ENOTDIR"),
        ("rmdir_file_slash", "-ENOTDIR"),
        ("rename_file_slash", "-ENOTDIR"),
        ("rename_to_slash", "-ENOTDIR"),
        ("link_to_slash", "-ENOENT"),
        ("rmdir_dot", "-EINVAL"),
        ("unlink_dot", "-EISDIR"),
        ("rename_dot", "-EBUSY"),
        ("rename_dotdot", "-EBUSY"),
        ("mkdir_dot", "-EEXIST"),
        ("mkdir_through_missing_dotdot", "-ENOENT"),
        ("not_made_through_missing", "-ENOENT"),
        ("stat_file_dotdot", "-ENOTDIR"),
        ("open_through_file_dotdot", "-ENOTDIR"),
        ("rmdir_dotdot", "-ENOTEMPTY"),
        ("rmdir_missing_dotdot", "-ENOENT"),
        ("unlinkat_removedir_dotdot", "-ENOTEMPTY"),
        ("rename_null_from", "-EFAULT"),
        ("rename_null_to", "-EFAULT"),
        ("link_null_to", "-EFAULT"),
        ("file_survived", "0"),
        ("dir_survived", "0"),
        ("mkdir_slash", "0"),
        ("rmdir_slash", "0"),
        ("getcwd_after_chdir_slash", "1"),
        ("ioctl_fioclex", "0"),
        ("ioctl_getfd_after_fioclex", "1"),
        ("ioctl_fionclex", "0"),
        ("ioctl_getfd_after_fionclex", "0"),
        ("ioctl_fionbio_on", "0"),
        ("ioctl_nonblock_after_fionbio", "1"),
        ("ioctl_fionbio_off", "0"),
        ("ioctl_nonblock_after_fionbio_off", "0"),
        ("ioctl_fioasync_off", "0"),
        ("ioctl_fioasync_on", "-ENOTTY"),
        ("ioctl_fioqsize", "0"),
        ("ioctl_fioqsize_value", "4096"), // bytes occupied: one block
        ("ioctl_figetbsz", "0"),
        ("ioctl_figetbsz_value", "4096"),
        ("ioctl_fionread", "0"),
        ("ioctl_fionread_value", "3"),
        ("ioctl_tcgets", "-ENOTTY"),
        ("ioctl_o_path_fioclex", "-EBADF"),
        ("openat_after_rename_lands_in_new_name", "1"),
        ("fstatat_after_parent_rename", "0"),
        ("getcwd_follows_rename", "1"),
        ("relative_open_after_rename", "1"),
        ("getcwd_of_removed_dir", "-ENOENT"),
        ("create_in_removed_cwd", "-ENOENT"),
        ("openat_in_removed_dir", "-ENOENT"),
        ("openat_in_removed_then_recreated_dir", "-ENOENT"),
        ("recreated_dir_untouched", "-ENOENT"),
        ("fchmod_after_rename", "0"),
        ("mode_after_fchmod", "384"),
        ("fchmod_after_unlink", "0"),
        ("fstat_mode_after_unlinked_fchmod", "416"),
        ("fchmod_o_path", "-EBADF"),
        ("rename_exchange", "0"),
        ("exchanged_dir_has_its_file", "1"),
        ("exchanged_file_size", "2"),
        ("rename_exchange_missing", "-ENOENT"),
        ("rename_noreplace_existing", "-EEXIST"),
        ("rename_exchange_and_noreplace", "-EINVAL"),
        ("rename_exchange_into_itself", "-EINVAL"),
        ("tmpfile_open", "1"),
        ("tmpfile_write", "4"),
        ("tmpfile_nlink", "0"),
        ("tmpfile_readlink", "1"),
        ("tmpfile_linkat_proc", "0"),
        ("tmpfile_named_size", "4"),
        ("tmpfile_nlink_after_link", "1"),
        ("tmpfile_linkat_empty_path", "0"),
        ("tmpfile_read_on_wronly", "-EBADF"),
        ("tmpfile_empty_path_named", "0"),
        ("tmpfile_excl_linkat", "-ENOENT"),
        ("tmpfile_rdonly", "-EINVAL"),
        ("tmpfile_in_a_file", "-ENOTDIR"),
        ("reopen_reads_the_file", "1"),
        ("stat_fd_link_size", "6"),
        ("readlink_fd_link", "1"),
        ("readlink_fd_link_deleted", "1"),
        ("create_through_dir_fd_link", "1"),
        ("chown", "0"),
        ("chown_uid", "1000"),
        ("chown_gid", "1001"),
        ("chown_mode", "493"), // 0o755: set-user-ID and (group-executable) set-group-ID gone
        ("fchown_keep_uid", "0"),
        ("fchown_uid", "1000"),
        ("fchown_gid", "2000"),
        ("lchown", "0"),
        ("fchownat", "0"),
        ("fchownat_bad_flag", "-EINVAL"),
        ("fchown_o_path", "-EBADF"),
        ("fchownat_empty_o_path", "0"),
        ("owner_after_empty_path", "40004001"),
        ("mkdir_setgid_dropped", "493"), // 0o755
        ("chown_dir", "0"),
        ("chown_dir_mode", "1517"), // 0o2755: a directory keeps set-group-ID
        ("chown_missing", "-ENOENT"),
        ("populate_write", "0"),
        ("populate_write_allocates", "1"),
        ("populate_read", "0"),
        ("populate_past_eof", "-EFAULT"),
        ("populate_write_read_only", "-EINVAL"),
        ("symlink_make", "0"),
        ("readlink_len", "2"),
        ("readlink_value", "1"),
        ("readlink_small_buffer", "1"),
        ("readlinkat_dirfd", "2"),
        ("readlink_not_a_link", "-EINVAL"),
        ("lstat_is_link", "1"),
        ("lstat_size", "2"),
        ("lstat_mode", "511"), // 0o777
        ("fstatat_nofollow_is_link", "1"),
        ("stat_follows", "1"),
        ("open_nofollow", "-ELOOP"),
        ("open_path_nofollow", "1"),
        ("fstat_path_nofollow_is_link", "1"),
        ("readlinkat_empty_path", "2"),
        ("symlink_to_dir", "0"),
        ("dotdot_after_link", "0"),
        ("dotdot_after_link_not_lexical", "-ENOENT"),
        ("openat_dotdot_through_link_dir", "0"),
        ("getcwd_after_chdir_through_link", "1"),
        ("relative_dotdot_after_chdir_through_link", "0"),
        ("realpath_through_link", "1"),
        ("stat_self_loop", "-ELOOP"),
        ("lstat_self_loop", "0"),
        ("stat_dangling", "-ENOENT"),
        ("creat_through_dangling", "1"),
        ("dangling_target_made", "0"),
        ("creat_excl_on_link", "-EEXIST"),
        ("mkdir_on_link", "-EEXIST"),
        ("symlink_on_existing", "-EEXIST"),
        ("symlink_empty_target", "-ENOENT"),
        ("lchown_link", "0"),
        ("lchown_changed_link_only", "1"),
        ("fchownat_nofollow", "0"),
        ("utimensat_nofollow", "0"),
        ("utimensat_changed_link_only", "1"),
        ("fchmodat_nofollow_link", "-EOPNOTSUPP"),
        ("chmod_follows", "0"),
        ("chmod_changed_target", "384"), // 0o600
        ("link_of_link", "0"),
        ("link_of_link_is_link", "1"),
        ("linkat_follow", "0"),
        ("linkat_follow_is_file", "1"),
        ("rename_link", "0"),
        ("readlink_renamed", "2"),
        ("rmdir_link_to_dir", "-ENOTDIR"),
        ("stat_link_to_file_slash", "-ENOTDIR"),
        ("lstat_link_to_dir_slash_follows", "1"),
        ("readdir_d_type_lnk", "1"),
        ("unlink_link", "0"),
        ("target_kept", "0"),
        ("symlink_long", "0"),
        ("readlink_long", "3000"),
        ("symlink_too_long", "-ENAMETOOLONG"),
        ("mkfifo", "0"),
        ("mkfifo_again", "-EEXIST"),
        ("fifo_is_fifo", "1"),
        ("fifo_open_read", "1"),
        ("fifo_read", "4"),
        ("fifo_data", "1"),
        ("fifo_nonblock_write_no_reader", "-ENXIO"),
        ("mknod_fifo", "0"),
        ("mknod_sock", "0"),
        ("open_sock", "-ENXIO"),
        ("mknod_chr", "0"),
        ("chr_rdev", "1"),
        ("chr_statx_rdev", "1003"),
        ("mknod_blk", "0"),
        ("mknod_dir", "-EPERM"),
        ("o_path_of_fifo", "1"),
        ("fstat_o_path_fifo", "1"),
        ("readdir_special_types", "15"),
        ("unlink_fifo", "0"),
        ("bind_unix", "0"),
        ("bound_is_socket", "1"),
        ("bind_in_use", "-EADDRINUSE"),
        ("accept", "1"),
        ("socket_read", "2"),
        ("connect_to_a_file", "-ECONNREFUSED"),
        ("unlink_socket", "0"),
    ];
    let per_side: Vec<(String, &str)> = both
        .iter()
        .flat_map(|(k, v)| ["udax", "host"].map(|t| (format!("{k}_{t}"), *v)))
        .collect();
    let mut bad = Vec::new();
    for (k, v) in expect
        .iter()
        .copied()
        .chain(per_side.iter().map(|(k, v)| (k.as_str(), *v)))
    {
        match got.get(k) {
            Some(g) if g == v => {}
            g => bad.push(format!("{k}: expected {v}, got {g:?}")),
        }
    }
    assert!(
        bad.is_empty(),
        "mismatches:\n{}\nfull output:\n{text}",
        bad.join("\n")
    );
    // The device holds what the program made, and survived the forked
    // child's exit (its exit handlers did not touch the device).
    env.with_fs(|fs| {
        // The shell exec'd through execl wrote at the shared offset.
        assert_eq!(read_all(fs, "/copy"), b"0123x\n6789");
        assert_eq!(read_all(fs, "/s.txt"), b"line one\nline 2\nline three\n");
        assert_eq!(read_all(fs, "/unclosed.txt"), b"flushed at exit\n");
        assert_eq!(read_all(fs, "/stdout.txt"), b"stdout is fd 1\n");
        let m = read_all(fs, "/mapped");
        assert_eq!(&m[4096..4106], b"from-store");
        let names: Vec<String> = fs
            .read_dir("/dir")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["rel.txt", "sym", "two", "uno"]);
        assert_eq!(fs.readlink("/dir/sym").unwrap(), b"x");
        assert_eq!(fs.stat("/f").unwrap().mode & 0o7777, 0o600);
    });
    let r = env.fsck();
    assert!(r.clean && r.problems.is_empty(), "fsck: {:?}", r.problems);
    assert!(
        !env.host.join("uno").exists(),
        "EXDEV rename left nothing on the host"
    );
}

#[test]
fn unserved_calls_are_silent_without_udax_log() {
    if !have("python3") {
        return;
    }
    let env = Env::new(16 << 20);
    env.write_udax("/x", b"x");
    // inotify cannot watch a udax file (no kernel inode): EOPNOTSUPP.
    let script = format!(
        "import ctypes, os\n\
         c = ctypes.CDLL(None, use_errno=True)\n\
         fd = c.inotify_init()\n\
         r = c.inotify_add_watch(fd, b'{}', 2)\n\
         print(r, ctypes.get_errno())",
        env.at("x")
    );
    let out = output(
        env.cmd("python3")
            .env_remove("UDAX_LOG")
            .args(["-c", &script]),
    );
    assert_eq!(
        stdout(&out).trim(),
        format!("-1 {}", libc::EOPNOTSUPP),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("udax-preload"),
        "no log line without UDAX_LOG: {err}"
    );
    // With UDAX_LOG the same call logs one line.
    let out = output(env.cmd("python3").args(["-c", &script]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("udax-preload: inotify_add_watch").count(),
        1,
        "{err}"
    );
}

#[test]
fn preadv2_and_pwritev2_of_a_64_bit_offset_build_reach_udax_and_statx_says_dax() {
    if !have("cc") {
        return;
    }
    let env = Env::new(16 << 20);
    let exe = cc(&env.host, "lfs", &["-D_FILE_OFFSET_BITS=64"]);
    // The build really calls the 64-bit entry points.
    let syms = output(std::process::Command::new("nm").args(["-D"]).arg(&exe));
    if syms.status.success() {
        let s = stdout(&syms);
        assert!(s.contains("preadv64v2") && s.contains("pwritev64v2"), "{s}");
    }
    let out = env.run(exe.to_str().unwrap(), &[&env.at("f")]);
    assert_eq!(stdout(&out), "size=111 dax=1 dax_in_mask=1\n");
    let data = env.read_udax("/f");
    assert_eq!(&data[100..], b"hello world");
    // The host (tmpfs) answers the same calls the same way, without DAX.
    let host = env.host.join("h");
    let out = output(std::process::Command::new(&exe).arg(&host));
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).starts_with("size=111 dax=0"),
        "{}",
        stdout(&out)
    );
}
