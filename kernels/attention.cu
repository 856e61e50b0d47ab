// Causal grouped-query attention, first version: head-major copies + cuBLASLt GEMMs + the masked
// softmax kernels below. With q heads grouped under their kv head, the `group = H / KV` query
// heads that share one kv head are stacked as rows, so for each (batch row b, kv head g) the
// scores are one plain GEMM: S_z = scale · Q_z K_zᵀ, Q_z [group·T, D], K_z [kv_len, D],
// z = b·KV + g (strided-batched over z). Rows of S_z are r = gh·T + i (head h = g·group + gh,
// query i). Forward saves only the log-sum-exp per (b, i, h); backward recomputes P from it
// (FlashAttention-2, Dao 2023, Alg. 2, without tiling).
//
// Mask (AttentionMask in qtrain-core): query i sits at key position q_offset + i and sees key j
// when j <= q_offset + i, key_valid[b, j] (if given) and segments[b, j] == segments[b, q_offset+i]
// (if given). A query that sees no key gets P = 0, output 0 and lse 0.
#include "common.cuh"

// [B, cap, Hx, D] (first L positions) -> head-major [B, Hx, L, D].
extern "C" __global__ void attn_to_heads_f32(const float* __restrict__ src, float* __restrict__ dst, int batch, int len, int cap, int heads,
                                             int d) {
    const long long n = (long long)batch * heads * len * d;
    for (long long idx = grid_start(); idx < n; idx += grid_stride()) {
        const long long e = idx % d;
        long long t = idx / d;
        const long long pos = t % len;
        t /= len;
        const long long h = t % heads;
        const long long b = t / heads;
        dst[idx] = src[((b * cap + pos) * heads + h) * d + e];
    }
}

// Head-major [B, Hx, L, D] -> [B, L, Hx, D].
extern "C" __global__ void attn_from_heads_f32(const float* __restrict__ src, float* __restrict__ dst, int batch, int len, int heads, int d) {
    const long long n = (long long)batch * heads * len * d;
    for (long long idx = grid_start(); idx < n; idx += grid_stride()) {
        const long long e = idx % d;
        long long t = idx / d;
        const long long h = t % heads;
        t /= heads;
        const long long pos = t % len;
        const long long b = t / len;
        dst[idx] = src[((b * heads + h) * len + pos) * d + e];
    }
}

// Which (b, i, h) a score row belongs to. `row` is global: z·group·T + gh·T + i over all z, which
// is also the row's index in head-major [B, H, T] (delta). A launch covers rows row0 … row0 + grid:
// whole z slices, or a block of rows of one slice when one slice's scores exceed the budget.
struct RowIds {
    long long b, i, h;
};

__device__ __forceinline__ RowIds row_ids(long long row, int group, int t_len, int kv_heads) {
    const long long per_z = (long long)group * t_len;
    const long long z = row / per_z;
    const long long w = row % per_z;
    RowIds r;
    r.b = z / kv_heads;
    r.h = (z % kv_heads) * group + w / t_len;
    r.i = w % t_len;
    return r;
}

__device__ __forceinline__ bool key_allowed(long long b, long long qpos, int j, int kv_len, const unsigned char* __restrict__ key_valid,
                                            const unsigned int* __restrict__ segments) {
    if (j > qpos) return false;
    const long long base = b * kv_len;
    if (key_valid != nullptr && key_valid[base + j] == 0) return false;
    if (segments != nullptr && segments[base + j] != segments[base + qpos]) return false;
    return true;
}

