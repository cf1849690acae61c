// Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms
// for Convolutional Neural Networks", 2016) for 3x3 stride-1 convolutions:
// every 2x2 block of outputs (a tile) comes from a 4x4 input patch d as
//   Y = A^T [ (G g G^T) (.) (B^T d B) ] A,
// so that the products over the channels become 16 SGEMMs (one per position
// of the 4x4 transformed tile) of 16 instead of 36 multiply-adds per 2x2
// outputs: 2.25x fewer flops, less the transforms and the tiles that overhang
// odd sizes (13x13 outputs: 7x7 tiles, 1.9x).
//
// Backward to the input is the same computation: dx is the 3x3 correlation of
// dy, padded by 2 - pad, with the filters flipped and their channel axes
// swapped.
//
// The transforms use only additions and multiplications by 1/2, and every
// output element is computed by one thread in a fixed order: results do not
// depend on the thread count, and an image gets the same bits in any batch
// that takes this path. They differ from the im2col + SGEMM path in float32
// rounding (the sums are grouped differently, as any two convolution
// algorithms' are): an image alone (too few tiles for this path) and the same
// image in a batch of 8 differ in the last bits. Tests hold the error to
// float32 rounding against float64.
#include "conv2d_winograd.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "env_flag.h"
#include "gemm.h"
#include "invert_native/ops.h"

