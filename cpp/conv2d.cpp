// conv2d forward and backward-to-input on the CPU.
//
// Schedule: for each image and group, im2col into a column buffer
// [Cg*kh*kw, Ho*Wo] and one SGEMM; backward is the transposed SGEMM followed
// by col2im. The CUDA core computes the same sums in the direct form of
// maths.h (conv2d_forward_at / conv2d_backward_at).
#include <algorithm>
#include <cstring>
#include <vector>

#include "invert_native/ops.h"

namespace invert_native {
namespace {

// A 1x1 kernel with stride 1 and no padding needs no column buffer: the
// input plane block already is the column matrix.
bool is_pointwise(const Conv2dParams& p) {
    return p.kh == 1 && p.kw == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 &&
           p.pad_w == 0;
}

// The output columns ox whose input column ox*sw - pw + v lies in [0, W).
index_t ox_begin(const Conv2dParams& p, index_t v) {
    const index_t need = p.pad_w - v;  // ox * sw >= need
    return need <= 0 ? 0 : std::min(p.Wo, (need + p.stride_w - 1) / p.stride_w);
}
index_t ox_end(const Conv2dParams& p, index_t v) {
    const index_t last = p.W - 1 + p.pad_w - v;  // ox * sw <= last
    return last < 0 ? 0 : std::min(p.Wo, last / p.stride_w + 1);
}

// col[(c*kh + u)*kw + v, oy*Wo + ox] = x[c, oy*sh - ph + u, ox*sw - pw + v] (0 outside)
void im2col(const Conv2dParams& p, const float* x,  // [Cg, H, W]
            float* col) {                           // [Cg*kh*kw, Ho*Wo]
    const index_t rows = p.Cg() * p.kh * p.kw;
#pragma omp parallel for schedule(static)
    for (index_t r = 0; r < rows; ++r) {
        const index_t v = r % p.kw, u = (r / p.kw) % p.kh, c = r / (p.kw * p.kh);
        const float* xc = x + c * p.H * p.W;
        float* dst = col + r * p.Ho * p.Wo;
        for (index_t oy = 0; oy < p.Ho; ++oy) {
            const index_t iy = oy * p.stride_h - p.pad_h + u;
            float* d = dst + oy * p.Wo;
            if (iy < 0 || iy >= p.H) {
                std::memset(d, 0, p.Wo * sizeof(float));
                continue;
            }
            // ox in [lo, hi) reads inside the row: no test per element there
            const float* src = xc + iy * p.W;
            const index_t lo = ox_begin(p, v), hi = ox_end(p, v), off = v - p.pad_w;
            for (index_t ox = 0; ox < lo; ++ox) d[ox] = 0.0f;
            if (p.stride_w == 1 && hi > lo)
                std::memcpy(d + lo, src + lo + off, (hi - lo) * sizeof(float));
            else
                for (index_t ox = lo; ox < hi; ++ox) d[ox] = src[ox * p.stride_w + off];
            for (index_t ox = hi; ox < p.Wo; ++ox) d[ox] = 0.0f;
        }
    }
}

// dx[c] += the columns that im2col read from channel c. Parallel over channels,
// so every element of dx is written by one thread in a fixed order.
void col2im(const Conv2dParams& p, const float* col,  // [Cg*kh*kw, Ho*Wo]
            float* dx) {                              // [Cg, H, W], accumulated into
#pragma omp parallel for schedule(static)
    for (index_t c = 0; c < p.Cg(); ++c) {
        float* dxc = dx + c * p.H * p.W;
        for (index_t u = 0; u < p.kh; ++u)
            for (index_t v = 0; v < p.kw; ++v) {
                const float* src = col + ((c * p.kh + u) * p.kw + v) * p.Ho * p.Wo;
                const index_t lo = ox_begin(p, v), hi = ox_end(p, v), off = v - p.pad_w;
                for (index_t oy = 0; oy < p.Ho; ++oy) {
                    const index_t iy = oy * p.stride_h - p.pad_h + u;
                    if (iy < 0 || iy >= p.H) continue;
                    float* d = dxc + iy * p.W;
                    const float* s = src + oy * p.Wo;
                    if (p.stride_w == 1) {  // contiguous: a vector loop
                        float* dd = d + lo + off;
                        const float* ss = s + lo;
                        for (index_t t = 0; t < hi - lo; ++t) dd[t] += ss[t];
                    } else {
                        for (index_t ox = lo; ox < hi; ++ox) d[ox * p.stride_w + off] += s[ox];
                    }
                }
            }
    }
}

thread_local std::vector<float> conv_workspace;

float* workspace_or_own(const Conv2dParams& p, float* workspace) {
    if (workspace) return workspace;
    const std::size_t n = conv2d_workspace_size(p);
    if (conv_workspace.size() < n) conv_workspace.resize(n);
    return conv_workspace.data();
}

}  // namespace

std::size_t conv2d_workspace_size(const Conv2dParams& p) {
    return is_pointwise(p) ? 0 : std::size_t(p.Cg() * p.kh * p.kw * p.Ho * p.Wo);
}

void conv2d_forward(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y,
                    float* workspace) {
    const index_t Cg = p.Cg(), Kg = p.Kg(), CKK = Cg * p.kh * p.kw, HWo = p.Ho * p.Wo;
    float* col = is_pointwise(p) ? nullptr : workspace_or_own(p, workspace);
    for (index_t n = 0; n < p.N; ++n)
        for (index_t g = 0; g < p.groups; ++g) {
            const float* xg = x + (n * p.C + g * Cg) * p.H * p.W;
            float* yg = y + (n * p.K + g * Kg) * HWo;
            const float* cols = xg;
            if (col) {
                im2col(p, xg, col);
                cols = col;
            }
            sgemm(false, false, Kg, HWo, CKK, 1.0f, w + g * Kg * CKK, CKK, cols, HWo, 0.0f, yg, HWo);
            if (b) {
#pragma omp parallel for schedule(static)
                for (index_t k = 0; k < Kg; ++k) {
                    const float bk = b[g * Kg + k];
                    float* yk = yg + k * HWo;
                    for (index_t i = 0; i < HWo; ++i) yk[i] += bk;
                }
            }
        }
}

void conv2d_backward(const Conv2dParams& p, const float* dy, const float* w, float* dx,
                     float* workspace) {
    const index_t Cg = p.Cg(), Kg = p.Kg(), CKK = Cg * p.kh * p.kw, HWo = p.Ho * p.Wo;
    const bool pointwise = is_pointwise(p);
    float* col = pointwise ? nullptr : workspace_or_own(p, workspace);
    for (index_t n = 0; n < p.N; ++n)
        for (index_t g = 0; g < p.groups; ++g) {
            const float* dyg = dy + (n * p.K + g * Kg) * HWo;
            float* dxg = dx + (n * p.C + g * Cg) * p.H * p.W;
            // dcol = W_g^T [CKK, Kg] @ dy_g [Kg, HWo]
            if (pointwise) {
                sgemm(true, false, CKK, HWo, Kg, 1.0f, w + g * Kg * CKK, CKK, dyg, HWo, 0.0f, dxg,
                      HWo);
            } else {
                sgemm(true, false, CKK, HWo, Kg, 1.0f, w + g * Kg * CKK, CKK, dyg, HWo, 0.0f, col,
                      HWo);
                std::memset(dxg, 0, sizeof(float) * Cg * p.H * p.W);
                col2im(p, col, dxg);
            }
        }
}

}  // namespace invert_native
