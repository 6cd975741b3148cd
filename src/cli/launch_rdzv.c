/* Node 0 of a NNODES launch (launch.h): listens on MASTER_PORT, gathers the other nodes,
 * checks they agree, hands each node's connection to mpirun's rsh agent (a hidden lmforge
 * subcommand) through a local socket, and tells the nodes to stop and finish.
 *
 * The conversation, one TCP connection per node (text lines; launch_wire.h):
 *   node k -> 0: HELLO lmforge VERSION nnodes=N node_rank=K nproc=P cores=C host=HOST
 *   0 -> node k: WELCOME, then this lmforge's path and the working directory, a line each
 *                (or REJECT why, when the nodes disagree or one never came)
 *   node k -> 0: READY, or FAIL why (e.g. no lmforge at that path there)
 *   agent -> k:  RUN <bytes> + the command mpirun gives its rsh agent (OpenMPI's daemon)
 *   node k -> agent: EXIT code, when that command has ended
 *   0 -> node k: STOP (after each job: end the command if still running) -> STOPPED
 *   0 -> node k: DONE code (the end: node k exits with it) */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "launch.h"
#include "launch_wire.h"
#include "lmforge/core.h"

static int listen_on(int port, const char *addr_for_msg) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_flags = AI_PASSIVE,
                             .ai_family = AF_INET,
                             .ai_socktype = SOCK_STREAM},
                    *res = NULL;
    int g = getaddrinfo(NULL, ps, &hints, &res);
    if (g) return lmf_errorf(LMF_EIO, "MASTER_PORT=%d: %s", port, gai_strerror(g));
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, 0), one = 1, err = 0;
    if (fd < 0) err = errno;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd >= 0 && (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 64))) err = errno;
    freeaddrinfo(res);
    if (!err) return fd;
    if (fd >= 0) close(fd);
    if (err == EADDRINUSE)
        return lmf_errorf(LMF_EIO,
                          "MASTER_PORT=%d: the port is already in use on this node (%s): another "
                          "job's rendezvous, or another program; choose another MASTER_PORT on "
                          "every node",
                          port, addr_for_msg);
    return lmf_errorf(LMF_EIO, "MASTER_PORT=%d: cannot listen on it: %s", port, strerror(err));
}