namespace invert_native {
namespace {

// Tiles per pass: bounds the workspace of large images; small ones (CaffeNet
// conv3-5, 7x7 tiles an image) take the whole batch of 8 restarts in one pass.
constexpr index_t kChunkTiles = 512;

// Floats from one of the 16 transformed matrices to the next: n rounded so
// that the 16 are not a multiple of 4 KiB apart. (Each tile writes or reads
// one float of every matrix; 4 KiB apart, as conv3's 384 x 392 are, all 16
// fall into the same L1 set: the input transform measured 5x slower.)
inline index_t plane_step(index_t n) { return (n + 15) / 16 * 16 + 16; }

// One 3x3 correlation layer as Winograd sees it: Ci input planes Hx x Wx,
// Ko output planes Hy x Wy, zero padding (ph, pw).
struct Wino {
    index_t Ci, Hx, Wx, Ko, Hy, Wy, ph, pw;
    index_t th() const { return (Hy + 1) / 2; }
    index_t tw() const { return (Wy + 1) / 2; }
    index_t tiles() const { return th() * tw(); }  // per image
};

Wino forward_shape(const Conv2dParams& p) {
    return {p.Cg(), p.H, p.W, p.Kg(), p.Ho, p.Wo, p.pad_h, p.pad_w};
}
Wino backward_shape(const Conv2dParams& p) {
    return {p.Kg(), p.Ho, p.Wo, p.Cg(), p.H, p.W, 2 - p.pad_h, 2 - p.pad_w};
}

// U[e * su + o * Ci + i] = (G g G^T)[e] for the 3x3 filter g = filter(o, i) (read by `at`),
// G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
template <class Filter>
void transform_filters(index_t Ko, index_t Ci, Filter at, float* U, index_t su) {
#pragma omp parallel for schedule(static)
    for (index_t o = 0; o < Ko; ++o)
        for (index_t i = 0; i < Ci; ++i) {
            float g[3][3], t[4][3];
            for (int u = 0; u < 3; ++u)
                for (int v = 0; v < 3; ++v) g[u][v] = at(o, i, u, v);
            for (int v = 0; v < 3; ++v) {  // t = G g
                t[0][v] = g[0][v];
                t[1][v] = 0.5f * ((g[0][v] + g[1][v]) + g[2][v]);
                t[2][v] = 0.5f * ((g[0][v] - g[1][v]) + g[2][v]);
                t[3][v] = g[2][v];
            }
            const std::size_t step = std::size_t(su);
            for (int r = 0; r < 4; ++r) {  // (G g) G^T
                float* e = U + (r * 4) * step + o * Ci + i;
                e[0] = t[r][0];
                e[step] = 0.5f * ((t[r][0] + t[r][1]) + t[r][2]);
                e[2 * step] = 0.5f * ((t[r][0] - t[r][1]) + t[r][2]);
                e[3 * step] = t[r][2];
            }
        }
}

// Calls f(n, ty, tx, t) for the tiles t in [t0, t1), in order (tile t of the
// pass is tile (ty, tx) of image n: t = (n * th + ty) * tw + tx). The loops
// go image by image and row by row, so that no tile costs a division
// (OpenMP's collapsed loops over planes and tiles divided on every one).
template <class F>
inline void for_tiles(const Wino& s, index_t t0, index_t t1, F f) {
    const index_t th = s.th(), tw = s.tw(), per = s.tiles();
    for (index_t n = t0 / per; n <= (t1 - 1) / per; ++n)
        for (index_t ty = 0; ty < th; ++ty) {
            const index_t tbase = (n * th + ty) * tw;
            if (tbase + tw <= t0 || tbase >= t1) continue;
            for (index_t tx = std::max<index_t>(0, t0 - tbase); tx < tw && tbase + tx < t1; ++tx)
                f(n, ty, tx, tbase + tx);
        }
}

// V[e][i][t - t0] = (B^T d B)[e] for the 4x4 patch d of input plane i under
// tile t (x image n at x + n * xs), B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
// Parallel over the planes, tiles in order inside.
void transform_input(const Wino& s, const float* x, index_t xs, index_t t0, index_t t1,
                     float* V) {
    const index_t T = t1 - t0;
    const std::size_t step = std::size_t(plane_step(s.Ci * T));
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < s.Ci; ++i)
        for_tiles(s, t0, t1, [&](index_t n, index_t ty, index_t tx, index_t t) {
            const float* plane = x + n * xs + i * s.Hx * s.Wx;
            const index_t y0 = 2 * ty - s.ph, x0 = 2 * tx - s.pw;
            float d[4][4];
            if (y0 >= 0 && y0 + 4 <= s.Hx && x0 >= 0 && x0 + 4 <= s.Wx) {
                for (int r = 0; r < 4; ++r)
                    for (int c = 0; c < 4; ++c) d[r][c] = plane[(y0 + r) * s.Wx + x0 + c];
            } else {
                for (int r = 0; r < 4; ++r) {
                    const index_t iy = y0 + r;
                    for (int c = 0; c < 4; ++c) {
                        const index_t ix = x0 + c;
                        d[r][c] = iy >= 0 && iy < s.Hx && ix >= 0 && ix < s.Wx
                                      ? plane[iy * s.Wx + ix]
                                      : 0.0f;
                    }
                }
            }
            float b[4][4];
            for (int c = 0; c < 4; ++c) {  // B^T d
                b[0][c] = d[0][c] - d[2][c];
                b[1][c] = d[1][c] + d[2][c];
                b[2][c] = d[2][c] - d[1][c];
                b[3][c] = d[1][c] - d[3][c];
            }
            float* e = V + i * T + (t - t0);
            for (int r = 0; r < 4; ++r) {  // (B^T d) B
                e[(r * 4 + 0) * step] = b[r][0] - b[r][2];
                e[(r * 4 + 1) * step] = b[r][1] + b[r][2];
                e[(r * 4 + 2) * step] = b[r][2] - b[r][1];
                e[(r * 4 + 3) * step] = b[r][1] - b[r][3];
            }
        });
}

// y (image n at y + n * ys) = A^T m A for the 4x4 products m = M[.][o][t - t0]
// of each tile, cropped to the plane, plus bias[o]; A^T = [1 1 1 0; 0 1 -1 -1].
void transform_output(const Wino& s, const float* M, index_t t0, index_t t1, const float* bias,
                      float* y, index_t ys) {
    const index_t T = t1 - t0;
    const std::size_t step = std::size_t(plane_step(s.Ko * T));
#pragma omp parallel for schedule(static)
    for (index_t o = 0; o < s.Ko; ++o)
        for_tiles(s, t0, t1, [&](index_t n, index_t ty, index_t tx, index_t t) {
            float* plane = y + n * ys + o * s.Hy * s.Wy;
            const float* e = M + o * T + (t - t0);
            float m[4][4];
            for (int k = 0; k < 16; ++k) m[k / 4][k % 4] = e[k * step];
            float a[2][4];
            for (int c = 0; c < 4; ++c) {  // A^T m
                a[0][c] = (m[0][c] + m[1][c]) + m[2][c];
                a[1][c] = (m[1][c] - m[2][c]) - m[3][c];
            }
            for (int r = 0; r < 2; ++r) {
                const index_t oy = 2 * ty + r;
                if (oy >= s.Hy) break;
                const float v0 = (a[r][0] + a[r][1]) + a[r][2];  // (A^T m) A
                const float v1 = (a[r][1] - a[r][2]) - a[r][3];
                plane[oy * s.Wy + 2 * tx] = bias ? v0 + bias[o] : v0;
                if (2 * tx + 1 < s.Wy)
                    plane[oy * s.Wy + 2 * tx + 1] = bias ? v1 + bias[o] : v1;
            }
        });
}

std::size_t chunk_floats(const Wino& s, index_t N) {
    const index_t T = std::min(kChunkTiles, N * s.tiles());
    return std::size_t(16 * (plane_step(s.Ci * T) + plane_step(s.Ko * T)));
}

// The filter transforms of a layer, kept between calls (the inversion loop
// calls every layer with the same weights; transforming conv3's measured
// 0.46 ms a call, a third of its batch-1 forward). An entry is reused only
// when the weights equal, bit for bit, the copy it was made from, so weights
// changed in place (or new weights at a freed address) are transformed anew.
// Per thread, at most kCacheEntries layers, least recently used evicted.
// One transform serves both directions: turning a filter by 180 degrees
// swaps rows and columns 0 and 3 of its transform (G J = P G, J reversing the
// 3 taps and P swapping rows 0 and 3 of G), so backward multiplies by the
// transposes of the forward matrices, at permuted positions.
constexpr std::size_t kCacheEntries = 16;

struct CachedFilters {
    const float* key = nullptr;
    index_t K = 0, Cg = 0, groups = 0;
    index_t mode[4] = {};     // {0, 0, 0, 0} a 3x3 layer's; phases: {sh, sw, Ph, Qw}
    std::vector<float> copy;  // the weights it was made from
    std::vector<float> U;     // group g, position e: U + (g * 16 + e) * su, [Kg x Cg]
    unsigned long long used = 0;
};
thread_local std::vector<CachedFilters> filter_cache;
thread_local unsigned long long filter_clock = 0;

// Whether a[0, n) and b[0, n) hold the same bits; both threads compare
// (single-threaded, conv3's 3.5 MB took 0.28 ms, a quarter of its forward).
bool same_bits(const float* a, const float* b, std::size_t n) {
    constexpr index_t parts = 16;
    bool same = true;
#pragma omp parallel for schedule(static) reduction(&& : same)
    for (index_t k = 0; k < parts; ++k) {
        const std::size_t lo = n * k / parts, hi = n * (k + 1) / parts;
        if (std::memcmp(a + lo, b + lo, (hi - lo) * sizeof(float)) != 0) same = false;
    }
    return same;
}

// The cache entry for the weights w of layer p, transformed (on a miss) by
// make(U) into p.groups * 16 matrices of su floats; mode tells transforms of
// one layer's weights apart (the plain 3x3 filters, or a strided layer's phases).
template <class Make>
const float* cached_filters(const Conv2dParams& p, const float* w, const index_t (&mode)[4],
                            index_t su, Make make) {
    const index_t Cg = p.Cg();
    const std::size_t n = std::size_t(p.K * Cg * p.kh * p.kw);
    ++filter_clock;
    for (CachedFilters& c : filter_cache)
        if (c.key == w && c.K == p.K && c.Cg == Cg && c.groups == p.groups &&
            std::equal(mode, mode + 4, c.mode) && c.copy.size() == n &&
            same_bits(c.copy.data(), w, n)) {
            c.used = filter_clock;
            return c.U.data();
        }
    if (filter_cache.size() < kCacheEntries) filter_cache.emplace_back();
    CachedFilters* slot = &filter_cache[0];
    for (CachedFilters& c : filter_cache)
        if (c.used < slot->used) slot = &c;
    slot->key = w;
    slot->K = p.K;
    slot->Cg = Cg;
    slot->groups = p.groups;
    std::copy(mode, mode + 4, slot->mode);
    slot->used = filter_clock;
    slot->copy.assign(w, w + n);
    slot->U.resize(std::size_t(p.groups * 16 * su));
    make(slot->U.data());
    return slot->U.data();
}

// U[(g * 16 + e) * su + k * Cg + c] = (G w[g*Kg + k, c] G^T)[e]
const float* transformed_filters(const Conv2dParams& p, const float* w, index_t su) {
    const index_t Kg = p.Kg(), Cg = p.Cg();
    const index_t mode[4] = {0, 0, 0, 0};
    return cached_filters(p, w, mode, su, [&](float* U) {
        for (index_t g = 0; g < p.groups; ++g) {
            const float* wg = w + g * Kg * Cg * 9;
            transform_filters(Kg, Cg,
                              [wg, Cg](index_t o, index_t i, int u, int v) {
                                  return wg[(o * Cg + i) * 9 + u * 3 + v];
                              },
                              U + g * 16 * su, su);
        }
    });
}

// All groups: y_g = the correlation of x_g with the filters of U_g (position
// e: U_g + e' * su with e' = e, or for `turned` the transpose at the position
// whose rows and columns 0 and 3 are swapped), in passes of at most
// kChunkTiles tiles.
void run(const Wino& s, index_t N, index_t groups, const float* x, index_t xs, index_t xg,
         const float* U, index_t su, bool turned, const float* bias, float* y, index_t ys,
         index_t yg, float* ws) {
    const index_t total = N * s.tiles();
    const index_t chunk = std::min(kChunkTiles, total);
    float* V = ws;
    float* M = V + 16 * plane_step(s.Ci * chunk);
    for (index_t g = 0; g < groups; ++g) {
        const float* Ug = U + g * 16 * su;
        for (index_t t0 = 0; t0 < total; t0 += chunk) {
            const index_t t1 = std::min(total, t0 + chunk), T = t1 - t0;
            transform_input(s, x + g * xg, xs, t0, t1, V);
            for (index_t e = 0; e < 16; ++e) {
                float* Me = M + e * plane_step(s.Ko * T);
                const float* Ve = V + e * plane_step(s.Ci * T);
                if (turned) {
                    const index_t r = e / 4, c = e % 4;
                    const index_t f = (r == 0 ? 3 : r == 3 ? 0 : r) * 4 + (c == 0 ? 3 : c == 3 ? 0 : c);
                    // U_g[f] is [Ci x Ko] (the forward's Kg x Cg): its transpose
                    sgemm(true, false, s.Ko, T, s.Ci, 1.0f, Ug + f * su, s.Ko, Ve, T, 0.0f, Me, T);
                } else {
                    sgemm(false, false, s.Ko, T, s.Ci, 1.0f, Ug + e * su, s.Ci, Ve, T, 0.0f, Me, T);
                }
            }
            transform_output(s, M, t0, t1, bias ? bias + g * s.Ko : nullptr, y + g * yg, ys);
        }
    }
}

}  // namespace

