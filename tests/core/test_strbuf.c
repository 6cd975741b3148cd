/* lmf_strbuf: printf-style appends across several growths give the same text as one snprintf
 * of the whole; an empty buffer takes as ""; take leaves the buffer empty for reuse. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"
#include "test.h"

int main(void) {
    lmf_strbuf b = {0};
    char *want = malloc(1 << 20);
    size_t at = 0;
    for (int i = 0; i < 20000; i++) {
        lmf_strbuf_printf(&b, "line %d of %s %.3f\n", i, "the page", i * 0.25);
        at += (size_t)snprintf(want + at, (1 << 20) - at, "line %d of %s %.3f\n", i, "the page",
                               i * 0.25);
    }
    CHECK(!b.oom && b.len == at && b.cap > at);
    char *got = lmf_strbuf_take(&b);
    CHECK(got && strlen(got) == at && !memcmp(got, want, at + 1));
    CHECK(b.s == NULL && b.len == 0 && b.cap == 0);
    char *empty = lmf_strbuf_take(&b);
    CHECK(empty && empty[0] == 0);
    lmf_strbuf_printf(&b, "%s", "");
    char *blank = lmf_strbuf_take(&b);
    CHECK(blank && blank[0] == 0);
    free(got), free(empty), free(blank), free(want);
    return test_summary("test_strbuf");
}
