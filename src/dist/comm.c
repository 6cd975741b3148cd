/* lmf_comm: starting and freeing communicators (the MPI world or a world of one), splitting
 * them into sub-communicators, and their accessors. Collectives are in comm_coll.c, requests
 * and timed waits in comm_wait.c, the timeout diagnosis in comm_diag.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm_internal.h"
#include "lmforge/core.h"

int comm_mpi_error(int rc, const char *what, const lmf_comm *c) {
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return lmf_errorf(LMF_EIO, "comm \"%s\": %s failed: %s", c ? c->name : "world", what, msg);
}

static int env_int(const char *name) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : -1;
}

/* A launcher that started us as one of several MPI processes. */
static int launched(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK") ||
           (getenv("SLURM_PROCID") && env_int("SLURM_NTASKS") > 1);
}

/* Fills local rank/size and node count of an MPI communicator. */
static int fill_topology(lmf_comm *c) {
    MPI_Comm node;
    int rc = MPI_Comm_split_type(c->mc, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node);
    if (rc != MPI_SUCCESS) return comm_mpi_error(rc, "MPI_Comm_split_type", c);
    MPI_Comm_rank(node, &c->local_rank);
    MPI_Comm_size(node, &c->local_size);
    MPI_Comm_free(&node);
    c->world_ranks = calloc((size_t)c->size, sizeof(int));
    if (!c->world_ranks) return lmf_errorf(LMF_ENOMEM, "comm \"%s\": rank table", c->name);
    MPI_Group g, wg;
    MPI_Comm_group(c->mc, &g);
    MPI_Comm_group(MPI_COMM_WORLD, &wg);
    int *mine = malloc((size_t)c->size * sizeof(int));
    if (!mine) return lmf_errorf(LMF_ENOMEM, "comm \"%s\": rank table", c->name);
    for (int i = 0; i < c->size; i++) mine[i] = i;
    MPI_Group_translate_ranks(g, c->size, mine, wg, c->world_ranks);
    free(mine);
    MPI_Group_free(&g);
    MPI_Group_free(&wg);
    int first = c->local_rank == 0;
    c->nodes = 1;
    /* node count: an all-reduce of "I am a node's first rank" */
    float f = (float)first;
    rc = lmf_comm_allreduce(c, &f, 1, LMF_F32, LMF_REDUCE_SUM);
    if (rc) return rc;
    c->nodes = (int)(f + 0.5f);
    return 0;
}

/* The bf16 sum inside MPI's reduction: a + b in f32, rounded to nearest even (NaN kept quiet),
 * the same as lmf_f32_to_bf16(lmf_bf16_to_f32(a) + lmf_bf16_to_f32(b)) but written inline with
 * bit operations so that the compiler vectorises it (the per-element calls cost 2x the wire). */
static void bf16_sum_fn(void *in, void *inout, int *len, MPI_Datatype *dt) {
    (void)dt;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++) {
        uint32_t ua = (uint32_t)a[i] << 16, ub = (uint32_t)b[i] << 16, u;
        float fa, fb, s;
        memcpy(&fa, &ua, 4);
        memcpy(&fb, &ub, 4);
        s = fa + fb;
        memcpy(&u, &s, 4);
        uint32_t r = (u + 0x7fff + ((u >> 16) & 1)) >> 16;
        b[i] = (uint16_t)((u & 0x7fffffff) > 0x7f800000 ? (u >> 16) | 0x40 : r);
    }
}

static lmf_comm *comm_new(const char *name, double timeout_s) {
    lmf_comm *c = calloc(1, sizeof *c);
    if (!c) {
        lmf_errorf(LMF_ENOMEM, "comm \"%s\": allocation failed", name);
        return NULL;
    }
    snprintf(c->name, sizeof c->name, "%s", name);
    c->mc = MPI_COMM_NULL;
    c->timeout_s = timeout_s;
    c->max_piece = (size_t)1 << 30;
    c->size = c->local_size = c->nodes = 1;
    return c;
}

