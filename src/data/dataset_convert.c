/* Raw alpaca / sharegpt / pt-text records to lmf_record (LLaMA-Factory's data/converter.py).
 * Malformed conversations are reported to the caller as "skip" (LLaMA-Factory logs and drops
 * them); a missing required column or a value of the wrong type is a hard error, because it
 * means dataset_info.json or the file is wrong for every record, not that one record is. */
#include <stdlib.h>
#include <string.h>

#include "dataset_internal.h"
#include "lmforge/core.h"

enum { SKIP = 1 };

void dataset_record_free(lmf_record *r) {
    for (int i = 0; i < r->n_msgs; i++) free(r->msgs[i].content);
    free(r->msgs);
    free(r->system);
    free(r->tools);
    free(r->text);
    free(r->dataset);
    memset(r, 0, sizeof *r);
}

/* Reads string column col of rec into *out (borrowed). Absent: an error when required, else
 * *out = NULL. JSON null reads as "" (Hugging Face fills missing values with None). */
static int get_str(const lmf_dataset_attr *a, const cJSON *rec, int64_t index, const char *col,
                   int required, const char **out) {
    *out = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, col);
    if (!v) {
        if (!required) return 0;
        return lmf_errorf(LMF_EFORMAT, "dataset \"%s\": record %lld: missing column \"%s\"",
                          a->name, (long long)index, col);
    }
    if (cJSON_IsNull(v)) {
        *out = "";
        return 0;
    }
    if (!cJSON_IsString(v))
        return lmf_errorf(LMF_EFORMAT,
                          "dataset \"%s\": record %lld: column \"%s\": expected a string", a->name,
                          (long long)index, col);
    *out = v->valuestring;
    return 0;
}

static int dup_into(const lmf_dataset_attr *a, const char *s, char **dst) {
    *dst = lmf_strdup(s ? s : "");
    return *dst ? 0 : lmf_errorf(LMF_ENOMEM, "dataset \"%s\": out of memory", a->name);
}

/* Tools are JSON text for the template; a column holding a JSON list/object is serialized. */
static int get_tools(const lmf_dataset_attr *a, const cJSON *rec, int64_t index, char **dst) {
    const cJSON *v = a->tools ? cJSON_GetObjectItemCaseSensitive(rec, a->tools) : NULL;
    if (!v || cJSON_IsNull(v)) return dup_into(a, "", dst);
    if (cJSON_IsString(v)) return dup_into(a, v->valuestring, dst);
    if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        *dst = cJSON_PrintUnformatted(v);
        if (*dst) return 0;
        return lmf_errorf(LMF_ENOMEM, "dataset \"%s\": out of memory", a->name);
    }
    return lmf_errorf(LMF_EFORMAT,
                      "dataset \"%s\": record %lld: column \"%s\": expected a string or JSON list",
                      a->name, (long long)index, a->tools);
}

static int push_msg(const lmf_dataset_attr *a, lmf_record *r, const char *role, const char *s) {
    lmf_msg *m = realloc(r->msgs, (size_t)(r->n_msgs + 1) * sizeof *m);
    if (!m) return lmf_errorf(LMF_ENOMEM, "dataset \"%s\": out of memory", a->name);
    r->msgs = m;
    m[r->n_msgs].role = role;
    if (dup_into(a, s, &m[r->n_msgs].content)) return LMF_ENOMEM;
    r->n_msgs++;
    return 0;
}

/* history: [[old_prompt, old_response], ...] before the current turn. */
static int alpaca_history(const lmf_dataset_attr *a, const cJSON *rec, int64_t index,
                          lmf_record *r) {
    const cJSON *h = a->history ? cJSON_GetObjectItemCaseSensitive(rec, a->history) : NULL;
    if (!h || cJSON_IsNull(h)) return 0;
    int rc, t = 0;
    if (!cJSON_IsArray(h)) goto bad;
    for (const cJSON *turn = h->child; turn; turn = turn->next, t++) {
        if (!cJSON_IsArray(turn) || cJSON_GetArraySize(turn) != 2 || !cJSON_IsString(turn->child) ||
            !cJSON_IsString(turn->child->next))
            goto bad;
        if ((rc = push_msg(a, r, "user", turn->child->valuestring)) ||
            (rc = push_msg(a, r, "assistant", turn->child->next->valuestring)))
            return rc;
    }
    return 0;
bad:
    return lmf_errorf(LMF_EFORMAT,
                      "dataset \"%s\": record %lld: column \"%s\": expected a list of "
                      "[prompt, response] string pairs (entry %d)",
                      a->name, (long long)index, a->history, t);
}

static int convert_alpaca(const lmf_dataset_attr *a, const cJSON *rec, int64_t index, int pt,
                          lmf_record *r, char *reason, size_t reason_size) {
    const char *prompt, *query = NULL, *response = NULL, *system = NULL;
    int rc;
    if ((rc = alpaca_history(a, rec, index, r))) return rc;
    if ((rc = get_str(a, rec, index, a->prompt, 1, &prompt))) return rc;
    if (a->query && (rc = get_str(a, rec, index, a->query, 0, &query))) return rc;
    if (!pt && a->response) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, a->response);
        if (cJSON_IsArray(v))
            return lmf_errorf(LMF_EUNSUPPORTED,
                              "dataset \"%s\": record %lld: column \"%s\" holds a list (a ranking "
                              "dataset); ranking datasets are not supported yet",
                              a->name, (long long)index, a->response);
    }
    if (!pt && (rc = get_str(a, rec, index, a->response ? a->response : "output", 1, &response)))
        return rc;
    if (a->system && (rc = get_str(a, rec, index, a->system, 0, &system))) return rc;

    /* LLaMA-Factory joins the non-empty of instruction and input with "\n". */
    size_t np = strlen(prompt), nq = query ? strlen(query) : 0;
    char *user = malloc(np + nq + 2);
    if (!user) return lmf_errorf(LMF_ENOMEM, "dataset \"%s\": out of memory", a->name);
    memcpy(user, prompt, np);
    size_t k = np;
    if (np && nq) user[k++] = '\n';
    if (nq) memcpy(user + k, query, nq), k += nq;
    user[k] = 0;
    rc = push_msg(a, r, "user", user);
    free(user);
    if (rc) return rc;
    if (!pt) {
        if (!response[0]) {
            snprintf(reason, reason_size, "empty response in column \"%s\"", a->response);
            return SKIP;
        }
        if ((rc = push_msg(a, r, "assistant", response))) return rc;
    }
    if ((rc = dup_into(a, system, &r->system))) return rc;
    return get_tools(a, rec, index, &r->tools);
}

