/* Supervised (sft) and pre-training (pt) example assembly, following LLaMA-Factory's
 * processors: the same truncation budget rules, label masks and block cutting, so a user's
 * cutoff_len / train_on_prompt / mask_history mean what they mean there. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"
#include "lmforge/preprocess.h"

void lmf_example_free(lmf_example *e) {
    free(e->ids);
    free(e->labels);
    memset(e, 0, sizeof *e);
}

void lmf_infer_seqlen(int source_len, int target_len, int cutoff, int *new_source,
                      int *new_target) {
    int max_target;
    if (target_len * 2 < cutoff) /* short response: cut the prompt */
        max_target = cutoff;
    else if (source_len * 2 < cutoff) /* short prompt: cut the response */
        max_target = cutoff - source_len;
    else /* both long: share the budget in proportion */
        max_target = (int)(cutoff * ((double)target_len / (source_len + target_len)));
    int t = target_len < max_target ? target_len : max_target;
    int max_source = cutoff - t > 0 ? cutoff - t : 0;
    *new_target = t;
    *new_source = source_len < max_source ? source_len : max_source;
}

/* Appends or prepends (mask_history keeps the newest turns, so it builds back to front). */
static void place(int32_t *buf, int *len, const int32_t *src, int n, int prepend) {
    if (prepend) {
        memmove(buf + n, buf, sizeof *buf * (size_t)*len);
        memcpy(buf, src, sizeof *buf * (size_t)n);
    } else {
        memcpy(buf + *len, src, sizeof *buf * (size_t)n);
    }
    *len += n;
}

int lmf_sft_build(const lmf_turn_ids *turns, int n_turns, const lmf_sft_options *o,
                  lmf_example *out, int *truncated) {
    memset(out, 0, sizeof *out);
    if (o->cutoff_len <= 0) return lmf_errorf(LMF_EINVAL, "cutoff_len must be positive");
    if (n_turns <= 0) return lmf_errorf(LMF_EINVAL, "sft example has no turns");
    int cap = o->cutoff_len + 2, len = 0, lab_len = 0, total = o->efficient_eos ? 1 : 0, cut = 0;
    int32_t *ids = malloc(sizeof *ids * cap), *labels = malloc(sizeof *labels * cap);
    int32_t *tmp = malloc(sizeof *tmp * cap);
    if (!ids || !labels || !tmp) {
        free(ids), free(labels), free(tmp);
        return lmf_errorf(LMF_ENOMEM, "out of memory building an sft example");
    }
    for (int k = 0; k < n_turns; k++) {
        const lmf_turn_ids *t = &turns[o->mask_history ? n_turns - 1 - k : k];
        if (total >= o->cutoff_len) {
            cut = 1;
            break;
        }
        int sl, tl;
        lmf_infer_seqlen(t->source_len, t->target_len, o->cutoff_len - total, &sl, &tl);
        cut |= sl < t->source_len || tl < t->target_len;
        total += sl + tl;
        /* labels for the source */
        for (int i = 0; i < sl; i++) tmp[i] = o->train_on_prompt ? t->source[i] : LMF_IGNORE_INDEX;
        /* efficient_eos: the previous response's eos opens this prompt and is trained. */
        if (!o->train_on_prompt && o->efficient_eos && k != 0 && sl > 0) tmp[0] = o->eos_id;
        int trained = !(o->mask_history && k != 0);
        if (o->mask_history) { /* prepend target then source so the order stays source, target */
            place(ids, &len, t->target, tl, 1);
            place(ids, &len, t->source, sl, 1);
            int32_t *tl_buf = tmp + sl;
            for (int i = 0; i < tl; i++) tl_buf[i] = trained ? t->target[i] : LMF_IGNORE_INDEX;
            place(labels, &lab_len, tl_buf, tl, 1);
            place(labels, &lab_len, tmp, sl, 1);
        } else {
            place(ids, &len, t->source, sl, 0);
            place(ids, &len, t->target, tl, 0);
            place(labels, &lab_len, tmp, sl, 0);
            for (int i = 0; i < tl; i++) labels[lab_len++] = t->target[i];
        }
    }
    if (o->efficient_eos) {
        ids[len++] = o->eos_id;
        labels[lab_len++] = o->eos_id;
    }
    free(tmp);
    out->ids = ids;
    out->labels = labels;
    out->n = len;
    if (truncated) *truncated = cut;
    return 0;
}

int lmf_pt_blocks(const lmf_example *docs, int n_docs, int block, int32_t bos_id,
                  lmf_example **blocks, int *n_blocks) {
    *blocks = NULL;
    *n_blocks = 0;
    if (block <= 0) return lmf_errorf(LMF_EINVAL, "cutoff_len must be positive");
    int64_t total = 0;
    for (int i = 0; i < n_docs; i++) total += docs[i].n;
    int64_t nb = total / block;
    if (nb == 0)
        return lmf_errorf(
            LMF_EINVAL, "pre-training data has %lld tokens, fewer than one block of cutoff_len %d",
            (long long)total, block);
    lmf_example *out = calloc((size_t)nb, sizeof *out);
    if (!out) return lmf_errorf(LMF_ENOMEM, "out of memory for %lld blocks", (long long)nb);
    int d = 0, off = 0;
    for (int64_t b = 0; b < nb; b++) {
        out[b].ids = malloc(sizeof(int32_t) * block);
        out[b].labels = malloc(sizeof(int32_t) * block);
        if (!out[b].ids || !out[b].labels) {
            for (int64_t k = 0; k <= b; k++) lmf_example_free(&out[k]);
            free(out);
            return lmf_errorf(LMF_ENOMEM, "out of memory for pre-training blocks");
        }
        out[b].n = block;
        for (int i = 0; i < block; i++) {
            while (off >= docs[d].n) d++, off = 0;
            out[b].ids[i] = docs[d].ids[off++];
        }
        if (bos_id >= 0) out[b].ids[0] = bos_id;
        memcpy(out[b].labels, out[b].ids, sizeof(int32_t) * block);
    }
    *blocks = out;
    *n_blocks = (int)nb;
    return 0;
}
