// HOG ops on the CPU: hog_cells and hog_norm, forward and backward (maths in
// hog_maths.h). Each pass computes every output element with one call of the
// shared per-element function, as the CUDA kernels do, so both backends add in
// the same order; here OpenMP splits the work by rows.
#include <vector>

#include "invert_native/hog.h"
#include "invert_native/hog_maths.h"

namespace invert_native {

namespace {

// Pass 1 of hog_cells_forward for C channels and binning M (compile-time, so
// that the loops over a row's pixels are branch-free and vectorise): the same
// hog_maths.h pieces hog_pixel_at is made of, one loop per piece. Bilinear
// binning's acosf runs in a scalar loop of its own (glibc's, as VLFeat calls
// it: a vectorised acosf could round differently).
template <int C, OrientationBinning M>
void hog_pixels(const HogCellsParams& params, const float* x, float* pix, index_t* assign) {
    const index_t plane = params.H * params.W, H = params.H, W = params.W;
    const int A = int(params.O);
    const float cos_width = orientation_cos_width(M, A);
#pragma omp parallel
    {
        const HogCellsParams p = params;  // this thread's copy: the stores cannot alias it
        // one row of per-pixel state, structure of arrays: the scan over the
        // axes runs axis by axis, each step a vectorised loop over the row
        thread_local std::vector<float> fbuf;
        thread_local std::vector<int> ibuf;
        if (fbuf.size() < std::size_t(6 * W)) fbuf.resize(std::size_t(6 * W));
        if (ibuf.size() < std::size_t(3 * W)) ibuf.resize(std::size_t(3 * W));
        float *gxs = fbuf.data(), *gys = gxs + W, *mags = gys + W, *s0s = mags + W,
              *s1s = s0s + W, *angles = s1s + W;
        int *chans = ibuf.data(), *b0s = chans + W, *b1s = b0s + W;
        // the best-two scan state of pixel xx of the row, kept as structure of arrays
        const auto load_scan = [=](index_t xx) {
            return OrientationScan{b0s[xx], b1s[xx], s0s[xx], s1s[xx]};
        };
        const auto store_scan = [=](index_t xx, const OrientationScan& r) {
            b0s[xx] = r.b0;
            b1s[xx] = r.b1;
            s0s[xx] = r.s0;
            s1s[xx] = r.s1;
        };
#pragma omp for collapse(2) schedule(static)
        for (index_t n = 0; n < p.N; ++n)
            for (index_t y = 0; y < H; ++y) {
                const float* xn = x + n * C * plane;
                float* pixn = pix + n * 4 * plane + y * W;
                index_t* asgn = assign + n * 3 * plane + y * W;
                if (y < 1 || y > H - 2) {
                    for (index_t xx = 0; xx < W; ++xx)
                        hog_store_pixel(hog_pixel_at(p, xn, y, xx), plane, 0, xx, pixn, asgn);
                    continue;
                }
                hog_store_pixel(hog_pixel_at(p, xn, y, 0), plane, 0, 0, pixn, asgn);
                hog_store_pixel(hog_pixel_at(p, xn, y, W - 1), plane, 0, W - 1, pixn, asgn);
                const float* row = xn + y * W;
#pragma GCC ivdep
                for (index_t xx = 1; xx < W - 1; ++xx) {
                    HogGradient g = hog_gradient_start();
                    for (int c = 0; c < C; ++c) hog_gradient_step(g, row + c * plane + xx, W, c);
                    gxs[xx] = g.gx;
                    gys[xx] = g.gy;
                    chans[xx] = g.channel;
                    mags[xx] = sqrtf(g.g2);
                    store_scan(xx, orientation_scan_start());
                }
                for (int a = 0; a < A; ++a) {
                    const float uxa = p.ux[a], uya = p.uy[a];
#pragma GCC ivdep
                    for (index_t xx = 1; xx < W - 1; ++xx) {
                        OrientationScan r = load_scan(xx);
                        orientation_scan_step(r, gxs[xx], gys[xx], uxa, uya, a, A);
                        store_scan(xx, r);
                    }
                }
                if (M == OrientationBinning::bilinear) {
#pragma GCC ivdep
                    for (index_t xx = 1; xx < W - 1; ++xx)
                        angles[xx] = hog_bilinear_cos(s0s[xx], mags[xx]);
                    for (index_t xx = 1; xx < W - 1; ++xx) angles[xx] = acosf(angles[xx]);
                }
#pragma GCC ivdep
                for (index_t xx = 1; xx < W - 1; ++xx) {
                    const HogGradient g{gxs[xx], gys[xx], 0.0f, chans[xx]};
                    const float angle0 = M == OrientationBinning::bilinear ? angles[xx] : 0.0f;
                    const HogPixel px =
                        hog_pixel_from_scan(p.O, M, cos_width, g, mags[xx], load_scan(xx), angle0);
                    hog_store_pixel(px, plane, 0, xx, pixn, asgn);
                }
            }
    }
}

template <int C>
void hog_pixels_c(const HogCellsParams& p, const float* x, float* pix, index_t* assign) {
    switch (p.binning) {
        case OrientationBinning::hard:
            return hog_pixels<C, OrientationBinning::hard>(p, x, pix, assign);
        case OrientationBinning::bilinear:
            return hog_pixels<C, OrientationBinning::bilinear>(p, x, pix, assign);
        case OrientationBinning::relu:
            return hog_pixels<C, OrientationBinning::relu>(p, x, pix, assign);
    }
}

}  // namespace

void hog_cells_forward(const HogCellsParams& p, const float* x, float* hist, float* pix,
                       index_t* assign) {
    const index_t plane = p.H * p.W, cells = p.h * p.w, K = p.K();
    // pass 1: gradient, channel selection and binning of every pixel
    if (p.C == 1)
        hog_pixels_c<1>(p, x, pix, assign);
    else
        hog_pixels_c<3>(p, x, pix, assign);
    // pass 2: every cell gathers its pixels (no write conflicts)
#pragma omp parallel for collapse(3) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t cy = 0; cy < p.h; ++cy)
            for (index_t cx = 0; cx < p.w; ++cx)
                hog_cell_hist_at(p, pix + n * 4 * plane, assign + n * 3 * plane, cy, cx,
                                 hist + n * K * cells + cy * p.w + cx, cells);
}

namespace {

// Pass 1 of hog_cells_backward for hard and bilinear binning: dL/dg of every
// pixel of a row in one branch-free, vectorised loop (the pixel's cell column
// from a table of hog_cell_coord), the angle from the atan series; the (rare)
// pixels whose angle needs atan2f are redone with hog_pixel_backward_at.
template <OrientationBinning M>
void hog_pixel_grads(const HogCellsParams& params, const float* pix, const index_t* assign,
                     const float* dhist, float* dg) {
    const index_t plane = params.H * params.W, cells = params.h * params.w, K = params.K(),
                  W = params.W;
    const int A = int(params.O);
#pragma omp parallel
    {
        const HogCellsParams p = params;  // this thread's copy: the stores cannot alias it
        thread_local std::vector<index_t> xbin;
        thread_local std::vector<float> xfrac;
        thread_local std::vector<unsigned char> redo;
        if (xbin.size() < std::size_t(W)) xbin.resize(std::size_t(W));
        if (xfrac.size() < std::size_t(W)) xfrac.resize(std::size_t(W));
        if (redo.size() < std::size_t(W)) redo.resize(std::size_t(W));
        index_t* xb = xbin.data();
        float* xf = xfrac.data();
        unsigned char* rd = redo.data();
        for (index_t xx = 0; xx < W; ++xx) hog_cell_coord(xx, p.cell, &xb[xx], &xf[xx]);
#pragma omp for collapse(2) schedule(static)
        for (index_t n = 0; n < p.N; ++n)
            for (index_t y = 0; y < p.H; ++y) {
                const float* pixn = pix + n * 4 * plane;
                const index_t* asgn = assign + n * 3 * plane;
                const float* dhn = dhist + n * K * cells;
                const float *gxs = pixn + y * W, *gys = gxs + plane;
                const index_t *b0s = asgn + plane + y * W, *b1s = b0s + plane;
                float* dgx = dg + n * 2 * plane + y * W;
                float* dgy = dgx + plane;
                index_t by;
                float fy;
                hog_cell_coord(y, p.cell, &by, &fy);
                int any = 0;
#pragma GCC ivdep
                for (index_t xx = 0; xx < W; ++xx) {
                    const index_t b0 = b0s[xx], b1 = b1s[xx];
                    float dv0, dv1;
                    hog_pixel_dv(p, dhn, b0, b1, by, fy, xb[xx], xf[xx], &dv0, &dv1);
                    bool exact;
                    orientation_binning_backward_hb(M, gxs[xx], gys[xx], int(b0), int(b1), p.ux,
                                                    p.uy, A, dv0, dv1, true, &exact, &dgx[xx],
                                                    &dgy[xx]);
                    rd[xx] = exact;
                    any |= int(exact);
                }
                if (any)
                    for (index_t xx = 0; xx < W; ++xx)
                        if (rd[xx])
                            hog_pixel_backward_at(p, pixn, asgn, dhn, y, xx, &dgx[xx], &dgy[xx]);
            }
    }
}

}  // namespace

void hog_cells_backward(const HogCellsParams& p, const float* pix, const index_t* assign,
                        const float* dhist, float* dx, float* workspace) {
    const index_t plane = p.H * p.W, cells = p.h * p.w, K = p.K();
    // the caller's workspace, or this thread's, which only grows: no allocation per call
    thread_local std::vector<float> own;
    if (!workspace) {
        if (own.size() < hog_cells_workspace_size(p)) own.resize(hog_cells_workspace_size(p));
        workspace = own.data();
    }
    float* dg = workspace;  // [N, 2, H, W] dL/d(gx, gy)
    if (p.binning == OrientationBinning::hard)
        hog_pixel_grads<OrientationBinning::hard>(p, pix, assign, dhist, dg);
    else if (p.binning == OrientationBinning::bilinear)
        hog_pixel_grads<OrientationBinning::bilinear>(p, pix, assign, dhist, dg);
    else
#pragma omp parallel for collapse(2) schedule(static)
        for (index_t n = 0; n < p.N; ++n)
            for (index_t y = 0; y < p.H; ++y)
                for (index_t xx = 0; xx < p.W; ++xx) {
                    float* dgn = dg + n * 2 * plane;
                    hog_pixel_backward_at(p, pix + n * 4 * plane, assign + n * 3 * plane,
                                          dhist + n * K * cells, y, xx, &dgn[y * p.W + xx],
                                          &dgn[plane + y * p.W + xx]);
                }
#pragma omp parallel for collapse(3) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t c = 0; c < p.C; ++c)
            for (index_t y = 0; y < p.H; ++y)
                for (index_t xx = 0; xx < p.W; ++xx)
                    dx[((n * p.C + c) * p.H + y) * p.W + xx] = hog_input_backward_at(
                        p, assign + n * 3 * plane, dg + n * 2 * plane, c, y, xx);
}

void hog_norm_forward(const HogNormParams& p, const float* hist, float* y, float* blocks) {
    const index_t cells = p.h * p.w, K = p.K(), bh = p.h + 1, bw = p.w + 1;
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t by = 0; by < bh; ++by)
            for (index_t bx = 0; bx < bw; ++bx)
                blocks[(n * bh + by) * bw + bx] =
                    hog_block_factor_at(p, hist + n * K * cells, by, bx);
#pragma omp parallel for collapse(3) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t d = 0; d < p.D; ++d)
            for (index_t cy = 0; cy < p.h; ++cy)
                for (index_t cx = 0; cx < p.w; ++cx)
                    y[(n * p.D + d) * cells + cy * p.w + cx] = hog_norm_output_at(
                        p, hist + n * K * cells, blocks + n * bh * bw, d, cy, cx);
}

