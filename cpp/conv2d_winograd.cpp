// Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms
// for Convolutional Neural Networks", 2016) for the CPU's 3x3 correlations:
// every 2x2 block of outputs (a tile) comes from a 4x4 input patch d as
//   Y = A^T [ (G g G^T) (.) (B^T d B) ] A,
// so that the products over the channels become 16 matrix products (one per
// position of the 4x4 transformed tile) of 16 instead of 36 multiply-adds per
// 2x2 outputs: 2.25x fewer flops, less the transforms and the tiles that
// overhang odd sizes (13x13 outputs: 7x7 tiles, 1.9x).
//
// Its users: a 3x3 stride-1 layer's forward (CaffeNet conv3-conv5), and its
// backward to the input, the 3x3 correlation of dy, padded by 2 - pad, with
// the filters turned by 180 degrees and their channel axes swapped; a strided
// layer whose phases (conv2d.cpp) have 3 taps along each axis (CaffeNet conv1:
// 11 taps at stride 4), whose forward is a 3x3 correlation of the input's
// phase planes and whose backward gives every phase plane of dx as an output
// plane of a 3x3 correlation of dy; and a larger stride-1 kernel's forward
// (conv2: 5x5) as a 3x3 correlation of shifted copies of the input.
//
// Layout, for one thread per block of tile rows: the input is copied once
// into a padded [rows][columns][channels] image (channels innermost, rounded
// up to 8), so that both transforms run on vectors of 8 channels with
// contiguous loads and stores; each thread owns a range of tile rows and runs
// blocks of them through the input transform, 16 small products on its own
// (sgemm_packed_b, the transformed filters packed once and cached), the
// output transform and the write of its outputs, without a barrier. (A first
// version, 16 multithreaded SGEMMs over all tiles of the call with planes and
// tiles in NCHW order, needed 96 tiles a call to beat im2col; this one is
// 25-30 % faster than im2col at one 13x13 image and 5-20 % faster than the
// first version at 8: benchmarks/NOTES.md.)
//
// The transforms use only additions and multiplications by 1/2, and every
// output comes from one tile's sums, computed the same way whichever block
// or thread holds it: results depend neither on the thread count nor on the
// batch. They differ from the im2col + SGEMM path in float32 rounding (the
// sums are grouped differently, as any two convolution algorithms' are);
// tests hold the error to float32 rounding against float64.
#include "conv2d_winograd.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "env_flag.h"
#include "gemm.h"
#include "invert_native/ops.h"