/* Tells every connected node why the launch failed and returns the error. */
static int fail_all(lmf_rdzv *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_all(lmf_rdzv *r, int code, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (int i = 1; i < r->nnodes; i++)
        if (r->nodes[i].fd >= 0) {
            lmf_wire_send(r->nodes[i].fd, "REJECT %s\n", msg);
            close(r->nodes[i].fd);
            r->nodes[i].fd = -1;
        }
    return lmf_errorf(code, "%s", msg);
}

static void free_rdzv(lmf_rdzv *r) {
    for (int i = 1; r->nodes && i < r->nnodes; i++)
        if (r->nodes[i].fd >= 0) close(r->nodes[i].fd);
    free(r->nodes);
    if (r->listen_fd >= 0) close(r->listen_fd);
    if (r->sock_fd >= 0) close(r->sock_fd);
    if (r->sock_path[0]) {
        unlink(r->sock_path);
        char *slash = strrchr(r->sock_path, '/');
        if (slash) *slash = 0, rmdir(r->sock_path);
    }
    memset(r, 0, sizeof *r);
    r->listen_fd = r->sock_fd = -1;
}

static void missing_list(const lmf_rdzv *r, char *out, size_t n) {
    size_t k = 0;
    out[0] = 0;
    for (int i = 1; i < r->nnodes && k + 8 < n; i++)
        if (r->nodes[i].fd < 0) k += (size_t)snprintf(out + k, n - k, "%s%d", k ? "," : "", i);
}

/* Reads one HELLO from a fresh connection and files the node; a stranger's connection is
 * dropped with a warning, a disagreeing node fails the launch. */
static int admit(lmf_rdzv *r, int fd, const lmf_rdzv_opts *o, int *arrived) {
    char line[1024], ver[64], host[256];
    int nn, nr, np, cores;
    int len = lmf_wire_line(fd, line, sizeof line, lmf_time_sec() + 10);
    if (len < 0 ||
        sscanf(line, "HELLO lmforge %63s nnodes=%d node_rank=%d nproc=%d cores=%d host=%255s", ver,
               &nn, &nr, &np, &cores, host) != 6) {
        lmf_warn("rendezvous on port %d: a connection that is not an lmforge node (ignored)",
                 o->master_port);
        close(fd);
        return 0;
    }
    if (strcmp(ver, LMF_VERSION)) {
        close(fd);
        return fail_all(r, LMF_EINVAL,
                        "node %s (NODE_RANK %d) runs lmforge %s, node 0 runs %s: every node needs "
                        "the same build",
                        host, nr, ver, LMF_VERSION);
    }
    if (nn != r->nnodes) {
        lmf_wire_send(fd, "REJECT NNODES=%d here, NNODES=%d on node 0\n", nn, r->nnodes);
        close(fd);
        return fail_all(r, LMF_EINVAL,
                        "node %s (NODE_RANK %d) was started with NNODES=%d, node 0 with NNODES=%d: "
                        "every node needs the same NNODES",
                        host, nr, nn, r->nnodes);
    }
    if (nr < 1 || nr >= r->nnodes || r->nodes[nr].fd >= 0) {
        char why[512];
        snprintf(why, sizeof why,
                 nr < 1 ? "node %s says NODE_RANK %d: only node 0 may have it (two nodes 0?)"
                        : "node %s says NODE_RANK %d, which %s",
                 host, nr, nr >= r->nnodes ? "is not below NNODES" : "another node already has");
        lmf_wire_send(fd, "REJECT %s\n", why);
        close(fd);
        return fail_all(r, LMF_EINVAL, "%s", why);
    }
    for (int i = 0; i < r->nnodes; i++)
        if ((i == 0 || r->nodes[i].fd >= 0) && !strcmp(r->nodes[i].host, host)) {
            lmf_wire_send(fd, "REJECT hostname %s is also node %d's\n", host, i);
            close(fd);
            return fail_all(r, LMF_EINVAL,
                            "nodes %d and %d both have the hostname %s: OpenMPI tells nodes apart "
                            "by hostname",
                            i, nr, host);
        }
    if (np < 1) np = 1;
    lmf_rdzv_node *nd = &r->nodes[nr];
    snprintf(nd->host, sizeof nd->host, "%s", host);
    nd->node_rank = nr, nd->nproc = np, nd->cores = cores, nd->fd = fd;
    (*arrived)++;
    lmf_info("rendezvous: node %d (%s, %d ranks) arrived, %d of %d nodes", nr, host, np, *arrived,
             r->nnodes);
    return 0;
}

/* The local socket the rsh agent asks on (LMF_RDZV_SOCKET, inherited through mpirun). */
static int agent_socket(lmf_rdzv *r) {
    char dir[] = "/tmp/lmforge-rdzv-XXXXXX";
    if (!mkdtemp(dir)) return lmf_errorf(LMF_EIO, "mkdtemp %s: %s", dir, strerror(errno));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(r->sock_path, sizeof r->sock_path, "%s/agent.sock", dir);
    memcpy(sa.sun_path, r->sock_path, strlen(r->sock_path) + 1); /* 43 bytes < 108 */
    r->sock_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r->sock_fd < 0 || bind(r->sock_fd, (struct sockaddr *)&sa, sizeof sa) ||
        listen(r->sock_fd, 16))
        return lmf_errorf(LMF_EIO, "%s: %s", r->sock_path, strerror(errno));
    setenv("LMF_RDZV_SOCKET", r->sock_path, 1);
    return 0;
}

