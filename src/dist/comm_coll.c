/* lmf_comm collectives: argument checks, the MPI non-blocking call behind each lmf_comm_i*
 * (all-reduce and broadcast split into pieces of at most max_piece elements, each an MPI
 * request under one lmf_comm_req), the world-of-one local forms, and the blocking wrappers. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "comm_internal.h"
#include "lmforge/core.h"

static int check_reduce(const lmf_comm *c, const char *what, lmf_dtype t) {
    if (t != LMF_F32 && t != LMF_BF16)
        return lmf_errorf(LMF_EUNSUPPORTED, "comm \"%s\": %s of %s: only F32 and BF16 reduce",
                          c->name, what, lmf_dtype_name(t));
    return 0;
}

static MPI_Datatype mpi_type(lmf_dtype t) {
    return t == LMF_F32 ? MPI_FLOAT : MPI_UINT16_T;
}

static MPI_Op mpi_op(const lmf_comm *c, lmf_dtype t) {
    return t == LMF_F32 ? MPI_SUM : c->w->bf16_sum;
}

/* Sets up the 1/P finishing step of an average. */
static void set_avg(lmf_comm_req *r, lmf_reduce_op op, void *buf, size_t count, lmf_dtype t) {
    if (op != LMF_REDUCE_AVG || r->c->size == 1) return;
    r->scale_buf = buf;
    r->scale_count = count;
    r->scale_t = t;
    r->scale = 1.0f / (float)r->c->size;
}

static int posted(lmf_comm_req *r, int rc, const char *what, lmf_comm_req **out) {
    if (rc != MPI_SUCCESS) {
        lmf_comm *c = r->c;
        for (int i = 0; i < r->nmr; i++)
            if (r->mr[i] != MPI_REQUEST_NULL) MPI_Wait(&r->mr[i], MPI_STATUS_IGNORE);
        comm_req_release(r);
        return comm_mpi_error(rc, what, c);
    }
    *out = r;
    return 0;
}

int lmf_comm_iallreduce(lmf_comm *c, void *buf, size_t count, lmf_dtype t, lmf_reduce_op op,
                        lmf_comm_req **req) {
    *req = NULL;
    int rc = check_reduce(c, "all-reduce", t);
    if (rc) return rc;
    size_t es = lmf_dtype_size(t);
    if (!c->use_mpi) {
        lmf_comm_req *r = comm_req_new(c, OP_ALLREDUCE, count * es, 0);
        if (!r) return LMF_ENOMEM;
        *req = r;
        return 0;
    }
    size_t pieces = count ? (count + c->max_piece - 1) / c->max_piece : 0;
    if (pieces > INT_MAX)
        return lmf_errorf(LMF_ERANGE, "comm \"%s\": all-reduce of %zu elements: too many pieces",
                          c->name, count);
    lmf_comm_req *r = comm_req_new(c, OP_ALLREDUCE, count * es, (int)pieces);
    if (!r) return LMF_ENOMEM;
    set_avg(r, op, buf, count, t);
    rc = MPI_SUCCESS;
    for (size_t p = 0; p < pieces && rc == MPI_SUCCESS; p++) {
        size_t off = p * c->max_piece, n = count - off < c->max_piece ? count - off : c->max_piece;
        rc = MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + off * es, (int)n, mpi_type(t), mpi_op(c, t),
                            c->mc, &r->mr[p]);
    }
    return posted(r, rc, "MPI_Iallreduce", req);
}

/* MPI counts are ints: one rank's chunk must fit. */
static int check_chunk(const lmf_comm *c, const char *what, size_t chunk) {
    if (chunk <= INT_MAX) return 0;
    return lmf_errorf(LMF_ERANGE, "comm \"%s\": %s chunk of %zu elements (at most %d per rank)",
                      c->name, what, chunk, INT_MAX);
}

