/* A test hook for the fault tests (launch.h): LMF_TEST_KILL_RANK_AT=R:S makes rank R SIGKILL
 * itself, on the first launch only, as soon as rank 0 has logged S steps to
 * output_dir/trainer_log.jsonl: a rank dying mid-run at a known point, without a hook in the
 * trainer. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "launch.h"
#include "lmforge/core.h"

static char log_path[4096];
static int kill_at;

static int lines_in(const char *path) {
    FILE *fp = fopen(path, "r");
    if (!fp) return 0;
    int n = 0, ch;
    while ((ch = getc(fp)) != EOF) n += ch == '\n';
    fclose(fp);
    return n;
}

static void *watch(void *arg) {
    (void)arg;
    struct timespec ts = {0, 1000000};
    while (lines_in(log_path) < kill_at) nanosleep(&ts, NULL);
    fprintf(stderr,
            "lmforge test hook: LMF_TEST_KILL_RANK_AT: killing this rank (pid %d) at "
            "step %d\n",
            (int)getpid(), kill_at);
    raise(SIGKILL);
    return NULL;
}

void lmf_launch_test_hook(const char *output_dir, int rank) {
    const char *spec = getenv("LMF_TEST_KILL_RANK_AT"), *count = getenv("LMF_RESTART_COUNT");
    int r, s;
    if (!spec || !output_dir || (count && atoi(count) != 0)) return;
    if (sscanf(spec, "%d:%d", &r, &s) != 2 || r != rank || s < 1) return;
    snprintf(log_path, sizeof log_path, "%s/trainer_log.jsonl", output_dir);
    kill_at = s;
    pthread_t th;
    if (pthread_create(&th, NULL, watch, NULL) == 0) pthread_detach(th);
}
