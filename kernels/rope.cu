// Rotary position embedding, rotate-half layout (Su et al. 2021; HF `apply_rotary_pos_emb`):
//   out₁ = x₁·cos − x₂·sin,  out₂ = x₂·cos + x₁·sin   for the halves x₁ = x[:D/2], x₂ = x[D/2:].
// The backward applies the transpose rotation (−θ). x [N, H, D], tables [P, D/2] f32 (built in
// f32: bf16 tables lose positions above 256), positions [N] (range-checked on the host).
#include "common.cuh"

// One thread per (row, head, i < D/2): it reads and writes the pair (i, i + D/2).
extern "C" __global__ void rope_fwd_f32(const float* __restrict__ x, const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                                        const unsigned int* __restrict__ positions, float* __restrict__ out, int rows, int heads, int d) {
    const int half = d / 2;
    const long long n = (long long)rows * heads * half;
    for (long long idx = grid_start(); idx < n; idx += grid_stride()) {
        const int i = (int)(idx % half);
        const long long rh = idx / half;  // row · heads + head
        const long long row = rh / heads;
        const long long p = positions[row];
        const float c = cos_t[p * half + i], s = sin_t[p * half + i];
        const long long base = rh * d;
        const float x1 = x[base + i], x2 = x[base + i + half];
        out[base + i] = x1 * c - x2 * s;
        out[base + i + half] = x2 * c + x1 * s;
    }
}

// dx₁ = dy₁·cos + dy₂·sin,  dx₂ = dy₂·cos − dy₁·sin.
extern "C" __global__ void rope_bwd_f32(const float* __restrict__ dy, const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                                        const unsigned int* __restrict__ positions, float* __restrict__ dx, int rows, int heads, int d) {
    const int half = d / 2;
    const long long n = (long long)rows * heads * half;
    for (long long idx = grid_start(); idx < n; idx += grid_stride()) {
        const int i = (int)(idx % half);
        const long long rh = idx / half;
        const long long row = rh / heads;
        const long long p = positions[row];
        const float c = cos_t[p * half + i], s = sin_t[p * half + i];
        const long long base = rh * d;
        const float g1 = dy[base + i], g2 = dy[base + i + half];
        dx[base + i] = g1 * c + g2 * s;
        dx[base + i + half] = g2 * c - g1 * s;
    }
}

// Launch notes: 1-D grid-stride loop over rows·heads·D/2 pairs, 256 threads (`ops::grid_1d`).