int lmf_comm_ireduce_scatter(lmf_comm *c, const void *send, void *recv, size_t chunk, lmf_dtype t,
                             lmf_reduce_op op, lmf_comm_req **req) {
    *req = NULL;
    int rc = check_reduce(c, "reduce-scatter", t);
    if (rc) return rc;
    if ((rc = check_chunk(c, "reduce-scatter", chunk))) return rc;
    size_t es = lmf_dtype_size(t);
    lmf_comm_req *r =
        comm_req_new(c, OP_REDUCE_SCATTER, chunk * es * (size_t)c->size, c->use_mpi ? 1 : 0);
    if (!r) return LMF_ENOMEM;
    if (!c->use_mpi) {
        if (recv != send) memmove(recv, send, chunk * es);
        *req = r;
        return 0;
    }
    set_avg(r, op, recv, chunk, t);
    rc = MPI_Ireduce_scatter_block(send == recv ? MPI_IN_PLACE : send, recv, (int)chunk,
                                   mpi_type(t), mpi_op(c, t), c->mc, &r->mr[0]);
    return posted(r, rc, "MPI_Ireduce_scatter_block", req);
}

int lmf_comm_iallgather(lmf_comm *c, const void *send, void *recv, size_t chunk, lmf_dtype t,
                        lmf_comm_req **req) {
    *req = NULL;
    int rc = check_chunk(c, "all-gather", chunk);
    if (rc) return rc;
    size_t es = lmf_dtype_size(t);
    lmf_comm_req *r =
        comm_req_new(c, OP_ALLGATHER, chunk * es * (size_t)c->size, c->use_mpi ? 1 : 0);
    if (!r) return LMF_ENOMEM;
    char *mine = (char *)recv + (size_t)c->rank * chunk * es;
    if (!c->use_mpi) {
        if (send != mine) memmove(mine, send, chunk * es);
        *req = r;
        return 0;
    }
    /* bytes as MPI_BYTE in a contiguous type of one element, so any dtype travels */
    MPI_Datatype el;
    MPI_Type_contiguous((int)es, MPI_BYTE, &el);
    MPI_Type_commit(&el);
    rc = MPI_Iallgather(send == mine ? MPI_IN_PLACE : send, (int)chunk, el, recv, (int)chunk, el,
                        c->mc, &r->mr[0]);
    MPI_Type_free(&el); /* freed when the operation no longer needs it */
    return posted(r, rc, "MPI_Iallgather", req);
}

/* counts and displacements as MPI's ints, kept in the request until it completes. */
static int v_layout(lmf_comm *c, const char *what, const size_t *counts, lmf_comm_req *r,
                    size_t *total) {
    size_t sum = 0;
    for (int i = 0; i < c->size; i++) {
        if (counts[i] > INT_MAX || sum + counts[i] > INT_MAX)
            return lmf_errorf(LMF_ERANGE, "comm \"%s\": %s of more than %d elements", c->name, what,
                              INT_MAX);
        sum += counts[i];
    }
    *total = sum;
    if (!r) return 0;
    r->vcounts = malloc(sizeof(int) * 2 * (size_t)c->size);
    if (!r->vcounts) return lmf_errorf(LMF_ENOMEM, "comm \"%s\": %s request", c->name, what);
    for (int i = 0, d = 0; i < c->size; d += (int)counts[i], i++)
        r->vcounts[i] = (int)counts[i], r->vcounts[c->size + i] = d;
    return 0;
}

int lmf_comm_iallgatherv(lmf_comm *c, const void *send, void *recv, const size_t *counts,
                         lmf_dtype t, lmf_comm_req **req) {
    *req = NULL;
    size_t es = lmf_dtype_size(t), total = 0, before = 0;
    int rc = v_layout(c, "all-gather", counts, NULL, &total);
    if (rc) return rc;
    for (int i = 0; i < c->rank; i++) before += counts[i];
    char *mine = (char *)recv + before * es;
    lmf_comm_req *r = comm_req_new(c, OP_ALLGATHER, total * es, c->use_mpi ? 1 : 0);
    if (!r) return LMF_ENOMEM;
    if (!c->use_mpi) {
        if (send != mine) memmove(mine, send, counts[c->rank] * es);
        *req = r;
        return 0;
    }
    if ((rc = v_layout(c, "all-gather", counts, r, &total))) {
        comm_req_release(r);
        return rc;
    }
    MPI_Datatype el;
    MPI_Type_contiguous((int)es, MPI_BYTE, &el);
    MPI_Type_commit(&el);
    rc = MPI_Iallgatherv(send == mine ? MPI_IN_PLACE : send, (int)counts[c->rank], el, recv,
                         r->vcounts, r->vcounts + c->size, el, c->mc, &r->mr[0]);
    MPI_Type_free(&el);
    return posted(r, rc, "MPI_Iallgatherv", req);
}

