/* How many fault handler threads the shim's engine runs: one while faults
 * come one at a time, a second once they queue up.
 * Usage: handlers one|many MOUNT. Prints the engine's handler threads
 * ("udax-fault-0 udax-fault-1 ...") after the faults, or the first failure. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NT 8
#define PER (2 << 20)
static char *m;
static pthread_barrier_t bar;
static int round_no;

static int handlers(char *out, size_t n) {
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    char names[16][32];
    int k = 0;
    while (d && (e = readdir(d))) {
        char p[300], c[32] = {0};
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(p, "r");
        if (f && fgets(c, sizeof c, f) && strncmp(c, "udax-fault-", 11) == 0 &&
            strcmp(c, "udax-fault-slow\n") != 0 && k < 16) {
            c[strcspn(c, "\n")] = 0;
            strcpy(names[k++], c);
        }
        if (f)
            fclose(f);
    }
    if (d)
        closedir(d);
    /* sorted, space separated */
    for (int i = 0; i < k; i++)
        for (int j = i + 1; j < k; j++)
            if (strcmp(names[j], names[i]) < 0) {
                char t[32];
                strcpy(t, names[i]);
                strcpy(names[i], names[j]);
                strcpy(names[j], t);
            }
    out[0] = 0;
    for (int i = 0; i < k; i++) {
        strncat(out, names[i], n - strlen(out) - 2);
        if (i + 1 < k)
            strcat(out, " ");
    }
    return k;
}

static void *work(void *arg) {
    long t = (long)arg;
    pthread_barrier_wait(&bar);
    char *base = m + (size_t)round_no * NT * PER + (size_t)t * PER;
    for (size_t off = 0; off < PER; off += 64 << 10)
        base[off] = (char)(t + 1);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    int many = strcmp(argv[1], "many") == 0;
    int rounds = many ? 20 : 1;
    char p[4096], out[512];
    snprintf(p, sizeof p, "%s/h", argv[2]);
    int fd = open(p, O_CREAT | O_RDWR, 0644);
    size_t len = (size_t)rounds * NT * PER;
    if (fd < 0 || ftruncate(fd, (off_t)len) != 0) {
        printf("open %s: %s\n", p, strerror(errno));
        return 1;
    }
    m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        printf("mmap: %s\n", strerror(errno));
        return 1;
    }
    if (!many) {
        /* One thread: every fault waits for the one before. */
        for (size_t off = 0; off < len; off += 64 << 10)
            m[off] = 1;
        handlers(out, sizeof out);
        printf("%s\n", out);
        return 0;
    }
    pthread_barrier_init(&bar, NULL, NT);
    for (round_no = 0; round_no < rounds; round_no++) {
        pthread_t th[NT];
        for (long t = 0; t < NT; t++)
            pthread_create(&th[t], NULL, work, (void *)t);
        for (int t = 0; t < NT; t++)
            pthread_join(th[t], NULL);
        if (handlers(out, sizeof out) > 1)
            break;
    }
    for (int r = 0; r <= round_no && r < rounds; r++)
        for (int t = 0; t < NT; t++) {
            char *base = m + (size_t)r * NT * PER + (size_t)t * PER;
            for (size_t off = 0; off < PER; off += 64 << 10)
                if (base[off] != (char)(t + 1)) {
                    printf("round %d thread %d: lost a store at %zu\n", r, t, off);
                    return 1;
                }
        }
    printf("%s\n", out);
    return 0;
}
