/* Loss-curve PNGs (LLaMA-Factory's plot_loss) drawn with cairo's image surface: a faint raw
 * line, a bold EMA-smoothed line, round-number axis ticks, a legend; written via the atomic
 * file helpers so an interrupted run never leaves a half-written PNG behind. */
#include "lmforge/plot.h"

#include <cairo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"

/* Plot-area margins: the left one leaves room for y tick labels plus the rotated y label. */
enum { MARGIN_L = 90, MARGIN_R = 25, MARGIN_T = 50, MARGIN_B = 65 };
#define FONT_TICK  12.0
#define FONT_LABEL 14.0
#define FONT_TITLE 16.0
/* matplotlib's default first colour (#1f77b4), which LLaMA-Factory's plot uses for both lines. */
#define LINE_R (0x1f / 255.0)
#define LINE_G (0x77 / 255.0)
#define LINE_B (0xb4 / 255.0)

double lmf_plot_smooth_weight(int n) {
    return 1.8 * (1.0 / (1.0 + exp(-0.05 * n)) - 0.5);
}

void lmf_plot_smooth(const double *in, double *out, int n) {
    if (n <= 0) return;
    double w = lmf_plot_smooth_weight(n), last = in[0];
    for (int i = 0; i < n; i++) {
        last = last * w + (1.0 - w) * in[i];
        out[i] = last;
    }
}

/* Heckbert's "nice numbers" (Graphics Gems, 1990): a 1, 2, 5 or 10 times a power of ten
 * close to x; rounded picks the nearest, otherwise the smallest one >= x. */
static double nice_num(double x, int rounded) {
    double e = floor(log10(x)), f = x / pow(10.0, e), nf;
    if (rounded)
        nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    else
        nf = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
    return nf * pow(10.0, e);
}

/* An axis spanning [lo, hi] widened outward to multiples of a nice tick step. */
typedef struct axis {
    double dlo, dhi; /* data range (padded when empty) */
    double lo, hi, step;
    int ndigits; /* fraction digits that show the step exactly */
} axis;

static void axis_set_step(axis *a, double step) {
    a->step = step;
    a->lo = floor(a->dlo / step) * step;
    a->hi = ceil(a->dhi / step) * step;
    int d = (int)-floor(log10(step) + 1e-9);
    a->ndigits = d > 0 ? d : 0;
}

static void axis_make(axis *a, double lo, double hi, int nticks) {
    if (!(hi > lo)) {
        /* One point or a constant curve: give it a visible range around the value. */
        double pad = fabs(lo) > 1e-12 ? fabs(lo) * 0.1 : 1.0;
        lo -= pad;
        hi += pad;
    }
    a->dlo = lo;
    a->dhi = hi;
    /* Rounding the raw span first (Heckbert's loose labelling) can leave only three or four
     * ticks; rounding the step alone keeps close to nticks. */
    axis_set_step(a, nice_num((hi - lo) / (nticks - 1), 1));
}

static int axis_ticks(const axis *a) {
    return (int)floor((a->hi - a->lo) / a->step + 0.5) + 1;
}

static double axis_tick(const axis *a, int i) {
    double v = a->lo + i * a->step;
    return fabs(v) < a->step * 1e-9 ? 0.0 : v; /* no "-0.0" labels */
}

/* Plot-area geometry in pixels. */
typedef struct frame {
    double x0, y0, x1, y1; /* left, top, right, bottom */
    axis ax, ay;
} frame;

static double px(const frame *f, double x) {
    return f->x0 + (x - f->ax.lo) / (f->ax.hi - f->ax.lo) * (f->x1 - f->x0);
}

static double py(const frame *f, double y) {
    return f->y1 - (y - f->ay.lo) / (f->ay.hi - f->ay.lo) * (f->y1 - f->y0);
}