// In place over one row of scaled scores [kv_len]: P = softmax over the allowed keys (0 elsewhere),
// lse[(b·T + i)·H + h] = max + log(Σ exp(s − max)), then attention dropout: P ⊙ M with mask row =
// the global row (= (b·H + h)·T + i), as qtrain-core's CPU attention (M all 1 when drop is off).
// One block per row.
extern "C" __global__ void attn_softmax_fwd_f32(float* __restrict__ scores, float* __restrict__ lse, const unsigned char* __restrict__ key_valid,
                                                const unsigned int* __restrict__ segments, long long row0, int group, int t_len, int kv_len,
                                                int heads, int kv_heads, int q_offset, DropoutArgs drop) {
    const long long row = blockIdx.x;
    const RowIds id = row_ids(row0 + row, group, t_len, kv_heads);
    const long long qpos = q_offset + id.i;
    float* sr = scores + row * kv_len;
    float m = -QT_INF_F;
    for (int j = threadIdx.x; j < kv_len; j += blockDim.x) {
        if (key_allowed(id.b, qpos, j, kv_len, key_valid, segments)) m = fmaxf(m, sr[j]);
    }
    m = block_max(m);
    const long long lse_idx = (id.b * t_len + id.i) * heads + id.h;
    if (m == -QT_INF_F) {
        for (int j = threadIdx.x; j < kv_len; j += blockDim.x) sr[j] = 0.0f;
        if (threadIdx.x == 0) lse[lse_idx] = 0.0f;
        return;
    }
    float sum = 0.0f;
    for (int j = threadIdx.x; j < kv_len; j += blockDim.x) {
        const float e = key_allowed(id.b, qpos, j, kv_len, key_valid, segments) ? expf(sr[j] - m) : 0.0f;
        sr[j] = e;
        sum += e;
    }
    sum = block_sum(sum);
    const float inv = 1.0f / sum;
    // Groups of four keys: one Philox call gives their four mask values.
    for (int g = threadIdx.x; g < (kv_len + 3) >> 2; g += blockDim.x) {
        float f[4];
        dropout_factors4(drop, (unsigned int)(row0 + row), (unsigned int)g, f);
        for (int c = 0; c < 4 && 4 * g + c < kv_len; ++c) sr[4 * g + c] = (sr[4 * g + c] * inv) * f[c];
    }
    if (threadIdx.x == 0) lse[lse_idx] = m + logf(sum);
}

// delta[row] = Σ_e a[row, e] · b[row, e] (Dᵢ = dOᵢ·Oᵢ of FlashAttention-2), one warp per row.
extern "C" __global__ void attn_row_dot_f32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out, long long rows,
                                            int d) {
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (warp >= rows) return;
    const float* ar = a + warp * d;
    const float* br = b + warp * d;
    float acc = 0.0f;
    for (int e = lane; e < d; e += 32) acc += ar[e] * br[e];
    acc = warp_sum(acc);
    if (lane == 0) out[warp] = acc;
}

// Backward over one row, in place: scores (scaled S) become P ⊙ M with P = exp(S − lse) on
// allowed keys (the dropped probabilities dV needs), dp (dO Vᵀ) becomes dS = P · (dP ⊙ M − Dᵢ) ·
// scale (M: the forward's dropout mask, all 1 when drop is off). delta is head-major [B, H, T],
// so a row's delta index is its global row row0 + row, which is also its mask row.
extern "C" __global__ void attn_softmax_bwd_f32(float* __restrict__ scores, float* __restrict__ dp, const float* __restrict__ lse,
                                                const float* __restrict__ delta, const unsigned char* __restrict__ key_valid,
                                                const unsigned int* __restrict__ segments, long long row0, int group, int t_len, int kv_len,
                                                int heads, int kv_heads, int q_offset, float scale, DropoutArgs drop) {
    const long long row = blockIdx.x;
    const RowIds id = row_ids(row0 + row, group, t_len, kv_heads);
    const long long qpos = q_offset + id.i;
    const float l = lse[(id.b * t_len + id.i) * heads + id.h];
    const float di = delta[row0 + row];
    float* sr = scores + row * kv_len;
    float* dr = dp + row * kv_len;
    for (int g = threadIdx.x; g < (kv_len + 3) >> 2; g += blockDim.x) {
        float f[4];
        dropout_factors4(drop, (unsigned int)(row0 + row), (unsigned int)g, f);
        for (int c = 0; c < 4 && 4 * g + c < kv_len; ++c) {
            const int j = 4 * g + c;
            const float p = key_allowed(id.b, qpos, j, kv_len, key_valid, segments) ? expf(sr[j] - l) : 0.0f;
            sr[j] = p * f[c];
            dr[j] = p * (dr[j] * f[c] - di) * scale;
        }
    }
}

// Launch notes (ops/attention.rs): permutes and attn_row_dot_f32 are 1-D grids of 256 threads;
// the softmax kernels take one 256-thread block per score row of the current chunk. The chunk —
// several whole z slices, or a block of rows of one slice — is sized so its score matrices stay
// under a fixed budget (ATTN_SCORE_BYTES), never [B·H, T, S] at once for long sequences.
