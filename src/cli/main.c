/* lmforge: entry point and subcommand dispatch. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "launch.h"
#include "lmforge/core.h"
#include "lmforge/tensor.h"

static const struct {
    const char *name, *help;
    int (*run)(int, char **);
} commands[] = {
    {"init-model", "write a randomly initialised Hugging Face model folder", lmf_cmd_init_model},
    {"score", "log-probabilities and mean NLL of a token sequence", lmf_cmd_score},
    {"tokenizer", "encode stdin text to token ids or decode ids (tokenizer.json)",
     lmf_cmd_tokenizer},
    {"train", "fine-tune a model from a LLaMA-Factory YAML config", lmf_cmd_train},
    {"export", "merge a LoRA adapter into its base model (LLaMA-Factory merge config)",
     lmf_cmd_export},
    {"chat", "chat with a model (and adapter) in the terminal, or answer --prompt lines",
     lmf_cmd_chat},
    {"api", "serve a model (and adapter) over OpenAI's HTTP API (chat, completions, SSE)",
     lmf_cmd_api},
    {"router", "route OpenAI API requests across `lmforge api` replicas (health checks, retries)",
     lmf_cmd_router},
    {"data", "preview how a config's dataset renders: template, tokens, trained spans",
     lmf_cmd_data},
    {"config", "check a YAML config (effective values) or print the key table", lmf_cmd_config},
    {"env", "report version, build, GEMM library, MPI, CPU features and threads", lmf_cmd_env},
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *fp) {
    fprintf(fp,
            "lmforge %s: fine-tune and serve Llama-family models\n\nusage: lmforge COMMAND "
            "[options]\n\ncommands:\n",
            LMF_VERSION);
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(fp, "  %-12s %s\n", commands[i].name, commands[i].help);
    fprintf(fp, "\n`lmforge COMMAND --help` describes a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("lmforge %s\n", LMF_VERSION);
        return 0;
    }
    /* hidden: mpirun's rsh agent of a NNODES launch (launch_rdzv_worker.c) */
    if (!strcmp(argv[1], "_launch-agent")) return lmf_cmd_launch_agent(argc - 1, argv + 1);
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "lmforge: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}

int lmf_cli_fail(const char *cmd, int rc) {
    if (rc == 0) return 0;
    const char *msg = lmf_last_error();
    fprintf(stderr, "lmforge %s: error: %s\n", cmd, msg[0] ? msg : lmf_strerror(rc));
    return 1;
}

const char *lmf_cli_value(int argc, char **argv, int *i, const char *cmd) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "lmforge %s: error: %s needs a value\n", cmd, argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int lmf_cli_int(const char *s, const char *flag, long long lo, long long hi, long long *out) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < lo || v > hi)
        return lmf_errorf(LMF_EINVAL, "%s: expected an integer in [%lld, %lld], got \"%s\"", flag,
                          lo, hi, s);
    *out = v;
    return 0;
}

void lmf_cli_block_stop_signals(sigset_t *sigs) {
    sigemptyset(sigs);
    sigaddset(sigs, SIGINT);
    sigaddset(sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
}

void lmf_cli_threads(long long n) {
    if (n <= 0) {
        const char *env = getenv("OMP_NUM_THREADS");
        n = env ? atoll(env) : 0;
    }
    lmf_compute_set_threads((int)n);
}

void lmf_cli_threads_from_config(const lmf_config *c) {
    lmf_cli_threads(lmf_config_is_set(c, "threads") ? lmf_config_int(c, "threads") : 0);
}
