// conv2d forward and backward-to-input on the CPU.
//
// 3x3 stride-1 layers with enough channels and output tiles an image go
// through Winograd's F(2x2, 3x3) instead (conv2d_winograd.cpp: CaffeNet
// conv3-conv5), and so does the forward of larger stride-1 kernels whose 3x3
// blocks are mostly full (conv2's 5x5). Strided layers with large outputs
// (CaffeNet conv1) run by phases: Winograd on the phase planes where each
// phase has 3 taps both ways (conv1), else SGEMMs on row pointers into the
// input's phase planes, or into the padded dy, with no column buffer and no
// col2im (see "Strided convolutions by phases" below); the SGEMMs on row
// pointers also serve the forward of a batch through other stride-1 layers
// of >= 512 row-padded outputs. Everything else as follows.
//
// Schedule: per group, im2col into a column buffer [Cg*kh*kw, nb*Ho*Wo] for a
// chunk of nb images (column n*Ho*Wo + hw holds image n) and one SGEMM;
// backward is the transposed SGEMM followed by col2im. nb comes from
// chunk_images(): 1 (the per-image schedule, the batch-1 path: the SGEMM
// writes straight into y / reads straight from dy, no extra copies), or for a
// batch more images, so that one SGEMM fills the NR-column panels of the
// micro-kernel (13x13 = 169 outputs leave the last panel of 32 mostly empty)
// and streams the weights once per chunk instead of once per image. The
// chunked SGEMM goes through a scratch [Kg, nb*Ho*Wo]: forward scatters it
// into y with the bias; backward gathers dy into it and (for chunks of enough
// columns) multiplies by W_g^T transposed once per call. Every output element
// is still summed by one thread in the same order (the same sums as the
// per-image schedule, bit for bit), so results depend neither on the thread
// count nor on nb. The CUDA core computes the same sums in the direct form of
// maths.h (conv2d_forward_at / conv2d_backward_at).
#include <algorithm>
#include <cstring>
#include <vector>

#include <omp.h>

#include "conv2d_winograd.h"
#include "env_flag.h"
#include "gemm.h"
#include "invert_native/ops.h"

