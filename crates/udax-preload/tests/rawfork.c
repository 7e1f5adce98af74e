/* A child made by a raw clone (no pthread_atfork handlers run, as with
 * syscall(SYS_fork)) is a process of its own to udax: it attaches with
 * its own connection, so it and its parent can both work on the mount at
 * once; a udax descriptor it inherited was not handed over (EIO), as after
 * a fork whose handover failed.
 * argv: mount prefix. Prints key=value lines. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Create, write, read back and remove `n` files named <dir>/<tag><i>;
 * returns the number of files that did not read back what was written. */
static int churn(const char *dir, const char *tag, int n) {
    int bad = 0;
    for (int i = 0; i < n; i++) {
        char p[4096], want[64], got[64];
        snprintf(p, sizeof p, "%s/%s%d", dir, tag, i);
        int len = snprintf(want, sizeof want, "%s-%d-%d", tag, i, (int)getpid());
        int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) { bad++; continue; }
        if (write(fd, want, len) != len) bad++;
        if (pread(fd, got, sizeof got, 0) != len || memcmp(got, want, len) != 0) bad++;
        if (close(fd) != 0) bad++;
        if (unlink(p) != 0) bad++;
    }
    return bad;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *dir = argv[1];
    char p[4096];
    snprintf(p, sizeof p, "%s/parent", dir);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror(p); return 2; }
    if (write(fd, "parent", 6) != 6) { perror("write"); return 2; }
    fflush(stdout);
    /* fork(2) without glibc: SIGCHLD, no CLONE_VM, no handlers. */
    long c = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (c < 0) { perror("clone"); return 2; }
    if (c == 0) {
        errno = 0;
        long w = pwrite(fd, "child", 5, 0);
        int e = errno;
        int bad = churn(dir, "c", 300);
        char buf[128];
        int len = snprintf(buf, sizeof buf, "child_inherited_write=%ld,%s\nchild_bad=%d\n",
                           w, w < 0 ? strerrorname_np(e) : "ok", bad);
        /* write(2) straight to stdout: the child avoids stdio's buffers. */
        if (write(1, buf, len) != len) _exit(3);
        _exit(0);
    }
    int bad = churn(dir, "p", 300);
    int status = 0;
    if (waitpid((pid_t)c, &status, 0) != (pid_t)c) { perror("waitpid"); return 2; }
    char got[16] = {0};
    long r = pread(fd, got, 6, 0);
    printf("parent_bad=%d\n", bad);
    printf("child_exit=%d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    printf("parent_after=%ld,%s\n", r, got);
    return close(fd) == 0 ? 0 : 1;
}
