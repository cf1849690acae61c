// Winograd F(2x2, 3x3) for the CPU's 3x3, stride-1 convolutions and strided
// layers' backward by phases (internal to the core; conv2d.cpp chooses it).
// See conv2d_winograd.cpp.
#pragma once

#include <cstddef>

#include "invert_native/params.h"

namespace invert_native {

// Whether conv2d_forward / conv2d_backward compute p by Winograd. Depends on
// the layer's shape only, never on the batch size, so that an image of a
// batch gets the same bits as alone.
bool conv2d_uses_winograd(const Conv2dParams& p);

// Floats of workspace the Winograd forward and backward need (the larger).
std::size_t winograd_workspace_size(const Conv2dParams& p);

void winograd_conv2d_forward(const Conv2dParams& p, const float* x, const float* w,
                             const float* b, float* y, float* workspace);
void winograd_conv2d_backward(const Conv2dParams& p, const float* dy, const float* w, float* dx,
                              float* workspace);

// A strided layer's backward by phases (conv2d.cpp), as one Winograd 3x3
// correlation of dy: strides, taps per phase along each axis, and the phase
// grid (rows [t0, t0 + Tt), columns [s0, s0 + Tw)).
struct PhaseGrid {
    index_t sh, sw, Ph, Qw, t0, Tt, s0, Tw;
};
// Whether it applies (either direction): 3 taps a phase along both axes, zero
// taps at most a quarter, enough channels.
bool winograd_phases_usable(const Conv2dParams& p, const PhaseGrid& q);
std::size_t winograd_phases_workspace_size(const Conv2dParams& p, const PhaseGrid& q);
// dx of the layer p from dy; workspace: winograd_phases_workspace_size floats.
void winograd_phases_backward(const Conv2dParams& p, const PhaseGrid& q, const float* dy,
                              const float* w, float* dx, float* workspace);

// A strided layer's forward by phases as one Winograd 3x3 correlation of the
// input's phase planes (where winograd_phases_usable).
std::size_t winograd_phases_forward_workspace_size(const Conv2dParams& p, const PhaseGrid& q);
void winograd_phases_forward(const Conv2dParams& p, const PhaseGrid& q, const float* x,
                             const float* w, const float* b, float* y, float* workspace);

// A stride-1 layer's forward with a larger kernel (5x5: CaffeNet conv2) as one
// Winograd 3x3 correlation of shifted copies of its input.
bool winograd_blocks_usable(const Conv2dParams& p);
std::size_t winograd_blocks_workspace_size(const Conv2dParams& p);
void winograd_blocks_forward(const Conv2dParams& p, const float* x, const float* w,
                             const float* b, float* y, float* workspace);

}  // namespace invert_native
