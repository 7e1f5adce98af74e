/* Many threads race the shim's first udax call (the lazy mount), then each
 * writes and reads back its own file with pwrite/pread while also doing host
 * I/O; the main thread checks every byte. Prints "ok N" or the first failure.
 * Usage: threads MOUNT HOSTDIR */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NT 8
#define SZ (256 * 1024)
static const char *M, *H;
static pthread_barrier_t bar;
static int fail[NT];

static void *work(void *arg) {
    long t = (long)arg;
    char path[4096], hpath[4096];
    snprintf(path, sizeof path, "%s/t%ld", M, t);
    snprintf(hpath, sizeof hpath, "%s/h%ld", H, t);
    unsigned char *buf = malloc(SZ), *back = malloc(SZ);
    for (int i = 0; i < SZ; i++)
        buf[i] = (unsigned char)(i * 31 + t);
    pthread_barrier_wait(&bar);
    int fd = open(path, O_CREAT | O_RDWR, 0644);
    int hfd = open(hpath, O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (fd < 0 || hfd < 0) {
        fail[t] = errno ? errno : -1;
        return NULL;
    }
    for (int k = 0; k < 8; k++) {
        if (pwrite(fd, buf + k * (SZ / 8), SZ / 8, k * (SZ / 8)) != SZ / 8)
            fail[t] = 100 + k;
        if (write(hfd, "h", 1) != 1)
            fail[t] = 200 + k;
    }
    memset(back, 0, SZ);
    if (pread(fd, back, SZ, 0) != SZ || memcmp(buf, back, SZ) != 0)
        fail[t] = 300;
    if (lseek(hfd, 0, SEEK_END) != 8)
        fail[t] = 400;
    close(fd);
    close(hfd);
    free(buf);
    free(back);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    M = argv[1];
    H = argv[2];
    pthread_t th[NT];
    pthread_barrier_init(&bar, NULL, NT);
    for (long t = 0; t < NT; t++)
        pthread_create(&th[t], NULL, work, (void *)t);
    for (int t = 0; t < NT; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < NT; t++)
        if (fail[t]) {
            printf("thread %d failed: %d\n", t, fail[t]);
            return 1;
        }
    printf("ok %d\n", NT);
    return 0;
}