namespace invert_native {
namespace {

// A 1x1 kernel with stride 1 and no padding needs no column buffer: the
// input plane block already is the column matrix.
bool is_pointwise(const Conv2dParams& p) {
    return p.kh == 1 && p.kw == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 &&
           p.pad_w == 0;
}

// Images per SGEMM (see the file comment), forward and backward alike. The
// rule: 1 for a single image, a pointwise conv, or an image with at least
// kChunkMaxColumns output columns (CaffeNet conv1, 55x55 = 3025 columns,
// already fills ~95 panels of 32: batching it measured no gain forward or
// backward, only the scatter / gather copies); otherwise (CaffeNet conv2-5,
// 27x27 and 13x13 outputs) the most images whose workspace (column buffer
// [CKK, nb*HWo] + scratch [Kg, nb*HWo]) fits kChunkMaxFloats (4M floats = 16
// MB: larger chunks measured slower on conv2), balanced over the chunks the
// batch needs (N = 9 at most 8 per chunk: 5 + 4).
constexpr index_t kChunkMaxColumns = 1024;
constexpr index_t kChunkMaxFloats = index_t(4) << 20;

index_t chunk_images(const Conv2dParams& p) {
    const index_t HWo = p.Ho * p.Wo;
    if (p.N <= 1 || is_pointwise(p) || HWo >= kChunkMaxColumns) return 1;
    const index_t per_image = (p.Cg() * p.kh * p.kw + p.Kg()) * HWo;
    const index_t most = std::min(p.N, kChunkMaxFloats / per_image);
    if (most <= 1) return 1;
    const index_t chunks = (p.N + most - 1) / most;
    return (p.N + chunks - 1) / chunks;
}

// Whether one image's groups run forward side by side, a thread each (group
// g's column buffer at g * CKK * HWo of the workspace), rather than one
// after the other with all threads in each SGEMM: when the threads divide
// the groups evenly. Measured (CaffeNet conv2, conv4, conv5 at batch 1, 2 groups
// on 2 threads): forward 7-12 % faster, each thread packing and reading only
// its own group's operands, without the SGEMMs' barriers. Each output element
// is summed as in the other schedule, so the results are the same.
bool groups_side_by_side(const Conv2dParams& p) {
    const index_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    return p.groups > 1 && threads > 1 && p.groups % threads == 0;
}

// Whether chunked backward transposes the weights first: when a chunk has at
// least kTransposeMinColumns columns, so that the copy (~3.5 Gfloat/s on 2
// threads, i.e. the time of ~90 flops of SGEMM per weight) is paid back by the
// faster row-wise reads of A (measured: conv3 at N = 2, 338 columns, 7 %
// faster with it, 5 % without; N = 8, 1352 columns, ~25 %); with fewer columns
// (e.g. a fully-connected layer written as a conv, HWo = 1) the SGEMM reads
// W_g^T in place, as the per-image schedule does.
constexpr index_t kTransposeMinColumns = 256;

bool transpose_in_backward(const Conv2dParams& p, index_t nb) {
    return nb > 1 && nb * p.Ho * p.Wo >= kTransposeMinColumns;
}

// The output columns ox whose input column ox*sw - pw + v lies in [0, W).
index_t ox_begin(const Conv2dParams& p, index_t v) {
    const index_t need = p.pad_w - v;  // ox * sw >= need
    // ceil(need / sw) without forming need + sw - 1 (strides may be near 2^63)
    return need <= 0 ? 0 : std::min(p.Wo, (need - 1) / p.stride_w + 1);
}
index_t ox_end(const Conv2dParams& p, index_t v) {
    const index_t last = p.W - 1 + p.pad_w - v;  // ox * sw <= last
    return last < 0 ? 0 : std::min(p.Wo, last / p.stride_w + 1);
}

// Row r = (c*kh + u)*kw + v of the column buffer for images i < nb, gathered
// from x (see im2col).
void im2col_row(const Conv2dParams& p, const float* x, index_t xs, index_t nb, index_t r,
                float* col) {
    const index_t HWo = p.Ho * p.Wo;
    const index_t v = r % p.kw, u = (r / p.kw) % p.kh, c = r / (p.kw * p.kh);
    const index_t lo = ox_begin(p, v), hi = ox_end(p, v), off = v - p.pad_w;
    for (index_t i = 0; i < nb; ++i) {
        const float* xc = x + i * xs + c * p.H * p.W;
        float* dst = col + (r * nb + i) * HWo;
        for (index_t oy = 0; oy < p.Ho; ++oy) {
            const index_t iy = oy * p.stride_h - p.pad_h + u;
            float* d = dst + oy * p.Wo;
            if (iy < 0 || iy >= p.H) {
                std::memset(d, 0, p.Wo * sizeof(float));
                continue;
            }
            // ox in [lo, hi) reads inside the row: no test per element there
            const float* src = xc + iy * p.W;
            for (index_t ox = 0; ox < lo; ++ox) d[ox] = 0.0f;
            if (p.stride_w == 1 && hi > lo)
                std::memcpy(d + lo, src + lo + off, (hi - lo) * sizeof(float));
            else
                for (index_t ox = lo; ox < hi; ++ox) d[ox] = src[ox * p.stride_w + off];
            for (index_t ox = hi; ox < p.Wo; ++ox) d[ox] = 0.0f;
        }
    }
}

// For images i < nb of x (image stride xs floats, channels of the group):
// col[(c*kh + u)*kw + v, i*Ho*Wo + oy*Wo + ox] = x_i[c, oy*sh - ph + u, ox*sw - pw + v]
// (0 outside); col rows have nb*Ho*Wo floats.
// Tap v + sw reads, at output column ox, the input column that tap v reads at
// ox + 1: so for v >= sw the row is the row of v - sw moved left by one float
// (one memmove of the whole row), and only each output row's last column is
// gathered. A strided convolution's gathers (conv1: 11 taps a row, stride 4)
// drop to the first sw taps; the copies are exact, so the buffer is the same.
// Parallel over (c, u): the taps of one kernel row go in order.
void im2col(const Conv2dParams& p, const float* x, index_t xs, index_t nb,  // [nb][Cg, H, W]
            float* col) {                                                   // [Cg*kh*kw, nb*Ho*Wo]
    const index_t HWo = p.Ho * p.Wo, len = nb * HWo, kernel_rows = p.Cg() * p.kh;
    const bool shift = p.kw > p.stride_w && p.Wo > 1;
#pragma omp parallel for schedule(static)
    for (index_t cu = 0; cu < kernel_rows; ++cu) {
        const index_t u = cu % p.kh, c = cu / p.kh;
        for (index_t v = 0; v < p.kw; ++v) {
            const index_t r = cu * p.kw + v;
            if (!shift || v < p.stride_w) {
                im2col_row(p, x, xs, nb, r, col);
                continue;
            }
            float* dst = col + r * len;
            std::memcpy(dst, col + (r - p.stride_w) * len + 1, (len - 1) * sizeof(float));
            // the last column of every output row: x_i[c, iy, (Wo-1)*sw - pw + v]
            const index_t ix = (p.Wo - 1) * p.stride_w - p.pad_w + v;
            for (index_t i = 0; i < nb; ++i) {
                const float* xc = x + i * xs + c * p.H * p.W;
                for (index_t oy = 0; oy < p.Ho; ++oy) {
                    const index_t iy = oy * p.stride_h - p.pad_h + u;
                    dst[i * HWo + oy * p.Wo + p.Wo - 1] =
                        iy >= 0 && iy < p.H && ix >= 0 && ix < p.W ? xc[iy * p.W + ix] : 0.0f;
                }
            }
        }
    }
}

// dx_i[c] = the columns that im2col read from channel c of image i, for images
// i < nb (image stride xs floats, channels of the group; dx is overwritten).
// Parallel over (image, channel), so every element of dx is written by one
// thread in a fixed order.
void col2im(const Conv2dParams& p, const float* col, index_t nb,  // [Cg*kh*kw, nb*Ho*Wo]
            float* dx, index_t xs) {                              // [nb][Cg, H, W]
    const index_t Cg = p.Cg(), HWo = p.Ho * p.Wo;
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t i = 0; i < nb; ++i)
        for (index_t c = 0; c < Cg; ++c) {
            float* dxc = dx + i * xs + c * p.H * p.W;
            std::memset(dxc, 0, sizeof(float) * p.H * p.W);
            for (index_t u = 0; u < p.kh; ++u)
                for (index_t v = 0; v < p.kw; ++v) {
                    const float* src = col + (((c * p.kh + u) * p.kw + v) * nb + i) * HWo;
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
                            for (index_t ox = lo; ox < hi; ++ox)
                                d[ox * p.stride_w + off] += s[ox];
                        }
                    }
                }
        }
}

