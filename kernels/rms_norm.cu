// RMSNorm over the last dimension (Zhang & Sennrich 2019), as HF Qwen2RMSNorm computes it in f32:
//   y = w ⊙ (x · r),  r = 1 / sqrt(mean(x²) + eps).
// Per-head q/k norm (Qwen3) is the same kernel on [N·H, D] rows. The weight is f32 or bf16 (the
// dtype suffix names the weight's storage); x, y, dx and the weight gradient are f32.
#include "common.cuh"

// One block per row.
template <typename W>
__device__ __forceinline__ void rms_norm_fwd(const float* __restrict__ x, const W* __restrict__ w, float* __restrict__ y, int cols, float eps) {
    const long long row = blockIdx.x;
    const float* xr = x + row * cols;
    float* yr = y + row * cols;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) ss += xr[c] * xr[c];
    ss = block_sum(ss);
    const float inv = 1.0f / sqrtf(ss / (float)cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = load_f32(w, c) * (xr[c] * inv);
}

extern "C" __global__ void rms_norm_fwd_f32(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, int cols, float eps) {
    rms_norm_fwd(x, w, y, cols, eps);
}

extern "C" __global__ void rms_norm_fwd_bf16(const float* __restrict__ x, const bf16_t* __restrict__ w, float* __restrict__ y, int cols,
                                             float eps) {
    rms_norm_fwd(x, w, y, cols, eps);
}

// Backward. With u = w ⊙ dy:  dx = r·u − x · r³ · (Σ u·x) / C,  dw += Σ_rows dy ⊙ x·r.
// Blocks stride over rows; when dw is requested each block keeps its partial dw in dynamic shared
// memory (cols floats; thread t owns columns t, t+blockDim, …, so no two threads touch one
// entry) and adds it to dw with one atomic per column at the end.
template <typename W>
__device__ __forceinline__ void rms_norm_bwd(const float* __restrict__ x, const W* __restrict__ w, const float* __restrict__ dy,
                                             float* __restrict__ dx, float* __restrict__ dw, int rows, int cols, float eps) {
    extern __shared__ float s_dw[];
    if (dw != nullptr) {
        for (int c = threadIdx.x; c < cols; c += blockDim.x) s_dw[c] = 0.0f;
    }
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* xr = x + row * cols;
        const float* dyr = dy + row * cols;
        float* dxr = dx + row * cols;
        float ss = 0.0f, dot = 0.0f;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            ss += xr[c] * xr[c];
            dot += load_f32(w, c) * dyr[c] * xr[c];
        }
        ss = block_sum(ss);
        dot = block_sum(dot);
        const float r = 1.0f / sqrtf(ss / (float)cols + eps);
        const float k = r * r * r * dot / (float)cols;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            dxr[c] = r * load_f32(w, c) * dyr[c] - xr[c] * k;
            if (dw != nullptr) s_dw[c] += dyr[c] * xr[c] * r;
        }
    }
    if (dw != nullptr) {
        for (int c = threadIdx.x; c < cols; c += blockDim.x) atomicAdd(&dw[c], s_dw[c]);
    }
}

extern "C" __global__ void rms_norm_bwd_f32(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ dy,
                                            float* __restrict__ dx, float* __restrict__ dw, int rows, int cols, float eps) {
    rms_norm_bwd(x, w, dy, dx, dw, rows, cols, eps);
}

extern "C" __global__ void rms_norm_bwd_bf16(const float* __restrict__ x, const bf16_t* __restrict__ w, const float* __restrict__ dy,
                                             float* __restrict__ dx, float* __restrict__ dw, int rows, int cols, float eps) {
    rms_norm_bwd(x, w, dy, dx, dw, rows, cols, eps);
}

// Launch notes (ops/rms_norm.rs): forward grid = rows, block = cols/4 rounded up to a multiple
// of 32 (32..1024). Backward grid = min(rows, 1024) blocks of the same size, dynamic shared
// memory cols·4 bytes when dw is requested (with block_sum's 128 static bytes ≤ 48 KiB, so
// cols ≤ 12256), else 0. dw is not
// deterministic in its last bits (atomics across blocks).