int lmf_comm_init(lmf_comm **world, const lmf_comm_options *opts) {
    *world = NULL;
    double timeout = opts && opts->timeout_s > 0 ? opts->timeout_s : LMF_COMM_DEFAULT_TIMEOUT_S;
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (finalized) return lmf_errorf(LMF_EINVAL, "comm: MPI was already finalised in this process");
    lmf_comm *c = comm_new("world", timeout);
    if (!c) return LMF_ENOMEM;
    if (!inited && !(opts && opts->force_mpi) && !launched()) {
        *world = c; /* a world of one: no MPI at all */
        return 0;
    }
    comm_world *w = calloc(1, sizeof *w);
    if (!w) {
        free(c);
        return lmf_errorf(LMF_ENOMEM, "comm: allocation failed");
    }
    c->w = w;
    c->use_mpi = 1;
    if (!inited) {
        int provided = 0;
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
        if (rc != MPI_SUCCESS) {
            free(w);
            free(c);
            return lmf_errorf(LMF_EIO, "comm: MPI_Init_thread failed (code %d)", rc);
        }
        w->owns_mpi = 1;
        if (provided < MPI_THREAD_SERIALIZED) {
            lmf_comm_free(c);
            return lmf_errorf(LMF_EUNSUPPORTED,
                              "comm: the MPI library gives thread level %d, lmforge needs "
                              "MPI_THREAD_SERIALIZED (%d)",
                              provided, MPI_THREAD_SERIALIZED);
        }
    }
    for (int i = 0; i < DIAG_SLOTS; i++) w->slot_req[i] = MPI_REQUEST_NULL;
    w->diag = MPI_COMM_NULL;
    MPI_Comm_dup(MPI_COMM_WORLD, &c->mc);
    MPI_Comm_dup(MPI_COMM_WORLD, &w->diag);
    /* Errors on the diagnostic channel (a dead peer's socket) must not end the diagnosis. */
    MPI_Comm_set_errhandler(w->diag, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(c->mc, MPI_ERRORS_RETURN);
    MPI_Op_create(bf16_sum_fn, 1, &w->bf16_sum);
    MPI_Comm_rank(c->mc, &c->rank);
    MPI_Comm_size(c->mc, &c->size);
    w->rank = c->rank;
    w->size = c->size;
    w->now_since = comm_now();
    int rc = fill_topology(c);
    if (rc) {
        lmf_comm_free(c);
        return rc;
    }
    if (c->nodes > 1 && c->rank == 0 && c->timeout_s < 30)
        lmf_warn("comm: ddp_timeout %.1f s on %d nodes is below mpirun's own lost-node "
                 "detection: after a timeout on a cut node, mpirun can hang in its teardown "
                 "until lmforge kills it (docs/distributed.md)",
                 c->timeout_s, c->nodes);
    *world = c;
    return 0;
}

int lmf_comm_free(lmf_comm *c) {
    if (!c) return 0;
    if (c->active)
        return lmf_errorf(LMF_EINVAL, "comm \"%s\": freed with requests still in flight", c->name);
    if (c->children)
        return lmf_errorf(LMF_EINVAL, "comm \"%s\": freed before its %d sub-communicator(s)",
                          c->name, c->children);
    if (c->parent) c->parent->children--;
    if (c->use_mpi) {
        if (c->mc != MPI_COMM_NULL) MPI_Comm_free(&c->mc);
        if (!c->parent) {
            comm_world *w = c->w;
            for (int i = 0; i < DIAG_SLOTS; i++)
                if (w->slot_req[i] != MPI_REQUEST_NULL) MPI_Request_free(&w->slot_req[i]);
            MPI_Op_free(&w->bf16_sum);
            if (w->diag != MPI_COMM_NULL) MPI_Comm_free(&w->diag);
            if (w->owns_mpi) MPI_Finalize();
            free(w);
        }
    }
    free(c->world_ranks);
    free(c);
    return 0;
}

int lmf_comm_split(lmf_comm *c, int color, int key, lmf_comm **out) {
    *out = NULL;
    char name[DIAG_NAME];
    snprintf(name, sizeof name, "%.20s.%d:%d", c->name, c->nsplits, color);
    c->nsplits++;
    if (!c->use_mpi) {
        if (color < 0) return 0;
        lmf_comm *s = comm_new(name, c->timeout_s);
        if (!s) return LMF_ENOMEM;
        s->parent = c;
        c->children++;
        *out = s;
        return 0;
    }
    /* MPI_Comm_split has no non-blocking form: a timed barrier first, so that a dead peer is
     * reported instead of waited for. */
    int rc = lmf_comm_barrier(c);
    if (rc) return rc;
    MPI_Comm mc;
    rc = MPI_Comm_split(c->mc, color < 0 ? MPI_UNDEFINED : color, key, &mc);
    if (rc != MPI_SUCCESS) return comm_mpi_error(rc, "MPI_Comm_split", c);
    if (mc == MPI_COMM_NULL) return 0;
    lmf_comm *s = comm_new(name, c->timeout_s);
    if (!s) {
        MPI_Comm_free(&mc);
        return LMF_ENOMEM;
    }
    s->use_mpi = 1;
    s->mc = mc;
    s->w = c->w;
    s->parent = c;
    s->max_piece = c->max_piece;
    c->children++;
    MPI_Comm_set_errhandler(mc, MPI_ERRORS_RETURN);
    MPI_Comm_rank(mc, &s->rank);
    MPI_Comm_size(mc, &s->size);
    rc = fill_topology(s);
    if (rc) {
        lmf_comm_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int lmf_comm_rank(const lmf_comm *c) {
    return c->rank;
}
int lmf_comm_size(const lmf_comm *c) {
    return c->size;
}
int lmf_comm_local_rank(const lmf_comm *c) {
    return c->local_rank;
}
int lmf_comm_local_size(const lmf_comm *c) {
    return c->local_size;
}
int lmf_comm_node_count(const lmf_comm *c) {
    return c->nodes;
}
int lmf_comm_world_rank(const lmf_comm *c) {
    return c->w ? c->w->rank : 0;
}
const char *lmf_comm_name(const lmf_comm *c) {
    return c->name;
}
int lmf_comm_uses_mpi(const lmf_comm *c) {
    return c->use_mpi;
}
double lmf_comm_timeout(const lmf_comm *c) {
    return c->timeout_s;
}
void lmf_comm_set_timeout(lmf_comm *c, double seconds) {
    c->timeout_s = seconds > 0 ? seconds : LMF_COMM_DEFAULT_TIMEOUT_S;
}
void lmf_comm_set_max_piece(lmf_comm *c, size_t elements) {
    c->max_piece = elements ? elements : 1;
    if (c->max_piece > (size_t)1 << 30) c->max_piece = (size_t)1 << 30;
}

void lmf_comm_library_version(char *out, size_t n) {
    char v[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int len = 0;
    MPI_Get_library_version(v, &len);
    v[strcspn(v, "\n,")] = 0;
    snprintf(out, n, "%s", v);
}