static void text_at(cairo_t *cr, const char *s, double x, double y, double halign, double valign) {
    cairo_text_extents_t e;
    cairo_text_extents(cr, s, &e);
    cairo_move_to(cr, x - e.x_bearing - e.width * halign, y - e.y_bearing - e.height * valign);
    cairo_show_text(cr, s);
}

/* Long step numbers (1100000) would run into each other: widen the x tick step to the next
 * nice value until the widest label fits between neighbouring ticks. */
static void fit_x_ticks(cairo_t *cr, frame *f) {
    char buf[64];
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, FONT_TICK);
    for (int tries = 0; tries < 8; tries++) {
        double widest = 0;
        for (int i = 0; i < axis_ticks(&f->ax); i++) {
            cairo_text_extents_t e;
            snprintf(buf, sizeof buf, "%.*f", f->ax.ndigits, axis_tick(&f->ax, i));
            cairo_text_extents(cr, buf, &e);
            if (e.width > widest) widest = e.width;
        }
        double spacing = px(f, f->ax.lo + f->ax.step) - px(f, f->ax.lo);
        if (widest + 16 <= spacing) return;
        axis_set_step(&f->ax, nice_num(f->ax.step * 1.01, 0));
    }
}

static void draw_axes(cairo_t *cr, const frame *f, const char *title, const char *ylabel) {
    char buf[64];
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, FONT_TICK);
    cairo_set_line_width(cr, 1.0);

    /* Light grid first so the curves and frame are drawn over it. */
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    for (int i = 0; i < axis_ticks(&f->ax); i++) {
        double x = floor(px(f, axis_tick(&f->ax, i))) + 0.5;
        cairo_move_to(cr, x, f->y0);
        cairo_line_to(cr, x, f->y1);
    }
    for (int i = 0; i < axis_ticks(&f->ay); i++) {
        double y = floor(py(f, axis_tick(&f->ay, i))) + 0.5;
        cairo_move_to(cr, f->x0, y);
        cairo_line_to(cr, f->x1, y);
    }
    cairo_stroke(cr);

    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_rectangle(cr, floor(f->x0) + 0.5, floor(f->y0) + 0.5, f->x1 - f->x0, f->y1 - f->y0);
    cairo_stroke(cr);

    double ylab_w = 0;
    for (int i = 0; i < axis_ticks(&f->ax); i++) {
        double v = axis_tick(&f->ax, i), x = floor(px(f, v)) + 0.5;
        cairo_move_to(cr, x, f->y1);
        cairo_line_to(cr, x, f->y1 + 5);
        cairo_stroke(cr);
        snprintf(buf, sizeof buf, "%.*f", f->ax.ndigits, v);
        /* The outermost labels may not fit centred under their tick: keep them on the image. */
        cairo_text_extents_t e;
        cairo_text_extents(cr, buf, &e);
        double cx = fmin(fmax(x, e.width / 2 + 3), LMF_PLOT_WIDTH - e.width / 2 - 3);
        text_at(cr, buf, cx, f->y1 + 9, 0.5, 0.0);
    }
    for (int i = 0; i < axis_ticks(&f->ay); i++) {
        double v = axis_tick(&f->ay, i), y = floor(py(f, v)) + 0.5;
        cairo_move_to(cr, f->x0 - 5, y);
        cairo_line_to(cr, f->x0, y);
        cairo_stroke(cr);
        snprintf(buf, sizeof buf, "%.*f", f->ay.ndigits, v);
        cairo_text_extents_t e;
        cairo_text_extents(cr, buf, &e);
        if (e.width > ylab_w) ylab_w = e.width;
        text_at(cr, buf, f->x0 - 9, y, 1.0, 0.5);
    }

    cairo_set_font_size(cr, FONT_LABEL);
    text_at(cr, "step", (f->x0 + f->x1) / 2, f->y1 + 34, 0.5, 0.0);
    /* The y label sits left of the widest tick label, but never off the image. */
    double ylx = f->x0 - 9 - ylab_w - 10;
    cairo_text_extents_t e;
    cairo_text_extents(cr, ylabel, &e);
    if (ylx - e.height < 4) ylx = 4 + e.height;
    cairo_save(cr);
    cairo_translate(cr, ylx, (f->y0 + f->y1) / 2);
    cairo_rotate(cr, -M_PI / 2);
    text_at(cr, ylabel, 0, 0, 0.5, 1.0);
    cairo_restore(cr);

    cairo_set_font_size(cr, FONT_TITLE);
    text_at(cr, title, (f->x0 + f->x1) / 2, f->y0 - 14, 0.5, 1.0);
}