// Worth it where the 16 products are real matrix products: enough channels
// each side, and enough tiles in the call (measured in the CaffeNet loop: at
// 13x13, 49 tiles an image, one image ran 10-40 % slower than im2col + SGEMM,
// the filter transforms and their check costing more than the products save;
// two images already 10-25 % faster, eight 30-45 %). A 3x3 stride-1 layer
// whose padding backward can mirror (<= 2). INVERT_NATIVE_NO_WINOGRAD=1 turns
// it off (read once).
constexpr index_t kMinChannels = 32;
constexpr index_t kMinTiles = 96;

bool conv2d_uses_winograd(const Conv2dParams& p) {
    static const bool off = env_flag("INVERT_NATIVE_NO_WINOGRAD");
    if (off || p.kh != 3 || p.kw != 3 || p.stride_h != 1 || p.stride_w != 1 || p.pad_h > 2 ||
        p.pad_w > 2 || p.Cg() < kMinChannels || p.Kg() < kMinChannels || p.Ho < 2 || p.Wo < 2)
        return false;
    const index_t tiles = ((p.Ho + 1) / 2) * ((p.Wo + 1) / 2);
    return tiles >= (kMinTiles + p.N - 1) / p.N;  // N * tiles >= kMinTiles, without overflow
}

std::size_t winograd_workspace_size(const Conv2dParams& p) {
    return std::max(chunk_floats(forward_shape(p), p.N), chunk_floats(backward_shape(p), p.N));
}

