/* Loss plot: smoothing against LLaMA-Factory's smooth() (values from its Python code), and the
 * PNG itself read back with cairo: signature, size, something drawn inside the axes, white
 * corners; the edge cases (one point, constant curve, NaN/inf) and the errors (nothing to plot,
 * unwritable path) with messages naming the path. With `--out FILE` it only writes the
 * 300-point demo plot to FILE, for looking at. */
#include "lmforge/plot.h"

#include <cairo.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmforge/core.h"
#include "test.h"

/* Reference numbers printed by LLaMA-Factory's extras/ploting.py smooth():
 *   smooth([4, 2, 1]) -> [4.0, 2.1347474432374987, 1.0764521583482707], weight 0.0673737216...
 *   100 points: weight 0.8879528683362875; on 0,1,0,1,... the last value is 0.5296705836831194 */
static void test_smooth(void) {
    CHECK_NEAR(lmf_plot_smooth_weight(3), 0.06737372161874929, 1e-12);
    CHECK_NEAR(lmf_plot_smooth_weight(100), 0.8879528683362875, 1e-12);
    double in[3] = {4, 2, 1}, out[3];
    lmf_plot_smooth(in, out, 3);
    CHECK_NEAR(out[0], 4.0, 1e-12);
    CHECK_NEAR(out[1], 2.1347474432374987, 1e-12);
    CHECK_NEAR(out[2], 1.0764521583482707, 1e-12);
    double alt[100];
    for (int i = 0; i < 100; i++) alt[i] = i % 2;
    lmf_plot_smooth(alt, alt, 100); /* in place */
    CHECK_NEAR(alt[99], 0.5296705836831194, 1e-12);
}

/* A decaying noisy loss: 2.5 * exp(-step / 80) + 0.4 plus uniform noise of +-0.15. */
static void make_curve(double *steps, double *loss, int n) {
    lmf_rng r;
    lmf_rng_seed(&r, 42);
    for (int i = 0; i < n; i++) {
        steps[i] = 10.0 * (i + 1);
        loss[i] = 2.5 * exp(-i / 80.0) + 0.4 + 0.3 * (lmf_rng_uniform(&r) - 0.5);
    }
}

static int is_white(const cairo_surface_t *s, int x, int y) {
    const unsigned char *d = cairo_image_surface_get_data((cairo_surface_t *)s);
    uint32_t px =
        *(const uint32_t *)(d + y * cairo_image_surface_get_stride((cairo_surface_t *)s) + 4 * x);
    return (px & 0xffffff) == 0xffffff;
}

/* Reads png back and checks size, white corners, and `min_dark` non-white pixels inside the
 * plot area (a box well inside the margins). */
static void check_png(const char *png, int min_dark) {
    char *bytes = NULL;
    size_t len = 0;
    CHECK(lmf_file_read_all(png, &bytes, &len) == 0);
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    CHECK_MSG(bytes && len > 8 && memcmp(bytes, sig, 8) == 0, "%s: no PNG signature", png);
    free(bytes);

    cairo_surface_t *s = cairo_image_surface_create_from_png(png);
    CHECK_MSG(cairo_surface_status(s) == CAIRO_STATUS_SUCCESS, "%s: %s", png,
              cairo_status_to_string(cairo_surface_status(s)));
    if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(s);
        return;
    }
    cairo_surface_flush(s);
    int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
    CHECK(w == LMF_PLOT_WIDTH);
    CHECK(h == LMF_PLOT_HEIGHT);
    CHECK(is_white(s, 0, 0) && is_white(s, w - 1, 0) && is_white(s, 0, h - 1) &&
          is_white(s, w - 1, h - 1));
    int dark = 0;
    for (int y = 100; y < 400; y++)
        for (int x = 150; x < 700; x++) dark += !is_white(s, x, y);
    CHECK_MSG(dark >= min_dark, "%s: only %d non-white pixels in the plot area", png, dark);
    cairo_surface_destroy(s);
}

static void test_plots(const char *dir) {
    enum { N = 300 };
    double steps[N], loss[N];
    make_curve(steps, loss, N);
    char *png = lmf_path_join(dir, "training_loss.png");
    CHECK(lmf_plot_loss(png, steps, loss, N, "training loss of demo", "loss") == 0);
    check_png(png, 2000);

    /* Rewriting replaces the file and leaves no temp file beside it. */
    CHECK(lmf_plot_loss(png, NULL, loss, N, NULL, NULL) == 0);
    check_png(png, 2000);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 1", dir);
    CHECK(system(cmd) == 0);

    /* One point, a constant curve, and NaN/inf mixed in all plot. */
    double one_s = 5, one_v = 1.25;
    CHECK(lmf_plot_loss(png, &one_s, &one_v, 1, "one", "loss") == 0);
    check_png(png, 20);
    double flat[50];
    for (int i = 0; i < 50; i++) flat[i] = 0.7;
    CHECK(lmf_plot_loss(png, NULL, flat, 50, "flat", "loss") == 0);
    check_png(png, 300);
    double zero[4] = {0, 0, 0, 0};
    CHECK(lmf_plot_loss(png, NULL, zero, 4, "zero", "loss") == 0);
    loss[3] = NAN;
    loss[10] = INFINITY;
    steps[20] = NAN;
    CHECK(lmf_plot_loss(png, steps, loss, N, "gaps", "eval_loss") == 0);
    check_png(png, 2000);

    /* Nothing to plot: n = 0, or no finite point. The old file stays. */
    lmf_error_clear();
    CHECK(lmf_plot_loss(png, steps, loss, 0, "t", "loss") == LMF_EINVAL);
    CHECK_MSG(strstr(lmf_last_error(), png) != NULL, "message: %s", lmf_last_error());
    double bad[2] = {NAN, INFINITY};
    CHECK(lmf_plot_loss(png, NULL, bad, 2, "t", "loss") == LMF_EINVAL);
    CHECK_MSG(strstr(lmf_last_error(), png) != NULL, "message: %s", lmf_last_error());
    check_png(png, 2000);

    /* An unwritable path fails with an error naming it. */
    char *bad_path = lmf_path_join(dir, "no/such/dir/loss.png");
    lmf_error_clear();
    int rc = lmf_plot_loss(bad_path, steps, loss, N, "t", "loss");
    CHECK(rc < 0);
    CHECK_MSG(strstr(lmf_last_error(), bad_path) != NULL, "message: %s", lmf_last_error());
    CHECK(!lmf_path_exists(bad_path));
    free(bad_path);

    unlink(png);
    free(png);
}

/* fontconfig (under cairo's toy text API) keeps a config block for the life of the process
 * that nothing can free without linking fontconfig itself; only ASan builds read this hook. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libfontconfig.so\n";
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--out") == 0) {
        enum { N = 300 };
        double steps[N], loss[N];
        make_curve(steps, loss, N);
        int rc = lmf_plot_loss(argv[2], steps, loss, N, "training loss of demo", "loss");
        if (rc) fprintf(stderr, "%s\n", lmf_last_error());
        return rc ? 1 : 0;
    }
    test_smooth();
    char tmpdir[] = "/tmp/lmf_test_plot_XXXXXX";
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_plots(tmpdir);
    rmdir(tmpdir);
    /* Drop cairo's font caches so LeakSanitizer sees only what is really lost. */
    cairo_debug_reset_static_data();
    return test_summary("test_plot");
}
