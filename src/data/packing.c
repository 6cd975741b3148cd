/* Packing several examples into fixed-budget rows. Each example keeps its own segment id and
 * positions restarting at 0, so with the model's segment mask packing changes neither the
 * loss nor the gradients, only the padding wasted (LLaMA-Factory's neat_packing). */
#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"
#include "lmforge/preprocess.h"

typedef struct by_len {
    int len, index;
} by_len;

static int longer_first(const void *a, const void *b) {
    const by_len *x = a, *y = b;
    if (x->len != y->len) return y->len - x->len;
    return x->index - y->index; /* stable: equal lengths keep dataset order */
}

void lmf_packed_rows_free(lmf_packed_row *rows, int n_rows) {
    for (int i = 0; rows && i < n_rows; i++) {
        free(rows[i].ids), free(rows[i].labels), free(rows[i].pos), free(rows[i].seg);
    }
    free(rows);
}

int lmf_pack(const lmf_example *ex, int n_ex, int cutoff, lmf_packed_row **rows_out, int *n_rows) {
    *rows_out = NULL;
    *n_rows = 0;
    if (cutoff <= 0) return lmf_errorf(LMF_EINVAL, "cutoff_len must be positive");
    by_len *order = malloc(sizeof *order * (size_t)(n_ex ? n_ex : 1));
    int *row_of = malloc(sizeof *row_of * (size_t)(n_ex ? n_ex : 1));
    int *fill = calloc((size_t)(n_ex ? n_ex : 1), sizeof *fill);
    lmf_packed_row *rows = NULL;
    int nr = 0, rc = 0;
    if (!order || !row_of || !fill) goto oom;
    for (int i = 0; i < n_ex; i++) {
        if (ex[i].n > cutoff) {
            rc =
                lmf_errorf(LMF_EINVAL, "packing: example %d has %d tokens, more than cutoff_len %d",
                           i, ex[i].n, cutoff);
            goto done;
        }
        order[i] = (by_len){ex[i].n, i};
    }
    qsort(order, (size_t)n_ex, sizeof *order, longer_first);
    /* First fit decreasing: each example goes to the first row with room. */
    for (int k = 0; k < n_ex; k++) {
        int r = 0;
        while (r < nr && fill[r] + order[k].len > cutoff) r++;
        if (r == nr) nr++;
        fill[r] += order[k].len;
        row_of[order[k].index] = r;
    }
    rows = calloc((size_t)(nr ? nr : 1), sizeof *rows);
    if (!rows) goto oom;
    for (int r = 0; r < nr; r++) {
        size_t b = sizeof(int32_t) * (size_t)fill[r];
        rows[r].ids = malloc(b), rows[r].labels = malloc(b), rows[r].pos = malloc(b),
        rows[r].seg = malloc(b);
        if (!rows[r].ids || !rows[r].labels || !rows[r].pos || !rows[r].seg) goto oom;
    }
    /* Fill rows in dataset order so a row reads like the data it came from. */
    for (int i = 0; i < n_ex; i++) {
        lmf_packed_row *row = &rows[row_of[i]];
        int seg = row->n ? row->seg[row->n - 1] + 1 : 1;
        for (int t = 0; t < ex[i].n; t++) {
            row->ids[row->n] = ex[i].ids[t];
            row->labels[row->n] = ex[i].labels[t];
            row->pos[row->n] = t;
            row->seg[row->n] = seg;
            row->n++;
        }
    }
    *rows_out = rows;
    *n_rows = nr;
    rows = NULL;
    goto done;
oom:
    rc = lmf_errorf(LMF_ENOMEM, "packing: out of memory");
done:
    lmf_packed_rows_free(rows, nr);
    free(order), free(row_of), free(fill);
    return rc;
}
