// Token embedding: forward gathers rows of the table (f32 or bf16 storage) into f32
// activations; backward scatter-adds the output gradient rows into an f32 table gradient.
#include "common.cuh"

// out[n, c] = table[ids[n], c]; ids are range-checked on the host.
template <typename T>
__device__ __forceinline__ void embedding_fwd(const T* __restrict__ table, const unsigned int* __restrict__ ids, float* __restrict__ out,
                                              int num_ids, int cols) {
    const long long n = (long long)num_ids * cols;
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const long long r = i / cols, c = i % cols;
        out[i] = load_f32(table, (long long)ids[r] * cols + c);
    }
}

extern "C" __global__ void embedding_fwd_f32(const float* __restrict__ table, const unsigned int* __restrict__ ids, float* __restrict__ out,
                                             int num_ids, int cols) {
    embedding_fwd(table, ids, out, num_ids, cols);
}

extern "C" __global__ void embedding_fwd_bf16(const bf16_t* __restrict__ table, const unsigned int* __restrict__ ids, float* __restrict__ out,
                                              int num_ids, int cols) {
    embedding_fwd(table, ids, out, num_ids, cols);
}

// grad_table[ids[n], c] += dy[n, c]. Repeated ids make this a scatter-add, so it uses atomics:
// the sum is exact up to f32 rounding, but its order (and so the last bits) is not deterministic.
extern "C" __global__ void embedding_bwd_f32(float* __restrict__ grad_table, const unsigned int* __restrict__ ids, const float* __restrict__ dy,
                                             int num_ids, int cols) {
    const long long n = (long long)num_ids * cols;
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const long long r = i / cols, c = i % cols;
        atomicAdd(&grad_table[(long long)ids[r] * cols + c], dy[i]);
    }
}

// Launch notes: 1-D grid-stride loops over [num_ids, cols], 256 threads (`ops::grid_1d`).
