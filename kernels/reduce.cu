// Reductions: the sum of squares for the global gradient norm (accumulated in f64, one partial
// per block, summed on the host in block order so the result is deterministic), and the column
// sum that gives a bias gradient (Σ over rows of dy, added into an f32 buffer).
#include "common.cuh"

// partials[blockIdx.x] = Σ x² over this block's grid-stride share, in f64.
extern "C" __global__ void sum_squares_f32(const float* __restrict__ x, long long n, double* __restrict__ partials) {
    double acc = 0.0;
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const double v = (double)x[i];
        acc += v * v;
    }
    acc = block_sum_f64(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// out[c] += Σ_r x[r, c]: one thread per column walks the rows (reads coalesced across threads).
extern "C" __global__ void col_sum_add_f32(const float* __restrict__ x, float* __restrict__ out, int rows, int cols) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float acc = 0.0f;
    for (long long r = 0; r < rows; ++r) acc += x[r * cols + c];
    out[c] += acc;
}

// Launch notes: sum_squares_f32 uses 256 threads and at most 1024 blocks (the partials buffer
// has one f64 per block); col_sum_add_f32 uses ceil(cols/256) blocks of 256 threads.
