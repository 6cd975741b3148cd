/* The launcher's parent process: runs the job (mpirun, srun or one process), copies its
 * stderr through to ours while noting which rank failed, serves the rsh agent of a NNODES
 * launch, and after a failure relaunches the whole job from the newest checkpoint-N of
 * output_dir, up to max_restarts times, as torchrun's elastic restarts do (launch.h). */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launch.h"
#include "lmforge/checkpoint.h"
#include "lmforge/core.h"

static volatile sig_atomic_t got_signal, child_pid, stop_signal;

static void on_signal(int sig) {
    got_signal = sig;
    if (child_pid > 0) kill((pid_t)child_pid, stop_signal ? stop_signal : sig);
}

static void set_handlers(void (*h)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

typedef struct job_log {
    char line[4096];
    size_t len;
    char note[512];
    int prio;
} job_log;

static void log_bytes(job_log *t, const char *buf, size_t n) {
    for (size_t w = 0; w < n;) {
        ssize_t k = write(2, buf + w, n - w);
        if (k <= 0 && errno != EINTR) break;
        if (k > 0) w += (size_t)k;
    }
    for (size_t i = 0; i < n; i++) {
        if (buf[i] != '\n' && t->len + 1 < sizeof t->line) {
            t->line[t->len++] = buf[i];
            continue;
        }
        t->line[t->len] = 0;
        lmf_launch_failure_note(t->line, t->note, sizeof t->note, &t->prio);
        t->len = 0;
    }
}

/* Runs argv to its end; returns its exit code (128 + signal when killed), -1 if it could not
 * start. */
static int run_once(char **argv, lmf_rdzv *rdzv, job_log *t, const char *name) {
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC)) {
        lmf_errorf(LMF_EIO, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t parent = getpid(), pid = fork();
    if (pid < 0) {
        close(pfd[0]), close(pfd[1]);
        lmf_errorf(LMF_EIO, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        set_handlers(SIG_DFL);
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* the job goes when its supervisor is killed */
        if (getppid() != parent) _exit(143);
        dup2(pfd[1], 2);
        execvp(argv[0], argv);
        fprintf(stderr, "lmforge %s: cannot start %s: %s\n", name, argv[0], strerror(errno));
        _exit(127);
    }
    child_pid = pid;
    close(pfd[1]);
    int status = 0, done = 0, open_pipe = 1;
    while (!done || open_pipe) {
        struct pollfd pf[2] = {{open_pipe ? pfd[0] : -1, POLLIN, 0},
                               {rdzv ? rdzv->sock_fd : -1, POLLIN, 0}};
        int k = poll(pf, 2, done ? 50 : 200);
        if (k > 0 && (pf[0].revents & (POLLIN | POLLHUP))) {
            char buf[4096];
            ssize_t r = read(pfd[0], buf, sizeof buf);
            if (r > 0)
                log_bytes(t, buf, (size_t)r);
            else if (r == 0 || errno != EINTR)
                open_pipe = 0;
        }
        if (k > 0 && (pf[1].revents & POLLIN)) lmf_rdzv_serve_agent(rdzv);
        if (!done && waitpid(pid, &status, WNOHANG) == pid) done = 1;
        /* once the job has ended, stray holders of the pipe (a daemon's agent) do not keep us */
        if (done && k == 0) open_pipe = 0;
    }
    child_pid = 0;
    close(pfd[0]);
    if (t->len) log_bytes(t, "\n", 1);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int lmf_launch_supervise(const lmf_supervise_opts *o) {
    const char *name = o->name ? o->name : "train";
    stop_signal = o->stop_signal;
    set_handlers(on_signal);
    int code = 0;
    char extra[4200] = "";
    for (int restarts = 0;; restarts++) {
        char count[16];
        snprintf(count, sizeof count, "%d", restarts);
        setenv("LMF_RESTART_COUNT", count, 1);
        lmf_argv cmd = {0};
        int rc = lmf_argv_add_all(&cmd, o->cmd);
        if (!rc && extra[0]) rc = lmf_argv_add(&cmd, extra);
        job_log t = {.prio = 0};
        code = rc ? -1 : run_once(cmd.v, o->rdzv, &t, name);
        lmf_argv_free(&cmd);
        if (code < 0) {
            fprintf(stderr, "lmforge %s: error: %s\n", name, lmf_last_error());
            code = 1;
        }
        if (o->rdzv && lmf_rdzv_stop_all(o->rdzv) && !code) code = 1;
        if (!code || got_signal || restarts >= o->max_restarts) break;
        char who[600];
        snprintf(who, sizeof who, "%s", t.note[0] ? t.note : "the job failed");
        char *ck = NULL;
        int64_t step = 0;
        if (o->output_dir && lmf_ckpt_latest(o->output_dir, &ck, &step) == 0) {
            snprintf(extra, sizeof extra, "resume_from_checkpoint=%s", ck);
            lmf_log(LMF_LOG_WARN, "restart %d/%d after %s (exit %d); resuming from %s",
                    restarts + 1, o->max_restarts, who, code, ck);
        } else {
            /* no checkpoint yet: start again; what is in output_dir is this job's own */
            snprintf(extra, sizeof extra, "%s",
                     o->output_was_fresh ? "overwrite_output_dir=true" : "");
            lmf_log(LMF_LOG_WARN,
                    "restart %d/%d after %s (exit %d); no checkpoint yet: "
                    "starting again",
                    restarts + 1, o->max_restarts, who, code);
        }
        free(ck);
    }
    /* a job stopped by its stop signal that exits 0 ended as asked */
    if (got_signal && !code && !o->stop_signal) code = 128 + got_signal;
    if (o->rdzv) lmf_rdzv_finish(o->rdzv, code);
    set_handlers(SIG_DFL);
    return code;
}
