// Copies that change type or gather rows: f32 <-> bf16 casts (activations meet bf16 weights
// only inside GEMMs, which want both operands in one type), row gather (`gather_rows`, the
// LM-head chunks) and its transpose, row scatter.
#include "common.cuh"

// y[i] = bf16(x[i]), round to nearest even.
extern "C" __global__ void cast_f32_to_bf16(const float* __restrict__ x, bf16_t* __restrict__ y, long long n) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = f32_to_bf16(x[i]);
}

// y[i] = f32(x[i]) (exact).
extern "C" __global__ void cast_bf16_to_f32(const bf16_t* __restrict__ x, float* __restrict__ y, long long n) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = bf16_to_f32(x[i]);
}

// out[r, c] = x[rows[r], c]: x [*, cols], out [num_rows, cols]. Row indices are checked on the host.
extern "C" __global__ void gather_rows_f32(const float* __restrict__ x, const unsigned int* __restrict__ rows, float* __restrict__ out,
                                           int num_rows, int cols) {
    const long long n = (long long)num_rows * cols;
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const long long r = i / cols, c = i % cols;
        out[i] = x[(long long)rows[r] * cols + c];
    }
}

// out[rows[r], c] = src[r, c]: the transpose of gather_rows_f32 (rows must be distinct).
extern "C" __global__ void scatter_rows_f32(const float* __restrict__ src, const unsigned int* __restrict__ rows, float* __restrict__ out,
                                            int num_rows, int cols) {
    const long long n = (long long)num_rows * cols;
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const long long r = i / cols, c = i % cols;
        out[(long long)rows[r] * cols + c] = src[i];
    }
}

// Launch notes: all four are 1-D grid-stride loops over the output elements; the launcher uses
// 256 threads and at most 65535·4 blocks (`ops::grid_1d`), so any size is covered.
