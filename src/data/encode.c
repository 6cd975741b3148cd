/* Records -> template pieces -> token ids and labels (see include/lmforge/encode.h). */
#include "lmforge/encode.h"

#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"

typedef struct ids_buf {
    int32_t *v;
    int n, cap;
} ids_buf;

static int push(ids_buf *b, const int32_t *ids, int n) {
    if (b->n + n > b->cap) {
        int cap = b->cap ? b->cap : 64;
        while (cap < b->n + n) cap *= 2;
        int32_t *v = realloc(b->v, sizeof *v * (size_t)cap);
        if (!v) return lmf_errorf(LMF_ENOMEM, "out of memory tokenising");
        b->v = v, b->cap = cap;
    }
    memcpy(b->v + b->n, ids, sizeof *ids * (size_t)n);
    b->n += n;
    return 0;
}

int32_t lmf_encode_eos_id(const lmf_encode_options *o) {
    const char *over = o->tpl ? lmf_template_eos_override(o->tpl) : NULL;
    if (over) {
        int32_t id = lmf_tokenizer_token_to_id(o->tok, over);
        if (id >= 0) return id;
    }
    return lmf_tokenizer_eos(o->tok);
}

static int encode_pieces(const lmf_encode_options *o, const lmf_chat_pieces *p, ids_buf *out) {
    for (int i = 0; i < p->n; i++) {
        const lmf_chat_piece *pc = &p->v[i];
        int rc;
        if (pc->kind == LMF_CHAT_PIECE_TEXT) {
            int32_t *ids;
            int n;
            if ((rc = lmf_tokenizer_encode(o->tok, pc->text, strlen(pc->text), 0, &ids, &n)))
                return rc;
            rc = push(out, ids, n);
            free(ids);
        } else {
            int32_t id =
                pc->kind == LMF_CHAT_PIECE_BOS ? lmf_tokenizer_bos(o->tok) : lmf_encode_eos_id(o);
            if (id < 0 && pc->kind == LMF_CHAT_PIECE_EOS)
                return lmf_errorf(LMF_EINVAL,
                                  "template %s needs an eos token, the tokenizer has none",
                                  lmf_template_name(o->tpl));
            rc = id >= 0 ? push(out, &id, 1) : 0; /* no bos token: the slot stays empty */
        }
        if (rc) return rc;
    }
    return 0;
}

int lmf_encode_sft(const lmf_encode_options *o, const lmf_record *rec, lmf_example *out,
                   int *truncated) {
    memset(out, 0, sizeof *out);
    lmf_message *msgs = calloc((size_t)rec->n_msgs + 1, sizeof *msgs);
    if (!msgs) return lmf_errorf(LMF_ENOMEM, "out of memory");
    for (int i = 0; i < rec->n_msgs; i++)
        msgs[i] = (lmf_message){rec->msgs[i].role, rec->msgs[i].content};
    lmf_template_opts topts = {o->enable_thinking};
    lmf_turn *turns = NULL;
    int n_turns = 0;
    int rc = lmf_template_encode_multiturn(o->tpl, msgs, rec->n_msgs,
                                           rec->system && rec->system[0] ? rec->system : NULL,
                                           &topts, &turns, &n_turns);
    ids_buf *src = NULL, *tgt = NULL;
    lmf_turn_ids *tids = NULL;
    if (!rc) {
        src = calloc((size_t)n_turns, sizeof *src);
        tgt = calloc((size_t)n_turns, sizeof *tgt);
        tids = calloc((size_t)n_turns, sizeof *tids);
        if (!src || !tgt || !tids) rc = lmf_errorf(LMF_ENOMEM, "out of memory");
    }
    for (int t = 0; !rc && t < n_turns; t++) {
        rc = encode_pieces(o, &turns[t].prompt, &src[t]);
        if (!rc) rc = encode_pieces(o, &turns[t].response, &tgt[t]);
        tids[t] = (lmf_turn_ids){src[t].v, tgt[t].v, src[t].n, tgt[t].n};
    }
    if (!rc) {
        lmf_sft_options so = {o->cutoff_len, o->train_on_prompt, o->mask_history,
                              lmf_template_efficient_eos(o->tpl), lmf_encode_eos_id(o)};
        rc = lmf_sft_build(tids, n_turns, &so, out, truncated);
    }
    if (rc) lmf_error_prefix(rc, "dataset %s, record %lld", rec->dataset, (long long)rec->index);
    for (int t = 0; t < n_turns && src; t++) free(src[t].v), free(tgt[t].v);
    free(src), free(tgt), free(tids), free(msgs);
    lmf_turns_free(turns, n_turns);
    return rc;
}

