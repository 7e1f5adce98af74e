/* A directory renamed back and forth while other threads work in it through
 * a descriptor and as their working directory (no: the cwd is per process;
 * one thread uses it): every call relative to the directory succeeds and
 * lands in it, as the kernel resolves such calls from the directory itself.
 * Usage: renames BASE ROUNDS; prints "ok N" or the first failure. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char a[4096], b[4096];
static int rounds, dfd;
static atomic_int stop, failed;

static void fail(const char *what) {
    if (!atomic_exchange(&failed, 1))
        printf("fail %s: %s\n", what, strerror(errno));
}

static void *mover(void *x) {
    for (int i = 0; i < rounds && !failed; i++) {
        if (rename(i % 2 ? b : a, i % 2 ? a : b) != 0)
            fail("rename");
    }
    atomic_store(&stop, 1);
    return x;
}

static void *creator(void *x) {
    long id = (long)x;
    char n[32];
    snprintf(n, sizeof n, "f%ld", id);
    while (!stop && !failed) {
        int f = openat(dfd, n, O_CREAT | O_WRONLY, 0644);
        if (f < 0) {
            fail("openat");
            break;
        }
        close(f);
        struct stat st;
        if (fstatat(dfd, n, &st, 0) != 0)
            fail("fstatat");
        if (unlinkat(dfd, n, 0) != 0)
            fail("unlinkat");
        if (mkdirat(dfd, n, 0755) != 0)
            fail("mkdirat");
        if (unlinkat(dfd, n, AT_REMOVEDIR) != 0)
            fail("rmdir");
    }
    return x;
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    snprintf(a, sizeof a, "%s/ren_a", argv[1]);
    snprintf(b, sizeof b, "%s/ren_b", argv[1]);
    rounds = atoi(argv[2]);
    if (mkdir(a, 0755) != 0 || (dfd = open(a, O_RDONLY | O_DIRECTORY)) < 0) {
        perror("setup");
        return 1;
    }
    pthread_t t[4];
    pthread_create(&t[0], 0, mover, 0);
    for (long i = 1; i < 4; i++)
        pthread_create(&t[i], 0, creator, (void *)i);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], 0);
    if (failed)
        return 1;
    /* nothing was left behind, in the directory or beside it */
    const char *now = rounds % 2 ? b : a;
    char p[8192];
    for (int i = 1; i < 4; i++) {
        snprintf(p, sizeof p, "%s/f%d", now, i);
        if (access(p, F_OK) == 0) {
            printf("fail leftover %s\n", p);
            return 1;
        }
    }
    printf("ok %d\n", rounds);
    return 0;
}
