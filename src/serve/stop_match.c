/* Stop-string matching over streamed text (see stop_match.h). */
#include "stop_match.h"

#include <string.h>

long lmf_stop_find(const char *text, size_t len, size_t from, char *const *stops, int n) {
    long best = -1;
    for (int i = 0; i < n; i++) {
        size_t sl = strlen(stops[i]);
        if (!sl || sl > len) continue;
        size_t start = from >= sl ? from - sl + 1 : 0;
        for (size_t p = start; p + sl <= len; p++) {
            if (best >= 0 && (long)p >= best) break;
            if (text[p] == stops[i][0] && !memcmp(text + p, stops[i], sl)) {
                best = (long)p;
                break;
            }
        }
    }
    return best;
}

size_t lmf_stop_safe_len(const char *text, size_t len, char *const *stops, int n) {
    size_t hold = 0;
    for (int i = 0; i < n; i++) {
        size_t sl = strlen(stops[i]);
        for (size_t k = sl > 1 ? sl - 1 : 0; k > hold; k--)
            if (k <= len && !memcmp(text + len - k, stops[i], k)) {
                hold = k;
                break;
            }
    }
    return len - hold;
}
