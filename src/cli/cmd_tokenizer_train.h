/* `lmforge tokenizer train`: byte-level BPE training, dispatched from `lmforge tokenizer`. */
#ifndef LMF_CLI_CMD_TOKENIZER_TRAIN_H
#define LMF_CLI_CMD_TOKENIZER_TRAIN_H

/* argv[0] is "train"; returns the process exit code (0 ok, 1 error, 2 usage). */
int lmf_cmd_tokenizer_train(int argc, char **argv);

#endif