void hog_norm_backward(const HogNormParams& p, const float* hist, const float* blocks,
                       const float* dy, float* dhist, float* workspace) {
    const index_t cells = p.h * p.w, K = p.K(), nb = (p.h + 1) * (p.w + 1);
    // the caller's workspace, or this thread's, which only grows: no allocation per call
    thread_local std::vector<float> own;
    if (!workspace) {
        if (own.size() < hog_norm_workspace_size(p)) own.resize(hog_norm_workspace_size(p));
        workspace = own.data();
    }
    float* g = workspace;  // [N, 4, h, w] dL/d(factor i of each cell)
#pragma omp parallel for collapse(3) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t i = 0; i < 4; ++i)
            for (index_t cy = 0; cy < p.h; ++cy)
                for (index_t cx = 0; cx < p.w; ++cx)
                    g[(n * 4 + i) * cells + cy * p.w + cx] =
                        hog_norm_dfactor_at(p, hist + n * K * cells, blocks + n * nb,
                                            dy + n * p.D * cells, i, cy, cx);
#pragma omp parallel for collapse(3) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t k = 0; k < K; ++k)
            for (index_t cy = 0; cy < p.h; ++cy)
                for (index_t cx = 0; cx < p.w; ++cx)
                    dhist[(n * K + k) * cells + cy * p.w + cx] = hog_norm_backward_at(
                        p, hist + n * K * cells, blocks + n * nb, dy + n * p.D * cells,
                        g + n * 4 * cells, k, cy, cx);
}

}  // namespace invert_native
