/* Hostfiles as DeepSpeed and OpenMPI write them: one host per line, "host slots=N", '#'
 * comments (see launch.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch.h"
#include "lmforge/core.h"

/* A count after "name=" on path:line: a whole number in 1..1048576. */
static int parse_count(const char *path, int line, const char *field, const char *v, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < 1 || x > 1 << 20)
        return lmf_errorf(LMF_EINVAL, "%s:%d: %s=%s: expected a whole number >= 1", path, line,
                          field, v);
    *out = (int)x;
    return 0;
}

static int parse_line(const char *path, int line, char *s, lmf_host *h, int *got) {
    *got = 0;
    char *hash = strchr(s, '#');
    if (hash) *hash = 0;
    char *save = NULL, *tok = strtok_r(s, " \t\r\n", &save);
    if (!tok) return 0;
    if (strchr(tok, '=') || strlen(tok) >= sizeof h->name)
        return lmf_errorf(LMF_EINVAL, "%s:%d: \"%s\": expected a host name first", path, line, tok);
    memset(h, 0, sizeof *h);
    snprintf(h->name, sizeof h->name, "%s", tok);
    h->slots = 1;
    int max_slots = 0;
    while ((tok = strtok_r(NULL, " \t\r\n", &save))) {
        char *eq = strchr(tok, '=');
        if (!eq)
            return lmf_errorf(LMF_EINVAL, "%s:%d: \"%s\": expected slots=N after the host name",
                              path, line, tok);
        *eq = 0;
        int rc;
        if (!strcmp(tok, "slots"))
            rc = parse_count(path, line, tok, eq + 1, &h->slots);
        else if (!strcmp(tok, "max_slots") || !strcmp(tok, "max-slots"))
            rc = parse_count(path, line, tok, eq + 1, &max_slots);
        else
            rc = lmf_errorf(LMF_EINVAL, "%s:%d: unknown field \"%s\" (expected slots=N)", path,
                            line, tok);
        if (rc) return rc;
    }
    if (max_slots && max_slots < h->slots)
        return lmf_errorf(LMF_EINVAL, "%s:%d: %s: slots=%d is above max_slots=%d", path, line,
                          h->name, h->slots, max_slots);
    *got = 1;
    return 0;
}

int lmf_hostfile_parse(const char *path, lmf_host **hosts, int *n) {
    *hosts = NULL, *n = 0;
    FILE *fp = fopen(path, "r");
    if (!fp) return lmf_errorf(LMF_EIO, "hostfile %s: cannot open: %s", path, strerror(errno));
    lmf_host *v = NULL;
    int *lines = NULL, count = 0, cap = 0, line = 0, rc = 0;
    char buf[4096];
    while (!rc && fgets(buf, sizeof buf, fp)) {
        line++;
        if (!strchr(buf, '\n') && !feof(fp)) {
            rc = lmf_errorf(LMF_EINVAL, "%s:%d: line longer than %zu bytes", path, line,
                            sizeof buf - 2);
            break;
        }
        lmf_host h;
        int got;
        rc = parse_line(path, line, buf, &h, &got);
        if (rc || !got) continue;
        for (int i = 0; i < count && !rc; i++)
            if (!strcmp(v[i].name, h.name))
                rc = lmf_errorf(LMF_EINVAL, "%s:%d: host %s is already listed on line %d", path,
                                line, h.name, lines[i]);
        if (rc) break;
        if (count == cap) {
            cap = cap ? 2 * cap : 8;
            lmf_host *nv = realloc(v, (size_t)cap * sizeof *nv);
            int *nl = nv ? realloc(lines, (size_t)cap * sizeof *nl) : NULL;
            if (nv) v = nv;
            if (nl) lines = nl;
            if (!nv || !nl) rc = lmf_errorf(LMF_ENOMEM, "out of memory");
            if (rc) break;
        }
        lines[count] = line;
        v[count++] = h;
    }
    fclose(fp);
    free(lines);
    if (!rc && !count) rc = lmf_errorf(LMF_EINVAL, "hostfile %s: no hosts in it", path);
    if (rc) {
        free(v);
        return rc;
    }
    *hosts = v, *n = count;
    return 0;
}

int lmf_hostfile_write(const char *path, const lmf_host *hosts, int n) {
    size_t cap = (size_t)n * (sizeof hosts->name + 32) + 1, k = 0;
    char *text = malloc(cap);
    if (!text) return lmf_errorf(LMF_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(text + k, cap - k, "%s slots=%d\n", hosts[i].name, hosts[i].slots);
    int rc = lmf_file_write_atomic(path, text, k);
    free(text);
    return rc;
}