int lmf_comm_igatherv(lmf_comm *c, const void *send, void *recv, const size_t *counts, lmf_dtype t,
                      int root, lmf_comm_req **req) {
    *req = NULL;
    size_t es = lmf_dtype_size(t), total = 0, before = 0;
    if (root < 0 || root >= c->size)
        return lmf_errorf(LMF_EINVAL, "comm \"%s\": gather root %d outside 0..%d", c->name, root,
                          c->size - 1);
    int rc = v_layout(c, "gather", counts, NULL, &total);
    if (rc) return rc;
    for (int i = 0; i < c->rank; i++) before += counts[i];
    lmf_comm_req *r = comm_req_new(c, OP_GATHER, total * es, c->use_mpi ? 1 : 0);
    if (!r) return LMF_ENOMEM;
    if (!c->use_mpi) {
        memmove((char *)recv + before * es, send, counts[c->rank] * es);
        *req = r;
        return 0;
    }
    if ((rc = v_layout(c, "gather", counts, r, &total))) {
        comm_req_release(r);
        return rc;
    }
    MPI_Datatype el;
    MPI_Type_contiguous((int)es, MPI_BYTE, &el);
    MPI_Type_commit(&el);
    rc = MPI_Igatherv(send, (int)counts[c->rank], el, recv, r->vcounts, r->vcounts + c->size, el,
                      root, c->mc, &r->mr[0]);
    MPI_Type_free(&el);
    return posted(r, rc, "MPI_Igatherv", req);
}

int lmf_comm_gatherv(lmf_comm *c, const void *send, void *recv, const size_t *counts, lmf_dtype t,
                     int root) {
    lmf_comm_req *r;
    int rc = lmf_comm_igatherv(c, send, recv, counts, t, root, &r);
    return rc ? rc : lmf_comm_wait(&r);
}

int lmf_comm_ireduce_scatterv(lmf_comm *c, const void *send, void *recv, const size_t *counts,
                              lmf_dtype t, lmf_reduce_op op, lmf_comm_req **req) {
    *req = NULL;
    int rc = check_reduce(c, "reduce-scatter", t);
    size_t es = lmf_dtype_size(t), total = 0, before = 0;
    if (!rc) rc = v_layout(c, "reduce-scatter", counts, NULL, &total);
    if (rc) return rc;
    for (int i = 0; i < c->rank; i++) before += counts[i];
    lmf_comm_req *r = comm_req_new(c, OP_REDUCE_SCATTER, total * es, c->use_mpi ? 1 : 0);
    if (!r) return LMF_ENOMEM;
    if (!c->use_mpi) {
        memmove(recv, (const char *)send + before * es, counts[c->rank] * es);
        *req = r;
        return 0;
    }
    if ((rc = v_layout(c, "reduce-scatter", counts, r, &total))) {
        comm_req_release(r);
        return rc;
    }
    set_avg(r, op, recv, counts[c->rank], t);
    rc = MPI_Ireduce_scatter(send, recv, r->vcounts, mpi_type(t), mpi_op(c, t), c->mc, &r->mr[0]);
    return posted(r, rc, "MPI_Ireduce_scatter", req);
}