// wt[g][r, k] = w[g*Kg + k, r] for r < Cg*kh*kw: W_g^T of every group, in
// 32x32 tiles, parallel over the tiles of wt rows.
void transpose_weights(const Conv2dParams& p, const float* w, float* wt) {
    const index_t Kg = p.Kg(), CKK = p.Cg() * p.kh * p.kw, T = 32;
    const index_t rb = (CKK + T - 1) / T;
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t g = 0; g < p.groups; ++g)
        for (index_t r0b = 0; r0b < rb; ++r0b) {
            const float* wg = w + g * Kg * CKK;
            float* tg = wt + g * CKK * Kg;
            const index_t r0 = r0b * T, r1 = std::min(CKK, r0 + T);
            for (index_t k0 = 0; k0 < Kg; k0 += T) {
                const index_t k1 = std::min(Kg, k0 + T);
                for (index_t r = r0; r < r1; ++r)
                    for (index_t k = k0; k < k1; ++k) tg[r * Kg + k] = wg[k * CKK + r];
            }
        }
}

// ---- Strided convolutions by phases -----------------------------------------
//
// With stride s, input row r = s*oy + u - pad is reached from output row oy by
// tap u. Split rows into phases r + pad = s*t + a (a in [0, s)): a tap
// u = s*p + a links dx row (t, a) to dy row t - p, so within one phase the
// backward is a stride-1 correlation of dy with taps p < Ph = ceil(kh / s).
// SGEMMs do every phase at once: the rows of A are the phases (c, a, b),
// holding W[k, c, s_h*p + a, s_w*q + b] at depth (k, tap pair (p, q)) (zero
// where the tap falls outside the kernel), and row (k, (p, q)) of the column
// matrix is dy_k, padded and shifted by (p, q): a view of one padded plane
// (sgemm_rows), so the column matrix is never written. Each dx element is
// then read from one element of the product, with no col2im sums.
//
// Zero taps: phase a has Ph taps along the rows or, past the kernel's end,
// Ph - 1 (conv1: 3, 3, 3, 2 for 11 taps at stride 4), and likewise along
// the columns. The phases are ordered by these classes and cut into the
// SGEMM's row panels; each run of panels gets only the tap pairs its phases
// need, as an SGEMM of its own (PhaseLayout). conv1 still multiplies 132 taps
// for its 121 (144 in one SGEMM over all pairs): the register tile's 12 rows
// do not split its 48 phases into pure classes. The product also includes
// each padded row's Qw - 1 extra columns.

// INVERT_NATIVE_NO_PHASES=1 sends strided convolutions through im2col (read once).
bool phases_off() {
    static const bool off = env_flag("INVERT_NATIVE_NO_PHASES");
    return off;
}

// Strides and taps per phase along each axis (the most), for both directions.
struct PhaseTaps {
    index_t sh, sw, Ph, Qw;
};

PhaseTaps phase_taps(const Conv2dParams& p) {
    return {p.stride_h, p.stride_w, (p.kh + p.stride_h - 1) / p.stride_h,
            (p.kw + p.stride_w - 1) / p.stride_w};
}

struct Phases : PhaseTaps {
    index_t M, Kp;           // product rows (c, a, b) and depth (k, p, q)
    index_t t0, Tt, s0, Tw;  // the phase grid: rows [t0, t0 + Tt), columns [s0, s0 + Tw)
    index_t Rp, Wq;          // padded dy plane: Rp rows of Wq floats
    index_t plane() const { return Rp * Wq; }
    index_t cols() const { return Tt * Wq; }
};

Phases phases_of(const Conv2dParams& p) {
    Phases q;
    static_cast<PhaseTaps&>(q) = phase_taps(p);
    q.M = p.Cg() * q.sh * q.sw;
    q.Kp = p.Kg() * q.Ph * q.Qw;
    q.t0 = p.pad_h / q.sh;
    q.Tt = (p.H - 1 + p.pad_h) / q.sh + 1 - q.t0;
    q.s0 = p.pad_w / q.sw;
    q.Tw = (p.W - 1 + p.pad_w) / q.sw + 1 - q.s0;
    q.Rp = q.Tt + q.Ph - 1;
    q.Wq = q.Tw + q.Qw - 1;
    return q;
}

// Whether backward runs by phases: a strided kernel whose zero taps add at
// most a third (kh*kw >= 3/4 of the padded taps: conv1's 11x11 / 4 has 121 of
// 144) and a large output (conv1: 55x55; smaller ones go through the chunked
// schedule, whose batched SGEMMs need no per-image columns).
bool backward_by_phases(const Conv2dParams& p) {
    if ((p.stride_h == 1 && p.stride_w == 1) || p.Ho * p.Wo < kChunkMaxColumns) return false;
    if (phases_off()) return false;
    const Phases q = phases_of(p);
    return 4 * p.kh * p.kw >= 3 * q.sh * q.Ph * q.sw * q.Qw;
}