int lmf_encode_pieces(const lmf_encode_options *o, const lmf_chat_pieces *p, int32_t **ids,
                      int *n) {
    ids_buf b = {0};
    int rc = encode_pieces(o, p, &b);
    if (rc) {
        free(b.v);
        return rc;
    }
    *ids = b.v;
    *n = b.n;
    return 0;
}

void lmf_examples_free(lmf_example *ex, int64_t n) {
    for (int64_t i = 0; ex && i < n; i++) lmf_example_free(&ex[i]);
    free(ex);
}

static int encode_pt(const lmf_encode_options *o, const lmf_record_set *recs, lmf_example **out,
                     int64_t *n_out, lmf_encode_stats *st) {
    int32_t eos = lmf_tokenizer_eos(o->tok);
    if (eos < 0)
        return lmf_errorf(
            LMF_EINVAL,
            "pre-training needs an eos token to join documents; the tokenizer has none");
    lmf_example *docs = calloc((size_t)(recs->n ? recs->n : 1), sizeof *docs);
    if (!docs) return lmf_errorf(LMF_ENOMEM, "out of memory");
    int rc = 0;
    for (int64_t i = 0; i < recs->n && !rc; i++) {
        const char *text = recs->items[i].text ? recs->items[i].text : "";
        int32_t *ids;
        int n;
        if ((rc = lmf_tokenizer_encode(o->tok, text, strlen(text), 0, &ids, &n))) break;
        int32_t *with_eos = realloc(ids, sizeof *ids * (size_t)(n + 1));
        if (!with_eos) {
            free(ids);
            rc = lmf_errorf(LMF_ENOMEM, "out of memory");
            break;
        }
        with_eos[n] = eos;
        docs[i] = (lmf_example){with_eos, with_eos, n + 1};
        st->tokens += n + 1;
    }
    int nb = 0;
    if (!rc) {
        lmf_example *blocks;
        rc = lmf_pt_blocks(docs, (int)recs->n, o->cutoff_len, lmf_tokenizer_bos(o->tok), &blocks,
                           &nb);
        if (!rc) *out = blocks, *n_out = nb, st->examples = nb;
    }
    for (int64_t i = 0; i < recs->n; i++) free(docs[i].ids);
    free(docs);
    return rc;
}

int lmf_encode_records(const lmf_encode_options *o, const lmf_record_set *recs, lmf_example **out,
                       int64_t *n_out, lmf_encode_stats *st) {
    *out = NULL;
    *n_out = 0;
    memset(st, 0, sizeof *st);
    if (o->cutoff_len <= 0)
        return lmf_errorf(LMF_EINVAL, "cutoff_len must be positive (got %d)", o->cutoff_len);
    if (o->pt) return encode_pt(o, recs, out, n_out, st);
    if (!o->tpl) return lmf_errorf(LMF_EINVAL, "sft needs a chat template");
    lmf_example *ex = calloc((size_t)(recs->n ? recs->n : 1), sizeof *ex);
    if (!ex) return lmf_errorf(LMF_ENOMEM, "out of memory");
    int64_t k = 0;
    for (int64_t i = 0; i < recs->n; i++) {
        int cut = 0, rc = lmf_encode_sft(o, &recs->items[i], &ex[k], &cut);
        if (rc) {
            lmf_examples_free(ex, k);
            return rc;
        }
        int trained = 0;
        for (int t = 0; t < ex[k].n && !trained; t++) trained = ex[k].labels[t] != LMF_IGNORE_INDEX;
        st->truncated += cut;
        if (!trained) { /* everything trainable was cut away: useless for the loss */
            st->skipped_no_label++;
            lmf_example_free(&ex[k]);
            continue;
        }
        st->tokens += ex[k].n;
        k++;
    }
    st->examples = k;
    if (st->truncated || st->skipped_no_label)
        lmf_info("datasets: %lld of %lld examples cut to cutoff_len %d; %lld dropped with nothing "
                 "left to train",
                 (long long)st->truncated, (long long)recs->n, o->cutoff_len,
                 (long long)st->skipped_no_label);
    if (k == 0) {
        free(ex);
        return lmf_errorf(LMF_EINVAL, "no example left with a trained token after cutoff_len %d",
                          o->cutoff_len);
    }
    *out = ex;
    *n_out = k;
    return 0;
}
