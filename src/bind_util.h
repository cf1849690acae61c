// Array checks shared by the binding files of the CPU module (_cpu).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "invert_native/params.h"

namespace invert_native::bind {

namespace py = pybind11;

using Shape = std::vector<index_t>;

inline std::string shape_str(const Shape& s) {
    std::string r = "(";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + (s.size() == 1 ? ",)" : ")");
}

inline Shape shape_of(const py::array& a) {
    return Shape(a.shape(), a.shape() + a.ndim());
}

// Checks a float32 (or int64 when `index` is set) C-contiguous array of the given
// rank (and exact shape when `expect` is non-empty).
inline void check(const py::array& a, const char* name, int ndim, const Shape& expect = {},
           bool output = false, bool index = false) {
    if (index) {
        if (!a.dtype().is(py::dtype::of<index_t>()))
            throw py::type_error(std::string(name) + " must be int64, got " +
                                 std::string(py::str(a.dtype())));
    } else if (!a.dtype().is(py::dtype::of<float>())) {
        throw py::type_error(std::string(name) + " must be float32, got " +
                             std::string(py::str(a.dtype())));
    }
    if (a.ndim() != ndim)
        throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) +
                              " dimensions, got shape " + shape_str(shape_of(a)));
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + " must be C-contiguous");
    if (output && !a.writeable()) throw py::value_error(std::string(name) + " must be writeable");
    if (!expect.empty() && shape_of(a) != expect)
        throw py::value_error(std::string(name) + " has shape " + shape_str(shape_of(a)) +
                              ", expected " + shape_str(expect));
}

inline const float* cptr(const py::array& a) { return static_cast<const float*>(a.data()); }
inline float* mptr(py::array& a) { return static_cast<float*>(a.mutable_data()); }

}  // namespace invert_native::bind
