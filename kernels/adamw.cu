// One AdamW step, exactly the per-element f32 arithmetic of torch.optim.AdamW (single-tensor,
// amsgrad=False) as qtrain_optim::adamw_step does it; the f32 scalars come from
// qtrain_optim::AdamWScalars (computed in f64 and rounded, like torch). The global-norm clip
// factor is fused as grad_scale. Every operation is an explicit round-to-nearest intrinsic so
// that no multiply-add is contracted and the result matches the CPU step bit for bit:
//   g = grad·grad_scale;  p = p·decay (if weight decay);  m = m + (1−β1)(g − m);
//   v = v·β2 + ((1−β2)·g)·g;  denom = sqrt(v)/sqrt(1−β2^t) + eps;  p = p + (−lr/(1−β1^t))·m / denom.
// Parameters are f32 or bf16 (the suffix; bf16 is read, updated in f32 and rounded back);
// gradients and both moments are f32.
#include "common.cuh"

template <typename P>
__device__ __forceinline__ void adamw_step(P* __restrict__ param, const float* __restrict__ grad, float* __restrict__ exp_avg,
                                           float* __restrict__ exp_avg_sq, long long n, int has_decay, float decay, float one_minus_beta1,
                                           float beta2, float one_minus_beta2, float bias_correction2_sqrt, float eps, float neg_step_size,
                                           float grad_scale) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const float g = __fmul_rn(grad[i], grad_scale);
        float p = load_f32(param, i);
        if (has_decay) p = __fmul_rn(p, decay);
        const float m0 = exp_avg[i];
        const float m = __fadd_rn(m0, __fmul_rn(one_minus_beta1, __fsub_rn(g, m0)));
        const float v = __fadd_rn(__fmul_rn(exp_avg_sq[i], beta2), __fmul_rn(__fmul_rn(one_minus_beta2, g), g));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), bias_correction2_sqrt), eps);
        store_f32(param, i, __fadd_rn(p, __fdiv_rn(__fmul_rn(neg_step_size, m), denom)));
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
    }
}

extern "C" __global__ void adamw_step_f32(float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ exp_avg,
                                          float* __restrict__ exp_avg_sq, long long n, int has_decay, float decay, float one_minus_beta1,
                                          float beta2, float one_minus_beta2, float bias_correction2_sqrt, float eps, float neg_step_size,
                                          float grad_scale) {
    adamw_step(param, grad, exp_avg, exp_avg_sq, n, has_decay, decay, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps,
               neg_step_size, grad_scale);
}

extern "C" __global__ void adamw_step_bf16(bf16_t* __restrict__ param, const float* __restrict__ grad, float* __restrict__ exp_avg,
                                           float* __restrict__ exp_avg_sq, long long n, int has_decay, float decay, float one_minus_beta1,
                                           float beta2, float one_minus_beta2, float bias_correction2_sqrt, float eps, float neg_step_size,
                                           float grad_scale) {
    adamw_step(param, grad, exp_avg, exp_avg_sq, n, has_decay, decay, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps,
               neg_step_size, grad_scale);
}

// Launch notes: 1-D grid-stride loop, 256 threads (`ops::grid_1d`); one memory-bound pass
// (f32 params: 4 reads and 3 writes of 4 bytes per element).
