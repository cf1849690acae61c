// The DSIFT hyper-parameters as both binding modules (_cpu, _cuda) receive them.
#pragma once

#include "invert_native/dsift.h"

// The argument list shared by every DSIFT binding after the arrays (or pointers).
#define DSIFT_HYPER_ARGS                                                                     \
    index_t N, index_t H, index_t W, index_t K, index_t nbin, index_t bin_size, index_t sx,  \
        index_t sy, index_t xmin, index_t ymin, index_t xmax, index_t ymax, double window,    \
        bool exact_atan2, bool second_l2, double clamp
#define DSIFT_HYPER_PASS \
    N, H, W, K, nbin, bin_size, sx, sy, xmin, ymin, xmax, ymax, window, exact_atan2, second_l2, clamp

namespace invert_native::bind {

inline DsiftParams dsift_params_of(DSIFT_HYPER_ARGS) { return make_dsift_params(DSIFT_HYPER_PASS); }

}  // namespace invert_native::bind
