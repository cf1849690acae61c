// Pointer and stream conversions shared by the binding files of the CUDA module (_cuda).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "invert_native/params.h"

namespace invert_native::bind {

// Device pointers and streams cross the boundary as Python ints.
using ptr_t = std::uintptr_t;

template <typename T>
inline T* as_ptr(ptr_t address, const char* name) {
    if (address == 0) throw std::invalid_argument(std::string(name) + " is a null device pointer");
    return reinterpret_cast<T*>(address);
}

template <typename T>
inline T* as_ptr_or_null(ptr_t address) {
    return reinterpret_cast<T*>(address);
}

inline cudaStream_t as_stream(ptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

}  // namespace invert_native::bind