void winograd_conv2d_forward(const Conv2dParams& p, const float* x, const float* w,
                             const float* b, float* y, float* workspace) {
    const index_t su = plane_step(p.Kg() * p.Cg());
    const float* U = transformed_filters(p, w, su);
    run(forward_shape(p), p.N, p.groups, x, p.C * p.H * p.W, p.Cg() * p.H * p.W, U, su, false, b,
        y, p.K * p.Ho * p.Wo, p.Kg() * p.Ho * p.Wo, workspace);
}

void winograd_conv2d_backward(const Conv2dParams& p, const float* dy, const float* w, float* dx,
                              float* workspace) {
    const index_t su = plane_step(p.Kg() * p.Cg());
    const float* U = transformed_filters(p, w, su);
    run(backward_shape(p), p.N, p.groups, dy, p.K * p.Ho * p.Wo, p.Kg() * p.Ho * p.Wo, U, su, true,
        nullptr, dx, p.C * p.H * p.W, p.Cg() * p.H * p.W, workspace);
}

// ---- Backward of a strided layer by phases ----------------------------------
//
// conv2d.cpp's backward by phases computes each phase plane (c, a, b) of dx
// as a stride-1 correlation of dy with that phase's taps. With 3 taps a phase
// along each axis (conv1: 11 taps at stride 4 give 3, 3, 3, 2), all
// M = Cg * sh * sw phase planes are one 3x3 correlation of the Kg planes of
// dy, with filters g[(c, a, b), k][u][v] = W[k, c, sh*(2-u) + a, sw*(2-v) + b]
// (zero past the kernel) and padding (2 - t0, 2 - s0): Winograd computes it
// with 16 instead of 36 multiply-adds per 2x2 outputs, against the 27.5 that
// conv1's product by tap classes makes (132 taps for 48 phases of 4 outputs).
//
// Unlike the layer path above (16 SGEMMs over the whole call, planes and
// tiles in NCHW order), this one is laid out for the conv1 shape: 841 tiles
// an image, 96 channels, 48 phase planes. Channels are innermost (dy copied
// once into a padded [rows][columns][channels] image), so both transforms
// run on vectors of 8 channels with contiguous loads and stores; each thread
// owns a range of tile rows and runs blocks of them through the input
// transform, 16 small products on its own (sgemm_packed_b, the transformed
// filters packed once), the output transform and its share of dx, without
// a barrier. Each dx element comes from one tile's sums, computed the same
// way whichever block or thread holds it: results do not depend on the
// thread count or on the batch.