int lmf_comm_iallreduce_f64(lmf_comm *c, double *buf, size_t count, lmf_comm_req **req) {
    *req = NULL;
    if (count > INT_MAX)
        return lmf_errorf(LMF_ERANGE, "comm \"%s\": all-reduce of %zu doubles", c->name, count);
    lmf_comm_req *r = comm_req_new(c, OP_ALLREDUCE, count * sizeof(double), c->use_mpi ? 1 : 0);
    if (!r) return LMF_ENOMEM;
    if (!c->use_mpi) {
        *req = r;
        return 0;
    }
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, MPI_DOUBLE, MPI_SUM, c->mc, &r->mr[0]);
    return posted(r, rc, "MPI_Iallreduce", req);
}

int lmf_comm_allreduce_f64(lmf_comm *c, double *buf, size_t count) {
    lmf_comm_req *r;
    int rc = lmf_comm_iallreduce_f64(c, buf, count, &r);
    return rc ? rc : lmf_comm_wait(&r);
}

int lmf_comm_ibroadcast(lmf_comm *c, void *buf, size_t bytes, int root, lmf_comm_req **req) {
    *req = NULL;
    if (root < 0 || root >= c->size)
        return lmf_errorf(LMF_EINVAL, "comm \"%s\": broadcast root %d outside 0..%d", c->name, root,
                          c->size - 1);
    size_t pieces = c->use_mpi && bytes ? (bytes + c->max_piece - 1) / c->max_piece : 0;
    if (pieces > INT_MAX)
        return lmf_errorf(LMF_ERANGE, "comm \"%s\": broadcast of %zu bytes: too many pieces",
                          c->name, bytes);
    lmf_comm_req *r = comm_req_new(c, OP_BROADCAST, bytes, (int)pieces);
    if (!r) return LMF_ENOMEM;
    int rc = MPI_SUCCESS;
    for (size_t p = 0; p < pieces && rc == MPI_SUCCESS; p++) {
        size_t off = p * c->max_piece, n = bytes - off < c->max_piece ? bytes - off : c->max_piece;
        rc = MPI_Ibcast((char *)buf + off, (int)n, MPI_BYTE, root, c->mc, &r->mr[p]);
    }
    return posted(r, rc, "MPI_Ibcast", req);
}

int lmf_comm_ibarrier(lmf_comm *c, lmf_comm_req **req) {
    *req = NULL;
    lmf_comm_req *r = comm_req_new(c, OP_BARRIER, 0, c->use_mpi ? 1 : 0);
    if (!r) return LMF_ENOMEM;
    if (!c->use_mpi) {
        *req = r;
        return 0;
    }
    return posted(r, MPI_Ibarrier(c->mc, &r->mr[0]), "MPI_Ibarrier", req);
}

int lmf_comm_allreduce(lmf_comm *c, void *buf, size_t count, lmf_dtype t, lmf_reduce_op op) {
    lmf_comm_req *r;
    int rc = lmf_comm_iallreduce(c, buf, count, t, op, &r);
    return rc ? rc : lmf_comm_wait(&r);
}

int lmf_comm_reduce_scatter(lmf_comm *c, const void *send, void *recv, size_t chunk, lmf_dtype t,
                            lmf_reduce_op op) {
    lmf_comm_req *r;
    int rc = lmf_comm_ireduce_scatter(c, send, recv, chunk, t, op, &r);
    return rc ? rc : lmf_comm_wait(&r);
}

int lmf_comm_allgather(lmf_comm *c, const void *send, void *recv, size_t chunk, lmf_dtype t) {
    lmf_comm_req *r;
    int rc = lmf_comm_iallgather(c, send, recv, chunk, t, &r);
    return rc ? rc : lmf_comm_wait(&r);
}

int lmf_comm_broadcast(lmf_comm *c, void *buf, size_t bytes, int root) {
    lmf_comm_req *r;
    int rc = lmf_comm_ibroadcast(c, buf, bytes, root, &r);
    return rc ? rc : lmf_comm_wait(&r);
}

int lmf_comm_barrier(lmf_comm *c) {
    lmf_comm_req *r;
    int rc = lmf_comm_ibarrier(c, &r);
    return rc ? rc : lmf_comm_wait(&r);
}