// The backward product by row panels. Phase a has Ph taps along the rows or,
// where its last one falls past the kernel, Ph - 1 (conv1: 3, 3, 3, 2 for 11
// taps at stride 4); likewise along the columns. Phases are ordered full,
// short rows, short both, short columns (each class in (c, a, b) order), cut
// into the SGEMM's register-tile panels of rows, and each panel takes only
// the tap pairs (p, q) some row of it needs; consecutive panels that need the
// same pairs form one SGEMM (conv1 on AVX-512: 36 rows with all 9 pairs, 12
// rows with 6). A call's depth runs over (k, pair), pairs in (p, q) order, so
// consecutive rows of its column matrix are shifts within one dy plane and
// share cache lines (a pair-major order measured ~10 % slower).
struct PhaseCall {
    index_t row0, rows;    // product rows [row0, row0 + rows)
    index_t pair0, pairs;  // its tap pairs: pair_p / pair_q [pair0, pair0 + pairs)
};
struct PhaseLayout {
    std::vector<index_t> phase_of;        // product row -> phase (c * sh + a) * sw + b
    std::vector<index_t> row_of;          // phase -> product row
    std::vector<index_t> pair_p, pair_q;  // the calls' tap pairs, call after call
    std::vector<PhaseCall> calls;
    index_t a_floats = 0, row_ptrs = 0;   // A blocks and row pointers of all calls, per group
    index_t key[9] = {};                  // what it was built for (kept while that holds)
};

// Taps of phase a along one axis: those of s*t + a < k, t < T.
inline index_t phase_tap_count(index_t k, index_t s, index_t T, index_t a) {
    return std::min(T, a < k ? (k - a + s - 1) / s : index_t(0));
}

void phase_layout(const Conv2dParams& p, const Phases& q, index_t panel, PhaseLayout& L) {
    const index_t key[9] = {p.kh, p.kw, q.sh, q.sw, q.Ph, q.Qw, q.M, p.Kg(), panel};
    if (!L.calls.empty() && std::equal(key, key + 9, L.key)) return;
    std::copy(key, key + 9, L.key);
    // taps of phase (c, a, b) along the rows and along the columns
    auto rows_taps = [&](index_t ph) {
        return phase_tap_count(p.kh, q.sh, q.Ph, ph / q.sw % q.sh);
    };
    auto cols_taps = [&](index_t ph) { return phase_tap_count(p.kw, q.sw, q.Qw, ph % q.sw); };
    L.phase_of.clear();
    for (int cls = 0; cls < 4; ++cls)  // full, short rows, short both, short columns
        for (index_t ph = 0; ph < q.M; ++ph) {
            const bool sh = rows_taps(ph) < q.Ph, sw = cols_taps(ph) < q.Qw;
            if ((sh ? (sw ? 2 : 1) : (sw ? 3 : 0)) == cls) L.phase_of.push_back(ph);
        }
    L.row_of.assign(q.M, 0);
    for (index_t r = 0; r < q.M; ++r) L.row_of[L.phase_of[r]] = r;
    L.pair_p.clear();
    L.pair_q.clear();
    L.calls.clear();
    L.a_floats = L.row_ptrs = 0;
    std::vector<unsigned char> need(q.Ph * q.Qw), prev;
    for (index_t r0 = 0; r0 < q.M; r0 += panel) {
        const index_t r1 = std::min(q.M, r0 + panel);
        std::fill(need.begin(), need.end(), 0);
        for (index_t r = r0; r < r1; ++r) {
            const index_t ph = L.phase_of[r], ta = rows_taps(ph), tb = cols_taps(ph);
            for (index_t pp = 0; pp < ta; ++pp)
                for (index_t qq = 0; qq < tb; ++qq) need[pp * q.Qw + qq] = 1;
        }
        if (!L.calls.empty() && need == prev) {
            L.calls.back().rows = r1 - L.calls.back().row0;
            continue;
        }
        PhaseCall c{r0, r1 - r0, index_t(L.pair_p.size()), 0};
        for (index_t pp = 0; pp < q.Ph; ++pp)
            for (index_t qq = 0; qq < q.Qw; ++qq)
                if (need[pp * q.Qw + qq]) L.pair_p.push_back(pp), L.pair_q.push_back(qq), ++c.pairs;
        L.calls.push_back(c);
        prev = need;
    }
    for (const PhaseCall& c : L.calls) {
        L.a_floats += c.rows * c.pairs * p.Kg();
        L.row_ptrs += c.pairs * p.Kg();
    }
}

// The phase grid as conv2d_winograd.cpp takes it.
PhaseGrid phase_grid(const Phases& q) { return {q.sh, q.sw, q.Ph, q.Qw, q.t0, q.Tt, q.s0, q.Tw}; }

// Backward by phases through Winograd (conv2d_winograd.cpp), when every phase
// has 3 taps along each axis (conv1): each thread writes the dx rows of its
// own blocks of phase rows.
bool backward_by_winograd_phases(const Conv2dParams& p, const Phases& q) {
    return winograd_phases_usable(p, phase_grid(q));
}

std::size_t phases_backward_floats(const Conv2dParams& p) {
    const Phases q = phases_of(p);
    if (backward_by_winograd_phases(p, q))
        return winograd_phases_workspace_size(p, phase_grid(q));
    return std::size_t(p.groups * q.M * q.Kp + p.Kg() * q.plane() + q.Qw + q.M * q.cols());
}

// The row pointers of the implicit column matrix, per calling thread.
thread_local std::vector<const float*> phase_rows;
thread_local PhaseLayout phase_layout_cache;

