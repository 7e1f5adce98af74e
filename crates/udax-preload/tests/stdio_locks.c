/* stdio locking through the shim: while the program has no thread of its own
 * its streams need no locks (the shim's fault threads never touch stdio); once
 * it starts one (by MODE: pthread, thrd, timer, aio), every stream locks, and
 * two threads writing lines to the same streams never mix them.
 * Usage: stdio_locks MODE MOUNT HOSTDIR. Prints "ok" or the first failure. */
#define _GNU_SOURCE
#include <aio.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <threads.h>
#include <time.h>
#include <unistd.h>

#define LINES 20000
static FILE *hf, *uf;

static int nthreads(void) {
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static const char *st(FILE *f) {
    int s = __fsetlocking(f, FSETLOCKING_QUERY);
    return s == FSETLOCKING_BYCALLER ? "bycaller" : s == FSETLOCKING_INTERNAL ? "internal" : "?";
}

#define EXPECT(f, want)                                                             \
    do {                                                                            \
        if (strcmp(st(f), want) != 0) {                                             \
            printf("%s at line %d: %s is %s, want %s\n", mode, __LINE__, #f, st(f), \
                   want);                                                           \
            return 1;                                                               \
        }                                                                           \
    } while (0)

static void lines(char tag) {
    char buf[64];
    for (int i = 0; i < LINES; i++) {
        int n = snprintf(buf, sizeof buf, "%c %08d abcdefghijklmnopqrstuvwxyz\n", tag, i);
        fwrite(buf, 1, n, hf);
        fputs(buf, uf);
    }
}

static void *pt_body(void *a) {
    lines('b');
    return a;
}
static int thrd_body(void *a) {
    (void)a;
    lines('b');
    return 0;
}
static volatile int fired;
static void timer_body(union sigval v) {
    (void)v;
    fired = 1;
}

/* Every line is whole and each writer's lines are all there, in order. */
static int check(const char *path, const char *mode) {
    FILE *f = fopen(path, "r");
    char buf[128];
    int next[2] = {0, 0};
    if (!f) {
        printf("%s: reopen %s: %s\n", mode, path, strerror(errno));
        return 1;
    }
    while (fgets(buf, sizeof buf, f)) {
        int i;
        char tag;
        if (sscanf(buf, "%c %08d", &tag, &i) != 2 || (tag != 'a' && tag != 'b') ||
            strcmp(buf + 11, "abcdefghijklmnopqrstuvwxyz\n") != 0 || i != next[tag - 'a']) {
            printf("%s: %s: mixed line: %s", mode, path, buf);
            return 1;
        }
        next[tag - 'a']++;
    }
    fclose(f);
    if (next[0] != LINES || next[1] != LINES) {
        printf("%s: %s: %d and %d lines\n", mode, path, next[0], next[1]);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    const char *mode = argv[1];
    char up[4096], hp[4096], mp[4096];
    snprintf(up, sizeof up, "%s/lines", argv[2]);
    snprintf(hp, sizeof hp, "%s/lines", argv[3]);
    snprintf(mp, sizeof mp, "%s/mapped", argv[2]);

    /* The shim's fault threads start with the first udax mapping. */
    int fd = open(mp, O_CREAT | O_RDWR, 0644);
    if (fd < 0 || ftruncate(fd, 8192) != 0) {
        printf("%s: open %s: %s\n", mode, mp, strerror(errno));
        return 1;
    }
    char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        printf("%s: mmap: %s\n", mode, strerror(errno));
        return 1;
    }
    m[0] = 'x';
    if (nthreads() < 2) {
        printf("%s: the shim started no thread (%d)\n", mode, nthreads());
        return 1;
    }
    hf = fopen(hp, "w");
    uf = fopen(up, "w");
    if (!hf || !uf) {
        printf("%s: fopen: %s\n", mode, strerror(errno));
        return 1;
    }
    /* Only the shim's threads exist: no locks. */
    EXPECT(stdin, "bycaller");
    EXPECT(stdout, "bycaller");
    EXPECT(hf, "bycaller");
    EXPECT(uf, "bycaller");

    pthread_t pt;
    thrd_t tt;
    timer_t tm;
    struct aiocb cb;
    char ab[16];
    if (strcmp(mode, "pthread") == 0) {
        if (pthread_create(&pt, NULL, pt_body, NULL) != 0)
            return 3;
    } else if (strcmp(mode, "thrd") == 0) {
        if (thrd_create(&tt, thrd_body, NULL) != thrd_success)
            return 3;
    } else if (strcmp(mode, "timer") == 0) {
        struct sigevent ev = {0};
        ev.sigev_notify = SIGEV_THREAD;
        ev.sigev_notify_function = timer_body;
        struct itimerspec its = {{0, 0}, {0, 1000000}};
        if (timer_create(CLOCK_MONOTONIC, &ev, &tm) != 0 || timer_settime(tm, 0, &its, NULL) != 0)
            return 3;
    } else if (strcmp(mode, "aio") == 0) {
        memset(&cb, 0, sizeof cb);
        cb.aio_fildes = open("/proc/self/stat", O_RDONLY);
        cb.aio_buf = ab;
        cb.aio_nbytes = sizeof ab;
        if (aio_read(&cb) != 0)
            return 3;
    } else {
        return 2;
    }
    /* The program has (or will have) a thread of its own: every stream locks,
     * those opened before and after. */
    EXPECT(stdin, "internal");
    EXPECT(stdout, "internal");
    EXPECT(hf, "internal");
    EXPECT(uf, "internal");
    FILE *late = fopen(hp, "r");
    EXPECT(late, "internal");
    fclose(late);

    if (strcmp(mode, "pthread") == 0 || strcmp(mode, "thrd") == 0) {
        lines('a');
        if (strcmp(mode, "pthread") == 0)
            pthread_join(pt, NULL);
        else
            thrd_join(tt, NULL);
        if (fclose(hf) != 0 || fclose(uf) != 0)
            return 4;
        if (check(hp, mode) || check(up, mode))
            return 1;
    } else if (strcmp(mode, "timer") == 0) {
        for (int i = 0; i < 5000 && !fired; i++)
            usleep(1000);
        if (!fired) {
            printf("timer: never fired\n");
            return 1;
        }
    } else {
        const struct aiocb *l[1] = {&cb};
        aio_suspend(l, 1, NULL);
        if (aio_error(&cb) != 0 || aio_return(&cb) <= 0) {
            printf("aio: read failed\n");
            return 1;
        }
    }
    printf("ok\n");
    return 0;
}