static void draw_curve(cairo_t *cr, const frame *f, const double *x, const double *y, int n,
                       double width, double alpha) {
    cairo_set_source_rgba(cr, LINE_R, LINE_G, LINE_B, alpha);
    if (n == 1) { /* a lone point has no line to stroke: mark it */
        cairo_arc(cr, px(f, x[0]), py(f, y[0]), width + 2, 0, 2 * M_PI);
        cairo_fill(cr);
        return;
    }
    cairo_set_line_width(cr, width);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    for (int i = 0; i < n; i++) cairo_line_to(cr, px(f, x[i]), py(f, y[i]));
    cairo_stroke(cr);
}

/* Legend box in whichever plot-area corner covers the fewest data points (loss curves fall,
 * so this is usually the top right), like matplotlib's loc="best". */
static void draw_legend(cairo_t *cr, const frame *f, const double *x, const double *y, int n) {
    const char *names[2] = {"original", "smoothed"};
    const double widths[2] = {1.0, 2.5}, alphas[2] = {0.4, 1.0};
    cairo_set_font_size(cr, FONT_TICK);
    double tw = 0;
    for (int i = 0; i < 2; i++) {
        cairo_text_extents_t e;
        cairo_text_extents(cr, names[i], &e);
        if (e.width > tw) tw = e.width;
    }
    double bw = 10 + 30 + 8 + tw + 10, bh = 2 * 20 + 8, pad = 10;
    double best_x = f->x1 - pad - bw, best_y = f->y0 + pad;
    int best = n + 1;
    for (int c = 0; c < 4; c++) {
        double bx = (c & 1) ? f->x0 + pad : f->x1 - pad - bw;
        double by = (c & 2) ? f->y1 - pad - bh : f->y0 + pad;
        int hits = 0;
        for (int i = 0; i < n; i++) {
            double qx = px(f, x[i]), qy = py(f, y[i]);
            hits += qx >= bx && qx <= bx + bw && qy >= by && qy <= by + bh;
        }
        if (hits < best) {
            best = hits;
            best_x = bx;
            best_y = by;
        }
    }
    cairo_rectangle(cr, floor(best_x) + 0.5, floor(best_y) + 0.5, bw, bh);
    cairo_set_source_rgba(cr, 1, 1, 1, 0.85);
    cairo_fill_preserve(cr);
    cairo_set_source_rgb(cr, 0.8, 0.8, 0.8);
    cairo_set_line_width(cr, 1.0);
    cairo_stroke(cr);
    for (int i = 0; i < 2; i++) {
        double ly = best_y + 4 + 20 * i + 10;
        cairo_set_source_rgba(cr, LINE_R, LINE_G, LINE_B, alphas[i]);
        cairo_set_line_width(cr, widths[i]);
        cairo_move_to(cr, best_x + 10, ly);
        cairo_line_to(cr, best_x + 40, ly);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        text_at(cr, names[i], best_x + 48, ly, 0.0, 0.5);
    }
}

/* Growable memory sink for cairo_surface_write_to_png_stream. */
typedef struct png_buf {
    unsigned char *data;
    size_t len, cap;
} png_buf;