void conv2d_backward_phases(const Conv2dParams& p, const float* dy, const float* w, float* dx,
                            float* ws) {
    const Phases q = phases_of(p);
    const index_t Cg = p.Cg(), Kg = p.Kg(), KK = p.kh * p.kw, HWo = p.Ho * p.Wo;
    const index_t xs = p.C * p.H * p.W, ys = p.K * HWo, cols = q.cols();
    if (backward_by_winograd_phases(p, q)) {
        winograd_phases_backward(p, phase_grid(q), dy, w, dx, ws);
        return;
    }
    PhaseLayout& L = phase_layout_cache;
    phase_layout(p, q, sgemm_row_panel(), L);
    const index_t ncalls = index_t(L.calls.size());
    const PhaseCall* calls = L.calls.data();
    const index_t *pair_p = L.pair_p.data(), *pair_q = L.pair_q.data();
    const index_t *row_of = L.row_of.data(), *phase_of = L.phase_of.data();
    float* A = ws;                              // [groups][calls][rows, Kg * pairs]
    float* dyp = A + p.groups * q.M * q.Kp;     // [Kg][Rp, Wq] + Qw floats of tail
    float* out = dyp + Kg * q.plane() + q.Qw;   // [M, Tt*Wq]
    // A of each call: row r at depth (k, j) holds the weight of pair j's tap
    // (zero past the kernel), k-major as the row pointers below.
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t g = 0; g < p.groups; ++g)
        for (index_t row = 0; row < q.M; ++row) {
            index_t ci = 0, off = g * L.a_floats;
            while (row >= calls[ci].row0 + calls[ci].rows)
                off += calls[ci].rows * calls[ci].pairs * Kg, ++ci;
            const PhaseCall& cl = calls[ci];
            const index_t ph = phase_of[row];
            const index_t c = ph / (q.sh * q.sw), a = ph / q.sw % q.sh, b = ph % q.sw;
            float* ar = A + off + (row - cl.row0) * cl.pairs * Kg;
            for (index_t j = 0; j < cl.pairs; ++j) {
                const index_t u = q.sh * pair_p[cl.pair0 + j] + a;
                const index_t v = q.sw * pair_q[cl.pair0 + j] + b;
                if (u >= p.kh || v >= p.kw) {
                    for (index_t k = 0; k < Kg; ++k) ar[k * cl.pairs + j] = 0.0f;
                    continue;
                }
                const float* src = w + (g * Kg * Cg + c) * KK + u * p.kw + v;
                for (index_t k = 0; k < Kg; ++k) ar[k * cl.pairs + j] = src[k * Cg * KK];
            }
        }
    if (phase_rows.size() < std::size_t(L.row_ptrs)) phase_rows.resize(L.row_ptrs);
    const float** rows = phase_rows.data();
    for (index_t ci = 0, roff = 0; ci < ncalls; roff += calls[ci].pairs * Kg, ++ci)
        for (index_t k = 0; k < Kg; ++k)
            for (index_t j = 0; j < calls[ci].pairs; ++j) {
                const index_t pp = pair_p[calls[ci].pair0 + j], qq = pair_q[calls[ci].pair0 + j];
                rows[roff + k * calls[ci].pairs + j] =
                    dyp + k * q.plane() + (q.Ph - 1 - pp) * q.Wq + (q.Qw - 1 - qq);
            }
    std::memset(dyp + Kg * q.plane(), 0, q.Qw * sizeof(float));
    // dy columns j = j' + s0 - (Qw - 1) inside [0, Wo): j' in [jl, jh)
    const index_t dj = q.s0 - (q.Qw - 1), di = q.t0 - (q.Ph - 1);
    const index_t jl = std::min(q.Wq, std::max<index_t>(0, -dj));
    const index_t jh = std::max(jl, std::min(q.Wq, p.Wo - dj));
    for (index_t n = 0; n < p.N; ++n)
        for (index_t g = 0; g < p.groups; ++g) {
            const float* dyg = dy + n * ys + g * Kg * HWo;
#pragma omp parallel for collapse(2) schedule(static)
            for (index_t k = 0; k < Kg; ++k)
                for (index_t ip = 0; ip < q.Rp; ++ip) {
                    float* d = dyp + k * q.plane() + ip * q.Wq;
                    const index_t i = ip + di;
                    if (i < 0 || i >= p.Ho || jh == jl) {
                        std::memset(d, 0, q.Wq * sizeof(float));
                        continue;
                    }
                    std::memset(d, 0, jl * sizeof(float));
                    std::memcpy(d + jl, dyg + (k * p.Ho + i) * p.Wo + jl + dj,
                                (jh - jl) * sizeof(float));
                    std::memset(d + jh, 0, (q.Wq - jh) * sizeof(float));
                }
            for (index_t ci = 0, aoff = g * L.a_floats, roff = 0; ci < ncalls; ++ci) {
                const PhaseCall& cl = calls[ci];
                const index_t depth = cl.pairs * Kg;
                sgemm_rows(false, cl.rows, cols, depth, 1.0f, A + aoff, depth, rows + roff, 0.0f,
                           out + cl.row0 * cols, cols);
                aoff += cl.rows * depth;
                roff += depth;
            }
            // dx[c, r, x]: phase (a, b) = ((r + ph) % sh, (x + pw) % sw), grid point
            // ((r + ph) / sh - t0, (x + pw) / sw - s0)
            float* dxg = dx + n * xs + g * Cg * p.H * p.W;
#pragma omp parallel for collapse(2) schedule(static)
            for (index_t c = 0; c < Cg; ++c)
                for (index_t r = 0; r < p.H; ++r) {
                    const index_t tr = r + p.pad_h, a = tr % q.sh, t = tr / q.sh - q.t0;
                    float* d = dxg + (c * p.H + r) * p.W;
                    for (index_t b = 0; b < q.sw; ++b) {
                        const float* src =
                            out + row_of[(c * q.sh + a) * q.sw + b] * cols + t * q.Wq;
                        // x = sw * (s0 + j) + b - pw for grid columns j, the first x >= 0
                        index_t j = 0, x = q.sw * q.s0 + b - p.pad_w;
                        if (x < 0) ++j, x += q.sw;
                        for (; x < p.W; ++j, x += q.sw) d[x] = src[j];
                    }
                }
        }
}

