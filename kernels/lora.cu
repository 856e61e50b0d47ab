// The low-rank half of a LoRA linear (Hu et al. 2021, eq. 3), with PEFT's dropout on the input
// of A folded in as a mask m drawn inside the kernels from its Philox key (common.cuh,
// dropout_factors4; never stored) and the scale s = alpha/r folded into the up-projection:
//   forward:   xa = (x ⊙ m) Aᵀ  [N, r],        y += s · xa Bᵀ  [N, out]
//   backward:  g  = s · dy B    [N, r],        dx += (g A) ⊙ m [N, in]
// (dA += gᵀ (x ⊙ m) and dB += s · dyᵀ xa are reductions over tokens and run as cuBLASLt GEMMs;
// dropout_apply_f32 makes the x ⊙ m operand of the first, a scratch freed right after.)
// x, y, A [r, in], B [out, r] and all gradients are f32; r is small (8–64). Mask rows are the
// global row indices of x (launchers that slice rows pass the slice's first row as row0).
#include "common.cuh"

// xa[n, j] = Σ_k x[n, k] · m[n, k] · A[j, k]. One block per row n; warp w computes the dot
// products for j = w, w + warps, …; each lane takes groups of four columns (one Philox call
// gives a group's four mask values). The row of x is re-read once per j from L1/L2 (r is small,
// the row is at most a few tens of KiB).
extern "C" __global__ void lora_down_fwd_f32(const float* __restrict__ x, const float* __restrict__ a, float* __restrict__ xa, int d_in, int r,
                                             DropoutArgs drop) {
    const long long row = blockIdx.x;
    const float* xr = x + row * d_in;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int groups = (d_in + 3) >> 2;
    for (int j = warp; j < r; j += nwarps) {
        const float* aj = a + (long long)j * d_in;
        float acc = 0.0f;
        for (int g = lane; g < groups; g += 32) {
            float f[4];
            dropout_factors4(drop, (unsigned int)row, (unsigned int)g, f);
            for (int i = 0; i < 4; ++i) {
                const int k = 4 * g + i;
                if (k < d_in) acc += xr[k] * f[i] * aj[k];
            }
        }
        acc = warp_sum(acc);
        if (lane == 0) xa[row * r + j] = acc;
    }
}

// out[n, k] = x[n, k] · m[n, k] over rows·cols elements; one thread per group of four columns of
// a row, grid-stride.
extern "C" __global__ void dropout_apply_f32(const float* __restrict__ x, float* __restrict__ out, long long rows, int cols, DropoutArgs drop) {
    const long long groups = (cols + 3) >> 2;
    for (long long i = grid_start(); i < rows * groups; i += grid_stride()) {
        const long long row = i / groups;
        const int g = (int)(i - row * groups);
        float f[4];
        dropout_factors4(drop, (unsigned int)row, (unsigned int)g, f);
        for (int c = 0; c < 4; ++c) {
            const int k = 4 * g + c;
            if (k < cols) out[row * cols + k] = x[row * cols + k] * f[c];
        }
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

// dx[n, k] += m[n, k] · Σ_j g[n, j] · A[j, k]. Grid (ceil(groups/blockDim), rows of this slice);
// each thread takes one group of four columns (one Philox call), the row of g in dynamic shared
// memory (r floats). Row n of the slice is row row0 + n of the mask.
extern "C" __global__ void lora_dx_bwd_f32(const float* __restrict__ g, const float* __restrict__ a, float* __restrict__ dx, int d_in, int r,
                                           long long row0, DropoutArgs drop) {
    extern __shared__ float s_g[];
    const long long row = blockIdx.y;
    for (int j = threadIdx.x; j < r; j += blockDim.x) s_g[j] = g[row * r + j];
    __syncthreads();
    const int grp = blockIdx.x * blockDim.x + threadIdx.x;
    if (grp >= (d_in + 3) >> 2) return;
    float f[4];
    dropout_factors4(drop, (unsigned int)(row0 + row), (unsigned int)grp, f);
    for (int c = 0; c < 4; ++c) {
        const int k = 4 * grp + c;
        if (k >= d_in) break;
        float acc = 0.0f;
        for (int j = 0; j < r; ++j) acc += s_g[j] * a[(long long)j * d_in + k];
        dx[row * d_in + k] += acc * f[c];
    }
}

// Launch notes (ops/lora.rs): lora_down_fwd_f32 and lora_dyb_bwd_f32: grid = N, 256 threads
// (8 warps). lora_up_fwd_f32: grid = (ceil(out/256), N); lora_dx_bwd_f32: grid =
// (ceil(ceil(in/4)/256), N); both 256 threads, dynamic shared memory r·4 bytes, and N is at most
// 65535 in grid.y: the launcher splits larger N into row slices. dropout_apply_f32: 1-D grid.
