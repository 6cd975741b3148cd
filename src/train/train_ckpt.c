/* checkpoint-N folders of a training run: the adapter or model, optimizer.bin (unless
 * save_only_model), trainer_state.bin (step, sampler position, dropout RNG: what an exact
 * resume needs) and trainer_state.json (transformers' format, with the log history). Written
 * to a temporary folder and renamed (lmforge/checkpoint.h), so a kill or a full disk at any
 * instant leaves the previous checkpoint whole. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/checkpoint.h"
#include "trainer_internal.h"

/* Everything besides weights and optimizer moments that a resumed run needs to continue as
 * if uninterrupted. Fixed layout behind a magic and a version. */
typedef struct run_state {
    int64_t step, total, consumed, tokens;
    uint64_t numel, fingerprint;
    uint8_t sampler[LMF_SAMPLER_STATE_BYTES];
    uint64_t dropout_rng[4];
    double loss_acc, loss_total;
} run_state;

static const char state_magic[8] = {'L', 'M', 'F', 'T', 'R', 'S', 'T', '1'};
enum { STATE_VERSION = 2 };

/* Identifies what was trained: a checkpoint of another model or method is refused. */
uint64_t trainer_fingerprint(const trainer *t) {
    char buf[512];
    const lmf_model_config *c = &t->m->cfg;
    int n =
        snprintf(buf, sizeof buf, "%s|%d|%d|%d|%d|%d|%d|%u|%d", t->o->finetuning_type, c->hidden,
                 c->layers, c->heads, c->kv_heads, c->vocab, t->lora ? t->lora->r : 0,
                 t->lora ? t->lora->targets : 0u, t->o->freeze_trainable_layers);
    if (t->lora && t->lora->modules_to_save[0]) /* kept out of older fingerprints */
        n += snprintf(buf + n, sizeof buf - (size_t)n, "|%s", t->lora->modules_to_save);
    return lmf_hash_bytes(buf, (size_t)n);
}

static size_t trained_numel(const trainer *t) {
    size_t n = 0;
    for (int g = 0; g < t->n_groups; g++) n += t->groups[g].numel;
    return n;
}

static int save_state(const char *path, const run_state *st) {
    uint8_t buf[16 + sizeof *st];
    uint32_t version = STATE_VERSION, reserved = 0;
    memcpy(buf, state_magic, 8);
    memcpy(buf + 8, &version, 4);
    memcpy(buf + 12, &reserved, 4);
    memcpy(buf + 16, st, sizeof *st);
    return lmf_file_write_atomic(path, buf, sizeof buf);
}

static int load_state(const char *path, run_state *st) {
    char *data;
    size_t len;
    int rc = lmf_file_read_all(path, &data, &len);
    if (rc) return rc;
    uint32_t version = 0;
    if (len >= 12) memcpy(&version, data + 8, 4);
    if (len != 16 + sizeof *st || memcmp(data, state_magic, 8) || version != STATE_VERSION)
        rc = lmf_errorf(LMF_EFORMAT, "%s: not a trainer state of this lmforge version (size %zu)",
                        path, len);
    else
        memcpy(st, data + 16, sizeof *st);
    free(data);
    if (!rc && (st->step < 0 || st->step > st->total || st->consumed < 0))
        rc = lmf_errorf(LMF_EFORMAT, "%s: corrupt trainer state", path);
    return rc;
}

/* Under ZeRO every rank writes its optimizer shard into the folder rank 0 started; rank 0
 * commits it once all have succeeded (a shared filesystem across nodes, as DeepSpeed's
 * checkpoints need). Otherwise rank 0 alone is here. */
