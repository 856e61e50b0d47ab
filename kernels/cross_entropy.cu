// Cross-entropy over one chunk of LM-head logits [M, V] (f32), the softmax half of the fused
// chunked LM head + loss (the GEMMs around it run in cuBLASLt; see ops/cross_entropy.rs):
//   lse = log Σ exp(logits),  loss = lse − logits[target],  correct = (argmax == target),
// and, when asked, the gradient written over the logits: dlogits = s · (softmax − onehot).
#include "common.cuh"

// Forward and backward in one pass over the row (hence `fwd_bwd`): the gradient needs the
// row's log-sum-exp, which the forward has just computed. One block per row; targets are valid
// class ids (rows with -100 never reach the kernel). argmax takes the first index of the
// maximum, as the CPU twin does.
extern "C" __global__ void cross_entropy_fwd_bwd_f32(float* __restrict__ logits, const int* __restrict__ targets, float* __restrict__ loss,
                                                 int* __restrict__ correct, int vocab, float grad_scale, int write_grad) {
    __shared__ float s_max[32];
    __shared__ int s_idx[32];
    const long long row = blockIdx.x;
    float* lr = logits + row * vocab;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;

    float m = -QT_INF_F;
    int idx = 0x7fffffff;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        const float v = lr[j];
        if (v > m) {
            m = v;
            idx = j;
        }
    }
    // (max, first index) reduction: warps by shuffles, then across warps through shared memory.
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        const int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
        if (m2 > m || (m2 == m && i2 < idx)) {
            m = m2;
            idx = i2;
        }
    }
    if (lane == 0) {
        s_max[warp] = m;
        s_idx[warp] = idx;
    }
    __syncthreads();
    m = lane < nwarps ? s_max[lane] : -QT_INF_F;
    idx = lane < nwarps ? s_idx[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        const int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
        if (m2 > m || (m2 == m && i2 < idx)) {
            m = m2;
            idx = i2;
        }
    }

    float sum = 0.0f;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) sum += expf(lr[j] - m);
    sum = block_sum(sum);
    const float lse = m + logf(sum);
    const int target = targets[row];
    if (threadIdx.x == 0) {
        loss[row] = lse - lr[target];
        correct[row] = idx == target ? 1 : 0;
    }
    if (write_grad == 0) return;
    __syncthreads();  // lr[target] was read above; it is overwritten below.
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        // s·p − s at the target, as the CPU twin: no fused multiply-add.
        const float g = __fmul_rn(grad_scale, expf(lr[j] - lse));
        lr[j] = j == target ? g - grad_scale : g;
    }
}

// Launch notes: grid = M rows of the chunk, 1024 threads (V ≈ 152k: ~150 elements per thread per
// pass, three passes over the row, the last only with gradients).
