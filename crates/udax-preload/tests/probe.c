/* Exercises the interposed calls one by one on a udax mount; prints one
 * "name=value" line per check (value: a number, a string, or -ERRNO).
 * Usage: probe MOUNT HOSTDIR */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *M, *H;
static char pbuf[8][4096];
static int pi;

static const char *at(const char *base, const char *rel) {
    char *b = pbuf[pi++ % 8];
    snprintf(b, 4096, "%s/%s", base, rel);
    return b;
}

static void num(const char *name, long v) {
    if (v < 0)
        printf("%s=-%s\n", name, strerrorname_np(errno));
    else
        printf("%s=%ld\n", name, v);
    fflush(stdout);
}

static void str(const char *name, const char *v) {
    printf("%s=%s\n", name, v);
    fflush(stdout);
}

static void tnum(const char *name, const char *tag, long v) {
    char n[96];
    snprintf(n, sizeof n, "%s_%s", name, tag);
    num(n, v);
}

/* The ioctls the kernel answers for every open file (fs/ioctl.c), on a file
 * in BASE; lines end in _TAG, so udax and the host can be compared. */
static void generic_ioctls(const char *base, const char *tag) {
    int fd = open(at(base, "ioctl.f"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    write(fd, "12345", 5);
    int on = 1, off = 0, bsz = 0, avail = -1;
    long long qs = -1;
    char term[64];
    tnum("ioctl_fioclex", tag, ioctl(fd, FIOCLEX));
    tnum("ioctl_getfd_after_fioclex", tag, fcntl(fd, F_GETFD));
    tnum("ioctl_fionclex", tag, ioctl(fd, FIONCLEX));
    tnum("ioctl_getfd_after_fionclex", tag, fcntl(fd, F_GETFD));
    tnum("ioctl_fionbio_on", tag, ioctl(fd, FIONBIO, &on));
    tnum("ioctl_nonblock_after_fionbio", tag, !!(fcntl(fd, F_GETFL) & O_NONBLOCK));
    tnum("ioctl_fionbio_off", tag, ioctl(fd, FIONBIO, &off));
    tnum("ioctl_nonblock_after_fionbio_off", tag, !!(fcntl(fd, F_GETFL) & O_NONBLOCK));
    tnum("ioctl_fioasync_off", tag, ioctl(fd, FIOASYNC, &off));
    tnum("ioctl_fioasync_on", tag, ioctl(fd, FIOASYNC, &on));
    tnum("ioctl_fioqsize", tag, ioctl(fd, FIOQSIZE, &qs));
    tnum("ioctl_fioqsize_value", tag, (long)qs);
    tnum("ioctl_figetbsz", tag, ioctl(fd, FIGETBSZ, &bsz));
    tnum("ioctl_figetbsz_value", tag, bsz);
    lseek(fd, 2, SEEK_SET);
    tnum("ioctl_fionread", tag, ioctl(fd, FIONREAD, &avail));
    tnum("ioctl_fionread_value", tag, avail);
    tnum("ioctl_tcgets", tag, ioctl(fd, TCGETS, term));
    close(fd);
    fd = open(at(base, "ioctl.f"), O_PATH);
    tnum("ioctl_o_path_fioclex", tag, ioctl(fd, FIOCLEX));
    close(fd);
    unlink(at(base, "ioctl.f"));
}

/* Descriptors and the working directory follow their directory's inode
 * across renames, and see it gone once removed; fchmod follows a file's
 * inode. Lines end in _TAG, so udax and the host can be compared. */
static void follow_renames(const char *base, const char *tag) {
    char cwd[4096], want[4096];
    struct stat st;
    mkdir(at(base, "mv"), 0755);
    int d = open(at(base, "mv"), O_RDONLY | O_DIRECTORY);
    rename(at(base, "mv"), at(base, "mv2"));
    close(openat(d, "x", O_CREAT | O_WRONLY, 0644));
    tnum("openat_after_rename_lands_in_new_name", tag, stat(at(base, "mv2/x"), &st) == 0);
    mkdir(at(base, "mv2/sub"), 0755);
    int s = open(at(base, "mv2/sub"), O_RDONLY | O_DIRECTORY);
    rename(at(base, "mv2"), at(base, "mv3"));
    tnum("fstatat_after_parent_rename", tag, fstatat(s, "../x", &st, 0));
    close(s);
    close(d);

    mkdir(at(base, "cw"), 0755);
    chdir(at(base, "cw"));
    rename(at(base, "cw"), at(base, "cw2"));
    snprintf(want, sizeof want, "%s/cw2", base);
    tnum("getcwd_follows_rename", tag, getcwd(cwd, sizeof cwd) && strcmp(cwd, want) == 0);
    close(open("rel", O_CREAT | O_WRONLY, 0644));
    tnum("relative_open_after_rename", tag, stat(at(base, "cw2/rel"), &st) == 0);
    mkdir(at(base, "gone"), 0755);
    chdir(at(base, "gone"));
    d = open(".", O_RDONLY | O_DIRECTORY);
    rmdir(at(base, "gone"));
    tnum("getcwd_of_removed_dir", tag, getcwd(cwd, sizeof cwd) ? 0 : -1);
    tnum("create_in_removed_cwd", tag, open("y", O_CREAT | O_WRONLY, 0644));
    tnum("openat_in_removed_dir", tag, openat(d, "y", O_CREAT | O_WRONLY, 0644));
    close(d);
    chdir(base);
    mkdir(at(base, "re"), 0755);
    d = open(at(base, "re"), O_RDONLY | O_DIRECTORY);
    rmdir(at(base, "re"));
    mkdir(at(base, "re"), 0755); /* may reuse the inode number */
    tnum("openat_in_removed_then_recreated_dir", tag, openat(d, "z", O_CREAT | O_WRONLY, 0644));
    tnum("recreated_dir_untouched", tag, stat(at(base, "re/z"), &st));
    close(d);

    int f = open(at(base, "fm"), O_CREAT | O_RDWR, 0644);
    rename(at(base, "fm"), at(base, "fm2"));
    tnum("fchmod_after_rename", tag, fchmod(f, 0600));
    stat(at(base, "fm2"), &st);
    tnum("mode_after_fchmod", tag, st.st_mode & 07777);
    unlink(at(base, "fm2"));
    tnum("fchmod_after_unlink", tag, fchmod(f, 0640));
    tnum("fstat_mode_after_unlinked_fchmod", tag, fstat(f, &st) == 0 ? (long)(st.st_mode & 07777) : -1);
    close(f);
    int p = open(at(base, "cw2"), O_PATH);
    tnum("fchmod_o_path", tag, fchmod(p, 0700));
    close(p);

    /* renameat2: exchange a file and a directory, no-replace */
    f = open(at(base, "xf"), O_CREAT | O_WRONLY, 0644);
    write(f, "xf", 2);
    close(f);
    tnum("rename_exchange", tag,
         renameat2(AT_FDCWD, at(base, "xf"), AT_FDCWD, at(base, "cw2"), RENAME_EXCHANGE));
    tnum("exchanged_dir_has_its_file", tag, stat(at(base, "xf/rel"), &st) == 0);
    tnum("exchanged_file_size", tag, stat(at(base, "cw2"), &st) == 0 ? (long)st.st_size : -1);
    tnum("rename_exchange_missing", tag,
         renameat2(AT_FDCWD, at(base, "xf"), AT_FDCWD, at(base, "nope"), RENAME_EXCHANGE));
    tnum("rename_noreplace_existing", tag,
         renameat2(AT_FDCWD, at(base, "cw2"), AT_FDCWD, at(base, "xf"), RENAME_NOREPLACE));
    tnum("rename_exchange_and_noreplace", tag,
         renameat2(AT_FDCWD, at(base, "cw2"), AT_FDCWD, at(base, "xf"),
                   RENAME_EXCHANGE | RENAME_NOREPLACE));
    tnum("rename_exchange_into_itself", tag,
         renameat2(AT_FDCWD, at(base, "xf"), AT_FDCWD, at(base, "xf/rel"), RENAME_EXCHANGE));
}

/* O_TMPFILE, and naming it with linkat (the two ways open(2) gives) */
static void unnamed_files(const char *base, const char *tag) {
    struct stat st;
    char p[64];
    int t = open(base, O_TMPFILE | O_RDWR, 0600);
    tnum("tmpfile_open", tag, t >= 0);
    tnum("tmpfile_write", tag, write(t, "tmp!", 4));
    tnum("tmpfile_nlink", tag, fstat(t, &st) == 0 ? (long)st.st_nlink : -1);
    snprintf(p, sizeof p, "/proc/self/fd/%d", t);
    char l[4096], want[4096];
    ssize_t k = readlink(p, l, sizeof l - 1);
    l[k > 0 ? k : 0] = 0;
    snprintf(want, sizeof want, "%s/#%lu (deleted)", base, (unsigned long)st.st_ino);
    tnum("tmpfile_readlink", tag, strcmp(l, want) == 0);
    tnum("tmpfile_linkat_proc", tag,
         linkat(AT_FDCWD, p, AT_FDCWD, at(base, "tmp.named"), AT_SYMLINK_FOLLOW));
    tnum("tmpfile_named_size", tag, stat(at(base, "tmp.named"), &st) == 0 ? (long)st.st_size : -1);
    tnum("tmpfile_nlink_after_link", tag, fstat(t, &st) == 0 ? (long)st.st_nlink : -1);
    close(t);
    unlink(at(base, "tmp.named"));
    t = open(base, O_TMPFILE | O_WRONLY, 0600);
    tnum("tmpfile_linkat_empty_path", tag,
         linkat(t, "", AT_FDCWD, at(base, "tmp.empty"), AT_EMPTY_PATH));
    tnum("tmpfile_read_on_wronly", tag, read(t, p, 1));
    close(t);
    tnum("tmpfile_empty_path_named", tag, unlink(at(base, "tmp.empty")));
    t = open(base, O_TMPFILE | O_WRONLY | O_EXCL, 0600);
    snprintf(p, sizeof p, "/proc/self/fd/%d", t);
    tnum("tmpfile_excl_linkat", tag,
         linkat(AT_FDCWD, p, AT_FDCWD, at(base, "tmp.excl"), AT_SYMLINK_FOLLOW));
    close(t);
    tnum("tmpfile_rdonly", tag, open(base, O_TMPFILE | O_RDONLY, 0600));
    close(open(at(base, "tmp.file"), O_CREAT | O_WRONLY, 0644));
    tnum("tmpfile_in_a_file", tag, open(at(base, "tmp.file"), O_TMPFILE | O_RDWR, 0600));
    unlink(at(base, "tmp.file"));
}

/* The kernel's links to descriptors: /proc/self/fd/N, /dev/fd/N */
static void fd_links(const char *base, const char *tag) {
    char p[64], l[4096], want[4096], b[8] = {0};
    struct stat st;
    int f = open(at(base, "fl"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    write(f, "fdlink", 6);
    snprintf(p, sizeof p, "/proc/self/fd/%d", f);
    int g = open(p, O_RDONLY);
    tnum("reopen_reads_the_file", tag, read(g, b, 8) == 6 && memcmp(b, "fdlink", 6) == 0);
    close(g);
    tnum("stat_fd_link_size", tag, stat(p, &st) == 0 ? (long)st.st_size : -1);
    ssize_t k = readlink(p, l, sizeof l - 1);
    l[k > 0 ? k : 0] = 0;
    snprintf(want, sizeof want, "%s/fl", base);
    tnum("readlink_fd_link", tag, strcmp(l, want) == 0);
    unlink(at(base, "fl"));
    k = readlink(p, l, sizeof l - 1);
    l[k > 0 ? k : 0] = 0;
    snprintf(want, sizeof want, "%s/fl (deleted)", base);
    tnum("readlink_fd_link_deleted", tag, strcmp(l, want) == 0);
    close(f);
    mkdir(at(base, "fdd"), 0755);
    int d = open(at(base, "fdd"), O_RDONLY | O_DIRECTORY);
    snprintf(p, sizeof p, "/dev/fd/%d/inside", d);
    close(open(p, O_CREAT | O_WRONLY, 0644));
    tnum("create_through_dir_fd_link", tag, stat(at(base, "fdd/inside"), &st) == 0);
    close(d);
}

/* A trailing slash asks for a directory ("f/" of a file is ENOTDIR; O_CREAT
 * of "name/" EISDIR), and a last component . or .. names no entry to remove
 * or rename. Lines end in _TAG, so udax and the host can be compared. */
/* MADV_POPULATE_READ/WRITE on a file mapping: a write populate fills the
   holes (blocks allocated), past end of file it is EFAULT (an access would
   raise SIGBUS), and a write populate of a read-only mapping is EINVAL. */
static void populate(const char *base, const char *tag) {
    struct stat st;
    int fd = open(at(base, "pop"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    ftruncate(fd, 8192);
    char *p = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    tnum("populate_write", tag, madvise(p, 8192, MADV_POPULATE_WRITE));
    fstat(fd, &st);
    tnum("populate_write_allocates", tag, st.st_blocks >= 16);
    tnum("populate_read", tag, madvise(p, 8192, MADV_POPULATE_READ));
    tnum("populate_past_eof", tag, madvise(p, 3 * 4096, MADV_POPULATE_READ));
    munmap(p, 3 * 4096);
    p = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd, 0);
    tnum("populate_write_read_only", tag, madvise(p, 8192, MADV_POPULATE_WRITE));
    munmap(p, 8192);
    close(fd);
}

static void trailing_slashes(const char *base, const char *tag) {
    struct stat st;
    char p[4096];
    mkdir(at(base, "ts"), 0755);
    close(open(at(base, "ts/f"), O_CREAT | O_WRONLY, 0644));
    mkdir(at(base, "ts/d"), 0755);
    tnum("stat_file_slash", tag, stat(at(base, "ts/f/"), &st));
    tnum("stat_file_slash_dot", tag, stat(at(base, "ts/f/."), &st));
    tnum("stat_dir_slash", tag, stat(at(base, "ts/d/"), &st));
    tnum("open_file_slash", tag, open(at(base, "ts/f/"), O_RDONLY));
    tnum("open_creat_file_slash", tag, open(at(base, "ts/f/"), O_CREAT | O_WRONLY, 0644));
    tnum("open_creat_new_slash", tag, open(at(base, "ts/new/"), O_CREAT | O_WRONLY, 0644));
    tnum("new_slash_not_created", tag, stat(at(base, "ts/new"), &st));
    tnum("unlink_file_slash", tag, unlink(at(base, "ts/f/")));
    tnum("rmdir_file_slash", tag, rmdir(at(base, "ts/f/")));
    tnum("rename_file_slash", tag, rename(at(base, "ts/f/"), at(base, "ts/g")));
    tnum("rename_to_slash", tag, rename(at(base, "ts/f"), at(base, "ts/g/")));
    tnum("link_to_slash", tag, link(at(base, "ts/f"), at(base, "ts/g/")));
    tnum("rmdir_dot", tag, rmdir(at(base, "ts/d/.")));
    tnum("unlink_dot", tag, unlink(at(base, "ts/d/.")));
    tnum("rename_dot", tag, rename(at(base, "ts/d/."), at(base, "ts/e")));
    tnum("rename_dotdot", tag, rename(at(base, "ts/d/.."), at(base, "ts/e")));
    tnum("mkdir_dot", tag, mkdir(at(base, "ts/d/."), 0755));
    /* PATH_MAX bounds the string a call passes, not the path once joined
     * to a directory: 4000 bytes relative to a deep directory resolve */
    {
        char big[8192], deep[4096];
        int n = snprintf(big, sizeof big, "%s/ts/d", base);
        while (n < 4096 + 2)
            n += snprintf(big + n, sizeof big - n, "/.");
        tnum("stat_path_max", tag, stat(big, &st));
        snprintf(deep, sizeof deep, "%s/ts/d", base);
        int dfd = open(deep, O_RDONLY | O_DIRECTORY);
        n = snprintf(big, sizeof big, ".");
        while (n < 4000)
            n += snprintf(big + n, sizeof big - n, "/.");
        tnum("fstatat_long_relative", tag, fstatat(dfd, big, &st, 0));
        close(dfd);
    }
    /* ".." walks into the directory before it: it must exist and be one */
    tnum("mkdir_through_missing_dotdot", tag, mkdir(at(base, "ts/missing/../y"), 0755));
    tnum("not_made_through_missing", tag, stat(at(base, "ts/y"), &st));
    tnum("stat_file_dotdot", tag, stat(at(base, "ts/f/.."), &st));
    tnum("open_through_file_dotdot", tag, open(at(base, "ts/f/../f"), O_RDONLY));
    tnum("rmdir_dotdot", tag, rmdir(at(base, "ts/d/..")));
    tnum("rmdir_missing_dotdot", tag, rmdir(at(base, "ts/missing/..")));
    tnum("unlinkat_removedir_dotdot", tag, unlinkat(AT_FDCWD, at(base, "ts/d/.."), AT_REMOVEDIR));
    tnum("rename_null_from", tag, rename(NULL, at(base, "ts/z")));
    tnum("rename_null_to", tag, rename(at(base, "ts/f"), NULL));
    tnum("link_null_to", tag, link(at(base, "ts/f"), NULL));
    tnum("file_survived", tag, stat(at(base, "ts/f"), &st));
    tnum("dir_survived", tag, stat(at(base, "ts/d"), &st));
    tnum("mkdir_slash", tag, mkdir(at(base, "ts/m/"), 0755));
    tnum("rmdir_slash", tag, rmdir(at(base, "ts/m/")));
    chdir(at(base, "ts/d/"));
    snprintf(p, sizeof p, "%s/ts/d", base);
    tnum("getcwd_after_chdir_slash", tag, getcwd(p + 2048, 2048) && strcmp(p + 2048, p) == 0);
    chdir(base);
}

/* chown family as root (the test runs as root): owners and groups change,
 * set-user-ID goes, an O_PATH descriptor only through AT_EMPTY_PATH. */
static void ownership(const char *base, const char *tag) {
    struct stat st;
    int fd = open(at(base, "own"), O_CREAT | O_RDWR, 0644);
    fchmod(fd, 06755);
    tnum("chown", tag, chown(at(base, "own"), 1000, 1001));
    stat(at(base, "own"), &st);
    tnum("chown_uid", tag, st.st_uid);
    tnum("chown_gid", tag, st.st_gid);
    tnum("chown_mode", tag, st.st_mode & 07777);
    tnum("fchown_keep_uid", tag, fchown(fd, -1, 2000));
    fstat(fd, &st);
    tnum("fchown_uid", tag, st.st_uid);
    tnum("fchown_gid", tag, st.st_gid);
    tnum("lchown", tag, lchown(at(base, "own"), 3000, -1));
    tnum("fchownat", tag, fchownat(AT_FDCWD, at(base, "own"), -1, 3001, 0));
    tnum("fchownat_bad_flag", tag, fchownat(AT_FDCWD, at(base, "own"), 0, 0, 0x4000000));
    int p = open(at(base, "own"), O_PATH);
    tnum("fchown_o_path", tag, fchown(p, 1, 1));
    tnum("fchownat_empty_o_path", tag, fchownat(p, "", 4000, 4001, AT_EMPTY_PATH));
    stat(at(base, "own"), &st);
    tnum("owner_after_empty_path", tag, st.st_uid * 10000 + st.st_gid);
    close(p);
    close(fd);
    mkdir(at(base, "owndir"), 02755);
    stat(at(base, "owndir"), &st);
    tnum("mkdir_setgid_dropped", tag, st.st_mode & 07777);
    chmod(at(base, "owndir"), 02755);
    tnum("chown_dir", tag, chown(at(base, "owndir"), 5, 6));
    stat(at(base, "owndir"), &st);
    tnum("chown_dir_mode", tag, st.st_mode & 07777);
    tnum("chown_missing", tag, chown(at(base, "nothing-here"), 1, 1));
}

/* Symbolic links: made, read, followed as the kernel's walk does, and the
 * calls that act on the link itself. */
static void symlinks(const char *base, const char *tag) {
    struct stat st, st2;
    char l[4096];
    mkdir(at(base, "sl"), 0755);
    mkdir(at(base, "sl/sub"), 0755);
    mkdir(at(base, "sl/sub/deep"), 0755);
    int fd = open(at(base, "sl/f0"), O_CREAT | O_WRONLY, 0644);
    write(fd, "abc", 3);
    close(fd);
    close(open(at(base, "sl/sub/x"), O_CREAT | O_WRONLY, 0644));
    tnum("symlink_make", tag, symlink("f0", at(base, "sl/l")));
    ssize_t k = readlink(at(base, "sl/l"), l, sizeof l);
    tnum("readlink_len", tag, k);
    tnum("readlink_value", tag, k == 2 && memcmp(l, "f0", 2) == 0);
    tnum("readlink_small_buffer", tag, readlink(at(base, "sl/l"), l, 1));
    tnum("readlinkat_dirfd", tag, readlinkat(open(at(base, "sl"), O_RDONLY | O_DIRECTORY), "l", l, sizeof l));
    tnum("readlink_not_a_link", tag, readlink(at(base, "sl/f0"), l, sizeof l));
    lstat(at(base, "sl/l"), &st);
    tnum("lstat_is_link", tag, S_ISLNK(st.st_mode));
    tnum("lstat_size", tag, st.st_size);
    tnum("lstat_mode", tag, st.st_mode & 07777);
    fstatat(AT_FDCWD, at(base, "sl/l"), &st, AT_SYMLINK_NOFOLLOW);
    tnum("fstatat_nofollow_is_link", tag, S_ISLNK(st.st_mode));
    stat(at(base, "sl/l"), &st);
    tnum("stat_follows", tag, S_ISREG(st.st_mode) && st.st_size == 3);
    tnum("open_nofollow", tag, open(at(base, "sl/l"), O_RDONLY | O_NOFOLLOW));
    fd = open(at(base, "sl/l"), O_PATH | O_NOFOLLOW);
    tnum("open_path_nofollow", tag, fd >= 0);
    tnum("fstat_path_nofollow_is_link", tag, fstatat(fd, "", &st, AT_EMPTY_PATH) == 0 && S_ISLNK(st.st_mode));
    tnum("readlinkat_empty_path", tag, readlinkat(fd, "", l, sizeof l));
    close(fd);
    /* ".." after a link: up from where it led */
    tnum("symlink_to_dir", tag, symlink("sub/deep", at(base, "sl/ld")));
    tnum("dotdot_after_link", tag, stat(at(base, "sl/ld/../x"), &st));
    tnum("dotdot_after_link_not_lexical", tag, stat(at(base, "sl/ld/../f0"), &st));
    fd = open(at(base, "sl/ld"), O_RDONLY | O_DIRECTORY);
    tnum("openat_dotdot_through_link_dir", tag, fstatat(fd, "../x", &st, 0));
    close(fd);
    chdir(at(base, "sl/ld"));
    tnum("getcwd_after_chdir_through_link", tag, getcwd(l, sizeof l) != NULL && strcmp(l, at(base, "sl/sub/deep")) == 0);
    tnum("relative_dotdot_after_chdir_through_link", tag, stat("../x", &st));
    chdir(base);
    tnum("realpath_through_link", tag, realpath(at(base, "sl/ld/../x"), l) != NULL && strcmp(l, at(base, "sl/sub/x")) == 0);
    /* loops */
    symlink("self", at(base, "sl/self"));
    tnum("stat_self_loop", tag, stat(at(base, "sl/self"), &st));
    tnum("lstat_self_loop", tag, lstat(at(base, "sl/self"), &st));
    /* a link to nothing */
    symlink("made", at(base, "sl/dang"));
    tnum("stat_dangling", tag, stat(at(base, "sl/dang"), &st));
    fd = open(at(base, "sl/dang"), O_CREAT | O_WRONLY, 0644);
    tnum("creat_through_dangling", tag, fd >= 0);
    close(fd);
    tnum("dangling_target_made", tag, stat(at(base, "sl/made"), &st));
    tnum("creat_excl_on_link", tag, open(at(base, "sl/l"), O_CREAT | O_EXCL | O_WRONLY, 0644));
    tnum("mkdir_on_link", tag, mkdir(at(base, "sl/l"), 0755));
    tnum("symlink_on_existing", tag, symlink("x", at(base, "sl/l")));
    tnum("symlink_empty_target", tag, symlink("", at(base, "sl/empty")));
    /* calls on the link itself */
    tnum("lchown_link", tag, lchown(at(base, "sl/l"), 7, 8));
    lstat(at(base, "sl/l"), &st);
    stat(at(base, "sl/f0"), &st2);
    tnum("lchown_changed_link_only", tag, st.st_uid == 7 && st.st_gid == 8 && st2.st_uid != 7);
    tnum("fchownat_nofollow", tag, fchownat(AT_FDCWD, at(base, "sl/l"), 9, -1, AT_SYMLINK_NOFOLLOW));
    struct timespec ts[2] = {{1000, 0}, {2000, 0}};
    tnum("utimensat_nofollow", tag, utimensat(AT_FDCWD, at(base, "sl/l"), ts, AT_SYMLINK_NOFOLLOW));
    lstat(at(base, "sl/l"), &st);
    stat(at(base, "sl/f0"), &st2);
    tnum("utimensat_changed_link_only", tag, st.st_mtime == 2000 && st2.st_mtime != 2000);
    tnum("fchmodat_nofollow_link", tag, fchmodat(AT_FDCWD, at(base, "sl/l"), 0600, AT_SYMLINK_NOFOLLOW));
    tnum("chmod_follows", tag, chmod(at(base, "sl/l"), 0600));
    stat(at(base, "sl/f0"), &st2);
    tnum("chmod_changed_target", tag, st2.st_mode & 07777);
    tnum("link_of_link", tag, link(at(base, "sl/l"), at(base, "sl/l2")));
    lstat(at(base, "sl/l2"), &st);
    tnum("link_of_link_is_link", tag, S_ISLNK(st.st_mode) && st.st_nlink == 2);
    tnum("linkat_follow", tag, linkat(AT_FDCWD, at(base, "sl/l"), AT_FDCWD, at(base, "sl/f2"), AT_SYMLINK_FOLLOW));
    lstat(at(base, "sl/f2"), &st);
    tnum("linkat_follow_is_file", tag, S_ISREG(st.st_mode));
    tnum("rename_link", tag, rename(at(base, "sl/l2"), at(base, "sl/l3")));
    tnum("readlink_renamed", tag, readlink(at(base, "sl/l3"), l, sizeof l));
    tnum("rmdir_link_to_dir", tag, rmdir(at(base, "sl/ld")));
    tnum("stat_link_to_file_slash", tag, stat(at(base, "sl/l/"), &st));
    tnum("lstat_link_to_dir_slash_follows", tag, lstat(at(base, "sl/ld/"), &st) == 0 && S_ISDIR(st.st_mode));
    DIR *dp = opendir(at(base, "sl"));
    struct dirent *e;
    int lnk = 0;
    while (dp && (e = readdir(dp)))
        if (strcmp(e->d_name, "l") == 0)
            lnk = e->d_type == DT_LNK;
    if (dp)
        closedir(dp);
    tnum("readdir_d_type_lnk", tag, lnk);
    tnum("unlink_link", tag, unlink(at(base, "sl/l")));
    tnum("target_kept", tag, stat(at(base, "sl/f0"), &st));
    /* a long target (more than an inode slot holds) */
    memset(l, 'y', 3000);
    l[3000] = 0;
    tnum("symlink_long", tag, symlink(l, at(base, "sl/long")));
    tnum("readlink_long", tag, readlink(at(base, "sl/long"), l, sizeof l));
    char big[4200];
    memset(big, 'y', 4096);
    big[4096] = 0;
    tnum("symlink_too_long", tag, symlink(big, at(base, "sl/toolong")));
}

/* Special files: FIFOs (a pipe shared by the processes that open one),
 * sockets and device nodes (as root). */
static void specials(const char *base, const char *tag) {
    struct stat st;
    char b[16] = {0};
    mkdir(at(base, "sp"), 0755);
    tnum("mkfifo", tag, mkfifo(at(base, "sp/fifo"), 0644));
    tnum("mkfifo_again", tag, mkfifo(at(base, "sp/fifo"), 0644));
    stat(at(base, "sp/fifo"), &st);
    tnum("fifo_is_fifo", tag, S_ISFIFO(st.st_mode) && (st.st_mode & 0777) == 0644);
    pid_t c = fork();
    if (c == 0) {
        int w = open(at(base, "sp/fifo"), O_WRONLY);
        write(w, "ping", 4);
        close(w);
        _exit(0);
    }
    int r = open(at(base, "sp/fifo"), O_RDONLY);
    tnum("fifo_open_read", tag, r >= 0);
    tnum("fifo_read", tag, read(r, b, sizeof b));
    tnum("fifo_data", tag, strcmp(b, "ping") == 0);
    close(r);
    waitpid(c, NULL, 0);
    tnum("fifo_nonblock_write_no_reader", tag, open(at(base, "sp/fifo"), O_WRONLY | O_NONBLOCK));
    tnum("mknod_fifo", tag, mknod(at(base, "sp/fifo2"), S_IFIFO | 0600, 0));
    tnum("mknod_sock", tag, mknod(at(base, "sp/sock"), S_IFSOCK | 0600, 0));
    tnum("open_sock", tag, open(at(base, "sp/sock"), O_RDONLY));
    tnum("mknod_chr", tag, mknod(at(base, "sp/null"), S_IFCHR | 0666, makedev(1, 3)));
    stat(at(base, "sp/null"), &st);
    tnum("chr_rdev", tag, S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3));
    struct statx sx;
    statx(AT_FDCWD, at(base, "sp/null"), 0, STATX_BASIC_STATS, &sx);
    tnum("chr_statx_rdev", tag, sx.stx_rdev_major * 1000 + sx.stx_rdev_minor);
    tnum("mknod_blk", tag, mknod(at(base, "sp/blk"), S_IFBLK | 0600, makedev(8, 1)));
    tnum("mknod_dir", tag, mknod(at(base, "sp/dir"), S_IFDIR | 0755, 0));
    tnum("o_path_of_fifo", tag, (r = open(at(base, "sp/fifo"), O_PATH)) >= 0);
    tnum("fstat_o_path_fifo", tag, fstat(r, &st) == 0 && S_ISFIFO(st.st_mode));
    close(r);
    DIR *dp = opendir(at(base, "sp"));
    struct dirent *e;
    int kinds = 0;
    while (dp && (e = readdir(dp))) {
        if (strcmp(e->d_name, "fifo") == 0 && e->d_type == DT_FIFO)
            kinds |= 1;
        if (strcmp(e->d_name, "null") == 0 && e->d_type == DT_CHR)
            kinds |= 2;
        if (strcmp(e->d_name, "sock") == 0 && e->d_type == DT_SOCK)
            kinds |= 4;
        if (strcmp(e->d_name, "blk") == 0 && e->d_type == DT_BLK)
            kinds |= 8;
    }
    if (dp)
        closedir(dp);
    tnum("readdir_special_types", tag, kinds);
    tnum("unlink_fifo", tag, unlink(at(base, "sp/fifo")));
}

/* AF_UNIX sockets bound to a path: a socket file there, reachable by
 * connect from another process. */
static void unix_sockets(const char *base, const char *tag) {
    struct stat st;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    char b[8] = {0};
    mkdir(at(base, "so"), 0755);
    snprintf(a.sun_path, sizeof a.sun_path, "%s", at(base, "so/sock"));
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    tnum("bind_unix", tag, bind(s, (struct sockaddr *)&a, sizeof a));
    tnum("bound_is_socket", tag, lstat(a.sun_path, &st) == 0 && S_ISSOCK(st.st_mode));
    int s2 = socket(AF_UNIX, SOCK_STREAM, 0);
    tnum("bind_in_use", tag, bind(s2, (struct sockaddr *)&a, sizeof a));
    close(s2);
    listen(s, 1);
    pid_t c = fork();
    if (c == 0) {
        int k = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(k, (struct sockaddr *)&a, sizeof a) == 0)
            write(k, "hi", 2);
        _exit(0);
    }
    int x = accept(s, NULL, NULL);
    tnum("accept", tag, x >= 0);
    tnum("socket_read", tag, read(x, b, sizeof b));
    close(x);
    waitpid(c, NULL, 0);
    close(s);
    close(open(at(base, "so/plain"), O_CREAT | O_WRONLY, 0644));
    snprintf(a.sun_path, sizeof a.sun_path, "%s", at(base, "so/plain"));
    s = socket(AF_UNIX, SOCK_STREAM, 0);
    tnum("connect_to_a_file", tag, connect(s, (struct sockaddr *)&a, sizeof a));
    close(s);
    tnum("unlink_socket", tag, unlink(at(base, "so/sock")));
}

int main(int argc, char **argv) {
    char buf[8192];
    struct stat st, st2;
    if (argc != 3)
        return 2;
    M = argv[1];
    H = argv[2];

    /* descriptors are real reserved numbers; offsets; pread/pwrite */
    int fd = open(at(M, "f"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    num("open_fd_ge_3", fd >= 3 ? 1 : -1);
    num("fd_cloexec_default", fcntl(fd, F_GETFD));
    num("getfl_rdwr", (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR);
    num("write", write(fd, "hello world", 11));
    num("lseek_cur", lseek(fd, 0, SEEK_CUR));
    memset(buf, 0, sizeof buf);
    num("pread", pread(fd, buf, 5, 6));
    str("pread_data", buf);
    struct iovec iov[2] = {{"ab", 2}, {"cde", 3}};
    num("writev", writev(fd, iov, 2));
    char r1[3] = {0}, r2[8] = {0};
    struct iovec riov[2] = {{r1, 2}, {r2, 7}};
    num("preadv", preadv(fd, riov, 2, 9));
    str("preadv_data", r1);
    str("preadv_data2", r2);
    num("fstat", fstat(fd, &st));
    num("fstat_size", st.st_size);
    num("stat", stat(at(M, "f"), &st2));
    num("stat_same_ino", st.st_ino == st2.st_ino && st.st_dev == st2.st_dev);
    stat("/", &st2);
    num("dev_differs_from_host", st.st_dev != st2.st_dev);
    struct statx sx;
    num("statx", statx(AT_FDCWD, at(M, "f"), 0, STATX_BASIC_STATS, &sx));
    num("statx_size", (long)sx.stx_size);

    /* dup shares the offset; dup2 onto a chosen number */
    int d = dup(fd);
    lseek(d, 0, SEEK_SET);
    num("dup_shares_offset", lseek(fd, 0, SEEK_CUR) == 0);
    num("dup2", dup2(fd, 100));
    num("dup2_getfd", fcntl(100, F_GETFD));
    close(fd);
    close(d);
    num("write_via_dup2", pwrite(100, "X", 1, 0));
    num("ftruncate", ftruncate(100, 3));
    fstat(100, &st);
    num("size_after_ftruncate", st.st_size);
    num("posix_fallocate", posix_fallocate(100, 0, 1 << 20));
    fstat(100, &st);
    num("size_after_posix_fallocate", st.st_size);
    num("fsync", fsync(100));
    num("fdatasync", fdatasync(100));
    num("close_dup2", close(100));
    num("read_closed", read(100, buf, 1));

    /* sparse files: SEEK_DATA / SEEK_HOLE */
    fd = open(at(M, "sparse"), O_CREAT | O_RDWR, 0644);
    pwrite(fd, "x", 1, 1 << 20);
    num("seek_data", lseek(fd, 0, SEEK_DATA));
    num("seek_hole", lseek(fd, 0, SEEK_HOLE));
    num("seek_data_past_eof", lseek(fd, 2 << 20, SEEK_DATA));
    close(fd);

    /* mmap: a store through a shared mapping is seen by pread */
    fd = open(at(M, "mapped"), O_CREAT | O_RDWR, 0644);
    ftruncate(fd, 8192);
    pwrite(fd, "from-write", 10, 0);
    char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    num("mmap", p == MAP_FAILED ? -1 : 1);
    if (p != MAP_FAILED) {
        str("mmap_sees_write", memcmp(p, "from-write", 10) == 0 ? "yes" : "no");
        memcpy(p + 4096, "from-store", 10);
        num("msync", msync(p, 8192, MS_SYNC));
        memset(buf, 0, sizeof buf);
        pread(fd, buf, 10, 4096);
        str("pread_sees_store", buf);
        num("madvise", madvise(p, 8192, MADV_WILLNEED));
        num("munmap", munmap(p, 8192));
    }
    /* mremap (MAYMOVE) keeps the bytes; partial munmap; mprotect of a whole mapping */
    p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *q = mremap(p, 4096, 8192, MREMAP_MAYMOVE);
    num("mremap", q == MAP_FAILED ? -1 : 1);
    if (q != MAP_FAILED) {
        str("mremap_keeps_data", memcmp(q, "from-write", 10) == 0 && memcmp(q + 4096, "from-store", 10) == 0 ? "yes" : "no");
        num("mremap_no_maymove", mremap(q, 8192, 3 * 4096, 0) == MAP_FAILED ? -1 : 0);
        num("mprotect_ro", mprotect(q, 8192, PROT_READ));
        num("mprotect_part", mprotect(q, 4096, PROT_READ | PROT_WRITE));
        num("munmap_part", munmap(q + 4096, 4096));
        str("first_page_after_partial_munmap", memcmp(q, "from-write", 10) == 0 ? "yes" : "no");
        num("munmap_rest", munmap(q, 4096));
    }
    num("mmap_fixed", mmap((void *)0x600000000000, 4096, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ? -1 : 0);
    close(fd);

    /* flock: two descriptions of one file conflict; POSIX locks do not */
    int a = open(at(M, "f"), O_RDWR), b = open(at(M, "f"), O_RDWR);
    num("flock_a", flock(a, LOCK_EX));
    num("flock_b_nb", flock(b, LOCK_EX | LOCK_NB));
    num("flock_a_un", flock(a, LOCK_UN));
    num("flock_b_after", flock(b, LOCK_EX | LOCK_NB));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    num("setlk", fcntl(a, F_SETLK, &fl));
    fl.l_type = F_WRLCK;
    num("getlk", fcntl(b, F_GETLK, &fl));
    num("getlk_type_unlck", fl.l_type == F_UNLCK);
    int ro = open(at(M, "f"), O_RDONLY);
    fl.l_type = F_WRLCK;
    num("setlk_wr_on_rdonly", fcntl(ro, F_SETLK, &fl));
    close(ro);
    close(a);
    close(b);

    /* stdio through fopencookie */
    FILE *fp = fopen(at(M, "s.txt"), "w");
    num("fopen_w", fp ? 1 : -1);
    fprintf(fp, "line one\nline %d\n", 2);
    num("fclose", fclose(fp));
    fp = fopen(at(M, "s.txt"), "a");
    fputs("line three\n", fp);
    fclose(fp);
    fp = fopen(at(M, "s.txt"), "r");
    char line[64];
    int nlines = 0;
    while (fgets(line, sizeof line, fp))
        nlines++;
    num("fgets_lines", nlines);
    fseek(fp, 5, SEEK_SET);
    fgets(line, sizeof line, fp);
    line[strcspn(line, "\n")] = 0;
    str("fseek_fgets", line);
    fclose(fp);
    fp = fopen(at(M, "s.txt"), "r");
    num("fileno_of_udax_stream", fileno(fp) >= 3);
    num("fstat_fileno", fstat(fileno(fp), &st));
    num("fstat_fileno_size", st.st_size);
    fclose(fp);

    generic_ioctls(M, "udax");
    generic_ioctls(H, "host");
    follow_renames(M, "udax");
    follow_renames(H, "host");
    unnamed_files(M, "udax");
    unnamed_files(H, "host");
    fd_links(M, "udax");
    fd_links(H, "host");
    trailing_slashes(M, "udax");
    trailing_slashes(H, "host");
    populate(M, "udax");
    populate(H, "host");
    ownership(M, "udax");
    ownership(H, "host");
    symlinks(M, "udax");
    symlinks(H, "host");
    specials(M, "udax");
    specials(H, "host");
    unix_sockets(M, "udax");
    unix_sockets(H, "host");
    /* access() answers for the real ids, AT_EACCESS and eaccess for the
     * effective ones (as root with a user's effective uid) */
    {
        close(open(at(M, "acc"), O_CREAT | O_WRONLY, 0600));
        if (seteuid(1000) == 0) {
            num("access_real_root", access(at(M, "acc"), R_OK));
            num("faccessat_eaccess_user", faccessat(AT_FDCWD, at(M, "acc"), R_OK, AT_EACCESS));
            num("eaccess_user", eaccess(at(M, "acc"), R_OK));
            seteuid(0);
        }
    }
    /* open's permission rules, as a user (pjdfstest open/06.t, 07.t) */
    {
        struct stat os;
        int fd;
        mkdir(at(M, "pd"), 0277);
        chown(at(M, "pd"), 65534, 65534);
        chmod(at(M, "pd"), 0277);
        close(open(at(M, "pw"), O_CREAT | O_WRONLY, 0644));
        chown(at(M, "pw"), 65534, 65534);
        chmod(at(M, "pw"), 0277);
        fd = open(at(M, "pt"), O_CREAT | O_WRONLY, 0644);
        write(fd, "abc", 3);
        close(fd);
        chown(at(M, "pt"), 65534, 65534);
        chmod(at(M, "pt"), 0477);
        if (setegid(65534) == 0 && seteuid(65534) == 0) {
            num("open_dir_without_read", open(at(M, "pd"), O_RDONLY));
            num("open_wronly_needs_no_read", (fd = open(at(M, "pw"), O_WRONLY)) >= 0);
            close(fd);
            num("open_rdonly_trunc_needs_write", open(at(M, "pt"), O_RDONLY | O_TRUNC));
            seteuid(0);
            setegid(0);
        }
        fd = open(at(M, "pt"), O_RDONLY | O_TRUNC);
        fstat(fd, &os);
        num("rdonly_trunc_truncates", os.st_size);
        close(fd);
    }
    /* a device node on udax does not open (nodev), whatever the host's mount says */
    num("open_chr_on_udax", open(at(M, "sp/null"), O_RDONLY));
    /* links that leave udax: resolved on the host, as the kernel would */
    {
        char t[4096], r[64];
        int hf = open(at(H, "outside"), O_CREAT | O_WRONLY | O_TRUNC, 0644);
        write(hf, "hostdata", 8);
        close(hf);
        num("symlink_absolute_out", symlink(at(H, "outside"), at(M, "sl/out")));
        memset(r, 0, sizeof r);
        hf = open(at(M, "sl/out"), O_RDONLY);
        num("read_through_absolute_out", hf >= 0 && read(hf, r, sizeof r) == 8 && strcmp(r, "hostdata") == 0);
        close(hf);
        /* relative: up out of the mount's root (its parent is "/") */
        snprintf(t, sizeof t, "../..%s", at(H, "outside"));
        num("symlink_relative_out", symlink(t, at(M, "sl/up")));
        struct stat os;
        num("stat_through_relative_out", stat(at(M, "sl/up"), &os) == 0 && os.st_size == 8);
        /* a host link back into udax */
        num("host_link_into_udax", symlink(at(M, "sl/sub"), at(H, "in")));
        num("stat_through_host_link_into_udax", stat(at(H, "in/x"), &os));
        /* a udax directory link out, then ".." there: the host's */
        num("symlink_dir_out", symlink(H, at(M, "sl/hostdir")));
        num("dotdot_after_link_out", stat(at(M, "sl/hostdir/../host/outside"), &os) == 0 && os.st_size == 8);
        num("creat_through_link_out", (hf = open(at(M, "sl/hostdir/made_from_udax"), O_CREAT | O_WRONLY, 0644)) >= 0);
        close(hf);
        num("made_on_host", stat(at(H, "made_from_udax"), &os));
    }

    /* directories */
    num("mkdir", mkdir(at(M, "dir"), 0755));
    num("mkdir_again", mkdir(at(M, "dir"), 0755));
    close(open(at(M, "dir/one"), O_CREAT | O_WRONLY, 0644));
    close(open(at(M, "dir/two"), O_CREAT | O_WRONLY, 0644));
    num("rmdir_not_empty", rmdir(at(M, "dir")));
    DIR *dp = opendir(at(M, "dir"));
    num("opendir", dp ? 1 : -1);
    num("dirfd_ge_3", dirfd(dp) >= 3 ? 1 : -1);
    /* In the order read, except that names after '.' and '..' are sorted:
     * a directory's order is its own (udax: by name hash). */
    char names[256] = "", got[8][32];
    int ng = 0;
    struct dirent *de;
    while ((de = readdir(dp)) && ng < 8)
        snprintf(got[ng++], sizeof got[0], "%s%s", de->d_name, de->d_type == DT_DIR ? "/" : "");
    if (ng > 2)
        qsort(got[2], ng - 2, sizeof got[0], (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < ng; i++) {
        strcat(names, got[i]);
        strcat(names, ",");
    }
    str("readdir", names);
    rewinddir(dp);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    struct dirent ent, *res;
    int nr = 0;
    while (readdir_r(dp, &ent, &res) == 0 && res)
        nr++;
#pragma GCC diagnostic pop
    num("readdir_r_after_rewind", nr);
    num("fstatat_dirfd", fstatat(dirfd(dp), "two", &st, 0));
    num("openat_dirfd", (fd = openat(dirfd(dp), "three", O_CREAT | O_WRONLY, 0600)) >= 0);
    close(fd);
    num("unlinkat_dirfd", unlinkat(dirfd(dp), "three", 0));
    closedir(dp);
    fd = open(at(M, "dir"), O_RDONLY | O_DIRECTORY);
    num("getdents64", getdents64(fd, buf, sizeof buf) > 0);
    close(fd);

    /* the namespace and the mount boundary */
    num("rename_inside", rename(at(M, "dir/one"), at(M, "dir/uno")));
    num("rename_across", rename(at(M, "dir/uno"), at(H, "uno")));
    num("link", link(at(M, "dir/uno"), at(M, "dir/hard")));
    stat(at(M, "dir/uno"), &st);
    num("nlink", st.st_nlink);
    num("symlink", symlink("x", at(M, "dir/sym")));
    num("unlink", unlink(at(M, "dir/hard")));
    num("access_gone", access(at(M, "dir/hard"), F_OK));
    num("access_ok", access(at(M, "dir/uno"), R_OK | W_OK));
    num("open_missing", open(at(M, "missing"), O_RDONLY));
    /* the umask, as the program changes it */
    mode_t um = umask(027);
    fd = open(at(M, "masked"), O_CREAT | O_WRONLY, 0666);
    close(fd);
    stat(at(M, "masked"), &st);
    num("mode_under_umask_027", st.st_mode & 0777);
    umask(0);
    fd = open(at(M, "unmasked"), O_CREAT | O_WRONLY, 0666);
    close(fd);
    stat(at(M, "unmasked"), &st);
    num("mode_under_umask_0", st.st_mode & 0777);
    num("umask_returns_old", umask(um));
    struct timespec ts[2] = {{1, 0}, {2, 0}};
    num("utimensat", utimensat(AT_FDCWD, at(M, "f"), ts, 0));
    stat(at(M, "f"), &st);
    num("atime_mtime_after_utimensat", (long)st.st_atime * 10 + (long)st.st_mtime);
    struct timespec omit[2] = {{0, UTIME_OMIT}, {7, 5}};
    num("utimensat_omit", utimensat(AT_FDCWD, at(M, "f"), omit, 0));
    stat(at(M, "f"), &st);
    num("times_after_omit", (long)st.st_atime * 10 + (long)st.st_mtime);
    struct timespec badns[2] = {{1, 2000000000L}, {1, 0}};
    num("utimensat_bad_nsec", utimensat(AT_FDCWD, at(M, "f"), badns, 0));
    num("chmod", chmod(at(M, "f"), 0600));
    stat(at(M, "f"), &st);
    num("mode_after_chmod", st.st_mode & 07777);

    /* temporary files under the mount (glibc would use its internal open) */
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/tmpXXXXXX", M);
    int tfd = mkstemp(tmpl);
    num("mkstemp", tfd >= 3);
    num("mkstemp_name_filled", strstr(tmpl, "XXXXXX") == NULL);
    fstat(tfd, &st);
    num("mkstemp_mode", st.st_mode & 0777);
    close(tfd);
    num("mkstemp_unlink", unlink(tmpl));
    snprintf(tmpl, sizeof tmpl, "%s/dXXXXXX", M);
    num("mkdtemp", mkdtemp(tmpl) != NULL);
    stat(tmpl, &st);
    num("mkdtemp_is_dir", S_ISDIR(st.st_mode));
    num("mkdtemp_rmdir", rmdir(tmpl));
    snprintf(tmpl, sizeof tmpl, "%s/badXXXX", M);
    num("mkstemp_bad_template", mkstemp(tmpl));

    /* working directory inside the mount */
    num("chdir", chdir(at(M, "dir")));
    str("getcwd", getcwd(buf, sizeof buf) ? buf : "(null)");
    num("open_relative", (fd = open("rel.txt", O_CREAT | O_WRONLY, 0644)) >= 0);
    close(fd);
    num("stat_relative_abs", stat(at(M, "dir/rel.txt"), &st));
    /* `..` out of the mount's root goes to the prefix's parent (here /), as
     * from a mount point; the rest is resolved on the host, or back in */
    stat("/", &st2);
    num("dotdot_relative_leaves_mount",
        stat("../..", &st) == 0 && st.st_ino == st2.st_ino && st.st_dev == st2.st_dev);
    num("dotdot_absolute_leaves_mount",
        stat(at(M, "dir/../.."), &st) == 0 && st.st_ino == st2.st_ino && st.st_dev == st2.st_dev);
    char back[4096];
    snprintf(back, sizeof back, "%s/../%s/dir/rel.txt", M, strrchr(M, '/') + 1);
    num("dotdot_back_into_mount", stat(back, &st) == 0 && st.st_size == 0);
    snprintf(back, sizeof back, "../../%s", H + 1);
    num("dotdot_relative_to_host_dir", (fd = open(back, O_RDONLY | O_DIRECTORY)) >= 0);
    close(fd);
    num("chdir_host", chdir(H));
    num("getcwd_host_ok", strcmp(getcwd(buf, sizeof buf), H) == 0);

    /* scandir (glibc's internal opendir), pathconf, inotify */
    struct dirent **nl;
    int nn = scandir(at(M, "dir"), &nl, NULL, alphasort);
    names[0] = 0;
    for (int i = 0; i < nn; i++) {
        strcat(names, nl[i]->d_name);
        strcat(names, ",");
        free(nl[i]);
    }
    if (nn >= 0)
        free(nl);
    num("scandir", nn);
    str("scandir_names", names);
    num("pathconf_name_max", pathconf(M, _PC_NAME_MAX));
    int ifd = inotify_init1(IN_CLOEXEC);
    num("inotify_add_watch", inotify_add_watch(ifd, at(M, "f"), IN_MODIFY));
    close(ifd);

    /* copy_file_range host -> udax */
    int hf = open(at(H, "src"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    write(hf, "0123456789", 10);
    lseek(hf, 0, SEEK_SET);
    fd = open(at(M, "copy"), O_CREAT | O_RDWR, 0644);
    num("copy_file_range", copy_file_range(hf, NULL, fd, NULL, 10, 0));
    memset(buf, 0, sizeof buf);
    pread(fd, buf, 10, 0);
    str("copy_data", buf);
    close(hf);

    /* fork: the child attaches on its own (through the owner): it opens
       and reads udax files; a udax fd inherited from the parent is the
       parent's open file description (one offset), and the parent goes on */
    lseek(fd, 2, SEEK_SET);
    pid_t pid = fork();
    if (pid == 0) {
        num("child_read", read(fd, buf, 1));
        num("child_read_byte", buf[0]);
        int cfd = open(at(M, "f"), O_RDONLY);
        num("child_open_ok", cfd >= 0);
        memset(buf, 0, sizeof buf);
        num("child_read_own", read(cfd, buf, 5));
        num("child_close", close(fd));
        exit(0); /* exit handlers must not checkpoint the parent's device */
    }
    int status;
    waitpid(pid, &status, 0);
    num("child_exit", WEXITSTATUS(status));
    num("parent_read_after_child", read(fd, buf, 1));
    num("parent_read_byte", buf[0]);
    num("parent_pread_after_fork", pread(fd, buf, 10, 0));

    /* exec through execl (variadic; interposed by a naked entry on x86-64):
       the udax fd survives, one open file description with the parent's
       (the shell's "x\n" lands at the parent's offset, 4) */
    num("dup2_for_exec", dup2(fd, 9)); /* sh takes fds 0-9 in redirections */
    pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", "echo x >&9", (char *)NULL);
        _exit(127);
    }
    waitpid(pid, &status, 0);
    num("exec_fd_kept", WEXITSTATUS(status) == 0);
    close(9);
    close(fd);

    /* a stream never closed is flushed at exit, before the shim unmounts */
    FILE *unclosed = fopen(at(M, "unclosed.txt"), "w");
    fputs("flushed at exit\n", unclosed);
    /* close(1) + open: the udax file becomes the program's stdout */
    num("last_line", 1);
    fflush(stdout);
    close(1);
    int o = open(at(M, "stdout.txt"), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    printf("stdout is fd %d\n", o);
    return 0;
}
