/* Who failed: reads the lines a failed job printed (lmforge's timeout diagnosis, mpirun's and
 * srun's reports) and keeps the most telling description for the restart log (launch.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch.h"

static int set(char *note, size_t n, int *prio, int p, const char *text) {
    if (p <= *prio) return 0;
    snprintf(note, n, "%s", text);
    *prio = p;
    return 1;
}

/* "... rank 2 did not answer ..." / "ranks 2,3 did not answer": the words naming them. */
static int silent_ranks(const char *line, char *out, size_t n) {
    const char *end = strstr(line, " did not answer");
    if (!end) return 0;
    const char *start = NULL;
    for (const char *p = line; p < end; p++)
        if (!strncmp(p, "rank ", 5) || !strncmp(p, "ranks ", 6)) start = p;
    if (!start) return 0;
    snprintf(out, n, "%.*s did not answer", (int)(end - start), start);
    return 1;
}

int lmf_launch_failure_note(const char *line, char *note, size_t n, int *prio) {
    char buf[512], host[256];
    int rank, sig, pid, code;
    const char *p;
    if (silent_ranks(line, buf, sizeof buf)) return set(note, n, prio, 4, buf);
    /* mpirun: "mpirun noticed that process rank 1 with PID 4242 on node lmf-node1 exited on
     * signal 9 (Killed)." */
    if ((p = strstr(line, "noticed that process rank ")) &&
        sscanf(p, "noticed that process rank %d with PID %d on node %255s exited on signal %d",
               &rank, &pid, host, &sig) == 4) {
        snprintf(buf, sizeof buf, "rank %d (on %s) was killed by signal %d", rank, host, sig);
        return set(note, n, prio, 3, buf);
    }
    /* srun: "srun: error: node7: task 3: Exited with exit code 1" / "task 3: Killed" */
    if ((p = strstr(line, ": task ")) && strstr(line, "srun") &&
        sscanf(p, ": task %d:", &rank) == 1) {
        const char *what = strchr(p + 7, ':');
        snprintf(buf, sizeof buf, "task %d %s", rank, what ? what + 2 : "failed");
        buf[strcspn(buf, "\n")] = 0;
        return set(note, n, prio, 3, buf);
    }
    /* mpirun after a non-zero exit: "  Process name: [[17004,1],1]" */
    if ((p = strstr(line, "Process name: [[")) && (p = strstr(p, "],")) &&
        sscanf(p, "],%d]", &rank) == 1) {
        snprintf(buf, sizeof buf, "rank %d exited with a non-zero status", rank);
        return set(note, n, prio, 2, buf);
    }
    if (strstr(line, "Exit code:") && *prio == 2 &&
        sscanf(strstr(line, "Exit code:"), "Exit code: %d", &code) == 1) {
        char *cut = strstr(note, " exited with");
        if (cut) snprintf(cut, n - (size_t)(cut - note), " exited with code %d", code);
        return 1;
    }
    /* "MPI_ABORT was invoked on rank 1 in communicator MPI_COMM_WORLD" */
    if ((p = strstr(line, "MPI_ABORT was invoked on rank ")) &&
        sscanf(p, "MPI_ABORT was invoked on rank %d", &rank) == 1) {
        snprintf(buf, sizeof buf, "rank %d aborted the job", rank);
        return set(note, n, prio, 1, buf);
    }
    return 0;
}
