// SwiGLU (Shazeer 2020): y = silu(g) · u with silu(g) = g · σ(g). Backward:
//   du = dy · silu(g),  dg = dy · u · σ(g) · (1 + g · (1 − σ(g))).
#include "common.cuh"

extern "C" __global__ void swiglu_fwd_f32(const float* __restrict__ gate, const float* __restrict__ up, float* __restrict__ out, long long n) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

extern "C" __global__ void swiglu_bwd_f32(const float* __restrict__ gate, const float* __restrict__ up, const float* __restrict__ dy,
                                          float* __restrict__ dgate, float* __restrict__ dup, long long n) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const float g = gate[i], u = up[i], d = dy[i];
        const float s = 1.0f / (1.0f + expf(-g));
        dgate[i] = d * u * s * (1.0f + g * (1.0f - s));
        dup[i] = d * g * s;
    }
}

// Launch notes: 1-D grid-stride loops, 256 threads (`ops::grid_1d`). expf is the accurate
// (non-fast-math) version: NVRTC runs without --use_fast_math.
