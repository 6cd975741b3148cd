/* Stop strings over streamed text: where the earliest stop string occurs (matches may span
 * token boundaries, since the text is the whole decoded output so far), and how much of the
 * text can be released to a client without giving away the start of a stop string that the
 * next tokens may complete. */
#ifndef LMF_SERVE_STOP_MATCH_H
#define LMF_SERVE_STOP_MATCH_H

#include <stddef.h>

/* Byte offset of the earliest stop string in text[0, len) that ends after byte `from` (text
 * before it was already searched), or -1 when none. */
long lmf_stop_find(const char *text, size_t len, size_t from, char *const *stops, int n);
/* len minus the longest suffix of text that is a proper prefix of some stop string. */
size_t lmf_stop_safe_len(const char *text, size_t len, char *const *stops, int n);

#endif
