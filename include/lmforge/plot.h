/* Training-curve plots: the training_loss.png LLaMA-Factory writes when plot_loss is true
 * (raw values as a faint line, an exponential-moving-average smoothed curve as a bold one,
 * legend "original" / "smoothed"), rendered with cairo and written atomically. */
#ifndef LMFORGE_PLOT_H
#define LMFORGE_PLOT_H

/* Image size of every plot, in pixels. */
#define LMF_PLOT_WIDTH  800
#define LMF_PLOT_HEIGHT 500

/* Smoothing weight LLaMA-Factory's smooth() uses for a curve of n points:
 * 1.8 * (sigmoid(0.05 * n) - 0.5), so short curves are barely smoothed and long ones heavily. */
double lmf_plot_smooth_weight(int n);

/* EMA smoothing as LLaMA-Factory's smooth(): out[0] = in[0],
 * out[i] = w * out[i-1] + (1 - w) * in[i] with w = lmf_plot_smooth_weight(n). in == out is
 * allowed. */
void lmf_plot_smooth(const double *in, double *out, int n);

/* Draws values against steps (x; steps may be NULL for 0, 1, ..., n-1) as an
 * LMF_PLOT_WIDTH x LMF_PLOT_HEIGHT PNG at png_path: axes with round tick values, x label
 * "step", y label ylabel (NULL: "loss"), title (NULL: "training loss"), the raw curve, the
 * smoothed curve and a legend. Points whose step or value is NaN or infinite are skipped (the
 * smoothing runs over the points kept). The file is replaced atomically: a crash leaves the old
 * plot or the new one, never a torn PNG.
 * Returns 0; LMF_EINVAL (n < 0, values NULL, or no finite point to plot), LMF_ENOMEM, or
 * LMF_EIO (cairo or the file system failed); the message names png_path. */
int lmf_plot_loss(const char *png_path, const double *steps, const double *values, int n,
                  const char *title, const char *ylabel);

#endif