namespace {

typedef float v8 __attribute__((vector_size(32), aligned(4)));

inline v8 load8(const float* p) { return *reinterpret_cast<const v8*>(p); }
inline void store8(float* p, v8 v) { *reinterpret_cast<v8*>(p) = v; }

inline index_t round8(index_t n) { return (n + 7) / 8 * 8; }

// Tiles per block: about 128 (whole tile rows), so that a block's 16
// transformed matrices and 16 products stay in L2.
constexpr index_t kBlockTiles = 128;

struct PhaseWino {
    index_t Kg, Kp;     // dy channels, rounded up to 8
    index_t M, Mp;      // phase planes, rounded up to 8
    index_t th, tw;     // tile rows and columns
    index_t ph, pw;     // the correlation's padding
    index_t R;          // tile rows per block
    index_t Dh, Dw;     // padded channel-last dy: Dh rows of Dw pixels of Kp floats
    index_t vstep, cstep;  // floats from one transformed matrix to the next (V, products)
    index_t scratch() const { return 16 * (vstep + cstep) + 2 * R * 2 * tw * Mp; }
};

PhaseWino phase_wino(const Conv2dParams& p, const PhaseGrid& q) {
    PhaseWino s;
    s.Kg = p.Kg();
    s.Kp = round8(s.Kg);
    s.M = p.Cg() * q.sh * q.sw;
    s.Mp = round8(s.M);
    s.th = (q.Tt + 1) / 2;
    s.tw = (q.Tw + 1) / 2;
    s.ph = q.Ph - 1 - q.t0;
    s.pw = q.Qw - 1 - q.s0;
    s.R = std::max<index_t>(1, std::min(s.th, kBlockTiles / s.tw));
    s.Dh = 2 * s.th + 2;
    s.Dw = 2 * s.tw + 2;
    const index_t bt = s.R * s.tw;  // tiles of a block (at most)
    s.vstep = plane_step(bt * s.Kp);
    s.cstep = plane_step(bt * s.Mp);
    return s;
}

// Per-thread scratch of the blocks (V, products, phase rows), kept between calls.
thread_local std::vector<float> phase_scratch;

// D[y][x][k] = dy[k, y - ph, x - pw] (0 outside, and for k >= Kg), rows [y0, y1).
void pad_channels_last(const Conv2dParams& p, const PhaseWino& s, const float* dyg,
                       index_t y0, index_t y1, float* D) {
    for (index_t y = y0; y < y1; ++y) {
        float* row = D + y * s.Dw * s.Kp;
        const index_t iy = y - s.ph;
        std::memset(row, 0, std::size_t(s.Dw * s.Kp) * sizeof(float));
        if (iy < 0 || iy >= p.Ho) continue;
        const index_t x0 = std::max<index_t>(0, s.pw), x1 = std::min(s.Dw, p.Wo + s.pw);
        for (index_t k = 0; k < s.Kg; ++k) {
            const float* src = dyg + (k * p.Ho + iy) * p.Wo - s.pw;
            for (index_t x = x0; x < x1; ++x) row[x * s.Kp + k] = src[x];
        }
    }
}

// V[e][t][k] = (B^T d B)[e] of the 4x4 patch of tile t = (ty - ty0) * tw + tx.
void input_tiles(const PhaseWino& s, const float* D, index_t ty0, index_t ty1, float* V) {
    const index_t px = s.Kp, row = s.Dw * s.Kp;
    for (index_t ty = ty0; ty < ty1; ++ty)
        for (index_t tx = 0; tx < s.tw; ++tx) {
            const float* base = D + 2 * ty * row + 2 * tx * px;
            float* out = V + ((ty - ty0) * s.tw + tx) * s.Kp;
            for (index_t k = 0; k < s.Kp; k += 8) {
                v8 d[4][4];
                for (int r = 0; r < 4; ++r)
                    for (int c = 0; c < 4; ++c) d[r][c] = load8(base + r * row + c * px + k);
                v8 b[4][4];
                for (int c = 0; c < 4; ++c) {  // B^T d
                    b[0][c] = d[0][c] - d[2][c];
                    b[1][c] = d[1][c] + d[2][c];
                    b[2][c] = d[2][c] - d[1][c];
                    b[3][c] = d[1][c] - d[3][c];
                }
                float* e = out + k;
                for (int r = 0; r < 4; ++r) {  // (B^T d) B
                    store8(e + (r * 4 + 0) * s.vstep, b[r][0] - b[r][2]);
                    store8(e + (r * 4 + 1) * s.vstep, b[r][1] + b[r][2]);
                    store8(e + (r * 4 + 2) * s.vstep, b[r][2] - b[r][1]);
                    store8(e + (r * 4 + 3) * s.vstep, b[r][1] - b[r][3]);
                }
            }
        }
}

// P[y][x][o] (rows 2 * (ty - ty0) + r, columns 2 * tx + c) = (A^T m A)[r][c]
// of the products m = C[.][t][o] of each tile.
void output_tiles(const PhaseWino& s, const float* C, index_t ty0, index_t ty1, float* P) {
    const index_t prow = 2 * s.tw * s.Mp;
    for (index_t ty = ty0; ty < ty1; ++ty)
        for (index_t tx = 0; tx < s.tw; ++tx) {
            const float* in = C + ((ty - ty0) * s.tw + tx) * s.Mp;
            float* out = P + 2 * (ty - ty0) * prow + 2 * tx * s.Mp;
            for (index_t o = 0; o < s.Mp; o += 8) {
                v8 m[4][4];
                for (int k = 0; k < 16; ++k) m[k / 4][k % 4] = load8(in + k * s.cstep + o);
                v8 a[2][4];
                for (int c = 0; c < 4; ++c) {  // A^T m
                    a[0][c] = (m[0][c] + m[1][c]) + m[2][c];
                    a[1][c] = (m[1][c] - m[2][c]) - m[3][c];
                }
                for (int r = 0; r < 2; ++r) {  // (A^T m) A
                    store8(out + r * prow + o, (a[r][0] + a[r][1]) + a[r][2]);
                    store8(out + r * prow + s.Mp + o, (a[r][1] - a[r][2]) - a[r][3]);
                }
            }
        }
}

// dx rows of one image's group whose phase row t lies in [t_lo, t_hi) (the
// block's), from P (phase row t at P + (t - t_lo) * 2 * tw * Mp): dx[c, r, x]
// is phase (c, a, b) at grid point (t, j) for r + pad_h = sh * (t0 + t) + a
// and x + pad_w = sw * (s0 + j) + b.
void scatter_rows(const Conv2dParams& p, const PhaseGrid& q, const PhaseWino& s, const float* P,
                  index_t t_lo, index_t t_hi, float* dxg) {
    const index_t prow = 2 * s.tw * s.Mp;
    for (index_t t = t_lo; t < std::min(t_hi, q.Tt); ++t)
        for (index_t a = 0; a < q.sh; ++a) {
            const index_t r = q.sh * (q.t0 + t) + a - p.pad_h;
            if (r < 0 || r >= p.H) continue;
            const float* prow_t = P + (t - t_lo) * prow;
            for (index_t c = 0; c < p.Cg(); ++c) {
                float* d = dxg + (c * p.H + r) * p.W;
                const float* src = prow_t + (c * q.sh + a) * q.sw;
                // x = sw * (s0 + j) + b - pw for grid columns j
                for (index_t j = 0; j < q.Tw; ++j) {
                    const index_t x0 = q.sw * (q.s0 + j) - p.pad_w;
                    const float* sj = src + j * s.Mp;
                    for (index_t b = 0; b < q.sw; ++b) {
                        const index_t x = x0 + b;
                        if (x >= 0 && x < p.W) d[x] = sj[b];
                    }
                }
            }
        }
}

}  // namespace

