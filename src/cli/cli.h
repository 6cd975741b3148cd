/* Subcommands of the lmforge executable and the small argument helpers they share. The CLI is
 * the only layer that prints for the user and decides exit codes. */
#ifndef LMF_CLI_H
#define LMF_CLI_H

#include <signal.h>
#include <stddef.h>

#include "lmforge/tensor.h"

int lmf_cmd_init_model(int argc, char **argv);
int lmf_cmd_score(int argc, char **argv);
int lmf_cmd_env(int argc, char **argv);
int lmf_cmd_tokenizer(int argc, char **argv);
int lmf_cmd_data(int argc, char **argv);
int lmf_cmd_train(int argc, char **argv);
int lmf_cmd_chat(int argc, char **argv);
int lmf_cmd_api(int argc, char **argv);
int lmf_cmd_export(int argc, char **argv);
int lmf_cmd_config(int argc, char **argv);
int lmf_cmd_router(int argc, char **argv);

/* Prints "lmforge CMD: <last error>" to stderr and returns 1 (or 0 when rc == 0). */
int lmf_cli_fail(const char *cmd, int rc);
/* Returns the value after flag argv[*i] and advances *i; NULL (with a message) if missing. */
const char *lmf_cli_value(int argc, char **argv, int *i, const char *cmd);
/* Parses a whole decimal integer; 0 on success, error message naming flag otherwise. */
int lmf_cli_int(const char *s, const char *flag, long long lo, long long hi, long long *out);
/* Applies --threads N (or OMP_NUM_THREADS, else all cores). */
void lmf_cli_threads(long long n);
struct lmf_config;
struct lmf_model;
/* Servers: SIGINT and SIGTERM blocked in this thread and every thread started after (a sigwait
 * on *sigs takes them), SIGPIPE ignored (a client that went away is an error return). */
void lmf_cli_block_stop_signals(sigset_t *sigs);
/* The same from a config's `threads` key. */
void lmf_cli_threads_from_config(const struct lmf_config *c);
/* Starts the ranks of `lmforge train` when this process is not one yet (launch.c: mpirun,
 * srun, hostfile, NNODES rendezvous, restarts). 0 with *exit_code -1: run here as this
 * process's rank; 0 with *exit_code >= 0: the job ran under this process and ended with it. */
int lmf_cli_launch_ranks(const struct lmf_config *c, int argc, char **argv, int *exit_code);
/* The ZeRO stage (0..3) from deepspeed / fsdp / fsdp_config / zero_stage (sharding.c), and a
 * label for the log ("FSDP FULL_SHARD = ZeRO-3"). */
int lmf_cli_zero_stage(const struct lmf_config *c, int world, int *stage, char *label, size_t n);
struct lmf_router_config;
struct lmf_router;
/* The router's settings from a config's router_* keys, API_HOST / API_PORT / API_KEY
 * (cmd_router.c); replica URLs point into *storage (free it after the router). */
int lmf_cli_router_config(const struct lmf_config *c, struct lmf_router_config *rc, char **storage);
/* Replaces rc's replicas with a comma list "URL,URL" (copied into *storage). */
int lmf_cli_router_replicas(struct lmf_router_config *rc, const char *list, char **storage);
/* Starts the router and prints where it listens. */
int lmf_cli_router_start(const struct lmf_router_config *rc, struct lmf_router **out);
/* data_parallel_size > 1: runs N replica `lmforge api` processes and the router in front of
 * them until SIGINT/SIGTERM (api_replicas.c). */
int lmf_cli_api_replicas(const struct lmf_config *c, int argc, char **argv);
/* tensor_parallel_size > 1 for `lmforge api` and `lmforge chat` (api_tensor_parallel.c). */
typedef struct lmf_cli_tp lmf_cli_tp;
struct lmf_engine_config;
/* Outside a launcher: starts the ranks with this command (`lmforge CMD argv[1..]`; mpirun, a
 * hostfile, NNODES) and waits for them: 0 with *exit_code >= 0, their exit status. As one of
 * the ranks: 0, *exit_code -1 and *tp this rank's part of the group. Refuses what tensor
 * parallelism does not support (adapters, data_parallel_size) and a size that does not divide
 * the model's KV heads. */
int lmf_cli_tp_begin(const struct lmf_config *c, const char *cmd, int argc, char **argv,
                     lmf_cli_tp **tp, int *exit_code);
int lmf_cli_tp_rank(const lmf_cli_tp *tp);
/* *m := this rank's shard of the model at path (only its slices are read). */
int lmf_cli_tp_load(lmf_cli_tp *tp, const char *path, struct lmf_model **m);
/* Collective, once, after every rank loaded its shard (rc: this rank's failure, if any): fails
 * on every rank when one failed; then rank 0's KV pool geometry in *ec reaches the others, and
 * on rank 0 ec's step becomes the group's (the steps go to the other ranks). */
int lmf_cli_tp_agree(lmf_cli_tp *tp, int rc, struct lmf_engine_config *ec, struct lmf_model *m);
/* Ranks > 0: load, shard, agree, then run rank 0's steps until it stops the group. */
int lmf_cli_tp_worker(lmf_cli_tp *tp, const struct lmf_config *c);
/* Rank 0 stops the other ranks (or, before the agreement, tells them it failed); frees tp. */
void lmf_cli_tp_end(lmf_cli_tp *tp, int rc);
/* cmd_api.c: LLaMA-Factory's serving environment: API_HOST and API_PORT (min_port..65535)
 * override *host / *port when set; *api_key is API_KEY, else the config's api_key. */
int lmf_cli_api_env(const struct lmf_config *cfg, int min_port, const char **host, int *port,
                    const char **api_key);
/* infer_dtype / quantization_bit (api, chat): the weights the decode step reads (bf16 copy or a
 * block format; a GGUF file's own format when auto). */
int lmf_cli_apply_infer_dtype(const struct lmf_config *c, struct lmf_model *m);
/* kv_cache_dtype (api, chat): the KV pool's element type; a bad value is an error naming the
 * config file, the key and the accepted values; auto: lmf_kv_dtype_auto(m). */
int lmf_cli_kv_cache_dtype(const struct lmf_config *c, const struct lmf_model *m,
                           lmf_kv_dtype *out);

#endif
