/* Nodes 1..NNODES-1 of a NNODES launch, and mpirun's rsh agent (launch.h; the conversation is
 * described in launch_rdzv.c). A node connects to MASTER_ADDR:MASTER_PORT, says who it is,
 * checks it has node 0's lmforge and working directory, then runs what node 0's mpirun asks of
 * it (OpenMPI's daemon, which starts this node's ranks) until node 0 says the job is done. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launch.h"
#include "launch_wire.h"
#include "lmforge/core.h"

/* One connection attempt to every address of host:port, each bounded by `left` seconds. */
static int try_connect(const char *host, int port, double left, int *err) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g) {
        *err = -g; /* negative: a resolver error */
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) && errno != EINPROGRESS) {
            *err = errno;
            close(fd), fd = -1;
            continue;
        }
        struct pollfd pf = {fd, POLLOUT, 0};
        int so = 0;
        socklen_t sl = sizeof so;
        if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0)
            so = ETIMEDOUT;
        else
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl);
        if (so) {
            *err = so;
            close(fd), fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

/* Runs cmd under sh in its own process group; the child dies with this process. */
static pid_t start(const char *cmd) {
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(143);
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0) dup2(null, 0);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    if (pid > 0) setpgid(pid, pid);
    return pid;
}

static int code_of(int status) {
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Ends the running command's process group: SIGTERM, then SIGKILL after 5 s. */
static void stop(pid_t pid) {
    kill(-pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            kill(-pid, SIGKILL); /* whatever it left in its group */
            return;
        }
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Obeys node 0 until DONE. */
static int serve(int fd, const char *where) {
    pid_t child = 0;
    for (;;) {
        struct pollfd pf = {fd, POLLIN, 0};
        int k = poll(&pf, 1, child ? 100 : -1);
        if (k < 0 && errno != EINTR) break;
        int status;
        if (child && waitpid(child, &status, WNOHANG) == child) {
            child = 0;
            lmf_wire_send(fd, "EXIT %d\n", code_of(status));
        }
        if (k <= 0) continue;
        char line[256];
        long len;
        if (lmf_wire_line(fd, line, sizeof line, -1) < 0) break;
        if (sscanf(line, "RUN %ld", &len) == 1 && len > 0 && len < 1 << 24 && !child) {
            char *cmd = malloc((size_t)len + 1);
            if (!cmd || lmf_wire_read(fd, cmd, (size_t)len)) {
                free(cmd);
                break;
            }
            cmd[len] = 0;
            lmf_debug("rendezvous: running for node 0: %s", cmd);
            child = start(cmd);
            free(cmd);
            if (child < 0) child = 0, lmf_wire_send(fd, "EXIT 127\n");
        } else if (!strcmp(line, "STOP")) {
            if (child) stop(child), child = 0;
            lmf_wire_send(fd, "STOPPED\n");
        } else if (sscanf(line, "DONE %ld", &len) == 1) {
            return (int)len;
        } else {
            lmf_warn("rendezvous: unexpected message from node 0: %s", line);
        }
    }
    if (child) stop(child);
    lmf_errorf(LMF_EIO,
               "node 0 (%s) closed the rendezvous connection before the job ended "
               "(node 0 failed or was stopped)",
               where);
    return -1;
}

int lmf_rdzv_worker(const lmf_rdzv_opts *o) {
    char where[320], host[256] = "";
    snprintf(where, sizeof where, "%s:%d", o->master_addr, o->master_port);
    if (getenv("LMF_RDZV_HOST")) /* the name node 0's hostfile gives this node */
        snprintf(host, sizeof host, "%s", getenv("LMF_RDZV_HOST"));
    else
        gethostname(host, sizeof host - 1);
    double t0 = lmf_time_sec(), deadline = t0 + o->timeout_s;
    int fd = -1, err = 0;
    lmf_info("rendezvous: node %d (%s) joining %s (up to %.0f s)", o->node_rank, host, where,
             o->timeout_s);
    while (fd < 0) {
        double left = deadline - lmf_time_sec();
        if (left <= 0) {
            lmf_errorf(LMF_EIO,
                       "NODE_RANK %d: could not reach node 0 at %s within %.0f s "
                       "(rdzv_timeout): %s; is NODE_RANK 0 started, and are MASTER_ADDR and "
                       "MASTER_PORT right and the port reachable from here?",
                       o->node_rank, where, o->timeout_s,
                       err < 0 ? gai_strerror(-err) : strerror(err));
            return -1;
        }
        fd = try_connect(o->master_addr, o->master_port, left < 2 ? left : 2, &err);
        if (fd < 0) {
            struct timespec ts = {0, 250000000};
            nanosleep(&ts, NULL);
        }
    }
    char line[9000], exe[4096], cwd[4096];
    int len = lmf_wire_send(fd,
                            "HELLO lmforge %s nnodes=%d node_rank=%d nproc=%d cores=%ld "
                            "host=%s\n",
                            LMF_VERSION, o->nnodes, o->node_rank, o->nproc,
                            sysconf(_SC_NPROCESSORS_ONLN), host);
    /* node 0 answers once every node is there: allow for its whole wait */
    double welcome_by = lmf_time_sec() + o->timeout_s + 60;
    if (!len) len = lmf_wire_line(fd, line, sizeof line, welcome_by);
    if (len >= 0 && !strncmp(line, "REJECT ", 7)) {
        close(fd);
        lmf_errorf(LMF_EINVAL, "node 0 (%s) ended the rendezvous: %s", where, line + 7);
        return -1;
    }
    if (len < 0 || strcmp(line, "WELCOME") || lmf_wire_line(fd, exe, sizeof exe, welcome_by) < 0 ||
        lmf_wire_line(fd, cwd, sizeof cwd, welcome_by) < 0) {
        close(fd);
        lmf_errorf(LMF_EIO, "node 0 (%s) %s", where,
                   len == -2 ? "did not complete the rendezvous in time"
                             : "closed the connection during the rendezvous");
        return -1;
    }
    struct stat st;
    if (access(exe, X_OK))
        snprintf(line, sizeof line,
                 "FAIL there is no lmforge at %s on %s: every node needs the "
                 "same lmforge at the same path",
                 exe, host);
    else if (stat(cwd, &st) || !S_ISDIR(st.st_mode))
        snprintf(line, sizeof line,
                 "FAIL there is no folder %s on %s: the ranks run in node "
                 "0's working directory, which every node needs (a shared file system, or the "
                 "same paths)",
                 cwd, host);
    else
        snprintf(line, sizeof line, "READY");
    lmf_wire_send(fd, "%s\n", line);
    if (strcmp(line, "READY")) {
        close(fd);
        lmf_errorf(LMF_EINVAL, "%s", line + 5);
        return -1;
    }
    lmf_info("rendezvous: node %d (%s) joined %s; running what node 0 asks", o->node_rank, host,
             where);
    int rc = serve(fd, where);
    close(fd);
    return rc;
}

/* Receives the node's connection from node 0's launcher: 'K' + the descriptor, or 'E' + why. */
static int ask_for(const char *sock, const char *host) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(sock) >= sizeof sa.sun_path) {
        lmf_errorf(LMF_EINVAL, "LMF_RDZV_SOCKET=%s: path too long", sock);
        return -1;
    }
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) || lmf_wire_send(s, "%s\n", host)) {
        lmf_errorf(LMF_EIO, "%s: %s", sock, strerror(errno));
        if (s >= 0) close(s);
        return -1;
    }
    char tag = 0, msg[512] = "";
    struct iovec iov = {&tag, 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    int fd = -1;
    if (recvmsg(s, &m, MSG_CMSG_CLOEXEC) == 1 && tag == 'K') {
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        if (c && c->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(c), sizeof fd);
    } else {
        lmf_wire_line(s, msg, sizeof msg, lmf_time_sec() + 5);
        lmf_errorf(LMF_EINVAL, "%s", msg[0] ? msg : "node 0's launcher did not answer");
    }
    close(s);
    return fd;
}