bool winograd_phases_usable(const Conv2dParams& p, const PhaseGrid& q) {
    static const bool off = env_flag("INVERT_NATIVE_NO_WINOGRAD");
    return !off && q.Ph == 3 && q.Qw == 3 && p.Kg() >= kMinChannels &&
           p.Cg() * q.sh * q.sw >= 16 && q.Tt >= 2 && q.Tw >= 2;
}

std::size_t winograd_phases_workspace_size(const Conv2dParams& p, const PhaseGrid& q) {
    const PhaseWino s = phase_wino(p, q);
    return std::size_t(s.Dh * s.Dw * s.Kp);
}

void winograd_phases_backward(const Conv2dParams& p, const PhaseGrid& q, const float* dy,
                              const float* w, float* dx, float* workspace) {
    const PhaseWino s = phase_wino(p, q);
    const index_t Cg = p.Cg(), Kg = s.Kg;
    const std::size_t su = sgemm_packed_b_floats(s.Kp, s.Mp);
    const index_t mode[4] = {q.sh, q.sw, q.Ph, q.Qw};
    // U of group g, position e: the filters' transforms as the product's B
    // [Kp x Mp] (B[k][o] = U_e[o][k]), packed, at U + (g * 16 + e) * su.
    const float* U = cached_filters(p, w, mode, index_t(su), [&](float* U) {
        const index_t tu = s.Mp * s.Kp;
        std::vector<float> t(std::size_t(16 * tu));
        for (index_t g = 0; g < p.groups; ++g) {
            const float* wg = w + g * Kg * Cg * p.kh * p.kw;
            transform_filters(s.Mp, s.Kp,
                              [&](index_t o, index_t k, int u, int v) {
                                  if (o >= s.M || k >= Kg) return 0.0f;
                                  const index_t c = o / (q.sh * q.sw), a = o / q.sw % q.sh;
                                  const index_t b = o % q.sw;
                                  const index_t ku = q.sh * (2 - u) + a;
                                  const index_t kv = q.sw * (2 - v) + b;
                                  return ku < p.kh && kv < p.kw
                                             ? wg[((k * Cg + c) * p.kh + ku) * p.kw + kv]
                                             : 0.0f;
                              },
                              t.data(), tu);
            for (index_t e = 0; e < 16; ++e)
                sgemm_pack_b(s.Kp, s.Mp, t.data() + e * tu, s.Kp, true,
                             U + (g * 16 + e) * index_t(su));
        }
    });
    float* D = workspace;
    const index_t xs = p.C * p.H * p.W, ys = p.K * p.Ho * p.Wo;
    for (index_t n = 0; n < p.N; ++n)
        for (index_t g = 0; g < p.groups; ++g) {
            const float* dyg = dy + n * ys + g * Kg * p.Ho * p.Wo;
            float* dxg = dx + n * xs + g * Cg * p.H * p.W;
            const float* Ug = U + g * 16 * index_t(su);
#pragma omp parallel
            {
                const index_t nt = omp_get_num_threads(), th = omp_get_thread_num();
#pragma omp for schedule(static)
                for (index_t y = 0; y < s.Dh; ++y) pad_channels_last(p, s, dyg, y, y + 1, D);
                // (the barrier: every thread's tiles read rows the others wrote)
                if (phase_scratch.size() < std::size_t(s.scratch()))
                    phase_scratch.resize(std::size_t(s.scratch()));
                float* V = phase_scratch.data();
                float* C = V + 16 * s.vstep;
                float* P = C + 16 * s.cstep;
                const index_t r0 = s.th * th / nt, r1 = s.th * (th + 1) / nt;
                for (index_t ty0 = r0; ty0 < r1; ty0 += s.R) {
                    const index_t ty1 = std::min(r1, ty0 + s.R), tiles = (ty1 - ty0) * s.tw;
                    input_tiles(s, D, ty0, ty1, V);
                    for (index_t e = 0; e < 16; ++e)
                        sgemm_packed_b(tiles, s.Mp, s.Kp, V + e * s.vstep, s.Kp, Ug + e * su,
                                       C + e * s.cstep, s.Mp);
                    output_tiles(s, C, ty0, ty1, P);
                    scatter_rows(p, q, s, P, 2 * ty0, 2 * ty1, dxg);
                }
            }
        }
}

}  // namespace invert_native
