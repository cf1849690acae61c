// Per-element maths of the dense SIFT ops (dsift.h), shared by the CPU loops
// (cpp/dsift_*.cpp) and the CUDA kernels (cuda/dsift_*.cu).
//
// Forward numerics are VLFeat 0.9.21's vl_dsift_process (vl/dsift.c, the flat
// window) operation for operation, so that descriptors come out bit-identical
// to libvl's: its gradient stencil, fast atan2 and bit-trick fast sqrt, the
// angle quantisation in double, the triangular filter through running sums
// (vl_imconvcoltri_f), the window weights and the normalisation with its
// floors. Both backends are built without fused multiply-adds (CMakeLists.txt).
// Backward differentiates the smooth functions these compute: the fast atan2
// is a rational function (exact derivative), the fast sqrt counts as sqrt, the
// running sums as the triangular filter they evaluate.
#pragma once

#include <cmath>
#include <cstring>

#include "invert_native/dsift.h"
#include "invert_native/maths.h"

namespace invert_native {

// -------------------------------------------------------------- gradient
// Coefficient of sample p in VLFeat's derivative at q along an axis of n >= 2
// samples: (v[q+1] - v[q-1]) / 2 inside, v[1] - v[0] and v[n-1] - v[n-2] at the ends.
INV_HD float dsift_diff_coef(index_t q, index_t p, index_t n) {
    if (q == 0) return p == 1 ? 1.0f : (p == 0 ? -1.0f : 0.0f);
    if (q == n - 1) return p == n - 1 ? 1.0f : (p == n - 2 ? -1.0f : 0.0f);
    return p == q + 1 ? 0.5f : (p == q - 1 ? -0.5f : 0.0f);
}

// (gx, gy) at pixel (y, x) of plane xp [H, W], written as VLFeat does.
INV_HD void dsift_image_gradient(const float* xp, index_t H, index_t W, index_t y, index_t x,
                                 float* gx, float* gy) {
    const float* r = xp + y * W;
    if (x == 0) *gx = r[1] - r[0];
    else if (x == W - 1) *gx = r[x] - r[x - 1];
    else *gx = 0.5f * (r[x + 1] - r[x - 1]);
    if (y == 0) *gy = xp[W + x] - xp[x];
    else if (y == H - 1) *gy = xp[y * W + x] - xp[(y - 1) * W + x];
    else *gy = 0.5f * (xp[(y + 1) * W + x] - xp[(y - 1) * W + x]);
}

// VLFeat's vl_fast_sqrt_f: 0 below 1e-8 (compared in double), else x times
// the bit-trick reciprocal square root refined by two Newton steps (relative
// error up to ~5e-6 against sqrtf), in VLFeat's order of operations.
constexpr double kDsiftPiD = 3.141592653589793;  // VL_PI

INV_HD float dsift_fast_sqrt(float x) {
    int bits;
#if defined(__CUDA_ARCH__)
    bits = __float_as_int(x);
#else
    std::memcpy(&bits, &x, sizeof bits);
#endif
    bits = 0x5f3759df - (bits >> 1);
    float r;
#if defined(__CUDA_ARCH__)
    r = __int_as_float(bits);
#else
    std::memcpy(&r, &bits, sizeof r);
#endif
    const float xhalf = 0.5f * x;
    r = r * (1.5f - xhalf * r * r);
    r = r * (1.5f - xhalf * r * r);
    return double(x) < kDsiftSqrtFloor ? 0.0f : x * r;
}

// VLFeat's vl_fast_atan2_f(y, x) and its partial derivatives. The two
// branches meet with equal value and slope at x = 0, and y enters through
// sign(y) * f(|y|), so the function is C1 away from the origin; at y = 0 it
// jumps by ~3e-6 rad across 0 (= 2 pi after wrapping), which binning ignores.
constexpr float kDsiftAtanC3 = 0.1821f;
constexpr float kDsiftAtanC1 = 0.9675f;
constexpr float kDsiftPi = 3.14159265358979323846f;

INV_HD float dsift_fast_atan2(float y, float x, float* d_dy, float* d_dx) {
    const float a = fabsf(y) + kDsiftEps;
    float r, base, dr_dx, dr_da;
    if (x >= 0.0f) {
        const float q = x + a;
        r = (x - a) / q;
        base = kDsiftPi / 4.0f;
        dr_dx = 2.0f * a / (q * q);
        dr_da = -2.0f * x / (q * q);
    } else {
        const float q = a - x;
        r = (x + a) / q;
        base = float(3.0 * kDsiftPiD / 4.0);
        dr_dx = 2.0f * a / (q * q);
        dr_da = -2.0f * x / (q * q);
    }
    const float angle = base + (kDsiftAtanC3 * r * r - kDsiftAtanC1) * r;
    const float dangle = 3.0f * kDsiftAtanC3 * r * r - kDsiftAtanC1;
    const float s = y < 0.0f ? -1.0f : 1.0f;
    if (d_dx) *d_dx = s * dangle * dr_dx;
    if (d_dy) *d_dy = dangle * dr_da;  // s * dangle * dr_da * sign(y), sign(0) taken as +1
    return s * angle;
}

// Angle of g in [0, 2 pi) (VLFeat's vl_mod_2pi_f) and d angle / d (gx, gy).
INV_HD float dsift_angle(const DsiftParams& p, float gx, float gy, float* d_dgx, float* d_dgy) {
    float a;
    if (p.exact_atan2) {
        a = atan2f(gy, gx);
        const float m2 = gx * gx + gy * gy;
        *d_dgx = m2 > 0.0f ? -gy / m2 : 0.0f;
        *d_dgy = m2 > 0.0f ? gx / m2 : 0.0f;
    } else {
        a = dsift_fast_atan2(gy, gx, d_dgy, d_dgx);
    }
    const float two_pi = 2.0f * kDsiftPi;
    while (a > two_pi) a -= two_pi;
    while (a < 0.0f) a += two_pi;
    return a;
}

// Bilinear orientation binning of one gradient: the magnitude goes to bins
// b0 and b1 = b0 + 1 (mod K) with weights 1 - frac and frac (with K == 1,
// as in VLFeat, bin 0 keeps only frac * mag: the second store wins). Also returns the
// derivatives backward needs. mag is VLFeat's fast sqrt of |g|^2 (0 below its
// 1e-8 floor); d mag / d g is that of the exact |g|. The angle is scaled to
// bins in double, as VLFeat's angle * (K / (2 pi)).
struct DsiftOrient {
    index_t b0, b1;
    float frac, mag;
    float dmag_dgx, dmag_dgy;      // d mag / d g
    float dfrac_dgx, dfrac_dgy;    // d frac / d g (frac = angle * K / 2pi - b0)
};

INV_HD DsiftOrient dsift_orient(const DsiftParams& p, float gx, float gy) {
    DsiftOrient o;
    const float m2 = gx * gx + gy * gy;
    float da_dgx, da_dgy;
    const float a = dsift_angle(p, gx, gy, &da_dgx, &da_dgy);
    const float scale = float(p.K) / (2.0f * kDsiftPi);  // d nt / d angle
    const float nt = float(double(a) * (double(p.K) / (2.0 * kDsiftPiD)));
    const float fb = floorf(nt);
    o.frac = nt - fb;
    index_t b = index_t(fb);
    o.b0 = ((b % p.K) + p.K) % p.K;  // nt can round up to exactly K
    o.b1 = (o.b0 + 1) % p.K;
    if (double(m2) < kDsiftSqrtFloor) {
        o.mag = 0.0f;
        o.dmag_dgx = o.dmag_dgy = 0.0f;
    } else {
        o.mag = dsift_fast_sqrt(m2);
        const float exact = sqrtf(m2);
        o.dmag_dgx = gx / exact;
        o.dmag_dgy = gy / exact;
    }
    o.dfrac_dgx = scale * da_dgx;
    o.dfrac_dgy = scale * da_dgy;
    return o;
}

// Writes the K orientation channels of pixel (y, x): hp points at channel 0 of
// that pixel in an [K, H, W] block, channels `plane` floats apart.
INV_HD void dsift_gradient_forward_at(const DsiftParams& p,
                                      const float* xp,  // [H, W] image plane
                                      float* hp, index_t plane, index_t y, index_t x) {
    float gx, gy;
    dsift_image_gradient(xp, p.H, p.W, y, x, &gx, &gy);
    const DsiftOrient o = dsift_orient(p, gx, gy);
    for (index_t t = 0; t < p.K; ++t) hp[t * plane] = 0.0f;
    // Two stores, as vl_dsift_process: with K == 1 (b0 == b1) the second
    // overwrites the first, so libvl's single channel holds frac * mag.
    hp[o.b0 * plane] = (1.0f - o.frac) * o.mag;
    hp[o.b1 * plane] = o.frac * o.mag;
}

// d loss / d (gx, gy) at pixel (y, x) from the K channels of dh there.
INV_HD void dsift_gradient_dg_at(const DsiftParams& p,
                                 const float* xp,   // [H, W] image plane
                                 const float* dhp,  // channel 0 of dh at (y, x), stride plane
                                 index_t plane, index_t y, index_t x, float* dgx, float* dgy) {
    float gx, gy;
    dsift_image_gradient(xp, p.H, p.W, y, x, &gx, &gy);
    const DsiftOrient o = dsift_orient(p, gx, gy);
    // h_b0 = (1 - frac) mag, h_b1 = frac mag; with K == 1 only h_b1 = h_0 =
    // frac mag is left (dsift_gradient_forward_at), so b0's share is dropped.
    const float d0 = o.b0 == o.b1 ? 0.0f : dhp[o.b0 * plane], d1 = dhp[o.b1 * plane];
    const float dmag = (1.0f - o.frac) * d0 + o.frac * d1;
    const float dfrac = o.mag * (d1 - d0);
    *dgx = dmag * o.dmag_dgx + dfrac * o.dfrac_dgx;
    *dgy = dmag * o.dmag_dgy + dfrac * o.dfrac_dgy;
}

// dx at pixel (y, x) (gather): the pixel enters the derivatives at its four
// neighbours and, at the image border, at itself.
INV_HD float dsift_gradient_backward_at(const DsiftParams& p,
                                        const float* xp,   // [H, W] image plane
                                        const float* dhp,  // [K, H, W] dh block of the image
                                        index_t y, index_t x) {
    const index_t plane = p.H * p.W;
    const index_t qy[5] = {y, y, y, y - 1, y + 1};
    const index_t qx[5] = {x, x - 1, x + 1, x, x};
    float acc = 0.0f;
    for (int k = 0; k < 5; ++k) {
        if (qy[k] < 0 || qy[k] >= p.H || qx[k] < 0 || qx[k] >= p.W) continue;
        const float cx = qy[k] == y ? dsift_diff_coef(qx[k], x, p.W) : 0.0f;
        const float cy = qx[k] == x ? dsift_diff_coef(qy[k], y, p.H) : 0.0f;
        if (cx == 0.0f && cy == 0.0f) continue;
        float dgx, dgy;
        dsift_gradient_dg_at(p, xp, dhp + qy[k] * p.W + qx[k], plane, qy[k], qx[k], &dgx, &dgy);
        acc += cx * dgx + cy * dgy;
    }
    return acc;
}

// The same gather as dsift_gradient_backward_at (same terms, same order), from
// d loss / d g precomputed once per pixel (dgx, dgy: [H, W] planes), so each
// pixel's orientation maths runs once instead of up to five times.
INV_HD float dsift_gradient_gather_at(const DsiftParams& p, const float* dgx, const float* dgy,
                                      index_t y, index_t x) {
    const index_t qy[5] = {y, y, y, y - 1, y + 1};
    const index_t qx[5] = {x, x - 1, x + 1, x, x};
    float acc = 0.0f;
    for (int k = 0; k < 5; ++k) {
        if (qy[k] < 0 || qy[k] >= p.H || qx[k] < 0 || qx[k] >= p.W) continue;
        const float cx = qy[k] == y ? dsift_diff_coef(qx[k], x, p.W) : 0.0f;
        const float cy = qx[k] == x ? dsift_diff_coef(qy[k], y, p.H) : 0.0f;
        if (cx == 0.0f && cy == 0.0f) continue;
        const index_t q = qy[k] * p.W + qx[k];
        acc += cx * dgx[q] + cy * dgy[q];
    }
    return acc;
}

// -------------------------------------------------------------- triangle
INV_HD index_t dsift_clampi(index_t i, index_t n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

// Weight b - |u| of tap u of the triangle (0 for |u| >= b); the filter is
// (b - |u|) / b^2 (unit integral, as vl_imconvcoltri_f), the division a final
// multiplication by dsift_triangle_scale.
INV_HD float dsift_tri(index_t u, index_t b) {
    const index_t a = u < 0 ? -u : u;
    return a < b ? float(b - a) : 0.0f;
}
INV_HD float dsift_triangle_scale(index_t b) { return float(1.0 / (double(b) * double(b))); }

// VLFeat's vl_imconvcoltri_f (filter size b, padding by continuity) on L lines
// at once, sample i of lane j at src[i * ss + j * sl], output at dst[i * ds +
// j * dl]. Its running sums, step for step: integrate backward from the end of
// the line (the first sample repeated b times below it), take differences b
// apart (beyond the end: the last sum times the number of repeated samples),
// integrate forward, difference b apart again and scale. Float rounding thus
// depends on the whole line, as in VLFeat. buf holds (n + b) positions of L
// lanes, position i (from -b) of lane j at buf[(i + b) * bs + j].
INV_HD void dsift_triangle_lines(const float* src, index_t ss, index_t sl, float* dst, index_t ds,
                                 index_t dl, index_t n, index_t L, index_t b, float* buf,
                                 index_t bs) {
    float* B = buf + b * bs;  // B[i * bs + j], i in [-b, n)
    for (index_t j = 0; j < L; ++j) B[(n - 1) * bs + j] = src[(n - 1) * ss + j * sl];
    for (index_t i = n - 2; i >= 0; --i)
        for (index_t j = 0; j < L; ++j) B[i * bs + j] = B[(i + 1) * bs + j] + src[i * ss + j * sl];
    for (index_t i = -1; i >= -b; --i)
        for (index_t j = 0; j < L; ++j) B[i * bs + j] = B[(i + 1) * bs + j] + src[j * sl];
    for (index_t i = -b; i < n - b; ++i)
        for (index_t j = 0; j < L; ++j) B[i * bs + j] = B[i * bs + j] - B[(i + b) * bs + j];
    for (index_t i = n - b; i < n; ++i) {
        const float reps = float(n - b - i);
        for (index_t j = 0; j < L; ++j)
            B[i * bs + j] = B[i * bs + j] - B[(n - 1) * bs + j] * reps;
    }
    for (index_t i = -b + 1; i < n; ++i)
        for (index_t j = 0; j < L; ++j) B[i * bs + j] += B[(i - 1) * bs + j];
    const float scale = dsift_triangle_scale(b);
    for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < L; ++j)
            dst[i * ds + j * dl] = scale * (B[i * bs + j] - B[(i - b) * bs + j]);
}

// Transpose of the triangular filter (b - |u|) / b^2 with the line's ends
// replicated: sample i of the gradient gathers every output q whose (clamped)
// window reads i. Inside the line that is tri(i - q); the two end samples also
// collect the weights of the replicated padding.
INV_HD float dsift_triangle_backward_at(const float* dv, index_t n, index_t stride, index_t b,
                                        index_t i) {
    const index_t q0 = imax(i - b + 1, index_t(0)), q1 = imin(i + b - 1, n - 1);
    float acc = 0.0f;
    if (i > 0 && i < n - 1) {
        for (index_t q = q0; q <= q1; ++q) acc += dsift_tri(i - q, b) * dv[q * stride];
        return acc * dsift_triangle_scale(b);
    }
    for (index_t q = q0; q <= q1; ++q) {
        float w = 0.0f;
        for (index_t u = -b + 1; u <= b - 1; ++u)
            if (dsift_clampi(q + u, n) == i) w += dsift_tri(u, b);
        acc += w * dv[q * stride];
    }
    return acc * dsift_triangle_scale(b);
}

// ---------------------------------------------------------------- sample
// Weight of spatial bin (bx, by): VLFeat's (mean_x * bin_size) * (mean_y *
// bin_size), the bin size turning the unit-integral triangles into unit height.
INV_HD float dsift_bin_weight(const DsiftParams& p, index_t bx, index_t by) {
    const float b = float(p.bin_size);
    return (p.window_mean[bx] * b) * (p.window_mean[by] * b);
}

// d[n, c, fy, fx] from the filtered maps s [N, K, H, W].
INV_HD float dsift_sample_at(const DsiftParams& p, const float* s, index_t n, index_t c,
                             index_t fy, index_t fx) {
    const index_t t = c % p.K, bin = c / p.K;
    const index_t bx = bin % p.nbin, by = bin / p.nbin;
    const index_t y = p.y0 + fy * p.step_y + by * p.bin_size;
    const index_t x = p.x0 + fx * p.step_x + bx * p.bin_size;
    return dsift_bin_weight(p, bx, by) * s[((n * p.K + t) * p.H + y) * p.W + x];
}

// Whether row y holds bin centres of any frame (most rows do not when step and
// bin_size share a large factor); lets the loops skip whole rows.
INV_HD bool dsift_sample_row_used(const DsiftParams& p, index_t y) {
    for (index_t by = 0; by < p.nbin; ++by) {
        const index_t ty = y - p.y0 - by * p.bin_size;
        if (ty >= 0 && ty % p.step_y == 0 && ty / p.step_y < p.ny) return true;
    }
    return false;
}

// ds[n, t, y, x]: the sum over the (frame, bin) pairs whose bin centre is (y, x).
INV_HD float dsift_sample_backward_at(const DsiftParams& p, const float* dd, index_t n, index_t t,
                                      index_t y, index_t x) {
    const index_t D = p.D(), F = p.ny * p.nx;
    float acc = 0.0f;
    for (index_t by = 0; by < p.nbin; ++by) {
        const index_t ty = y - p.y0 - by * p.bin_size;
        if (ty < 0 || ty % p.step_y) continue;
        const index_t fy = ty / p.step_y;
        if (fy >= p.ny) continue;
        for (index_t bx = 0; bx < p.nbin; ++bx) {
            const index_t tx = x - p.x0 - bx * p.bin_size;
            if (tx < 0 || tx % p.step_x) continue;
            const index_t fx = tx / p.step_x;
            if (fx >= p.nx) continue;
            const index_t c = (by * p.nbin + bx) * p.K + t;
            acc += dsift_bin_weight(p, bx, by) * dd[(n * D + c) * F + fy * p.nx + fx];
        }
    }
    return acc;
}

// ------------------------------------------------------------- normalize
// The norm VLFeat divides by (_vl_dsift_normalize_histogram): fast_sqrt(sum of
// squares, in channel order) + VL_EPSILON_F. Returns the root part (0 below
// the fast sqrt's floor of 1e-8).
INV_HD float dsift_root(float sum_sq) { return dsift_fast_sqrt(sum_sq); }

// L descriptors side by side (lane j at dp[c * cs + j]; one lane on the GPU,
// a contiguous run of frames on the CPU so the inner loops vectorise). Sums
// run in channel order, as VLFeat's. Writes |d| and |v| of lane j to r1[j],
// r2[j], which also hold the running sums.
INV_HD void dsift_normalize_forward_lanes(const DsiftParams& p, const float* dp, float* yp,
                                          index_t cs, index_t L, float* r1, float* r2) {
    const index_t D = p.D();
    for (index_t j = 0; j < L; ++j) r1[j] = 0.0f;
    for (index_t c = 0; c < D; ++c)
        for (index_t j = 0; j < L; ++j) r1[j] += dp[c * cs + j] * dp[c * cs + j];
    for (index_t j = 0; j < L; ++j) {
        r1[j] = dsift_root(r1[j]);
        r2[j] = 0.0f;
    }
    for (index_t c = 0; c < D; ++c)
        for (index_t j = 0; j < L; ++j) {
            const float v = fminf(dp[c * cs + j] / (r1[j] + kDsiftEps), p.clamp);
            yp[c * cs + j] = v;
            r2[j] += v * v;
        }
    for (index_t j = 0; j < L; ++j) r2[j] = p.second_l2 ? dsift_root(r2[j]) : 0.0f;
    if (p.second_l2)
        for (index_t c = 0; c < D; ++c)
            for (index_t j = 0; j < L; ++j) yp[c * cs + j] /= r2[j] + kDsiftEps;
}

// One descriptor: dp, yp point at its channel 0, channels `cs` floats apart.
// The sums run in locals (registers on the GPU once inlined), not in *r1, *r2.
INV_HD void dsift_normalize_forward_at(const DsiftParams& p, const float* dp, float* yp,
                                       index_t cs, float* r1, float* r2) {
    float n1, n2;
    dsift_normalize_forward_lanes(p, dp, yp, cs, 1, &n1, &n2);
    *r1 = n1;
    *r2 = n2;
}

// Gradient of one descriptor. With n = r + eps, y = v / n has
// dv = dy / n - v (v . dy) / (n^2 r) (the second term only where r > 0);
// the clamp passes the gradient where u <= clamp (VLFeat clamps u > clamp).
INV_HD void dsift_normalize_backward_at(const DsiftParams& p, const float* dp, const float* dyp,
                                        float* ddp, index_t cs, float r1, float r2) {
    const index_t D = p.D();
    const float n1 = r1 + kDsiftEps, n2 = r2 + kDsiftEps;
    float dot_v = 0.0f;
    if (p.second_l2 && r2 > 0.0f)
        for (index_t c = 0; c < D; ++c) dot_v += fminf(dp[c * cs] / n1, p.clamp) * dyp[c * cs];
    const float k2 = (p.second_l2 && r2 > 0.0f) ? dot_v / (n2 * n2 * r2) : 0.0f;
    const float inv2 = p.second_l2 ? 1.0f / n2 : 1.0f;
    // du, written into ddp, then its dot with d
    float dot_d = 0.0f;
    for (index_t c = 0; c < D; ++c) {
        const float u = dp[c * cs] / n1;
        const float v = fminf(u, p.clamp);
        const float du = u <= p.clamp ? dyp[c * cs] * inv2 - v * k2 : 0.0f;
        ddp[c * cs] = du;
        dot_d += dp[c * cs] * du;
    }
    const float k1 = r1 > 0.0f ? dot_d / (n1 * n1 * r1) : 0.0f;
    for (index_t c = 0; c < D; ++c) ddp[c * cs] = ddp[c * cs] / n1 - dp[c * cs] * k1;
}

}  // namespace invert_native