int trainer_save_checkpoint(trainer *t, const lmf_sampler *smp) {
    const lmf_train_options *o = t->o;
    char *tmp = NULL, *p = NULL;
    int rc = trainer_saves_base(t) ? zero_gather_all(t) : 0;
    if (!rc && t->rank == 0) rc = lmf_ckpt_begin(o->output_dir, t->step, &tmp);
    if (t->zero) { /* every rank learns the folder, or that there is none */
        char path[4096] = "";
        if (t->rank == 0 && tmp) snprintf(path, sizeof path, "%s", tmp);
        int brc = lmf_comm_broadcast(t->comm, path, sizeof path, 0);
        if (!rc) rc = brc;
        if (!rc && !path[0])
            rc = lmf_errorf(LMF_EIO, "rank 0 could not start checkpoint-%lld", (long long)t->step);
        if (!rc && t->rank != 0) tmp = lmf_strdup(path);
    }
    if (!rc && t->rank == 0)
        rc = t->lora ? lmf_lora_save(t->lora, t->m, tmp) : lmf_model_save(t->m, tmp);
    for (int g = 0; g < t->n_groups && !rc && !o->save_only_model; g++)
        rc = zero_save_optimizer(t, &t->groups[g], tmp);
    if (!rc && t->rank == 0) {
        run_state s = {
            t->step, t->total, t->consumed, t->tokens,    trained_numel(t), trainer_fingerprint(t),
            {0},     {0},      t->loss_acc, t->loss_total};
        lmf_sampler_save(smp, s.sampler);
        if (t->lora) memcpy(s.dropout_rng, t->lora->dropout_rng.s, sizeof s.dropout_rng);
        p = lmf_path_join(tmp, "trainer_state.bin");
        rc = save_state(p, &s);
        free(p);
    }
    if (!rc && t->rank == 0)
        rc = train_log_write_state(&t->log, t, tmp, (double)t->consumed / (double)t->train.n);
    if (t->zero) { /* did every rank write its part? */
        double failed = rc != 0;
        int arc = lmf_comm_allreduce_f64(t->comm, &failed, 1);
        if (!rc && arc) rc = arc;
        if (!rc && failed > 0)
            rc = lmf_errorf(LMF_EIO, "another rank could not write its optimizer shard");
    }
    if (t->rank == 0) {
        if (!rc) rc = lmf_ckpt_commit(o->output_dir, t->step, tmp);
        if (rc) {
            lmf_error_prefix(rc, "saving checkpoint-%lld (the previous checkpoint is kept)",
                             (long long)t->step);
            if (tmp) lmf_remove_tree(tmp);
        } else {
            rc = lmf_ckpt_prune(o->output_dir, o->save_total_limit);
        }
    }
    if (trainer_saves_base(t)) zero_release_all(t);
    free(tmp);
    return rc;
}

int trainer_load_checkpoint(trainer *t, const char *dir, lmf_sampler *smp) {
    run_state st;
    char *p = lmf_path_join(dir, "trainer_state.bin");
    int rc = load_state(p, &st);
    free(p);
    if (rc) return rc;
    size_t numel = trained_numel(t);
    if (st.fingerprint != trainer_fingerprint(t) || st.numel != numel)
        return lmf_errorf(
            LMF_EINVAL,
            "%s: a checkpoint of another model, method or LoRA setting; refusing to resume", dir);
    if (st.total != t->total)
        return lmf_errorf(LMF_EINVAL, "%s: saved for %lld total steps, this config gives %lld", dir,
                          (long long)st.total, (long long)t->total);
    if (t->lora) {
        lmf_lora *l = NULL;
        if ((rc = lmf_lora_load(&l, t->m, dir))) return rc;
        if (l->numel != t->lora->numel)
            rc = lmf_errorf(LMF_EINVAL, "%s: adapter does not match this run", dir);
        else
            memcpy(t->lora->params, l->params, l->numel * sizeof(float));
        lmf_lora_free(l);
        memcpy(t->lora->dropout_rng.s, st.dropout_rng, sizeof st.dropout_rng);
    } else {
        lmf_model *m = NULL;
        if ((rc = lmf_model_load(&m, dir, lmf_backend_cpu()))) return rc;
        if (m->numel != t->m->numel)
            rc = lmf_errorf(LMF_EINVAL, "%s: model does not match this run", dir);
        else
            memcpy(t->m->params, m->params, m->numel * sizeof(float));
        lmf_model_free(m);
    }
    if (rc) return rc;
    for (int g = 0; g < t->n_groups && !rc; g++) {
        int found = 0;
        rc = zero_load_optimizer(&t->groups[g], dir, &found);
        if (!rc && !found)
            lmf_warn("%s: no %s (save_only_model): moments restart from zero", dir,
                     t->groups[g].opt_file);
    }
    if (!rc) rc = lmf_sampler_restore(smp, st.sampler, dir);
    lmf_model_weights_changed(t->m); /* base weights may have been restored */
    if (!rc) {
        t->step = st.step, t->consumed = st.consumed, t->tokens = st.tokens;
        t->loss_acc = st.loss_acc, t->loss_total = st.loss_total;
    }
    return rc;
}
