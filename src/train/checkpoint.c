/* checkpoint-N folders: atomic commit by rename, newest lookup, pruning (see checkpoint.h). */
#define _GNU_SOURCE /* nftw flags */
#include "lmforge/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lmforge/core.h"

#define TMP_PREFIX ".tmp-checkpoint-"

static int parse_step(const char *name, int64_t *step) {
    if (strncmp(name, "checkpoint-", 11)) return 0;
    char *end;
    long long v = strtoll(name + 11, &end, 10);
    if (end == name + 11 || *end || v < 0) return 0;
    *step = v;
    return 1;
}

int lmf_ckpt_latest(const char *output_dir, char **path, int64_t *step) {
    DIR *d = opendir(output_dir);
    if (!d) return LMF_ENOENT;
    struct dirent *e;
    int64_t best = -1, s;
    while ((e = readdir(d)))
        if (parse_step(e->d_name, &s) && s > best) best = s;
    closedir(d);
    if (best < 0) return LMF_ENOENT;
    char name[64];
    snprintf(name, sizeof name, "checkpoint-%lld", (long long)best);
    *path = lmf_path_join(output_dir, name);
    *step = best;
    return *path ? 0 : lmf_errorf(LMF_ENOMEM, "out of memory");
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

int lmf_remove_tree(const char *path) {
    if (!lmf_path_exists(path)) return 0;
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return lmf_errorf(LMF_EIO, "%s: cannot remove: %s", path, strerror(errno));
    return 0;
}

int lmf_ckpt_begin(const char *output_dir, int64_t step, char **tmp_path) {
    char name[96];
    snprintf(name, sizeof name, TMP_PREFIX "%lld-XXXXXX", (long long)step);
    char *p = lmf_path_join(output_dir, name);
    if (!p) return lmf_errorf(LMF_ENOMEM, "out of memory");
    if (!mkdtemp(p)) {
        int err = errno;
        free(p);
        return lmf_errorf(LMF_EIO, "%s: cannot create a checkpoint folder: %s", output_dir,
                          strerror(err));
    }
    *tmp_path = p;
    return 0;
}

static void fsync_path(const char *p) {
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int lmf_ckpt_commit(const char *output_dir, int64_t step, const char *tmp_path) {
    DIR *d = opendir(tmp_path);
    struct dirent *e;
    while (d &&
           (e = readdir(d))) { /* the files were written atomically; make sure they are on disk */
        char *f = lmf_path_join(tmp_path, e->d_name);
        if (f && e->d_name[0] != '.') fsync_path(f);
        free(f);
    }
    if (d) closedir(d);
    fsync_path(tmp_path);
    char name[64];
    snprintf(name, sizeof name, "checkpoint-%lld", (long long)step);
    char *final = lmf_path_join(output_dir, name);
    if (!final) return lmf_errorf(LMF_ENOMEM, "out of memory");
    int rc = lmf_remove_tree(final); /* a resumed run may write the same step again */
    if (!rc && rename(tmp_path, final) != 0)
        rc = lmf_errorf(LMF_EIO, "%s: cannot rename %s into place: %s", final, tmp_path,
                        strerror(errno));
    if (!rc) fsync_path(output_dir);
    free(final);
    return rc;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int lmf_ckpt_prune(const char *output_dir, int keep) {
    DIR *d = opendir(output_dir);
    if (!d) return 0;
    int64_t steps[4096], s;
    int n = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (parse_step(e->d_name, &s) && n < 4096) steps[n++] = s;
        if (!strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX))) { /* an interrupted save */
            char *p = lmf_path_join(output_dir, e->d_name);
            if (p) rc = lmf_remove_tree(p);
            free(p);
        }
    }
    closedir(d);
    if (keep <= 0 || n <= keep) return rc;
    qsort(steps, (size_t)n, sizeof *steps, cmp_i64);
    for (int i = 0; i < n - keep && !rc; i++) {
        char name[64];
        snprintf(name, sizeof name, "checkpoint-%lld", (long long)steps[i]);
        char *p = lmf_path_join(output_dir, name);
        rc = p ? lmf_remove_tree(p) : LMF_ENOMEM;
        free(p);
    }
    return rc;
}