int lmf_rdzv_master(lmf_rdzv *r, const lmf_rdzv_opts *o) {
    memset(r, 0, sizeof *r);
    r->listen_fd = r->sock_fd = -1;
    r->nnodes = o->nnodes;
    r->nodes = calloc((size_t)o->nnodes, sizeof *r->nodes);
    if (!r->nodes) return lmf_errorf(LMF_ENOMEM, "out of memory");
    for (int i = 0; i < o->nnodes; i++) r->nodes[i].fd = -1;
    if (getenv("LMF_RDZV_HOST"))
        snprintf(r->nodes[0].host, sizeof r->nodes[0].host, "%s", getenv("LMF_RDZV_HOST"));
    else
        gethostname(r->nodes[0].host, sizeof r->nodes[0].host - 1);
    r->nodes[0].nproc = o->nproc;
    r->nodes[0].cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    char where[320];
    snprintf(where, sizeof where, "%s:%d", o->master_addr, o->master_port);
    int rc = 0, fd = listen_on(o->master_port, where);
    if (fd < 0) rc = fd;
    r->listen_fd = fd;
    double deadline = lmf_time_sec() + o->timeout_s;
    int arrived = 1;
    if (!rc)
        lmf_info("rendezvous on %s: node 0 (%s) waiting up to %.0f s for %d more node(s)", where,
                 r->nodes[0].host, o->timeout_s, o->nnodes - 1);
    while (!rc && arrived < o->nnodes) {
        double left = deadline - lmf_time_sec();
        struct pollfd pf = {r->listen_fd, POLLIN, 0};
        int k = left > 0 ? poll(&pf, 1, (int)(left * 1000) + 1) : 0;
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            char miss[256];
            missing_list(r, miss, sizeof miss);
            rc = fail_all(r, LMF_EIO,
                          "rendezvous on %s: %d of %d nodes came within %.0f s (rdzv_timeout); "
                          "still missing NODE_RANK %s: start the same `lmforge train` there with "
                          "NNODES=%d NODE_RANK=... MASTER_ADDR=%s MASTER_PORT=%d, and check that "
                          "they reach this node on that port",
                          where, arrived, o->nnodes, o->timeout_s, miss, o->nnodes, o->master_addr,
                          o->master_port);
            break;
        }
        int c = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (c >= 0) rc = admit(r, c, o, &arrived);
    }
    char self_cwd[4096];
    if (!rc && !getcwd(self_cwd, sizeof self_cwd))
        rc = fail_all(r, LMF_EIO, "node 0: getcwd: %s", strerror(errno));
    const char *self = lmf_launch_self("lmforge");
    for (int i = 1; !rc && i < o->nnodes; i++)
        if (lmf_wire_send(r->nodes[i].fd, "WELCOME\n%s\n%s\n", self, self_cwd))
            rc = fail_all(r, LMF_EIO, "node %d (%s) went away during the rendezvous", i,
                          r->nodes[i].host);
    for (int i = 1; !rc && i < o->nnodes; i++) {
        char line[1024];
        int len = lmf_wire_line(r->nodes[i].fd, line, sizeof line, lmf_time_sec() + 30);
        if (len < 0 || strcmp(line, "READY"))
            rc = fail_all(r, LMF_EINVAL, "node %d (%s): %s", i, r->nodes[i].host,
                          len < 0                      ? "no answer to the welcome"
                          : !strncmp(line, "FAIL ", 5) ? line + 5
                                                       : line);
    }
    if (!rc) rc = agent_socket(r);
    if (rc) free_rdzv(r);
    return rc;
}

int lmf_rdzv_hostfile(const lmf_rdzv *r, const char *path) {
    lmf_host *h = calloc((size_t)r->nnodes, sizeof *h);
    if (!h) return lmf_errorf(LMF_ENOMEM, "out of memory");
    for (int i = 0; i < r->nnodes; i++) {
        snprintf(h[i].name, sizeof h[i].name, "%s", r->nodes[i].host);
        h[i].slots = r->nodes[i].nproc;
    }
    int rc = lmf_hostfile_write(path, h, r->nnodes);
    free(h);
    return rc;
}

/* Passes fd over the unix socket s with one status byte. */
static void send_fd(int s, int fd) {
    char ok = 'K';
    struct iovec iov = {&ok, 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET, c->cmsg_type = SCM_RIGHTS, c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    sendmsg(s, &m, MSG_NOSIGNAL);
}

void lmf_rdzv_serve_agent(lmf_rdzv *r) {
    int s = accept4(r->sock_fd, NULL, NULL, SOCK_CLOEXEC);
    if (s < 0) return;
    char host[300];
    int len = lmf_wire_line(s, host, sizeof host, lmf_time_sec() + 5);
    int found = -1;
    for (int i = 1; len > 0 && i < r->nnodes; i++)
        if (!strcmp(r->nodes[i].host, host)) found = i;
    if (found > 0)
        send_fd(s, r->nodes[found].fd);
    else
        lmf_wire_send(s, "Eno node of this launch is called \"%s\"\n", len > 0 ? host : "?");
    close(s);
}

int lmf_rdzv_stop_all(lmf_rdzv *r) {
    int rc = 0;
    for (int i = 1; i < r->nnodes; i++) {
        lmf_rdzv_node *nd = &r->nodes[i];
        if (nd->fd < 0) continue;
        char line[256];
        int len = lmf_wire_send(nd->fd, "STOP\n") ? -1 : 0;
        double deadline = lmf_time_sec() + 30;
        while (len >= 0 && (len = lmf_wire_line(nd->fd, line, sizeof line, deadline)) >= 0 &&
               strcmp(line, "STOPPED")) {
        } /* an EXIT line no agent read any more */
        if (len < 0) {
            rc = lmf_errorf(LMF_EIO, "node %d (%s) %s", i, nd->host,
                            len == -2 ? "did not stop its part of the job within 30 s"
                                      : "closed the rendezvous connection");
            lmf_warn("%s", lmf_last_error());
            close(nd->fd);
            nd->fd = -1;
        }
    }
    return rc;
}

void lmf_rdzv_finish(lmf_rdzv *r, int rc) {
    for (int i = 1; i < r->nnodes; i++)
        if (r->nodes[i].fd >= 0) lmf_wire_send(r->nodes[i].fd, "DONE %d\n", rc);
    free_rdzv(r);
}
