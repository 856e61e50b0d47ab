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

// ---- dropout masks from Philox4x32-10 (Salmon et al., SC'11), the same arithmetic as
// crates/qtrain-core/src/philox.rs: element (row, col) of the mask keyed (seed, layer, module) is
// decided by word col % 4 of philox4x32_10(counter = {col / 4, row, layer, module}, key = seed):
// dropped (0) when the word is below `threshold` = floor(p · 2^32), else kept and scaled by
// `scale` = 1/(1-p). threshold == 0 means no dropout (every factor 1, no Philox calls).

// One dropout mask, passed by value as a kernel parameter (#[repr(C)] DropoutArgs on the host).
struct DropoutArgs {
    unsigned int seed_lo, seed_hi, layer, module, threshold;
    float scale;
};

__device__ __forceinline__ void philox4x32_10(unsigned int c[4], unsigned int k0, unsigned int k1) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const unsigned int hi0 = __umulhi(0xD2511F53u, c[0]), lo0 = 0xD2511F53u * c[0];
        const unsigned int hi1 = __umulhi(0xCD9E8D57u, c[2]), lo1 = 0xCD9E8D57u * c[2];
        const unsigned int n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
    }
}

// The mask values of columns 4·group … 4·group+3 of `row`: 0 or d.scale (all 1 without dropout).
__device__ __forceinline__ void dropout_factors4(const DropoutArgs& d, unsigned int row, unsigned int group, float f[4]) {
    if (d.threshold == 0u) {
        f[0] = f[1] = f[2] = f[3] = 1.0f;
        return;
    }
    unsigned int c[4] = {group, row, d.layer, d.module};
    philox4x32_10(c, d.seed_lo, d.seed_hi);
    for (int i = 0; i < 4; ++i) f[i] = c[i] >= d.threshold ? d.scale : 0.0f;
}

// The mask value of one element.
__device__ __forceinline__ float dropout_factor(const DropoutArgs& d, unsigned int row, unsigned int col) {
    float f[4];
    dropout_factors4(d, row, col >> 2, f);
    return f[col & 3u];
}
