/* Files: read-only mmap, whole-file reads, and crash-safe writes (temp + fsync + rename). */
#include "lmforge/core.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int lmf_file_map(lmf_mapped_file *m, const char *path) {
    memset(m, 0, sizeof *m);
    m->fd = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lmf_errorf(LMF_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return lmf_errorf(LMF_EIO, "%s: not a regular file", path);
    }
    m->size = (size_t)st.st_size;
    if (m->size > 0) {
        void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return lmf_errorf(LMF_EIO, "%s: mmap failed: %s", path, strerror(errno));
        }
        m->data = p;
    }
    m->fd = fd;
    return 0;
}

void lmf_file_unmap(lmf_mapped_file *m) {
    if (m->data) munmap((void *)m->data, m->size);
    if (m->fd >= 0) close(m->fd);
    memset(m, 0, sizeof *m);
    m->fd = -1;
}

int lmf_file_read_all(const char *path, char **out, size_t *len) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return lmf_errorf(LMF_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (n < cap) break;
        char *bigger = realloc(buf, cap * 2 + 1);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    int err = ferror(fp);
    fclose(fp);
    if (!buf) return lmf_errorf(LMF_ENOMEM, "%s: out of memory reading file", path);
    if (err) {
        free(buf);
        return lmf_errorf(LMF_EIO, "%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return 0;
}

static int fsync_dir_of(const char *path) {
    char *copy = lmf_strdup(path);
    if (!copy) return LMF_ENOMEM;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0) return 0; /* best effort */
    fsync(fd);
    close(fd);
    return 0;
}

int lmf_atomic_open(lmf_atomic_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    size_t n = strlen(path) + 16;
    f->path = lmf_strdup(path);
    f->tmp_path = malloc(n);
    if (!f->path || !f->tmp_path) {
        lmf_atomic_abort(f);
        return lmf_errorf(LMF_ENOMEM, "%s: out of memory", path);
    }
    snprintf(f->tmp_path, n, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(f->tmp_path);
    if (fd < 0) {
        int e = errno;
        free(f->tmp_path);
        f->tmp_path = NULL;
        lmf_atomic_abort(f);
        return lmf_errorf(LMF_EIO, "%s: cannot create temporary file: %s", path, strerror(e));
    }
    fchmod(fd, 0644);
    f->fp = fdopen(fd, "wb");
    if (!f->fp) {
        close(fd);
        lmf_atomic_abort(f);
        return lmf_errorf(LMF_EIO, "%s: fdopen failed", path);
    }
    return 0;
}

int lmf_atomic_write(lmf_atomic_file *f, const void *data, size_t len) {
    if (len && fwrite(data, 1, len, f->fp) != len)
        return lmf_errorf(LMF_EIO, "%s: write failed: %s", f->path, strerror(errno));
    return 0;
}

int lmf_atomic_commit(lmf_atomic_file *f) {
    int rc = 0;
    if (fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0)
        rc = lmf_errorf(LMF_EIO, "%s: flush failed: %s", f->path, strerror(errno));
    if (fclose(f->fp) != 0 && rc == 0)
        rc = lmf_errorf(LMF_EIO, "%s: close failed: %s", f->path, strerror(errno));
    f->fp = NULL;
    if (rc == 0 && rename(f->tmp_path, f->path) != 0)
        rc = lmf_errorf(LMF_EIO, "%s: rename failed: %s", f->path, strerror(errno));
    if (rc == 0) fsync_dir_of(f->path);
    lmf_atomic_abort(f);
    return rc;
}

void lmf_atomic_abort(lmf_atomic_file *f) {
    if (f->fp) fclose(f->fp);
    if (f->tmp_path) unlink(f->tmp_path); /* no-op after a successful rename */
    free(f->path);
    free(f->tmp_path);
    memset(f, 0, sizeof *f);
}

int lmf_file_write_atomic(const char *path, const void *data, size_t len) {
    lmf_atomic_file f;
    int rc = lmf_atomic_open(&f, path);
    if (rc) return rc;
    rc = lmf_atomic_write(&f, data, len);
    if (rc) {
        lmf_atomic_abort(&f);
        return rc;
    }
    return lmf_atomic_commit(&f);
}

int lmf_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int lmf_mkdir_p(const char *path) {
    char *p = lmf_strdup(path);
    if (!p) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", path);
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                int e = errno;
                free(p);
                return lmf_errorf(LMF_EIO, "%s: cannot create directory: %s", path, strerror(e));
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    return 0;
}

char *lmf_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s) return NULL;
    memcpy(s, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') s[k++] = '/';
    memcpy(s + k, name, b + 1);
    return s;
}

int lmf_file_copy(const char *src, const char *dst) {
    lmf_mapped_file m;
    int rc = lmf_file_map(&m, src);
    if (rc) return rc;
    rc = lmf_file_write_atomic(dst, m.data, m.size);
    lmf_file_unmap(&m);
    return rc;
}