// Forward by phases needs no zero taps: tap (u, v) = (sh*p + a, sw*q + b)
// reads phase plane (a, b) of the input, xph[c, a, b][i, j] =
// x[c, sh*i + a - ph, sw*j + b - pw], at (oy + p, ox + q). So row (c, u, v)
// of the column matrix is that plane shifted by (p, q): the product runs on
// W_g as it is stored, over Ho rows of Wq = Wo + Qw - 1 columns, and the
// Qw - 1 extra columns of each row are dropped when the bias is added. The
// products see im2col's column matrix in the same order: the same bits.
struct PhasesFwd : PhaseTaps {
    index_t Ri, Wq;  // planes of Ri = Ho + Ph - 1 rows of Wq floats
    index_t plane() const { return Ri * Wq; }
};

PhasesFwd phases_fwd_of(const Conv2dParams& p) {
    PhasesFwd f;
    static_cast<PhaseTaps&>(f) = phase_taps(p);
    f.Ri = p.Ho + f.Ph - 1;
    f.Wq = p.Wo + f.Qw - 1;
    return f;
}

// Stride-1 forward takes the same implicit product (one phase, W_g as stored)
// only for a batch of images with at least kStride1MinColumns columns a
// row-padded image (measured on CaffeNet conv2 with restarts, 27 x 31, before
// its forward went to Winograd blocks): per image, it was 5 % faster there
// than the chunked im2col; backward by rows was 4 % slower,
// and one image no faster. Smaller outputs (13x13: products of 195 columns)
// stay with the chunked SGEMM, which multiplies several images at once.
constexpr index_t kStride1MinColumns = 512;

bool stride1_forward_by_rows(const Conv2dParams& p) {
    return p.N >= 2 && !is_pointwise(p) && p.Ho * (p.Wo + p.kw - 1) >= kStride1MinColumns;
}

// Strided kernels with a large output (conv1): the rule of backward_by_phases
// without its limit on zero taps, which forward does not compute; or
// stride1_forward_by_rows.
bool forward_by_phases(const Conv2dParams& p) {
    if (phases_off()) return false;
    if (p.stride_h == 1 && p.stride_w == 1) return stride1_forward_by_rows(p);
    return p.Ho * p.Wo >= kChunkMaxColumns;
}

// Forward by phases through Winograd (conv2d_winograd.cpp) for a strided
// layer whose phases have 3 taps along each axis (conv1).
bool forward_by_winograd_phases(const Conv2dParams& p) {
    return (p.stride_h > 1 || p.stride_w > 1) &&
           winograd_phases_usable(p, phase_grid(phases_of(p)));
}

std::size_t phases_forward_floats(const Conv2dParams& p) {
    if (forward_by_winograd_phases(p))
        return winograd_phases_forward_workspace_size(p, phase_grid(phases_of(p)));
    const PhasesFwd f = phases_fwd_of(p);
    return std::size_t(p.Cg() * f.sh * f.sw * f.plane() + f.Qw + p.Kg() * p.Ho * f.Wq);
}

