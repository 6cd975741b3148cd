/* Unicode NFC normalization (canonical decomposition, canonical ordering, canonical composition)
 * over tables generated from Python's unicodedata, for tokenizer.json's "NFC" normalizer. */
#ifndef LMF_TEXT_NFC_H
#define LMF_TEXT_NFC_H

#include <stddef.h>
#include <stdint.h>

#include "text/unicode.h"

typedef struct lmf_nfc_ccc {
    uint32_t lo, hi, ccc;
} lmf_nfc_ccc;
typedef struct lmf_nfc_map {
    uint32_t a, b, c; /* decomp: a -> b c; comp: a b -> c */
} lmf_nfc_map;
extern const lmf_nfc_ccc lmf_nfc_ccc_ranges[];
extern const int lmf_nfc_n_ccc;
extern const lmf_nfc_map lmf_nfc_decomp[], lmf_nfc_comp[];
extern const int lmf_nfc_n_decomp, lmf_nfc_n_comp;

/* Appends NFC(s[0..n)) to out; s must be valid UTF-8. Returns 0 or LMF_ENOMEM. */
int lmf_nfc(lmf_sbuf *out, const char *s, size_t n);

#endif
