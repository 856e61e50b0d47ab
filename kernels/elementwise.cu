// Element-wise arithmetic on f32 activations: add, scaled accumulate (axpy), product, and the row-broadcast bias add of a linear layer (bias in f32 or bf16).
#include "common.cuh"

// out = a + b
extern "C" __global__ void add_f32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out, long long n) {
    for (long long i = grid_start(); i < n; i += grid_stride()) out[i] = a[i] + b[i];
}

// acc += alpha · x (the CPU twin computes `acc + alpha * x` in f32; a fused multiply-add here
// may differ from it in the last bit).
extern "C" __global__ void axpy_f32(float* __restrict__ acc, const float* __restrict__ x, float alpha, long long n) {
    for (long long i = grid_start(); i < n; i += grid_stride()) acc[i] += alpha * x[i];
}

// out = a ⊙ b
extern "C" __global__ void mul_f32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out, long long n) {
    for (long long i = grid_start(); i < n; i += grid_stride()) out[i] = a[i] * b[i];
}

// y[r, c] += bias[c] for y [rows, cols].
template <typename T>
__device__ __forceinline__ void bias_add(float* __restrict__ y, const T* __restrict__ bias, int rows, int cols) {
    const long long n = (long long)rows * cols;
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] += load_f32(bias, i % cols);
}

extern "C" __global__ void bias_add_f32(float* __restrict__ y, const float* __restrict__ bias, int rows, int cols) {
    bias_add(y, bias, rows, cols);
}

extern "C" __global__ void bias_add_bf16(float* __restrict__ y, const bf16_t* __restrict__ bias, int rows, int cols) {
    bias_add(y, bias, rows, cols);
}

// Launch notes: 1-D grid-stride loops, 256 threads, at most 65535·4 blocks (`ops::grid_1d`).
// Memory-bound: one read per input and one write per output element.
