/* Directory streams on udax while the directory changes (tests/dirstream.rs).
 *
 *   dirstream churn DIR N   N kept names listed (readdir and getdents64)
 *                           while a thread creates and removes others
 *   dirstream seek DIR N    telldir/seekdir and getdents d_off/lseek
 *                           positions after names were added before them
 *   dirstream big DIR N     a listing of N names, with names added after
 *                           opendir
 * Prints key=value lines; exits 1 on a setup failure. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *dir;

static void touch(const char *fmt, int i) {
    char p[4096], n[64];
    snprintf(n, sizeof n, fmt, i);
    snprintf(p, sizeof p, "%s/%s", dir, n);
    int fd = open(p, O_CREAT | O_WRONLY, 0644);
    if (fd < 0) {
        perror(p);
        exit(1);
    }
    close(fd);
}

static void rm(const char *fmt, int i) {
    char p[4096], n[64];
    snprintf(n, sizeof n, fmt, i);
    snprintf(p, sizeof p, "%s/%s", dir, n);
    if (unlink(p) != 0 && errno != ENOENT) {
        perror(p);
        exit(1);
    }
}

/* Names "k%05d": count each one seen; any other name than "." "..",
 * "t*" or "g*" is bad. */
static int note(int *seen, int n, const char *name) {
    if (!strcmp(name, ".") || !strcmp(name, "..") || name[0] == 't' || name[0] == 'g')
        return 0;
    int i;
    if (name[0] != 'k' || sscanf(name + 1, "%d", &i) != 1 || i < 0 || i >= n) {
        fprintf(stderr, "unexpected name %s\n", name);
        return 1;
    }
    seen[i]++;
    return 0;
}

static int exactly_once(int *seen, int n) {
    int bad = 0;
    for (int i = 0; i < n; i++)
        if (seen[i] != 1) {
            fprintf(stderr, "k%05d seen %d times\n", i, seen[i]);
            bad++;
        }
    return bad;
}

/* One listing by readdir; returns the kept names not seen exactly once
 * (plus unknown names). `pause_every`: sleep a little every so many
 * entries, so changes come between pages. */
static int list_readdir(int n, int pause_every) {
    int *seen = calloc(n, sizeof *seen), bad = 0, k = 0;
    DIR *d = opendir(dir);
    if (!d) {
        perror("opendir");
        exit(1);
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        bad += note(seen, n, e->d_name);
        if (pause_every && ++k % pause_every == 0)
            usleep(2000);
    }
    closedir(d);
    bad += exactly_once(seen, n);
    free(seen);
    return bad;
}

struct rec {
    unsigned long long ino;
    long long off;
    unsigned short reclen;
    unsigned char type;
    char name[];
};

static int list_getdents(int n, int pause) {
    int *seen = calloc(n, sizeof *seen), bad = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        perror("open dir");
        exit(1);
    }
    char buf[2048];
    long r;
    while ((r = getdents64(fd, buf, sizeof buf)) > 0) {
        for (long o = 0; o < r;) {
            struct rec *e = (struct rec *)(buf + o);
            bad += note(seen, n, e->name);
            o += e->reclen;
        }
        if (pause)
            usleep(2000);
    }
    if (r < 0)
        bad++;
    close(fd);
    bad += exactly_once(seen, n);
    free(seen);
    return bad;
}

static volatile int stop;

static void *churn(void *arg) {
    (void)arg;
    for (int i = 0; !stop; i++) {
        touch("t%05d", i % 4000);
        if (i >= 500)
            rm("t%05d", (i - 500) % 4000);
    }
    return NULL;
}

