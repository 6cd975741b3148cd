/* Checkpoint folders in output_dir, as Hugging Face's Trainer names them (checkpoint-N): finding
 * the newest, committing a fully written temporary folder with one rename (so a kill at any
 * instant leaves the previous checkpoint whole), and pruning to save_total_limit. */
#ifndef LMFORGE_CHECKPOINT_H
#define LMFORGE_CHECKPOINT_H

#include <stdint.h>

/* Newest output_dir/checkpoint-N (largest N): 0 with *path (malloc'd) and *step, or LMF_ENOENT. */
int lmf_ckpt_latest(const char *output_dir, char **path, int64_t *step);
/* A fresh temporary folder inside output_dir for checkpoint `step` (caller frees the path). */
int lmf_ckpt_begin(const char *output_dir, int64_t step, char **tmp_path);
/* fsyncs the files of tmp_path, renames it to output_dir/checkpoint-N (replacing an older one of
 * the same N) and fsyncs output_dir. */
int lmf_ckpt_commit(const char *output_dir, int64_t step, const char *tmp_path);
/* Removes the oldest checkpoints so that at most keep remain (keep <= 0: no limit), and any
 * leftover temporary folders of interrupted saves. */
int lmf_ckpt_prune(const char *output_dir, int keep);
/* rm -rf */
int lmf_remove_tree(const char *path);

#endif
