// The low-rank half of a LoRA linear (Hu et al. 2021, eq. 3), with PEFT's dropout on the input
// of A folded in as an optional mask and the scale s = alpha/r folded into the up-projection:
//   forward:   xa = (x ⊙ m) Aᵀ  [N, r],        y += s · xa Bᵀ  [N, out]
//   backward:  g  = s · dy B    [N, r],        dx += (g A) ⊙ m [N, in]
// (dA += gᵀ (x ⊙ m) and dB += s · dyᵀ xa are reductions over tokens and run as cuBLASLt GEMMs.)
// x, y, A [r, in], B [out, r], mask and all gradients are f32; r is small (8–64).
#include "common.cuh"

// xa[n, j] = Σ_k x[n, k] · m[n, k] · A[j, k]; mask may be null (no dropout).
// One block per row n; warp w computes the dot products for j = w, w + warps, …; the row of x
// is re-read once per j from L1/L2 (r is small, the row is at most a few tens of KiB).
extern "C" __global__ void lora_down_fwd_f32(const float* __restrict__ x, const float* __restrict__ mask, const float* __restrict__ a,
                                             float* __restrict__ xa, int d_in, int r) {
    const long long row = blockIdx.x;
    const float* xr = x + row * d_in;
    const float* mr = mask != nullptr ? mask + row * d_in : nullptr;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int j = warp; j < r; j += nwarps) {
        const float* aj = a + (long long)j * d_in;
        float acc = 0.0f;
        for (int k = lane; k < d_in; k += 32) {
            const float xv = mr != nullptr ? xr[k] * mr[k] : xr[k];
            acc += xv * aj[k];
        }
        acc = warp_sum(acc);
        if (lane == 0) xa[row * r + j] = acc;
    }
}

// y[n, o] += scale · Σ_j xa[n, j] · B[o, j]. Grid (ceil(out/blockDim), N); the row of xa is
// staged in dynamic shared memory (r floats).
extern "C" __global__ void lora_up_fwd_f32(const float* __restrict__ xa, const float* __restrict__ b, float* __restrict__ y, int d_out, int r,
                                           float scale) {
    extern __shared__ float s_xa[];
    const long long row = blockIdx.y;
    for (int j = threadIdx.x; j < r; j += blockDim.x) s_xa[j] = xa[row * r + j];
    __syncthreads();
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= d_out) return;
    const float* bo = b + (long long)o * r;
    float acc = 0.0f;
    for (int j = 0; j < r; ++j) acc += s_xa[j] * bo[j];
    y[row * d_out + o] += scale * acc;
}

// g[n, j] = scale · Σ_o dy[n, o] · B[o, j]. Same shape of work as lora_down_fwd_f32 with B's
// column j (stride r) in place of A's row j.
extern "C" __global__ void lora_dyb_bwd_f32(const float* __restrict__ dy, const float* __restrict__ b, float* __restrict__ g, int d_out, int r,
                                            float scale) {
    const long long row = blockIdx.x;
    const float* dyr = dy + row * d_out;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int j = warp; j < r; j += nwarps) {
        float acc = 0.0f;
        for (int o = lane; o < d_out; o += 32) acc += dyr[o] * b[(long long)o * r + j];
        acc = warp_sum(acc);
        if (lane == 0) g[row * r + j] = scale * acc;
    }
}

// dx[n, k] += m[n, k] · Σ_j g[n, j] · A[j, k]; mask may be null. Grid (ceil(in/blockDim), N),
// the row of g in dynamic shared memory (r floats); reads of A are coalesced over k.
extern "C" __global__ void lora_dx_bwd_f32(const float* __restrict__ g, const float* __restrict__ a, const float* __restrict__ mask,
                                           float* __restrict__ dx, int d_in, int r) {
    extern __shared__ float s_g[];
    const long long row = blockIdx.y;
    for (int j = threadIdx.x; j < r; j += blockDim.x) s_g[j] = g[row * r + j];
    __syncthreads();
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= d_in) return;
    float acc = 0.0f;
    for (int j = 0; j < r; ++j) acc += s_g[j] * a[(long long)j * d_in + k];
    const long long i = row * d_in + k;
    dx[i] += mask != nullptr ? acc * mask[i] : acc;
}

// Launch notes (ops/lora.rs): lora_down_fwd_f32 and lora_dyb_bwd_f32: grid = N, 256 threads
// (8 warps). lora_up_fwd_f32 and lora_dx_bwd_f32: grid = (ceil(cols/256), N), 256 threads,
// dynamic shared memory r·4 bytes. N is at most 65535 in grid.y for the last two: the launcher
// splits larger N into row slices.