static cairo_status_t png_sink(void *closure, const unsigned char *data, unsigned int length) {
    png_buf *b = closure;
    if (b->len + length > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + length) cap *= 2;
        unsigned char *p = realloc(b->data, cap);
        if (!p) return CAIRO_STATUS_NO_MEMORY;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, length);
    b->len += length;
    return CAIRO_STATUS_SUCCESS;
}

int lmf_plot_loss(const char *png_path, const double *steps, const double *values, int n,
                  const char *title, const char *ylabel) {
    if (!png_path) return lmf_errorf(LMF_EINVAL, "plot: no output path");
    if (n < 0 || (n > 0 && !values))
        return lmf_errorf(LMF_EINVAL, "%s: invalid plot input (n = %d)", png_path, n);
    if (!title) title = "training loss";
    if (!ylabel) ylabel = "loss";

    int rc = 0, m = 0;
    double *x = NULL, *y = NULL, *ys = NULL;
    cairo_surface_t *surf = NULL;
    cairo_t *cr = NULL;
    png_buf png = {0};
    if (n > 0) {
        x = malloc(sizeof(double) * (size_t)n);
        y = malloc(sizeof(double) * (size_t)n);
        ys = malloc(sizeof(double) * (size_t)n);
        if (!x || !y || !ys) {
            rc = lmf_errorf(LMF_ENOMEM, "%s: out of memory for %d plot points", png_path, n);
            goto done;
        }
    }
    for (int i = 0; i < n; i++) {
        double sx = steps ? steps[i] : (double)i;
        if (!isfinite(sx) || !isfinite(values[i])) continue;
        x[m] = sx;
        y[m++] = values[i];
    }
    if (m == 0) {
        rc = lmf_errorf(LMF_EINVAL, "%s: nothing to plot (%d points, none finite)", png_path, n);
        goto done;
    }
    lmf_plot_smooth(y, ys, m);

    frame f = {.x0 = MARGIN_L,
               .y0 = MARGIN_T,
               .x1 = LMF_PLOT_WIDTH - MARGIN_R,
               .y1 = LMF_PLOT_HEIGHT - MARGIN_B};
    double xlo = x[0], xhi = x[0], ylo = y[0], yhi = y[0];
    for (int i = 1; i < m; i++) {
        xlo = fmin(xlo, x[i]);
        xhi = fmax(xhi, x[i]);
        ylo = fmin(ylo, y[i]);
        yhi = fmax(yhi, y[i]);
    }
    axis_make(&f.ax, xlo, xhi, 8);
    axis_make(&f.ay, ylo, yhi, 6);

    surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, LMF_PLOT_WIDTH, LMF_PLOT_HEIGHT);
    cr = cairo_create(surf);
    fit_x_ticks(cr, &f);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    draw_axes(cr, &f, title, ylabel);
    cairo_save(cr);
    cairo_rectangle(cr, f.x0, f.y0, f.x1 - f.x0, f.y1 - f.y0);
    cairo_clip(cr);
    draw_curve(cr, &f, x, y, m, 1.0, 0.4);
    draw_curve(cr, &f, x, ys, m, 2.5, 1.0);
    cairo_restore(cr);
    draw_legend(cr, &f, x, y, m);
    cairo_surface_flush(surf);

    cairo_status_t st = cairo_status(cr);
    if (st == CAIRO_STATUS_SUCCESS) st = cairo_surface_write_to_png_stream(surf, png_sink, &png);
    if (st != CAIRO_STATUS_SUCCESS) {
        rc = lmf_errorf(st == CAIRO_STATUS_NO_MEMORY ? LMF_ENOMEM : LMF_EIO,
                        "%s: cannot render plot: %s", png_path, cairo_status_to_string(st));
        goto done;
    }
    rc = lmf_file_write_atomic(png_path, png.data, png.len);

done:
    if (cr) cairo_destroy(cr);
    if (surf) cairo_surface_destroy(surf);
    free(png.data);
    free(x);
    free(y);
    free(ys);
    return rc;
}