static int do_churn(int n) {
    for (int i = 0; i < n; i++)
        touch("k%05d", i);
    pthread_t t;
    pthread_create(&t, NULL, churn, NULL);
    int rbad = 0, gbad = 0;
    for (int round = 0; round < 3; round++) {
        rbad += list_readdir(n, 256);
        gbad += list_getdents(n, 1);
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("churn_readdir_bad=%d\nchurn_getdents_bad=%d\n", rbad, gbad);
    return 0;
}

static int do_seek(int n) {
    for (int i = 0; i < n; i++)
        touch("k%05d", i);
    DIR *d = opendir(dir);
    struct dirent *e = readdir(d);
    int dots = e && !strcmp(e->d_name, ".");
    e = readdir(d);
    dots = dots && e && !strcmp(e->d_name, "..");
    printf("dots_first=%d\n", dots);
    for (int i = 0; i < n / 2; i++)
        readdir(d);
    long at = telldir(d);
    e = readdir(d);
    char want[256];
    snprintf(want, sizeof want, "%s", e ? e->d_name : "(end)");
    /* Names before and after the saved one, then a fresh look at the
     * directory (rewinddir) and back to the saved position. */
    for (int i = 0; i < n; i++)
        touch("g%05d", i);
    rewinddir(d);
    readdir(d);
    seekdir(d, at);
    e = readdir(d);
    printf("seekdir_same=%d\n", e && !strcmp(e->d_name, want));
    /* telldir back at the start is '.'. */
    seekdir(d, 0);
    e = readdir(d);
    printf("seekdir_0_dot=%d\n", e && !strcmp(e->d_name, "."));
    closedir(d);
    /* A position told by one stream, given to another. */
    d = opendir(dir);
    seekdir(d, at);
    e = readdir(d);
    printf("seekdir_other_stream_same=%d\n", e && !strcmp(e->d_name, want));
    closedir(d);

    /* getdents64: the d_off of a record is where the next one starts. */
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    char buf[1024];
    long long off = -1;
    char next[256] = "";
    int got = 0;
    long r;
    while (!next[0] && (r = getdents64(fd, buf, sizeof buf)) > 0) {
        for (long o = 0; o < r; o += ((struct rec *)(buf + o))->reclen) {
            struct rec *x = (struct rec *)(buf + o);
            if (off >= 0 && !next[0]) {
                snprintf(next, sizeof next, "%s", x->name);
                break;
            }
            if (++got == n / 2)
                off = x->off;
        }
    }
    /* Names sorting before every other (as a name-ordered listing would
     * place them), then the listing read afresh. */
    for (int i = 0; i < n; i++)
        touch("a%05d", i);
    lseek(fd, 0, SEEK_SET);
    getdents64(fd, buf, sizeof buf);
    int same = lseek(fd, off, SEEK_SET) == off;
    r = getdents64(fd, buf, sizeof buf);
    same = same && r > 0 && !strcmp(((struct rec *)buf)->name, next);
    printf("lseek_same=%d\n", same);
    close(fd);
    return 0;
}

static int do_big(int n) {
    for (int i = 0; i < n; i++)
        touch("k%05d", i);
    int *seen = calloc(n, sizeof *seen), bad = 0, added = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    for (int i = 0; i < 3 && (e = readdir(d)); i++)
        bad += note(seen, n, e->d_name);
    /* After opendir: a stream holding a page, not the whole directory,
     * meets some of these further on. */
    for (int i = 0; i < 2000; i++)
        touch("g%05d", i);
    while ((e = readdir(d))) {
        bad += note(seen, n, e->d_name);
        added += e->d_name[0] == 'g';
    }
    closedir(d);
    bad += exactly_once(seen, n);
    printf("big_readdir_bad=%d\nbig_added_seen=%d\n", bad, added > 0);
    for (int i = 0; i < 2000; i++)
        rm("g%05d", i);
    printf("big_getdents_bad=%d\n", list_getdents(n, 0));
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    dir = argv[2];
    int n = atoi(argv[3]);
    if (mkdir(dir, 0755) != 0) {
        perror(dir);
        return 1;
    }
    if (!strcmp(argv[1], "churn"))
        return do_churn(n);
    if (!strcmp(argv[1], "seek"))
        return do_seek(n);
    if (!strcmp(argv[1], "big"))
        return do_big(n);
    return 2;
}
