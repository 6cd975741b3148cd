/* Internal: host (CPU) memory for the cpu and ref backends: 64-byte aligned, zero-filled. */
#ifndef LMF_TENSOR_HOST_MEMORY_H
#define LMF_TENSOR_HOST_MEMORY_H

#include <stddef.h>

void *lmf_host_alloc(size_t bytes);
void lmf_host_free(void *p);
void lmf_host_zero(void *p, size_t bytes);
void lmf_host_copy(void *dst, const void *src, size_t bytes);

#endif
