/* LMDB against a udax directory: N puts in transactions, close, reopen, read
 * every key back and check its value, plus a cursor walk in key order.
 * Usage: lmdb DIR [writemap]   Prints "ok N" or what failed. */
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 20000
#define PER_TXN 1000

#define CK(call)                                                        \
    do {                                                                \
        int rc_ = (call);                                               \
        if (rc_) {                                                      \
            printf("%s: %s\n", #call, mdb_strerror(rc_));               \
            exit(1);                                                    \
        }                                                               \
    } while (0)

static MDB_env *open_env(const char *dir, unsigned flags) {
    MDB_env *env;
    CK(mdb_env_create(&env));
    CK(mdb_env_set_mapsize(env, 64 << 20));
    CK(mdb_env_open(env, dir, flags, 0644));
    return env;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    unsigned flags = (argc > 2 && strcmp(argv[2], "writemap") == 0) ? MDB_WRITEMAP : 0;
    char k[32], v[64];
    MDB_env *env = open_env(argv[1], flags);
    MDB_dbi dbi;
    for (int t = 0; t < N / PER_TXN; t++) {
        MDB_txn *txn;
        CK(mdb_txn_begin(env, NULL, 0, &txn));
        CK(mdb_dbi_open(txn, NULL, 0, &dbi));
        for (int i = t * PER_TXN; i < (t + 1) * PER_TXN; i++) {
            snprintf(k, sizeof k, "key%06d", i);
            snprintf(v, sizeof v, "value-%d-%x", i, i * 2654435761u);
            MDB_val kv = {strlen(k), k}, vv = {strlen(v), v};
            CK(mdb_put(txn, dbi, &kv, &vv, 0));
        }
        CK(mdb_txn_commit(txn));
    }
    mdb_env_close(env);

    env = open_env(argv[1], flags | MDB_RDONLY);
    MDB_txn *txn;
    CK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
    CK(mdb_dbi_open(txn, NULL, 0, &dbi));
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "key%06d", i);
        snprintf(v, sizeof v, "value-%d-%x", i, i * 2654435761u);
        MDB_val kv = {strlen(k), k}, got;
        CK(mdb_get(txn, dbi, &kv, &got));
        if (got.mv_size != strlen(v) || memcmp(got.mv_data, v, got.mv_size) != 0) {
            printf("wrong value for %s\n", k);
            return 1;
        }
    }
    MDB_cursor *c;
    CK(mdb_cursor_open(txn, dbi, &c));
    MDB_val ck, cv;
    int n = 0, rc;
    while ((rc = mdb_cursor_get(c, &ck, &cv, n ? MDB_NEXT : MDB_FIRST)) == 0) {
        snprintf(k, sizeof k, "key%06d", n);
        if (ck.mv_size != strlen(k) || memcmp(ck.mv_data, k, ck.mv_size) != 0) {
            printf("cursor out of order at %d\n", n);
            return 1;
        }
        n++;
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    printf("ok %d\n", n);
    return 0;
}
