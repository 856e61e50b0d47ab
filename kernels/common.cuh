// Helpers shared by every kernel file: bf16 bit conversions, warp and block reductions, grid
// strides. Kernels are compiled by NVRTC with no system headers at all (see kernels/README.md),
// so this file uses only compiler built-ins and defines bf16 as its raw 16 bits.
#pragma once

// bf16 as stored: the upper half of an IEEE f32.
typedef unsigned short bf16_t;

#define QT_INF_F (__int_as_float(0x7f800000))

__device__ __forceinline__ float bf16_to_f32(bf16_t v) { return __uint_as_float(((unsigned int)v) << 16); }

// Round to nearest even, NaN stays a (quiet) NaN: the same rule as the `half` crate on the host.
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (bf16_t)((u >> 16) | 0x0040u);
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

// Loads of either storage type as f32, so templates serve both.
__device__ __forceinline__ float load_f32(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load_f32(const bf16_t* p, long long i) { return bf16_to_f32(p[i]); }
__device__ __forceinline__ void store_f32(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void store_f32(bf16_t* p, long long i, float v) { p[i] = f32_to_bf16(v); }

// First index and stride of a 1-D grid-stride loop, in 64 bits (tensors may pass 2^31 elements).
__device__ __forceinline__ long long grid_start() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long grid_stride() { return (long long)gridDim.x * blockDim.x; }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_f64(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide reductions. Every thread of the block must call them (blockDim.x a multiple of 32,
// at most 1024) and every thread receives the result. The leading barrier lets the same scratch
// be reused by consecutive calls: no warp writes it before all have read the previous result.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float scratch[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    return warp_sum(lane < nwarps ? scratch[lane] : 0.0f);
}

__device__ __forceinline__ double block_sum_f64(double v) {
    __shared__ double scratch_f64[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum_f64(v);
    __syncthreads();
    if (lane == 0) scratch_f64[warp] = v;
    __syncthreads();
    return warp_sum_f64(lane < nwarps ? scratch_f64[lane] : 0.0);
}

__device__ __forceinline__ float block_max(float v) {
    __shared__ float scratch_max[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch_max[warp] = v;
    __syncthreads();
    return warp_max(lane < nwarps ? scratch_max[lane] : -QT_INF_F);
}