void conv2d_forward_phases(const Conv2dParams& p, const float* x, const float* w, const float* b,
                           float* y, float* ws) {
    if (forward_by_winograd_phases(p)) {
        winograd_phases_forward(p, phase_grid(phases_of(p)), x, w, b, y, ws);
        return;
    }
    const PhasesFwd f = phases_fwd_of(p);
    const index_t Cg = p.Cg(), Kg = p.Kg(), CKK = Cg * p.kh * p.kw, HWo = p.Ho * p.Wo;
    const index_t xs = p.C * p.H * p.W, ys = p.K * HWo, cols = p.Ho * f.Wq;
    const index_t planes = Cg * f.sh * f.sw;
    float* xph = ws;                                  // [Cg, sh, sw][Ri, Wq] + Qw of tail
    float* out = xph + planes * f.plane() + f.Qw;     // [Kg, Ho*Wq]
    if (phase_rows.size() < std::size_t(CKK)) phase_rows.resize(CKK);
    const float** rows = phase_rows.data();
    for (index_t c = 0; c < Cg; ++c)
        for (index_t u = 0; u < p.kh; ++u)
            for (index_t v = 0; v < p.kw; ++v)
                rows[(c * p.kh + u) * p.kw + v] =
                    xph + ((c * f.sh + u % f.sh) * f.sw + v % f.sw) * f.plane() +
                    u / f.sh * f.Wq + v / f.sw;
    std::memset(xph + planes * f.plane(), 0, f.Qw * sizeof(float));
    for (index_t n = 0; n < p.N; ++n)
        for (index_t g = 0; g < p.groups; ++g) {
            const float* xg = x + n * xs + g * Cg * p.H * p.W;
#pragma omp parallel for collapse(2) schedule(static)
            for (index_t pl = 0; pl < planes; ++pl)
                for (index_t i = 0; i < f.Ri; ++i) {
                    const index_t c = pl / (f.sh * f.sw), a = pl / f.sw % f.sh, bb = pl % f.sw;
                    float* d = xph + pl * f.plane() + i * f.Wq;
                    const index_t iy = f.sh * i + a - p.pad_h;
                    if (iy < 0 || iy >= p.H) {
                        std::memset(d, 0, f.Wq * sizeof(float));
                        continue;
                    }
                    const float* src = xg + (c * p.H + iy) * p.W;
                    for (index_t j = 0, ix = bb - p.pad_w; j < f.Wq; ++j, ix += f.sw)
                        d[j] = ix >= 0 && ix < p.W ? src[ix] : 0.0f;
                }
            sgemm_rows(false, Kg, cols, CKK, 1.0f, w + g * Kg * CKK, CKK, rows, 0.0f, out, cols);
            float* yg = y + n * ys + g * Kg * HWo;
#pragma omp parallel for collapse(2) schedule(static)
            for (index_t k = 0; k < Kg; ++k)
                for (index_t oy = 0; oy < p.Ho; ++oy) {
                    const float* s = out + k * cols + oy * f.Wq;
                    float* d = yg + k * HWo + oy * p.Wo;
                    const float bk = b ? b[g * Kg + k] : 0.0f;
                    if (b)
                        for (index_t ox = 0; ox < p.Wo; ++ox) d[ox] = s[ox] + bk;
                    else
                        std::memcpy(d, s, p.Wo * sizeof(float));
                }
        }
}

// The internal workspace of the calling thread: it only grows.
thread_local std::vector<float> conv_workspace;

float* workspace_or_own(const Conv2dParams& p, float* workspace) {
    if (workspace) return workspace;
    const std::size_t n = conv2d_workspace_size(p);
    if (conv_workspace.size() < n) conv_workspace.resize(n);
    return conv_workspace.data();
}

}  // namespace

namespace {
// Floats of workspace conv2d needs, but for the forward by Winograd blocks.
std::size_t workspace_but_blocks(const Conv2dParams& p) {
    if (conv2d_uses_winograd(p)) return winograd_workspace_size(p);
    if (is_pointwise(p)) return 0;
    const bool fwd = forward_by_phases(p), bwd = backward_by_phases(p);
    const std::size_t phases = std::max(fwd ? phases_forward_floats(p) : 0,
                                        bwd ? phases_backward_floats(p) : 0);
    if (fwd && bwd) return phases;
    const index_t CKK = p.Cg() * p.kh * p.kw, HWo = p.Ho * p.Wo;
    const index_t nb = chunk_images(p);
    // one image's column buffer, for every group (see groups_side_by_side)
    if (nb == 1) return std::max(std::size_t(p.groups * CKK * HWo), phases);
    // column buffer + scratch (+ the transposed weights of every group, if
    // backward makes them)
    return std::max(phases, std::size_t((CKK + p.Kg()) * nb * HWo +
                                        (transpose_in_backward(p, nb) ? CKK * p.K : 0)));
}
}  // namespace

std::size_t conv2d_workspace_size(const Conv2dParams& p) {
    const std::size_t rest = workspace_but_blocks(p);  // (backward's, if blocks go forward)
    return winograd_blocks_usable(p) ? std::max(rest, winograd_blocks_workspace_size(p)) : rest;
}