namespace invert_native {
namespace {

// Floats from one of the 16 transformed matrices to the next: n rounded so
// that the 16 are not a multiple of 4 KiB apart. (Each tile writes or reads
// 8 floats of every matrix at once; 4 KiB apart, all 16 would fall into the
// same L1 set: an earlier layout's input transform measured 5x slower so.)
inline index_t plane_step(index_t n) { return (n + 15) / 16 * 16 + 16; }

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

// The filter transforms of a layer, kept between calls (the inversion loop
// calls every layer with the same weights; transforming conv3's measured
// 0.46 ms a call, a third of its batch-1 forward). An entry is reused only
// when the weights equal, bit for bit, the copy it was made from, so weights
// changed in place (or new weights at a freed address) are transformed anew.
// Per thread, at most kCacheEntries entries, least recently used evicted;
// forward, backward and a strided layer's phases are entries of their own.
constexpr std::size_t kCacheEntries = 16;

struct CachedFilters {
    const float* key = nullptr;
    index_t K = 0, Cg = 0, groups = 0;
    index_t mode[4] = {};     // {-1, ..} 3x3 forward, {-2, ..} backward, phases {sh, sw, Ph, Qw}
    std::vector<float> copy;  // the weights it was made from
    std::vector<float> U;     // group g, position e: U + (g * 16 + e) * su, packed
    unsigned long long used = 0;
};
thread_local std::vector<CachedFilters> filter_cache;
thread_local unsigned long long filter_clock = 0;

// Whether a[0, n) and b[0, n) hold the same bits; both threads compare
// (single-threaded, conv3's 3.5 MB took 0.28 ms).
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
// one layer's weights apart.
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

// Channels below which a product is too thin for the transforms to pay.
constexpr index_t kMinChannels = 32;

typedef float v8 __attribute__((vector_size(32), aligned(4)));

inline v8 load8(const float* p) { return *reinterpret_cast<const v8*>(p); }
inline void store8(float* p, v8 v) { *reinterpret_cast<v8*>(p) = v; }

inline index_t round8(index_t n) { return (n + 7) / 8 * 8; }

// Tiles per block: about 128 (whole tile rows), so that a block's 16
// transformed matrices and 16 products stay in L2.
constexpr index_t kBlockTiles = 128;
// Tile rows a pass copies the inputs of (whole planes, at least this many
// rows in all), so that every thread gets some.
constexpr index_t kPassRows = 16;

// A 3x3 correlation of Ci input planes Hx x Wx into Ko output planes Hy x Wy,
// zero padding (ph, pw) (negative: rows or columns dropped), for each of
// `items` (image, group) pairs.
struct ClWino {
    index_t Ci, Kp;     // input channels, rounded up to 8
    index_t Ko, Mp;     // output channels, rounded up to 8
    index_t Hx, Wx, Hy, Wy, ph, pw;
    index_t th, tw;     // tile rows and columns
    index_t R;          // tile rows per block (at most)
    index_t Dh, Dw;     // padded channel-last input: Dh rows of Dw pixels of Kp floats
    index_t vstep, cstep;  // floats from one transformed matrix to the next (V, products)
    index_t items, pass;   // (image, group) pairs, and per pass
    index_t plane() const { return Dh * Dw * Kp; }
    index_t workspace() const { return pass * plane(); }  // floats of D a call needs
    index_t scratch() const { return 16 * (vstep + cstep) + 2 * R * 2 * tw * Mp; }
};

ClWino cl_wino(index_t Ci, index_t Hx, index_t Wx, index_t Ko, index_t Hy, index_t Wy,
               index_t ph, index_t pw, index_t items) {
    ClWino s;
    s.Ci = Ci;
    s.Kp = round8(Ci);
    s.Ko = Ko;
    s.Mp = round8(Ko);
    s.Hx = Hx;
    s.Wx = Wx;
    s.Hy = Hy;
    s.Wy = Wy;
    s.ph = ph;
    s.pw = pw;
    s.th = (Hy + 1) / 2;
    s.tw = (Wy + 1) / 2;
    s.R = std::max<index_t>(1, std::min(s.th, kBlockTiles / s.tw));
    s.Dh = 2 * s.th + 2;
    s.Dw = 2 * s.tw + 2;
    const index_t bt = s.R * s.tw;  // tiles of a block (at most)
    s.vstep = plane_step(bt * s.Kp);
    s.cstep = plane_step(bt * s.Mp);
    s.items = items;
    s.pass = std::min(items, (kPassRows + s.th - 1) / s.th);
    return s;
}

// Per-thread scratch of the blocks (V, products, output rows), kept between calls.
thread_local std::vector<float> cl_scratch;

#if defined(__AVX2__)
// dst[i * ld + j] = src_j[i] for i, j < 8, with src_j = src + j * ls: an
// 8 x 8 block transposed in registers (unpack, shuffle, swap halves).
inline void transpose8(const float* src, index_t ls, float* dst, index_t ld) {
    __m256 r[8], t[8];
    for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + j * ls);
    for (int j = 0; j < 8; j += 2) {
        t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
        t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
    }
    for (int j = 0; j < 8; j += 4) {
        r[j] = _mm256_shuffle_ps(t[j], t[j + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(dst + i * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(dst + (i + 4) * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
}
#endif

// row[x * Kp + k] = in[k, iy, x - pw] for k < C and the x in [x0, x1) that
// read inside the plane (Hx x Wx planes, row iy inside): a transpose of C
// input rows, by 8 x 8 blocks in registers (3x faster for conv1's dy than
// element by element).
void transpose_rows(const float* in, index_t C, index_t Hx, index_t Wx, index_t iy, index_t pw,
                    index_t x0, index_t x1, index_t Kp, float* row) {
    const float* src = in + iy * Wx - pw;  // channel k, pixel x: src[k * Hx * Wx + x]
    const index_t ls = Hx * Wx;
    index_t k = 0;
#if defined(__AVX2__)
    for (; k + 8 <= C; k += 8) {
        index_t x = x0;
        for (; x + 8 <= x1; x += 8) transpose8(src + k * ls + x, ls, row + x * Kp + k, Kp);
        for (; x < x1; ++x)
            for (index_t j = 0; j < 8; ++j) row[x * Kp + k + j] = src[(k + j) * ls + x];
    }
#endif
    for (; k < C; ++k)
        for (index_t x = x0; x < x1; ++x) row[x * Kp + k] = src[k * ls + x];
}

// Row y of D: row[x * Kp + k] = in[k, y - ph, x - pw] (0 outside, and for k >= Ci).
void pad_channels_last(const ClWino& s, const float* in, index_t y, float* row) {
    const index_t iy = y - s.ph;
    const index_t x0 = std::max<index_t>(0, s.pw), x1 = std::min(s.Dw, s.Wx + s.pw);
    if (iy < 0 || iy >= s.Hx || x1 <= x0) {
        std::memset(row, 0, std::size_t(s.Dw * s.Kp) * sizeof(float));
        return;
    }
    std::memset(row, 0, std::size_t(x0 * s.Kp) * sizeof(float));
    std::memset(row + x1 * s.Kp, 0, std::size_t((s.Dw - x1) * s.Kp) * sizeof(float));
    if (s.Kp > s.Ci)
        for (index_t x = x0; x < x1; ++x)
            std::memset(row + x * s.Kp + s.Ci, 0, std::size_t(s.Kp - s.Ci) * sizeof(float));
    transpose_rows(in, s.Ci, s.Hx, s.Wx, iy, s.pw, x0, x1, s.Kp, row);
}

// V[e][t][k] = (B^T d B)[e] of the 4x4 patch of tile t = (ty - ty0) * tw + tx.
void input_tiles(const ClWino& s, const float* D, index_t ty0, index_t ty1, float* V) {
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
void output_tiles(const ClWino& s, const float* C, index_t ty0, index_t ty1, float* P) {
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

// The transformed filters as the products' B [Kp x Mp], B[k][o] = (G g G^T)[e]
// of filter g = at(o, k, ., .), packed (sgemm_pack_b), position e at
// U + e * su; zero for o >= Ko, k >= Ci.
template <class Filter>
void cl_filters(const ClWino& s, Filter at, float* U, index_t su) {
    const index_t tu = s.Mp * s.Kp;
    std::vector<float> t(std::size_t(16 * tu));
    transform_filters(s.Mp, s.Kp,
                      [&](index_t o, index_t k, int u, int v) {
                          return o < s.Ko && k < s.Ci ? at(o, k, u, v) : 0.0f;
                      },
                      t.data(), tu);
    for (index_t e = 0; e < 16; ++e)
        sgemm_pack_b(s.Kp, s.Mp, t.data() + e * tu, s.Kp, true, U + e * su);
}

inline index_t cl_filter_floats(const ClWino& s) {
    return index_t(sgemm_packed_b_floats(s.Kp, s.Mp));
}

// Item i = n * groups + g: fill(i, y, row) writes row y of its padded
// channel-last input (Dw * Kp floats), the filters of group g are at
// U + g * 16 * cl_filter_floats(s); write(i, P, y0, y1) stores output rows
// [y0, y1) (rows y >= Hy excluded by it) from P (row y at P + (y - y0) * 2 *
// tw * Mp, pixel x at + x * Mp). D: passes of s.pass planes.
template <class Fill, class Write>
void cl_run(const ClWino& s, index_t groups, const float* U, float* D, Fill fill, Write write) {
    const index_t su = cl_filter_floats(s);
    for (index_t i0 = 0; i0 < s.items; i0 += s.pass) {
        const index_t i1 = std::min(s.items, i0 + s.pass);
#pragma omp parallel
        {
            const index_t nt = omp_get_num_threads(), t = omp_get_thread_num();
#pragma omp for collapse(2) schedule(static)
            for (index_t i = i0; i < i1; ++i)
                for (index_t y = 0; y < s.Dh; ++y)
                    fill(i, y, D + (i - i0) * s.plane() + y * s.Dw * s.Kp);
            // (the barrier: every thread's tiles read rows the others wrote)
            if (cl_scratch.size() < std::size_t(s.scratch()))
                cl_scratch.resize(std::size_t(s.scratch()));
            float* V = cl_scratch.data();
            float* C = V + 16 * s.vstep;
            float* P = C + 16 * s.cstep;
            // this thread's tile rows of the pass, rows of item i0 first
            const index_t rows = (i1 - i0) * s.th;
            const index_t r1 = rows * (t + 1) / nt;
            for (index_t r = rows * t / nt; r < r1;) {
                const index_t i = i0 + r / s.th, ty0 = r % s.th;
                const index_t ty1 = std::min({s.th, ty0 + s.R, ty0 + (r1 - r)});
                const index_t tiles = (ty1 - ty0) * s.tw;
                const float* Ug = U + (i % groups) * 16 * su;
                input_tiles(s, D + (i - i0) * s.plane(), ty0, ty1, V);
                for (index_t e = 0; e < 16; ++e)
                    sgemm_packed_b(tiles, s.Mp, s.Kp, V + e * s.vstep, s.Kp, Ug + e * su,
                                   C + e * s.cstep, s.Mp);
                output_tiles(s, C, ty0, ty1, P);
                write(i, P, 2 * ty0, 2 * ty1);
                r += ty1 - ty0;
            }
        }
    }
}

// ---- Backward of a strided layer by phases
//
// conv2d.cpp's backward by phases computes each phase plane (c, a, b) of dx
// as a stride-1 correlation of dy with that phase's taps. With 3 taps a phase
// along each axis (conv1: 11 taps at stride 4 give 3, 3, 3, 2), all
// M = Cg * sh * sw phase planes are one 3x3 correlation of the Kg planes of
// dy, with filters g[(c, a, b), k][u][v] = W[k, c, sh*(2-u) + a, sw*(2-v) + b]
// (zero past the kernel) and padding (2 - t0, 2 - s0): 16 instead of 36
// multiply-adds per 2x2 outputs, against the 27.5 that conv1's product by tap
// classes makes (132 taps for 48 phases of 4 outputs).

ClWino phases_wino(const Conv2dParams& p, const PhaseGrid& q) {
    return cl_wino(p.Kg(), p.Ho, p.Wo, p.Cg() * q.sh * q.sw, q.Tt, q.Tw, q.Ph - 1 - q.t0,
                   q.Qw - 1 - q.s0, p.N * p.groups);
}

// dx rows of one image's group whose phase row t lies in [t_lo, t_hi), from P:
// dx[c, r, x] is phase (c, a, b) at grid point (t, j) for r + pad_h = sh * (t0
// + t) + a and x + pad_w = sw * (s0 + j) + b.
void scatter_rows(const Conv2dParams& p, const PhaseGrid& q, const ClWino& s, const float* P,
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
                // grid column j covers x in [sw * (s0 + j) - pw, + sw): inside dx for
                // j in [jl, jh), where the sw phases are one contiguous copy
                const index_t base = q.sw * q.s0 - p.pad_w;
                const index_t jl = std::min(q.Tw, base >= 0 ? 0 : (-base + q.sw - 1) / q.sw);
                const index_t jh = std::max(jl, std::min(q.Tw, (p.W - base) / q.sw));
                auto edge = [&](index_t j) {
                    for (index_t b = 0; b < q.sw; ++b) {
                        const index_t x = base + q.sw * j + b;
                        if (x >= 0 && x < p.W) d[x] = src[j * s.Mp + b];
                    }
                };
                for (index_t j = 0; j < jl; ++j) edge(j);
                if (q.sw == 4)  // conv1: one 16-byte move a grid column
                    for (index_t j = jl; j < jh; ++j)
                        std::memcpy(d + base + 4 * j, src + j * s.Mp, 4 * sizeof(float));
                else
                    for (index_t j = jl; j < jh; ++j)
                        for (index_t b = 0; b < q.sw; ++b) d[base + q.sw * j + b] = src[j * s.Mp + b];
                for (index_t j = jh; j < q.Tw; ++j) edge(j);
            }
        }
}

// Output rows [y0, min(y1, Hy)) of plane block out (planes Hy x Wy, Ko of
// them), from P, plus bias[o] if given.
void store_planes(const ClWino& s, const float* P, index_t y0, index_t y1, const float* bias,
                  float* out) {
    const index_t prow = 2 * s.tw * s.Mp;
    for (index_t o = 0; o < s.Ko; ++o) {
        const float bo = bias ? bias[o] : 0.0f;
        for (index_t y = y0; y < std::min(y1, s.Hy); ++y) {
            const float* src = P + (y - y0) * prow + o;
            float* d = out + (o * s.Hy + y) * s.Wy;
            if (bias)
                for (index_t x = 0; x < s.Wy; ++x) d[x] = src[x * s.Mp] + bo;
            else
                for (index_t x = 0; x < s.Wy; ++x) d[x] = src[x * s.Mp];
        }
    }
}

// Forward of a strided layer by phases: with 3 taps a phase along each axis,
// y is the 3x3 correlation, unpadded, of the input's Cg * sh * sw phase planes
// xph[(c, a, b)][i, j] = x[c, sh*i + a - pad_h, sw*j + b - pw] with filters
// g[k, (c, a, b)][u][v] = W[k, c, sh*u + a, sw*v + b] (zero past the kernel):
// conv1's 121 taps as 16 multiply-adds per 2x2 outputs and phase (4 x 4 x 9
// taps 2.25x fewer: 1.83x fewer than the 121).
ClWino phases_forward_wino(const Conv2dParams& p, const PhaseGrid& q) {
    return cl_wino(p.Cg() * q.sh * q.sw, p.Ho + 2, p.Wo + 2, p.Kg(), p.Ho, p.Wo, 0, 0,
                   p.N * p.groups);
}

// Row y of the channel-last phase planes of one image's group xg: pixel j,
// channel (c*sh + a)*sw + b holds x[c, sh*y + a - pad_h, sw*j + b - pad_w]
// (0 outside): sw contiguous floats of an input row per (pixel, c, a).
void fill_phase_row(const Conv2dParams& p, const PhaseGrid& q, const ClWino& s, const float* xg,
                    index_t y, float* row) {
    std::memset(row, 0, std::size_t(s.Dw * s.Kp) * sizeof(float));
    // pixels j whose sw columns sw*j - pad_w + [0, sw) all lie in [0, W): [jl, jh)
    const index_t jl = std::min(s.Dw, (p.pad_w + q.sw - 1) / q.sw);
    const index_t last = p.W + p.pad_w - q.sw;  // sw*j <= last
    const index_t jh = std::max(jl, last < 0 ? 0 : std::min(s.Dw, last / q.sw + 1));
    for (index_t c = 0; c < p.Cg(); ++c)
        for (index_t a = 0; a < q.sh; ++a) {
            const index_t r = q.sh * y + a - p.pad_h;
            if (r < 0 || r >= p.H) continue;
            const float* src = xg + (c * p.H + r) * p.W - p.pad_w;
            float* d = row + (c * q.sh + a) * q.sw;
            auto edge = [&](index_t j) {
                for (index_t b = 0; b < q.sw; ++b) {
                    const index_t x = q.sw * j + b - p.pad_w;
                    if (x >= 0 && x < p.W) d[j * s.Kp + b] = src[q.sw * j + b];
                }
            };
            for (index_t j = 0; j < jl; ++j) edge(j);
            if (q.sw == 4)  // conv1: one 16-byte move a pixel
                for (index_t j = jl; j < jh; ++j)
                    std::memcpy(d + j * s.Kp, src + 4 * j, 4 * sizeof(float));
            else
                for (index_t j = jl; j < jh; ++j)
                    for (index_t b = 0; b < q.sw; ++b) d[j * s.Kp + b] = src[q.sw * j + b];
            for (index_t j = jh; j < s.Dw; ++j) edge(j);
        }
}

// A stride-1 kernel larger than 3x3 (CaffeNet conv2: 5x5) as mh x mw blocks
// of 3x3 taps (mh = ceil(kh / 3), zero taps past the kernel): y is the
// unpadded 3x3 correlation of mh * mw shifted copies of the input, channel
// (blk, c) with blk = bu * mw + bv holding x[c, i + 3*bu - pad_h, j + 3*bv -
// pad_w], with filters g[k, (blk, c)][u][v] = W[k, c, 3*bu + u, 3*bv + v].
// Each block's 9 taps then cost 4 multiply-adds per output instead of 9
// (conv2: 36 taps for its 25, 1.56x fewer than the direct product). Forward
// only: backward, the same on dy (conv2: 512 channels of shifted dy into 48
// planes), measured 15-20 % slower than im2col — products of 48 columns (a
// half-empty register tile) and an input transform over 4x the channels.
struct Blocks {
    index_t mh, mw;
};
Blocks blocks_of(const Conv2dParams& p) { return {(p.kh + 2) / 3, (p.kw + 2) / 3}; }

ClWino blocks_wino(const Conv2dParams& p) {
    const Blocks m = blocks_of(p);
    return cl_wino(m.mh * m.mw * p.Cg(), p.Ho + 2, p.Wo + 2, p.Kg(), p.Ho, p.Wo, 0, 0,
                   p.N * p.groups);
}

// Row y of the shifted copies of one image's group xg, channels last.
void fill_blocks_row(const Conv2dParams& p, const ClWino& s, const float* xg, index_t y,
                     float* row) {
    const Blocks m = blocks_of(p);
    std::memset(row, 0, std::size_t(s.Dw * s.Kp) * sizeof(float));
    for (index_t bu = 0; bu < m.mh; ++bu) {
        const index_t iy = y + 3 * bu - p.pad_h;
        if (iy < 0 || iy >= p.H) continue;
        for (index_t bv = 0; bv < m.mw; ++bv) {
            const index_t pw = p.pad_w - 3 * bv;  // pixel x reads column x - pw
            const index_t x0 = std::max<index_t>(0, pw), x1 = std::min(s.Dw, p.W + pw);
            if (x1 > x0)
                transpose_rows(xg, p.Cg(), p.H, p.W, iy, pw, x0, x1, s.Kp,
                               row + (bu * m.mw + bv) * p.Cg());
        }
    }
}

ClWino forward_shape(const Conv2dParams& p) {
    return cl_wino(p.Cg(), p.H, p.W, p.Kg(), p.Ho, p.Wo, p.pad_h, p.pad_w, p.N * p.groups);
}
ClWino backward_shape(const Conv2dParams& p) {
    return cl_wino(p.Kg(), p.Ho, p.Wo, p.Cg(), p.H, p.W, 2 - p.pad_h, 2 - p.pad_w,
                   p.N * p.groups);
}

// The cached, packed transforms of every group's filters for the correlation
// s: filter (o, i) of group g is at(wg, o, i, u, v), wg = group g's weights.
template <class Filter>
const float* layer_filters(const Conv2dParams& p, const float* w, const ClWino& s,
                           const index_t (&mode)[4], Filter at) {
    const index_t su = cl_filter_floats(s), per_group = p.Kg() * p.Cg() * p.kh * p.kw;
    return cached_filters(p, w, mode, su, [&](float* U) {
        for (index_t g = 0; g < p.groups; ++g) {
            const float* wg = w + g * per_group;
            cl_filters(s, [&](index_t o, index_t i, int u, int v) { return at(wg, o, i, u, v); },
                       U + g * 16 * su, su);
        }
    });
}

// Item i = n * groups + g of a tensor whose images are `image` floats apart
// and whose groups are `group` floats apart.
template <class T>
T* item_of(T* t, index_t i, index_t groups, index_t image, index_t group) {
    return t + (i / groups) * image + (i % groups) * group;
}

// cl_run's write for outputs kept as planes: item i's Ko planes of out
// (images `image` floats apart), plus its group's bias if given.
inline auto planes_writer(const ClWino& s, index_t groups, index_t image, const float* bias,
                          float* out) {
    return [&s, groups, image, bias, out](index_t i, const float* P, index_t y0, index_t y1) {
        store_planes(s, P, y0, y1, bias ? bias + (i % groups) * s.Ko : nullptr,
                     item_of(out, i, groups, image, s.Ko * s.Hy * s.Wy));
    };
}

}  // namespace

// Both directions: 3 taps a phase along each axis, zero taps at most a
// quarter of them (backward by phases requires as much), >= 32 output
// channels and >= 16 phase planes a group.
bool winograd_phases_usable(const Conv2dParams& p, const PhaseGrid& q) {
    static const bool off = env_flag("INVERT_NATIVE_NO_WINOGRAD");
    return !off && q.Ph == 3 && q.Qw == 3 && 4 * p.kh * p.kw >= 3 * 9 * q.sh * q.sw &&
           p.Kg() >= kMinChannels && p.Cg() * q.sh * q.sw >= 16;
}

std::size_t winograd_phases_workspace_size(const Conv2dParams& p, const PhaseGrid& q) {
    return std::size_t(phases_wino(p, q).workspace());
}

void winograd_phases_backward(const Conv2dParams& p, const PhaseGrid& q, const float* dy,
                              const float* w, float* dx, float* workspace) {
    const ClWino s = phases_wino(p, q);
    const index_t mode[4] = {q.sh, q.sw, q.Ph, q.Qw};
    const float* U = layer_filters(p, w, s, mode, [&](const float* wg, index_t o, index_t k, int u,
                                                      int v) {
        const index_t c = o / (q.sh * q.sw), a = o / q.sw % q.sh, b = o % q.sw;
        const index_t ku = q.sh * (2 - u) + a, kv = q.sw * (2 - v) + b;
        return ku < p.kh && kv < p.kw ? wg[((k * p.Cg() + c) * p.kh + ku) * p.kw + kv] : 0.0f;
    });
    const index_t HWo = p.Ho * p.Wo, HW = p.H * p.W;
    cl_run(s, p.groups, U, workspace,
           [&](index_t i, index_t y, float* row) {
               pad_channels_last(s, item_of(dy, i, p.groups, p.K * HWo, p.Kg() * HWo), y, row);
           },
           [&](index_t i, const float* P, index_t t0, index_t t1) {
               scatter_rows(p, q, s, P, t0, t1, item_of(dx, i, p.groups, p.C * HW, p.Cg() * HW));
           });
}

std::size_t winograd_phases_forward_workspace_size(const Conv2dParams& p, const PhaseGrid& q) {
    return std::size_t(phases_forward_wino(p, q).workspace());
}

void winograd_phases_forward(const Conv2dParams& p, const PhaseGrid& q, const float* x,
                             const float* w, const float* b, float* y, float* workspace) {
    const ClWino s = phases_forward_wino(p, q);
    const index_t mode[4] = {q.sh, q.sw, q.Ph, -q.Qw};  // (backward's: {sh, sw, Ph, Qw})
    const float* U = layer_filters(p, w, s, mode, [&](const float* wg, index_t k, index_t i, int u,
                                                      int v) {
        const index_t c = i / (q.sh * q.sw), a = i / q.sw % q.sh, bb = i % q.sw;
        const index_t ku = q.sh * u + a, kv = q.sw * v + bb;
        return ku < p.kh && kv < p.kw ? wg[((k * p.Cg() + c) * p.kh + ku) * p.kw + kv] : 0.0f;
    });
    const index_t HW = p.H * p.W;
    cl_run(s, p.groups, U, workspace,
           [&](index_t i, index_t yy, float* row) {
               fill_phase_row(p, q, s, item_of(x, i, p.groups, p.C * HW, p.Cg() * HW), yy, row);
           },
           planes_writer(s, p.groups, p.K * p.Ho * p.Wo, b, y));
}

// A stride-1 layer with kernels of 4-9 taps a side whose 3x3 blocks are at
// least 2/3 full (5x5: 25 of 36; 1.5x fewer products or better), enough
// channels and >= 16 tiles an image (conv2d_uses_winograd's rule); forward.
bool winograd_blocks_usable(const Conv2dParams& p) {
    static const bool off = env_flag("INVERT_NATIVE_NO_WINOGRAD");
    const Blocks m = blocks_of(p);
    return !off && p.stride_h == 1 && p.stride_w == 1 && m.mh * m.mw > 1 && m.mh <= 3 &&
           m.mw <= 3 && 3 * p.kh * p.kw >= 2 * 9 * m.mh * m.mw && p.Kg() >= kMinChannels &&
           p.Cg() >= kMinChannels && ((p.Ho + 1) / 2) * ((p.Wo + 1) / 2) >= 16;
}

std::size_t winograd_blocks_workspace_size(const Conv2dParams& p) {
    return std::size_t(blocks_wino(p).workspace());
}

void winograd_blocks_forward(const Conv2dParams& p, const float* x, const float* w,
                             const float* b, float* y, float* workspace) {
    const ClWino s = blocks_wino(p);
    const Blocks m = blocks_of(p);
    const index_t mode[4] = {-3, m.mh, m.mw, 0};
    const float* U = layer_filters(p, w, s, mode, [&](const float* wg, index_t k, index_t i, int u,
                                                      int v) {
        const index_t blk = i / p.Cg(), c = i % p.Cg();
        const index_t ku = 3 * (blk / m.mw) + u, kv = 3 * (blk % m.mw) + v;
        return ku < p.kh && kv < p.kw ? wg[((k * p.Cg() + c) * p.kh + ku) * p.kw + kv] : 0.0f;
    });
    const index_t HW = p.H * p.W;
    cl_run(s, p.groups, U, workspace,
           [&](index_t i, index_t yy, float* row) {
               fill_blocks_row(p, s, item_of(x, i, p.groups, p.C * HW, p.Cg() * HW), yy, row);
           },
           planes_writer(s, p.groups, p.K * p.Ho * p.Wo, b, y));
}

// A 3x3 stride-1 layer whose padding backward can mirror (<= 2), with enough
// channels each side and at least kMinTiles tiles an image (7x7 outputs):
// below that (measured at 256 channels) the filters' check and transforms
// cost more than the products save (4x4 outputs 1.7x slower than im2col, 6x6
// even, 8x8 20 % faster). The rule never looks at the batch, so that an
// image gets the same bits in a batch as alone. INVERT_NATIVE_NO_WINOGRAD=1
// turns it off (read once).
constexpr index_t kMinTiles = 16;

bool conv2d_uses_winograd(const Conv2dParams& p) {
    static const bool off = env_flag("INVERT_NATIVE_NO_WINOGRAD");
    if (off || p.kh != 3 || p.kw != 3 || p.stride_h != 1 || p.stride_w != 1 || p.pad_h > 2 ||
        p.pad_w > 2 || p.Cg() < kMinChannels || p.Kg() < kMinChannels)
        return false;
    return ((p.Ho + 1) / 2) * ((p.Wo + 1) / 2) >= kMinTiles;
}

std::size_t winograd_workspace_size(const Conv2dParams& p) {
    return std::size_t(std::max(forward_shape(p).workspace(), backward_shape(p).workspace()));
}

void winograd_conv2d_forward(const Conv2dParams& p, const float* x, const float* w,
                             const float* b, float* y, float* workspace) {
    const ClWino s = forward_shape(p);
    const index_t mode[4] = {-1, 0, 0, 0};
    const float* U = layer_filters(p, w, s, mode, [&](const float* wg, index_t o, index_t c, int u,
                                                      int v) {
        return wg[(o * p.Cg() + c) * 9 + u * 3 + v];
    });
    const index_t HW = p.H * p.W;
    cl_run(s, p.groups, U, workspace,
           [&](index_t i, index_t yy, float* row) {
               pad_channels_last(s, item_of(x, i, p.groups, p.C * HW, p.Cg() * HW), yy, row);
           },
           planes_writer(s, p.groups, p.K * p.Ho * p.Wo, b, y));
}

void winograd_conv2d_backward(const Conv2dParams& p, const float* dy, const float* w, float* dx,
                              float* workspace) {
    const ClWino s = backward_shape(p);
    const index_t mode[4] = {-2, 0, 0, 0};
    // filter (c, k) of the correlation of dy: W[k, c] turned by 180 degrees
    const float* U = layer_filters(p, w, s, mode, [&](const float* wg, index_t c, index_t k, int u,
                                                      int v) {
        return wg[(k * p.Cg() + c) * 9 + (2 - u) * 3 + (2 - v)];
    });
    const index_t HWo = p.Ho * p.Wo;
    cl_run(s, p.groups, U, workspace,
           [&](index_t i, index_t y, float* row) {
               pad_channels_last(s, item_of(dy, i, p.groups, p.K * HWo, p.Kg() * HWo), y, row);
           },
           planes_writer(s, p.groups, p.C * p.H * p.W, nullptr, dx));
}

}  // namespace invert_native
