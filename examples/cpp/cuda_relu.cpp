// Linking the CUDA core from C++ (target invert_native::cuda). Works with or
// without a GPU: it reports the CUDA devices, calls a launcher on empty work
// (which returns before touching any device), and only when a device exists
// runs ReLU on a few values on a stream of its own and checks them.
// Exit status 0 when every check that could run passed.
#include <invert_native/cuda_ops.h>

#include <cstdio>
#include <vector>

namespace inv = invert_native;

namespace {

// Prints the CUDA error and returns false when `err` is one.
bool ok(cudaError_t err, const char* what) {
    if (err == cudaSuccess) return true;
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(err));
    return false;
}

}  // namespace

int main() {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess) {
        (void)cudaGetLastError();  // no driver or no device: the CUDA runtime says so by an error
        devices = 0;
    }
    std::printf("CUDA devices: %d\n", devices);

    // Empty work: the launcher returns at once (cuda_ops.h), so this runs on any machine
    // and proves the library links.
    inv::launch_relu_forward(0, nullptr, nullptr, nullptr);
    if (devices == 0) {
        std::printf("no CUDA device: launched nothing\n");
        return 0;
    }

    const std::vector<float> x = {-2.0f, -0.5f, 0.0f, 0.25f, 1.0f, -3.0f, 4.0f, 7.5f};
    const std::size_t bytes = x.size() * sizeof(float);
    float *dx = nullptr, *dy = nullptr;
    cudaStream_t stream = nullptr;
    if (!ok(cudaMalloc(&dx, bytes), "cudaMalloc") || !ok(cudaMalloc(&dy, bytes), "cudaMalloc") ||
        !ok(cudaStreamCreate(&stream), "cudaStreamCreate"))
        return 1;
    std::vector<float> y(x.size());
    bool good = ok(cudaMemcpyAsync(dx, x.data(), bytes, cudaMemcpyHostToDevice, stream), "copy in");
    try {
        inv::launch_relu_forward(inv::index_t(x.size()), dx, dy, stream);
    } catch (const inv::CudaError& e) {
        std::fprintf(stderr, "launch_relu_forward: %s\n", e.what());
        good = false;
    }
    good = good && ok(cudaMemcpyAsync(y.data(), dy, bytes, cudaMemcpyDeviceToHost, stream),
                      "copy out") &&
           ok(cudaStreamSynchronize(stream), "synchronize");
    for (std::size_t i = 0; good && i < x.size(); ++i) {
        const float expected = x[i] > 0.0f ? x[i] : 0.0f;
        if (y[i] != expected) {
            std::fprintf(stderr, "relu(%g) = %g, expected %g\n", x[i], y[i], expected);
            good = false;
        }
    }
    cudaStreamDestroy(stream);
    cudaFree(dx);
    cudaFree(dy);
    std::printf("ReLU on the GPU: %s\n", good ? "ok" : "FAILED");
    return good ? 0 : 1;
}