void conv2d_forward(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y,
                    float* workspace) {
    if (winograd_blocks_usable(p)) {
        winograd_blocks_forward(p, x, w, b, y, workspace_or_own(p, workspace));
        return;
    }
    if (conv2d_uses_winograd(p)) {
        winograd_conv2d_forward(p, x, w, b, y, workspace_or_own(p, workspace));
        return;
    }
    if (forward_by_phases(p)) {
        conv2d_forward_phases(p, x, w, b, y, workspace_or_own(p, workspace));
        return;
    }
    const index_t Cg = p.Cg(), Kg = p.Kg(), CKK = Cg * p.kh * p.kw, HWo = p.Ho * p.Wo;
    const index_t xs = p.C * p.H * p.W, ys = p.K * HWo;
    const index_t nbmax = chunk_images(p);
    if (nbmax == 1) {
        float* cols_ws = is_pointwise(p) ? nullptr : workspace_or_own(p, workspace);
        const bool side_by_side = groups_side_by_side(p);
        auto one = [&](index_t n, index_t g) {
            const float* xg = x + n * xs + g * Cg * p.H * p.W;
            float* yg = y + n * ys + g * Kg * HWo;
            const float* cols = xg;
            if (cols_ws) {
                float* col = cols_ws + (side_by_side ? g * CKK * HWo : 0);
                im2col(p, xg, xs, 1, col);
                cols = col;
            }
            sgemm(false, false, Kg, HWo, CKK, 1.0f, w + g * Kg * CKK, CKK, cols, HWo, 0.0f, yg,
                  HWo);
            if (b) {
#pragma omp parallel for schedule(static)
                for (index_t k = 0; k < Kg; ++k) {
                    const float bk = b[g * Kg + k];
                    float* yk = yg + k * HWo;
                    for (index_t i = 0; i < HWo; ++i) yk[i] += bk;
                }
            }
        };
        for (index_t n = 0; n < p.N; ++n) {
            if (side_by_side) {
#pragma omp parallel for schedule(static)
                for (index_t g = 0; g < p.groups; ++g) one(n, g);
            } else {
                for (index_t g = 0; g < p.groups; ++g) one(n, g);
            }
        }
        return;
    }
    // chunks of nb images: one SGEMM per chunk and group into the scratch
    float* col = workspace_or_own(p, workspace);
    float* out = col + CKK * nbmax * HWo;  // [Kg, nb*HWo]
    for (index_t n0 = 0; n0 < p.N; n0 += nbmax) {
        const index_t nb = std::min(nbmax, p.N - n0), cols = nb * HWo;
        for (index_t g = 0; g < p.groups; ++g) {
            im2col(p, x + n0 * xs + g * Cg * p.H * p.W, xs, nb, col);
            sgemm(false, false, Kg, cols, CKK, 1.0f, w + g * Kg * CKK, CKK, col, cols, 0.0f, out,
                  cols);
            // y[n0 + i, g*Kg + k, :] = out[k, i*HWo : (i+1)*HWo] + b[g*Kg + k]
#pragma omp parallel for collapse(2) schedule(static)
            for (index_t i = 0; i < nb; ++i)
                for (index_t k = 0; k < Kg; ++k) {
                    const float* s = out + k * cols + i * HWo;
                    float* d = y + (n0 + i) * ys + (g * Kg + k) * HWo;
                    if (b) {
                        const float bk = b[g * Kg + k];
                        for (index_t t = 0; t < HWo; ++t) d[t] = s[t] + bk;
                    } else {
                        std::memcpy(d, s, HWo * sizeof(float));
                    }
                }
        }
    }
}

void conv2d_backward(const Conv2dParams& p, const float* dy, const float* w, float* dx,
                     float* workspace) {
    if (conv2d_uses_winograd(p)) {
        winograd_conv2d_backward(p, dy, w, dx, workspace_or_own(p, workspace));
        return;
    }
    const index_t Cg = p.Cg(), Kg = p.Kg(), CKK = Cg * p.kh * p.kw, HWo = p.Ho * p.Wo;
    const index_t xs = p.C * p.H * p.W, ys = p.K * HWo;
    if (backward_by_phases(p)) {
        conv2d_backward_phases(p, dy, w, dx, workspace_or_own(p, workspace));
        return;
    }
    const index_t nbmax = chunk_images(p);
    if (nbmax == 1) {
        const bool pointwise = is_pointwise(p);
        float* col = pointwise ? nullptr : workspace_or_own(p, workspace);
        // (groups side by side, as forward runs them, measured 3-8 % slower here: each
        // thread's SGEMM copies W_g^T panels alone, and col2im runs on one thread)
        for (index_t n = 0; n < p.N; ++n)
            for (index_t g = 0; g < p.groups; ++g) {
                const float* dyg = dy + n * ys + g * Kg * HWo;
                float* dxg = dx + n * xs + g * Cg * p.H * p.W;
                // dcol = W_g^T [CKK, Kg] @ dy_g [Kg, HWo]
                if (pointwise) {
                    sgemm(true, false, CKK, HWo, Kg, 1.0f, w + g * Kg * CKK, CKK, dyg, HWo, 0.0f,
                          dxg, HWo);
                } else {
                    sgemm(true, false, CKK, HWo, Kg, 1.0f, w + g * Kg * CKK, CKK, dyg, HWo, 0.0f,
                          col, HWo);
                    col2im(p, col, 1, dxg, xs);
                }
            }
        return;
    }
    // chunks of nb images: dy gathered into the scratch, one SGEMM per chunk and group
    float* col = workspace_or_own(p, workspace);
    float* in = col + CKK * nbmax * HWo;  // [Kg, nb*HWo]
    // W_g^T [CKK, Kg] of every group, so that the SGEMM reads rows of A in place
    // (its transposed-A reads touch one row of W per depth step).
    const bool transposed = transpose_in_backward(p, nbmax);
    float* wt = in + Kg * nbmax * HWo;
    if (transposed) transpose_weights(p, w, wt);
    for (index_t n0 = 0; n0 < p.N; n0 += nbmax) {
        const index_t nb = std::min(nbmax, p.N - n0), cols = nb * HWo;
        for (index_t g = 0; g < p.groups; ++g) {
#pragma omp parallel for collapse(2) schedule(static)
            for (index_t k = 0; k < Kg; ++k)
                for (index_t i = 0; i < nb; ++i)
                    std::memcpy(in + k * cols + i * HWo, dy + (n0 + i) * ys + (g * Kg + k) * HWo,
                                HWo * sizeof(float));
            if (transposed)
                sgemm(false, false, CKK, cols, Kg, 1.0f, wt + g * CKK * Kg, Kg, in, cols, 0.0f,
                      col, cols);
            else
                sgemm(true, false, CKK, cols, Kg, 1.0f, w + g * Kg * CKK, CKK, in, cols, 0.0f, col,
                      cols);
            col2im(p, col, nb, dx + n0 * xs + g * Cg * p.H * p.W, xs);
        }
    }
}

}  // namespace invert_native