int lmf_cmd_launch_agent(int argc, char **argv) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive mpirun (it would read node replies) */
    int i = 1;
    while (i < argc && argv[i][0] == '-') i++; /* ssh-style options mpirun may add */
    const char *sock = getenv("LMF_RDZV_SOCKET");
    if (i + 1 >= argc || !sock) {
        fprintf(stderr, "lmforge _launch-agent: internal: mpirun's rsh agent for a NNODES launch "
                        "(needs LMF_RDZV_SOCKET and HOST COMMAND...)\n");
        return 2;
    }
    const char *host = argv[i];
    size_t total = 0;
    for (int k = i + 1; k < argc; k++) total += strlen(argv[k]) + 1;
    char *cmd = malloc(total + 1);
    if (!cmd) return 255;
    cmd[0] = 0;
    for (int k = i + 1; k < argc; k++) {
        strcat(cmd, argv[k]);
        if (k + 1 < argc) strcat(cmd, " ");
    }
    int fd = ask_for(sock, host), code = 255;
    if (fd >= 0 && !lmf_wire_send(fd, "RUN %zu\n", strlen(cmd)) &&
        !lmf_wire_write(fd, cmd, strlen(cmd))) {
        char line[256];
        while (lmf_wire_line(fd, line, sizeof line, -1) >= 0)
            if (sscanf(line, "EXIT %d", &code) == 1) break;
    }
    if (fd < 0) fprintf(stderr, "lmforge _launch-agent %s: %s\n", host, lmf_last_error());
    free(cmd);
    return code;
}
