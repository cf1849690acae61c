// Off switches read from the environment, internal to the CPU core.
#pragma once

#include <cstdlib>

namespace invert_native {

// Whether the variable is set to anything but "" or "0". Internal linkage: the
// AVX-512 files must not share an inline symbol with the rest of the core.
static inline bool env_flag(const char* name) {
    const char* v = std::getenv(name);
    return v && v[0] && v[0] != '0';
}

}  // namespace invert_native