static const char *map_role(const lmf_dataset_attr *a, const char *tag, int odd) {
    if (!odd && !strcmp(tag, a->user_tag)) return "user";
    if (!odd && !strcmp(tag, a->observation_tag)) return "observation";
    if (odd && !strcmp(tag, a->assistant_tag)) return "assistant";
    if (odd && !strcmp(tag, a->function_tag)) return "function";
    return NULL;
}

static int convert_sharegpt(const lmf_dataset_attr *a, const cJSON *rec, int64_t index, int pt,
                            lmf_record *r, char *reason, size_t reason_size) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(rec, a->messages);
    const char *system = NULL;
    int rc;
    if (!msgs)
        return lmf_errorf(LMF_EFORMAT, "dataset \"%s\": record %lld: missing column \"%s\"",
                          a->name, (long long)index, a->messages);
    if (!cJSON_IsArray(msgs))
        return lmf_errorf(LMF_EFORMAT,
                          "dataset \"%s\": record %lld: column \"%s\": expected a list of messages",
                          a->name, (long long)index, a->messages);
    /* Check every message's shape first: a missing tag is a config error, not a bad record. */
    int i = 0;
    for (const cJSON *m = msgs->child; m; m = m->next, i++) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, a->role_tag);
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, a->content_tag);
        const char *bad = !cJSON_IsObject(m)         ? "expected an object"
                          : !cJSON_IsString(role)    ? a->role_tag
                          : !cJSON_IsString(content) ? a->content_tag
                                                     : NULL;
        if (bad)
            return lmf_errorf(LMF_EFORMAT,
                              "dataset \"%s\": record %lld: column \"%s\": message %d: %s%s%s",
                              a->name, (long long)index, a->messages, i,
                              cJSON_IsObject(m) ? "missing or non-string \"" : "", bad,
                              cJSON_IsObject(m) ? "\"" : "");
    }
    const cJSON *m = msgs->child;
    if (m && a->system_tag &&
        !strcmp(cJSON_GetObjectItemCaseSensitive(m, a->role_tag)->valuestring, a->system_tag)) {
        system = cJSON_GetObjectItemCaseSensitive(m, a->content_tag)->valuestring;
        m = m->next;
    } else if (a->system && (rc = get_str(a, rec, index, a->system, 0, &system))) {
        return rc;
    }
    for (i = 0; m; m = m->next, i++) {
        const char *tag = cJSON_GetObjectItemCaseSensitive(m, a->role_tag)->valuestring;
        const char *role = map_role(a, tag, i % 2);
        if (!role) {
            snprintf(reason, reason_size, "invalid role tag \"%.40s\" at turn %d (expected %s)",
                     tag, i, i % 2 ? "assistant or function" : "user or observation");
            return SKIP;
        }
        if ((rc = push_msg(a, r, role,
                           cJSON_GetObjectItemCaseSensitive(m, a->content_tag)->valuestring)))
            return rc;
    }
    if (r->n_msgs == 0) {
        snprintf(reason, reason_size, "no messages");
        return SKIP;
    }
    if (!pt && r->n_msgs % 2) {
        snprintf(reason, reason_size, "invalid message count %d (must be even)", r->n_msgs);
        return SKIP;
    }
    if (!pt && !r->msgs[r->n_msgs - 1].content[0]) {
        snprintf(reason, reason_size, "empty response");
        return SKIP;
    }
    if ((rc = dup_into(a, system, &r->system))) return rc;
    return get_tools(a, rec, index, &r->tools);
}

int dataset_convert(const lmf_dataset_attr *a, const cJSON *rec, int64_t index, int pt,
                    lmf_record *out, char *reason, size_t reason_size) {
    memset(out, 0, sizeof *out);
    out->index = index;
    int rc = a->formatting == LMF_FORMAT_ALPACA
                 ? convert_alpaca(a, rec, index, pt, out, reason, reason_size)
                 : convert_sharegpt(a, rec, index, pt, out, reason, reason_size);
    if (rc == 0 && pt) {
        /* Pre-training reads the first prompt message only (LLaMA-Factory's pretrain
         * preprocessing takes _prompt[0]["content"]), as plain text. */
        out->text = out->n_msgs ? out->msgs[0].content : NULL;
        if (out->n_msgs) out->msgs[0].content = NULL;
        for (int i = 0; i < out->n_msgs; i++) free(out->msgs[i].content);
        free(out->msgs);
        out->msgs = NULL;
        out->n_msgs = 0;
        if (!out->text || !out->text[0]) {
            snprintf(reason, reason_size, "empty text");
            rc = SKIP;
        }
    }
    if (rc == 0) {
        if (dup_into(a, a->name, &out->dataset)) rc = LMF_ENOMEM;
    }
    if (rc) dataset_record_free(out);
    return rc;
}
